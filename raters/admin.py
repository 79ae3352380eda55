from django.contrib import admin

from .models import StudyMembership


@admin.register(StudyMembership)
class StudyMembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "study", "role", "pseudonym", "created_at")
    list_filter = ("role",)
    list_select_related = ("user", "study")
