"""Participant pools (Prolific, SONA, MTurk): the study's entry links and the participants they let in.

A pool's id is stored here and only here: the account a participant rates under has a generated
username and no password, so nothing outside this table ties a rater to their pool identity.
"""

import re
import secrets
import string

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from .welfare import REST


class Preset(models.TextChoices):
    PROLIFIC = "prolific", "Prolific"
    SONA = "sona", "SONA"
    MTURK = "mturk", "Amazon Mechanical Turk"
    CUSTOM = "custom", "Custom parameters"


# (participant id, pool study, session, assignment) query parameters, and the participant id's shape.
PRESET_PARAMS = {
    Preset.PROLIFIC: ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID", ""),
    Preset.SONA: ("id", "", "", ""),
    Preset.MTURK: ("workerId", "hitId", "", "assignmentId"),
}
ID_PATTERNS = {
    Preset.PROLIFIC: re.compile(r"^[0-9a-f]{24}$"),  # Prolific ids are 24 hex digits
    Preset.SONA: re.compile(r"^[0-9]{1,12}$"),  # SONA's survey code is a number
    Preset.MTURK: re.compile(r"^A[A-Z0-9]{9,31}$"),  # worker ids: A and upper-case letters and digits
    Preset.CUSTOM: re.compile(r"^[A-Za-z0-9_.-]{1,64}$"),
}
EXTRA_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PARAM_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
# What a redirect template may name; each value is URL-quoted when it is filled in.
PLACEHOLDERS = ("code", "participant_id", "study_id", "session_id", "assignment_id")


def validate_redirect_template(value: str) -> None:
    """An http(s) URL whose {placeholders} are all from PLACEHOLDERS, with no format specs."""
    if not value:
        return
    if not re.match(r"^https?://[^\s/?#{}]+", value) or any(c.isspace() for c in value):
        raise ValidationError("Give an http:// or https:// address (no spaces).")
    try:
        parts = list(string.Formatter().parse(value))
    except ValueError as exc:
        raise ValidationError(f"Unbalanced braces: {exc}.") from None
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            raise ValidationError(f"Unknown placeholder {{{field}}}: use only "
                                  + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS) + ".")


def validate_param_name(value: str) -> None:
    if value and not PARAM_NAME_PATTERN.match(value):
        raise ValidationError("A parameter name is a letter then letters, digits or '_' (40 at most).")


# A code is typed (or pasted) into the pool's page: letters, digits and a few marks, no spaces.
CODE_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
CODE_FIELDS = (("code_completed", "completed"), ("code_screened_out", "screened out"),
               ("code_returned", "stopped early"), ("code_timed_out", "timed out"))
# A prompted break lasts this long (raters.welfare.REST); a shorter idle limit would time out a resting participant.
BREAK_MINUTES = int(REST.total_seconds() // 60)


def validate_code(value: str) -> None:
    if value and not CODE_PATTERN.match(value):
        raise ValidationError("A code is letters, digits, '_', '.', ':' or '-' (64 at most), with no spaces.")


def new_slug() -> str:
    return secrets.token_urlsafe(18)


class PanelLink(models.Model):
    """A study's entry link for one pool: which query parameters carry the ids, the codes per outcome."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="panel_links")
    preset = models.CharField(max_length=10, choices=Preset.choices, default=Preset.PROLIFIC)
    # Unguessable: the link is the only credential a participant has.
    slug = models.CharField(max_length=40, unique=True, default=new_slug, editable=False)
    # The researcher's own name for the link ("Prolific pilot", "SONA spring"), shown on the panel page.
    label = models.CharField(max_length=80, blank=True)
    enabled = models.BooleanField(default=True)
    id_param = models.CharField(max_length=40, validators=[validate_param_name])
    study_param = models.CharField(max_length=40, blank=True, validators=[validate_param_name])
    session_param = models.CharField(max_length=40, blank=True, validators=[validate_param_name])
    assignment_param = models.CharField(max_length=40, blank=True, validators=[validate_param_name])
    code_completed = models.CharField(max_length=64, validators=[validate_code])
    code_screened_out = models.CharField(max_length=64, validators=[validate_code])
    code_returned = models.CharField(max_length=64, blank=True, validators=[validate_code])
    # Shown to a participant who comes back after being timed out; none: they are told to contact the researcher.
    code_timed_out = models.CharField(max_length=64, blank=True, validators=[validate_code])
    redirect_completed = models.CharField(max_length=500, blank=True, validators=[validate_redirect_template])
    redirect_screened_out = models.CharField(max_length=500, blank=True, validators=[validate_redirect_template])
    redirect_returned = models.CharField(max_length=500, blank=True, validators=[validate_redirect_template])
    # A participant with no activity for this long is timed out and their unfinished items go to others.
    idle_minutes = models.PositiveIntegerField(default=60)
    # An item on screen longer than this was a break, not work: left out of active time.
    gap_minutes = models.PositiveIntegerField(default=5)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=models.Q(preset__in=Preset.values), name="panellink_preset_valid"),
            models.CheckConstraint(condition=models.Q(idle_minutes__gte=1) & models.Q(gap_minutes__gte=1),
                                   name="panellink_minutes_positive",
                                   violation_error_message="Idle and break minutes must be at least 1."),
            # Two links of one study named alike could not be told apart on the panel page or the file upload.
            models.UniqueConstraint(fields=["study", "label"], condition=~models.Q(label=""),
                                    name="panellink_unique_label",
                                    violation_error_message="Another link of this study has this label."),
        ]

    def __str__(self) -> str:
        return f"{self.get_preset_display()} link of study {self.study_id}"

    def clean(self) -> None:
        """Codes that tell the outcomes apart, and an idle limit a prompted break cannot reach."""
        errors: dict[str, str] = {}
        seen: dict[str, str] = {}
        for field, outcome in CODE_FIELDS:
            code = getattr(self, field)
            if code and code in seen:
                errors[field] = (f"The {outcome} code is the same as the {seen[code]} code: give each outcome its "
                                 "own code, or the pool cannot tell them apart.")
            seen.setdefault(code, outcome)
        if self.idle_minutes is not None and self.idle_minutes <= BREAK_MINUTES:
            errors["idle_minutes"] = (f"Give more than {BREAK_MINUTES} minutes: a participant resting on the study's "
                                      f"prompted break ({BREAK_MINUTES} minutes) would be timed out.")
        if errors:
            raise ValidationError(errors)

    @property
    def name(self) -> str:
        return self.label or f"{self.get_preset_display()} link {self.id}"

    def code_for(self, outcome: str) -> str:
        return {"completed": self.code_completed, "screened_out": self.code_screened_out,
                "returned": self.code_returned, "timed_out": self.code_timed_out}.get(outcome, "")

    def redirect_template_for(self, outcome: str) -> str:
        return {"completed": self.redirect_completed, "screened_out": self.redirect_screened_out,
                "returned": self.redirect_returned}.get(outcome, "")


class ParticipantStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    COMPLETED = "completed", "Completed"
    SCREENED_OUT = "screened_out", "Screened out"
    RETURNED = "returned", "Returned"
    TIMED_OUT = "timed_out", "Timed out"
    REJECTED = "rejected", "Rejected"


class PanelParticipant(models.Model):
    """One pool participant in one study, and the pseudonymous account they rate under."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="panel_participants")
    link = models.ForeignKey(PanelLink, on_delete=models.CASCADE, related_name="participants")
    participant_id = models.CharField(max_length=64)
    pool_study_id = models.CharField(max_length=64, blank=True)
    session_id = models.CharField(max_length=64, blank=True)
    assignment_id = models.CharField(max_length=64, blank=True)
    # A foreign key, not one-to-one: a study copied beside its original (evalapp.archive) keeps the accounts.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="panel_participants")
    status = models.CharField(max_length=12, choices=ParticipantStatus.choices, default=ParticipantStatus.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    outcome_code = models.CharField(max_length=64, blank=True)
    outcome_at = models.DateTimeField(null=True, blank=True)
    # From the pool's submissions file, as the pool wrote them.
    pool_status = models.CharField(max_length=20, blank=True)
    pool_seconds = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "participant_id"], name="panelparticipant_unique_id"),
            models.UniqueConstraint(fields=["study", "user"], name="panelparticipant_unique_user"),
            models.CheckConstraint(condition=models.Q(status__in=ParticipantStatus.values),
                                   name="panelparticipant_status_valid"),
        ]

    def __str__(self) -> str:
        return f"panel participant {self.pk} of study {self.study_id}"
