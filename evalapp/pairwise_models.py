"""The pairwise phase of a study: raters say which of two responses to one prompt is better.

A second phase on the study's own responses (the same texts its 1-10 raters scored), or the only one.
Its rows sit beside the 1-10 ones and share their rules: the same raters' consent and calibration
(raters.selectors.eligible_raters), the same counting (a withdrawn or excluded rater's judgments stop
counting), the same blinding. Imported by evalapp.models so Django finds them; the rater-side rows
(queues, gold pairs) are in raters.models.
"""

import secrets

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from .pair_rubric import FIRST, SECOND, TIE


# The same rules as evalapp.models' new_public_id and new_design_seed, which import this module.
def _new_public_id() -> str:
    return secrets.token_urlsafe(12)  # raters see it: no order or arm in it


def _new_design_seed() -> int:
    return secrets.randbits(62)


def _default_criteria() -> list[dict]:
    from .pair_rubric import DEFAULT_CRITERIA

    return [dict(c) for c in DEFAULT_CRITERIA]


class PhaseStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    OPEN = "open", "Open for judging"
    CLOSED = "closed", "Closed"


class Verdict(models.TextChoices):
    FIRST = FIRST, "First response"
    SECOND = SECOND, "Second response"
    TIE = TIE, "About the same"


class ReasonPolicy(models.TextChoices):
    NONE = "none", "No reason asked"
    OPTIONAL = "optional", "Optional reason"


class PairwisePhase(models.Model):
    """A study's pairwise design; fixed once it opens, like the 1-10 design."""

    Status = PhaseStatus
    DESIGN_FIELDS = ("criteria", "judgments_per_pair", "gold_rate", "reason")

    study = models.OneToOneField("evalapp.Study", on_delete=models.CASCADE, related_name="pairwise")
    status = models.CharField(max_length=10, choices=PhaseStatus.choices, default=PhaseStatus.DRAFT)
    # [{"key", "question"}] (evalapp.pair_rubric.validate).
    criteria = models.JSONField(default=_default_criteria)
    judgments_per_pair = models.PositiveSmallIntegerField(default=3)
    gold_rate = models.FloatField(default=0.1)
    reason = models.CharField(max_length=10, choices=ReasonPolicy.choices, default=ReasonPolicy.OPTIONAL)
    design_seed = models.BigIntegerField(default=_new_design_seed)
    opened_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(judgments_per_pair__gte=1), name="pairphase_k_gte_1"),
            models.CheckConstraint(condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=1), name="pairphase_gold_rate_0_1"),
            models.CheckConstraint(condition=Q(status__in=PhaseStatus.values), name="pairphase_status_valid"),
            models.CheckConstraint(condition=Q(reason__in=ReasonPolicy.values), name="pairphase_reason_valid"),
        ]

    def keys(self) -> list[str]:
        return [c["key"] for c in self.criteria]


class ResponsePair(models.Model):
    """Two responses to one prompt from two arms; `first` is the lower arm id's (never shown as such)."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="response_pairs")
    prompt = models.ForeignKey("evalapp.Prompt", on_delete=models.CASCADE, related_name="response_pairs")
    first = models.ForeignKey("evalapp.Response", on_delete=models.CASCADE, related_name="pairs_as_first")
    second = models.ForeignKey("evalapp.Response", on_delete=models.CASCADE, related_name="pairs_as_second")
    public_id = models.CharField(max_length=32, unique=True, default=_new_public_id, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["first", "second"], name="responsepair_unique"),
            models.CheckConstraint(condition=~Q(first=F("second")), name="responsepair_two_responses"),
        ]

    def __str__(self) -> str:
        return self.public_id


class PairJudgment(models.Model):
    """One rater's verdicts on one pair, and which side they saw its first response on."""

    pair = models.ForeignKey(ResponsePair, on_delete=models.CASCADE, related_name="judgments")
    rater = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="pair_judgments")
    first_on_left = models.BooleanField()
    reason = models.TextField(blank=True)
    seconds_on_item = models.FloatField(null=True, blank=True)
    # Written by the demo's rater simulation, never by a person; labelled on every page and export.
    simulated = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["pair", "rater"], name="pairjudgment_unique_pair_rater"),
            models.CheckConstraint(condition=Q(seconds_on_item__isnull=True) | Q(seconds_on_item__gte=0),
                                   name="pairjudgment_seconds_non_negative"),
        ]


class PairVerdict(models.Model):
    """A judgment's answer to one pairwise question, in the pair's own terms (first, second or tie)."""

    judgment = models.ForeignKey(PairJudgment, on_delete=models.CASCADE, related_name="verdicts")
    key = models.CharField(max_length=40)
    verdict = models.CharField(max_length=6, choices=Verdict.choices)

    class Meta:
        ordering = ["judgment", "id"]
        constraints = [
            models.UniqueConstraint(fields=["judgment", "key"], name="pairverdict_unique_key"),
            models.CheckConstraint(condition=Q(verdict__in=Verdict.values), name="pairverdict_valid"),
        ]


class PairAdjudication(models.Model):
    """An adjudicator's final verdict on one question of a pair whose raters had no majority."""

    pair = models.ForeignKey(ResponsePair, on_delete=models.CASCADE, related_name="adjudications")
    key = models.CharField(max_length=40)
    adjudicator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=6, choices=Verdict.choices)
    rationale = models.TextField()
    n_judgments_seen = models.PositiveSmallIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["pair", "key"], name="pairadjudication_one_per_key"),
            models.CheckConstraint(condition=Q(verdict__in=Verdict.values), name="pairadjudication_valid"),
        ]
