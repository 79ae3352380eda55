"""Who may do what in which study."""

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    RESEARCHER = "researcher", "Researcher"
    RATER = "rater", "Rater"
    ADJUDICATOR = "adjudicator", "Adjudicator"


class StudyMembership(models.Model):
    """A user's role in one study. The study's owner is a researcher without needing a row."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices)
    # Shown to adjudicators and in exports instead of the account name.
    pseudonym = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "user", "role"], name="membership_unique_study_user_role"),
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} as {self.role} in {self.study_id}"
