from django.contrib import admin

from .models import Adjudication, Arm, AuditEvent, Prompt, Rating, Response, SafetyDecision, SafetyReview, Study


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
    list_display = ("response", "rater", "unsafe", "created_at")
    list_filter = ("unsafe",)
    list_select_related = ("response", "rater")


class ReadOnlyAdmin(admin.ModelAdmin):
    """The audit trail is evidence: nobody edits or deletes it, not even through the admin."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "study", "actor", "action", "object_type", "object_id")
    list_filter = ("action",)


@admin.register(Adjudication)
class AdjudicationAdmin(ReadOnlyAdmin):
    list_display = ("response", "scale", "action", "final_score", "adjudicator", "created_at")


@admin.register(SafetyReview)
class SafetyReviewAdmin(ReadOnlyAdmin):
    list_display = ("response", "adjudicator", "classification", "exclude", "created_at")


@admin.register(SafetyDecision)
class SafetyDecisionAdmin(ReadOnlyAdmin):
    list_display = ("response", "classification", "excluded", "n_reviews", "first_reviews_agreed", "decided_at")
