"""Who may do what in which study."""

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from evalapp.models import new_public_id


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
    # Optional rater group (e.g. cohort or discipline) for subgroup results.
    group = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    # A researcher's decision: kept, marked, and left out of the analysis.
    excluded_at = models.DateTimeField(null=True, blank=True)
    excluded_reason = models.CharField(max_length=500, blank=True)
    # After a failed retry the researcher decides: "approved" or "rejected".
    calibration_decision = models.CharField(max_length=10, blank=True)

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


def _expires():
    return timezone.now() + timedelta(days=14)


class Invitation(models.Model):
    """A single-use link that makes its holder a member of a study in a role.

    Only the token's sha256 is stored, so a database leak does not leak live links.
    """

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(blank=True)
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.RATER)
    token_sha256 = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(default=_expires)
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="invitation_role_valid"),
        ]


class WithdrawalPolicy(models.TextChoices):
    DELETE = "delete", "Delete my ratings"
    EXCLUDE = "exclude", "Keep my ratings but exclude them from the analysis"


class ConsentVersion(models.Model):
    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="consent_versions")
    version = models.PositiveIntegerField()
    text = models.TextField()
    withdrawal_policy = models.CharField(max_length=10, choices=WithdrawalPolicy.choices, default=WithdrawalPolicy.EXCLUDE)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["study", "version"], name="consentversion_unique_per_study"),
            models.CheckConstraint(
                condition=models.Q(withdrawal_policy__in=WithdrawalPolicy.values), name="consentversion_policy_valid"
            ),
        ]


class Consent(models.Model):
    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="consents")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="consents")
    version = models.ForeignKey(ConsentVersion, on_delete=models.PROTECT, related_name="consents")
    accepted_at = models.DateTimeField(auto_now_add=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-accepted_at"]
        constraints = [
            models.UniqueConstraint(fields=["user", "version"], name="consent_unique_user_version"),
        ]


class CalibrationItem(models.Model):
    """A response with reference scores, for calibration and as hidden gold attention checks."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="calibration_items")
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    messages = models.JSONField()
    response_text = models.TextField()
    # {criterion key: value} in the stored form (likert point, choice index, None for "not sure"),
    # checked against the rubric by raters.services.calibration. JSON rather than rows: references
    # are few, written by the researcher, and never analysed as ratings.
    references = models.JSONField(default=dict)
    rationale = models.TextField()
    # A gold item is a hidden attention check in rating queues and is never shown in calibration, where
    # its reference would be revealed; calibration items are never gold. One pool or the other.
    use_as_gold = models.BooleanField(default=False, verbose_name="Hidden gold item",
                                      help_text="An attention check mixed into rating queues, never shown in "
                                                "calibration (where its reference answer would be revealed).")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class CalibrationAttempt(models.Model):
    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="calibration_attempts")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="calibration_attempts")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    mean_absolute_error = models.FloatField(null=True, blank=True)
    passed = models.BooleanField(null=True)

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(fields=["study", "rater", "number"], name="calibrationattempt_unique_number"),
            # One retry, then the researcher decides.
            models.CheckConstraint(
                condition=models.Q(number__gte=1) & models.Q(number__lte=2), name="calibrationattempt_at_most_two"
            ),
        ]


class CalibrationAnswer(models.Model):
    attempt = models.ForeignKey(CalibrationAttempt, on_delete=models.CASCADE, related_name="answers")
    item = models.ForeignKey(CalibrationItem, on_delete=models.PROTECT, related_name="answers")
    values = models.JSONField(default=dict)  # as CalibrationItem.references
    answered_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["attempt", "item"], name="calibrationanswer_unique_item"),
        ]


class Assignment(models.Model):
    """One slot of a rater's queue: a study response or a hidden gold item, in order."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="assignments")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    position = models.PositiveIntegerField()
    response = models.ForeignKey("evalapp.Response", on_delete=models.CASCADE, null=True, blank=True, related_name="assignments")
    gold_item = models.ForeignKey(CalibrationItem, on_delete=models.CASCADE, null=True, blank=True, related_name="assignments")
    design_seed = models.BigIntegerField()
    completed_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "rater", "position"]
        indexes = [models.Index(fields=["study", "rater", "completed_at", "position"], name="assignment_next_item")]
        constraints = [
            models.UniqueConstraint(fields=["study", "rater", "position"], name="assignment_unique_position"),
            models.UniqueConstraint(
                fields=["rater", "response"], condition=models.Q(response__isnull=False), name="assignment_unique_response"
            ),
            models.UniqueConstraint(
                fields=["rater", "gold_item"], condition=models.Q(gold_item__isnull=False), name="assignment_unique_gold"
            ),
            models.CheckConstraint(
                condition=models.Q(response__isnull=True) ^ models.Q(gold_item__isnull=True),
                name="assignment_response_xor_gold",
            ),
        ]

    @property
    def is_gold(self) -> bool:
        return self.gold_item_id is not None


class GoldAnswer(models.Model):
    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="gold_answer")
    values = models.JSONField(default=dict)  # as CalibrationItem.references
    unsafe = models.BooleanField(default=False)
    seconds_on_item = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)


class RatingRevision(models.Model):
    """Audit trail: every change a rater makes to a submitted rating."""

    rating = models.ForeignKey("evalapp.Rating", on_delete=models.CASCADE, related_name="revisions")
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    changed_at = models.DateTimeField(auto_now_add=True)
    before = models.JSONField()
    after = models.JSONField()

    class Meta:
        ordering = ["changed_at"]


class GoldPair(models.Model):
    """A hidden attention check of the pairwise phase: a pair where one response is clearly the better on
    every question (written by the researcher, with why)."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="gold_pairs")
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    messages = models.JSONField()
    better_text = models.TextField()
    worse_text = models.TextField()
    rationale = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class PairAssignment(models.Model):
    """One slot of a rater's pairwise queue: a pair of study responses or a gold pair, and its sides."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="pair_assignments")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="pair_assignments")
    position = models.PositiveIntegerField()
    pair = models.ForeignKey("evalapp.ResponsePair", on_delete=models.CASCADE, null=True, blank=True,
                             related_name="assignments")
    gold_pair = models.ForeignKey(GoldPair, on_delete=models.CASCADE, null=True, blank=True, related_name="assignments")
    # The pair's first response (a gold pair's better one) on the left (raters.pair_assignment).
    first_on_left = models.BooleanField()
    design_seed = models.BigIntegerField()
    completed_at = models.DateTimeField(null=True, blank=True)
    skip_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "rater", "position"]
        indexes = [models.Index(fields=["study", "rater", "completed_at", "position"], name="pairassignment_next")]
        constraints = [
            models.UniqueConstraint(fields=["study", "rater", "position"], name="pairassignment_unique_position"),
            models.UniqueConstraint(fields=["rater", "pair"], condition=models.Q(pair__isnull=False),
                                    name="pairassignment_unique_pair"),
            models.UniqueConstraint(fields=["rater", "gold_pair"], condition=models.Q(gold_pair__isnull=False),
                                    name="pairassignment_unique_gold"),
            models.CheckConstraint(condition=models.Q(pair__isnull=True) ^ models.Q(gold_pair__isnull=True),
                                   name="pairassignment_pair_xor_gold"),
        ]


class PairGoldAnswer(models.Model):
    assignment = models.OneToOneField(PairAssignment, on_delete=models.CASCADE, related_name="gold_answer")
    # {question key: "first" | "second" | "tie"}, "first" being the better response.
    verdicts = models.JSONField(default=dict)
    seconds_on_item = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    @property
    def correct(self) -> bool:
        return bool(self.verdicts) and all(v == "first" for v in self.verdicts.values())


from .panel_models import PanelLink, PanelParticipant, ParticipantStatus, Preset  # noqa: E402,F401
from .welfare_models import DistressReport, WelfareBreak, WelfareNoticeSeen, WelfareSettings  # noqa: E402, F401
