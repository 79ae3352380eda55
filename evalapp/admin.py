from django.contrib import admin

from .models import Arm, Prompt, Rating, Response, Study


class ArmInline(admin.TabularInline):
    model = Arm
    extra = 0
    fields = ("label", "blind_code", "base_model", "adapter")


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = ("title", "owner", "status", "ratings_per_response", "created_at")
    list_filter = ("status",)
    search_fields = ("title",)
    inlines = [ArmInline]


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("external_id", "study", "topic", "split", "source")
    list_filter = ("split", "source")
    search_fields = ("external_id", "topic")
    list_select_related = ("study",)


@admin.register(Arm)
class ArmAdmin(admin.ModelAdmin):
    list_display = ("label", "study", "blind_code", "base_model", "adapter")
    list_select_related = ("study",)


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ("public_id", "prompt", "arm", "sample_index", "created_at")
    list_select_related = ("prompt", "arm")
    readonly_fields = ("public_id", "provenance")


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ("response", "rater", "empathy", "fluency", "unsafe", "created_at")
    list_filter = ("unsafe",)
    list_select_related = ("response", "rater")
