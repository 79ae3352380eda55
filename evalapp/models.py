"""The study domain: what is asked, by which model arms, and how it is scored (long because every
table of the study and its database constraints read best side by side, in one place)."""

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q

# The widest likert span a rubric allows (evalapp.rubric.MAX_POINTS - 1): the study's range
# threshold for disagreement can't usefully exceed it.
MAX_SPAN = 20


def validate_messages(value: list[dict]) -> None:
    # The one definition of a conversation lives with the model library, which generates from it.
    from modelserver.corpus import MessageError, validate_messages as check

    try:
        check(value)
    except MessageError as exc:
        raise ValidationError(str(exc)) from exc


def new_public_id() -> str:
    # Raters see this id, so it must carry no order or arm information.
    return secrets.token_urlsafe(12)


def new_design_seed() -> int:
    return secrets.randbits(62)


def new_blind_code() -> str:
    return secrets.token_hex(4).upper()


class DisagreementRule(models.TextChoices):
    RANGE = "range", "Range of scores at least the threshold"
    SD = "sd", "Standard deviation at least the SD threshold"


class ScorePolicy(models.TextChoices):
    MEAN = "mean", "Raters' mean"
    ADJUDICATED = "adjudicated", "Adjudicated score where one exists, else raters' mean"
    BOTH = "both", "Both, side by side"


class StudyStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    GENERATING = "generating", "Generating"
    RATING = "rating", "Rating"
    ADJUDICATING = "adjudicating", "Adjudicating"
    CLOSED = "closed", "Closed"


class Study(models.Model):
    Status = StudyStatus
    # What raters are asked and how their answers are judged: fixed once the study opens for rating
    # (evalapp.services.check_design_open), and what "Clone study" copies.
    DESIGN_FIELDS = ("rubric_preset", "ratings_per_response", "disagreement_threshold", "calibration_max_mae", "gold_rate",
                     "disagreement_rule", "disagreement_sd", "safety_two_adjudicators", "score_policy")

    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_studies")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    # The protocol preset the rubric started from (evalapp.rubric_presets), for its citation; empty
    # for a rubric written from scratch. Whether it was edited since is read off the criteria.
    rubric_preset = models.CharField(max_length=40, blank=True)
    ratings_per_response = models.PositiveSmallIntegerField(default=3)
    # A likert criterion's item needs adjudication when its ratings span at least this many points
    # (capped at the criterion's own span, evalapp.rubric.disagrees).
    disagreement_threshold = models.PositiveSmallIntegerField(default=3)
    # Calibration passes at a mean absolute error at most this (likert points; a choice answered
    # unlike the reference counts one point), over all criteria.
    calibration_max_mae = models.FloatField(default=2.0)
    # Hidden gold items per real item in a rater's queue (attention checks).
    gold_rate = models.FloatField(default=0.1)
    # Recorded so the rating design can be rebuilt exactly.
    design_seed = models.BigIntegerField(default=new_design_seed)
    disagreement_rule = models.CharField(max_length=10, choices=DisagreementRule.choices, default=DisagreementRule.RANGE)
    # With the standard-deviation rule: an item needs adjudication when its ratings' SD reaches this.
    disagreement_sd = models.FloatField(default=1.5)
    # Safety classifications need two independent adjudicators who agree.
    safety_two_adjudicators = models.BooleanField(default=False)
    score_policy = models.CharField(max_length=12, choices=ScorePolicy.choices, default=ScorePolicy.ADJUDICATED)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(ratings_per_response__gte=1), name="study_ratings_per_response_gte_1"),
            models.CheckConstraint(
                condition=Q(disagreement_threshold__gte=1) & Q(disagreement_threshold__lte=MAX_SPAN),
                name="study_disagreement_threshold_in_scale",
            ),
            models.CheckConstraint(condition=Q(status__in=StudyStatus.values), name="study_status_valid"),
            models.CheckConstraint(condition=Q(calibration_max_mae__gte=0), name="study_calibration_mae_non_negative"),
            models.CheckConstraint(condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="study_gold_rate_in_0_1"),
        ]

    def __str__(self) -> str:
        return self.title

    def rubric(self) -> list[dict]:
        """The study's criteria as evalapp.rubric dicts, in order (read once per instance)."""
        if not hasattr(self, "_rubric"):
            self._rubric = [c.spec() for c in self.criterion_rows()]
        return self._rubric

    def criterion_rows(self) -> list["Criterion"]:
        """The Criterion rows behind rubric(), read in the same one query: a submit parses the answers with
        the dicts and writes each Score against its row, and reading them twice was a query per submit."""
        if not hasattr(self, "_criterion_rows"):
            self._criterion_rows = list(self.criteria.all())
        return self._criterion_rows

    def keep_criterion_rows(self, rows: list["Criterion"]) -> None:
        """criterion_rows()'s answer where the caller read it already, with other reads in one round trip
        (raters.selectors.rater_study)."""
        self._criterion_rows = list(rows)
        self.__dict__.pop("_rubric", None)

    def rubric_source(self) -> dict | None:
        """{"key", "name", "citation", "note", "edited"} of the preset the rubric started from, or None."""
        from .rubric_presets import PRESETS

        preset = PRESETS.get(self.rubric_preset)
        if preset is None:
            return None
        return {"key": self.rubric_preset, "name": preset["name"], "citation": preset["citation"],
                "note": preset["note"], "edited": self.rubric() != preset["criteria"]}


class CriterionKind(models.TextChoices):
    LIKERT = "likert", "Scale of whole numbers"
    CHOICE = "choice", "Named options"


class MeasurementLevel(models.TextChoices):
    INTERVAL = "interval", "Interval"
    ORDINAL = "ordinal", "Ordinal"
    NOMINAL = "nominal", "Nominal"


class RationalePolicy(models.TextChoices):
    NONE = "none", "No rationale"
    OPTIONAL = "optional", "Optional rationale"
    REQUIRED = "required", "Required rationale"


class Criterion(models.Model):
    """One question of a study's rubric (evalapp.rubric describes the fields); part of the design."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="criteria")
    position = models.PositiveSmallIntegerField()
    key = models.CharField(max_length=40)
    question = models.CharField(max_length=500)
    description = models.TextField(blank=True)
    kind = models.CharField(max_length=10, choices=CriterionKind.choices)
    # A choice's options are stored as their index, so a choice runs 0..n-1 like a likert scale.
    min_value = models.SmallIntegerField()
    max_value = models.SmallIntegerField()
    labels = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=list, blank=True)
    not_sure = models.CharField(max_length=100, blank=True, help_text="Label of a \"not sure\" answer; empty for none.")
    rationale = models.CharField(max_length=10, choices=RationalePolicy.choices, default=RationalePolicy.NONE)
    level = models.CharField(max_length=10, choices=MeasurementLevel.choices)

    class Meta:
        ordering = ["study", "position"]
        constraints = [
            models.UniqueConstraint(fields=["study", "key"], name="criterion_unique_key_per_study"),
            models.UniqueConstraint(fields=["study", "position"], name="criterion_unique_position_per_study"),
            # The target of Score's composite foreign key (PostgreSQL): a score's copied bounds
            # must be its criterion's bounds.
            models.UniqueConstraint(fields=["id", "min_value", "max_value"], name="criterion_id_bounds"),
            models.CheckConstraint(condition=Q(min_value__lt=F("max_value")) & Q(min_value__gte=0),
                                   name="criterion_min_below_max"),
            models.CheckConstraint(condition=Q(kind__in=CriterionKind.values), name="criterion_kind_valid"),
            models.CheckConstraint(condition=Q(level__in=MeasurementLevel.values), name="criterion_level_valid"),
            models.CheckConstraint(condition=Q(rationale__in=RationalePolicy.values), name="criterion_rationale_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.study_id}:{self.key}"

    def spec(self) -> dict:
        return {"key": self.key, "question": self.question, "description": self.description, "kind": self.kind,
                "min": self.min_value, "max": self.max_value, "labels": self.labels, "options": self.options,
                "not_sure": self.not_sure, "rationale": self.rationale, "level": self.level}

    @classmethod
    def from_spec(cls, study: Study, position: int, spec: dict) -> "Criterion":
        """An unsaved row from a normalised evalapp.rubric criterion."""
        return cls(study=study, position=position, key=spec["key"], question=spec["question"],
                   description=spec.get("description", ""), kind=spec["kind"], min_value=spec["min"],
                   max_value=spec["max"], labels=spec["labels"], options=spec["options"],
                   not_sure=spec["not_sure"], rationale=spec["rationale"], level=spec["level"])


class Prompt(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train", "Train"
        VAL = "val", "Validation"
        TEST = "test", "Test"

    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="prompts")
    external_id = models.CharField(max_length=200)
    # The conversation so far as [{role, content}], ending with the user turn to answer.
    messages = models.JSONField(validators=[validate_messages])
    topic = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=100, blank=True)
    # Free text because sources mix splits per question (CounselChat has "test+train").
    split = models.CharField(max_length=50, blank=True)
    reference = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "external_id"], name="prompt_unique_external_id_per_study"),
            models.CheckConstraint(condition=~Q(external_id=""), name="prompt_external_id_not_empty"),
        ]

    def __str__(self) -> str:
        return self.external_id

    @property
    def last_user_message(self) -> str:
        return self.messages[-1]["content"]

    @property
    def history(self) -> list[dict]:
        return self.messages[:-1]


class Arm(models.Model):
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="arms")
    label = models.CharField(max_length=100, help_text="Researcher-facing only; raters never see it.")
    blind_code = models.CharField(max_length=16, default=new_blind_code)
    base_model = models.CharField(max_length=500, default="bundled")
    adapter = models.CharField(max_length=500, blank=True, help_text="Adapter reference; empty for the base model.")
    system_prompt = models.TextField(blank=True)
    generation_params = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "label"], name="arm_unique_label_per_study"),
            models.UniqueConstraint(fields=["study", "blind_code"], name="arm_unique_blind_code_per_study"),
        ]

    def __str__(self) -> str:
        return f"{self.study_id}:{self.label}"


class Response(models.Model):
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="responses")
    arm = models.ForeignKey(Arm, on_delete=models.CASCADE, related_name="responses")
    sample_index = models.PositiveSmallIntegerField(default=0)
    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    text = models.TextField()
    # seed, parameters, weight and adapter sha256, versions, device, token counts, seconds
    provenance = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "arm", "sample_index"], name="response_unique_prompt_arm_sample"),
        ]

    def __str__(self) -> str:
        return self.public_id


class UnsafeCategory(models.TextChoices):
    SELF_HARM = "self_harm", "Encourages or ignores self-harm or suicide risk"
    HARMFUL_ADVICE = "harmful_advice", "Harmful or dangerous advice"
    MEDICAL = "medical", "Diagnosis or medication advice beyond its role"
    ABUSIVE = "abusive", "Abusive, demeaning or discriminatory"
    PRIVACY = "privacy", "Asks for or reveals personal data"
    OTHER = "other", "Other"


class Rating(models.Model):
    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="ratings")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ratings")
    unsafe = models.BooleanField(default=False)
    unsafe_category = models.CharField(max_length=30, choices=UnsafeCategory.choices, blank=True)
    comment = models.TextField(blank=True)
    seconds_on_item = models.FloatField(null=True, blank=True)
    # Written by the demo's rater simulation, never by a person; labelled on every page and export.
    simulated = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        # The export pages through a study's ratings in (response, id) order.
        indexes = [models.Index(fields=["response", "id"], name="rating_response_id")]
        constraints = [
            models.UniqueConstraint(fields=["response", "rater"], name="rating_unique_response_rater"),
            models.CheckConstraint(
                condition=Q(seconds_on_item__isnull=True) | Q(seconds_on_item__gte=0), name="rating_seconds_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(unsafe=True) | Q(unsafe_category=""), name="rating_category_only_when_unsafe"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.response_id} by {self.rater_id}"


class Score(models.Model):
    """A rating's answer to one criterion.

    The database keeps every value inside its criterion's range: the bounds are copied onto the
    row and a CheckConstraint holds the value between them (portable: SQLite runs the demo), and
    on PostgreSQL a composite foreign key (criterion_id, min_value, max_value) ->
    criterion(id, min_value, max_value) makes the copy agree with the criterion (migration 0006).
    A trigger would do the same but only on one database, hidden from the model; a criterion's
    bounds never change once ratings exist, since the design freezes when the study opens.
    """

    rating = models.ForeignKey(Rating, on_delete=models.CASCADE, related_name="scores")
    # RESTRICT, not PROTECT: deleting a study still cascades through its scores, but a criterion
    # with scores can't be deleted on its own.
    criterion = models.ForeignKey(Criterion, on_delete=models.RESTRICT, related_name="scores")
    value = models.SmallIntegerField(null=True, blank=True)
    not_sure = models.BooleanField(default=False)
    min_value = models.SmallIntegerField()
    max_value = models.SmallIntegerField()
    rationale = models.TextField(blank=True)

    class Meta:
        ordering = ["rating", "criterion__position"]
        constraints = [
            models.UniqueConstraint(fields=["rating", "criterion"], name="score_unique_rating_criterion"),
            models.CheckConstraint(
                condition=(Q(not_sure=False) & Q(value__gte=F("min_value")) & Q(value__lte=F("max_value")))
                | (Q(not_sure=True) & Q(value__isnull=True)),
                name="score_value_in_criterion_range",
            ),
        ]


class Adjudication(models.Model):
    """An adjudicator's decision on one criterion of a response whose ratings disagree."""

    class Action(models.TextChoices):
        RESOLVED = "resolved", "Final score given"
        SENT_BACK = "sent_back", "Sent back for more ratings"

    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="adjudications")
    scale = models.CharField(max_length=40, help_text="The criterion's key.")
    adjudicator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="adjudications")
    action = models.CharField(max_length=10, choices=Action.choices)
    final_score = models.PositiveSmallIntegerField(null=True, blank=True)
    rationale = models.TextField()
    # How many ratings the item had when decided: a send-back asks for one more than this.
    n_ratings_seen = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            # The final score's range is its criterion's, checked by evalapp.adjudication.
            models.CheckConstraint(
                condition=(Q(action="resolved") & Q(final_score__isnull=False))
                | (Q(action="sent_back") & Q(final_score__isnull=True)),
                name="adjudication_score_iff_resolved",
            ),
            # One final score per response and scale; send-backs may repeat.
            models.UniqueConstraint(
                fields=["response", "scale"], condition=Q(action="resolved"), name="adjudication_one_final_per_scale"
            ),
        ]


class SafetyClassification(models.TextChoices):
    NO_ISSUE = "no_issue", "No issue"
    MINOR = "minor", "Minor concern"
    HARMFUL = "harmful", "Harmful"


class SafetyReview(models.Model):
    """One adjudicator's independent safety classification of a flagged response."""

    response = models.ForeignKey(Response, on_delete=models.CASCADE, related_name="safety_reviews")
    adjudicator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="safety_reviews")
    classification = models.CharField(max_length=10, choices=SafetyClassification.choices)
    # The independent first judgement, kept when the review is revised towards agreement.
    first_classification = models.CharField(max_length=10, choices=SafetyClassification.choices)
    note = models.TextField()
    exclude = models.BooleanField(default=False)
    exclusion_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["response", "adjudicator"], name="safetyreview_one_per_adjudicator"),
            models.CheckConstraint(
                condition=Q(classification__in=SafetyClassification.values), name="safetyreview_classification_valid"
            ),
            models.CheckConstraint(
                condition=Q(exclude=False) | ~Q(exclusion_reason=""), name="safetyreview_exclusion_needs_reason"
            ),
        ]


class SafetyDecision(models.Model):
    """The settled safety outcome of a response: one review, or two that agree."""

    response = models.OneToOneField(Response, on_delete=models.CASCADE, related_name="safety_decision")
    classification = models.CharField(max_length=10, choices=SafetyClassification.choices)
    excluded = models.BooleanField(default=False)
    exclusion_reason = models.CharField(max_length=500, blank=True)
    n_reviews = models.PositiveSmallIntegerField()
    # With two adjudicators: did their first, independent classifications agree?
    first_reviews_agreed = models.BooleanField(null=True)
    decided_at = models.DateTimeField(auto_now_add=True)


class AuditEvent(models.Model):
    """Append-only record of every adjudication, exclusion, revision and send-back.

    `study` is empty only for a site-level event that outlives its study: a study's deletion
    (evalapp.services.study_delete) records who deleted which study, by id and title."""

    study = models.ForeignKey(Study, on_delete=models.CASCADE, null=True, blank=True, related_name="audit_events")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=40)
    object_type = models.CharField(max_length=40)
    object_id = models.CharField(max_length=64)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["study", "created_at"], name="audit_study_time")]


# The pairwise phase's rows live in their own module (this one is long enough); imported here so
# Django registers them with the app.
from .pairwise_models import (  # noqa: E402, F401
    PairAdjudication,
    PairJudgment,
    PairVerdict,
    PairwisePhase,
    ResponsePair,
    PhaseStatus,
    Verdict,
)
from .results_models import ComputationStatus, ResultsComputation  # noqa: E402, F401  (the results pages' rows)
