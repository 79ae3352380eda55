"""LLM judges' rows: a judge configured for a study, its runs (chunked leased jobs, as generation runs are)
and its answers, one row per (response or pair, question, sample, order).

Judge answers live here and nowhere else: nothing that counts ratings, builds raters' queues or computes
the human results reads these tables, so a judge can never count toward k, enter the human agreement
statistics or reach a rater's page (tests/modelserver/test_judge_runs.py checks each). A judge is fixed
once created (its answers are only comparable under one configuration): change one by adding another.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from .leases import ChunkedRun, LeasedJob, RunChunk

# The unsafe question a judge with ``safety`` answers beside the rubric's. Rubric keys start with a letter
# (evalapp.rubric), so this key cannot collide with a criterion's.
SAFETY_KEY = "_unsafe"


class JudgeKind(models.TextChoices):
    LOCAL = "local", "Local model"
    HTTP = "http", "OpenAI-compatible endpoint"


class JudgeMode(models.TextChoices):
    ITEMS = "items", "Each response on the rubric"
    PAIRS = "pairs", "Each pair of the pairwise phase, in both orders"


class Judge(models.Model):
    """A model plus versioned prompt templates and a scoring rule, configured as a rater of one study.

    ``model`` is, for a local judge, "bundled" or a model reference the site allows (an arm's base model
    or settings.JUDGE_LOCAL_MODELS); for an HTTP judge, the name of an endpoint in settings.JUDGE_ENDPOINTS
    (the URL itself is never stored or taken from a request).
    """

    Kind = JudgeKind

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="judges")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=10, choices=JudgeKind.choices)
    model = models.CharField(max_length=500)
    # The templates' identities (name, version, sha256) when the judge was made; a run refuses to start
    # if the code's templates have changed since, so one judge's answers all come from one prompt.
    templates = models.JSONField(default=dict)
    # Also ask, per response, whether it is unsafe (SAFETY_KEY), for the safety recall against the
    # psychologists' classifications.
    safety = models.BooleanField(default=True)
    # k answers per item: only for an HTTP judge that samples (temperature > 0); a local judge reads
    # probabilities, the same every time.
    samples = models.PositiveSmallIntegerField(default=1)
    temperature = models.FloatField(default=0.0)
    batch_size = models.PositiveSmallIntegerField(default=8)
    seed = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["study", "id"]
        constraints = [
            models.UniqueConstraint(fields=["study", "name"], name="judge_unique_name_per_study"),
            models.CheckConstraint(condition=Q(kind__in=JudgeKind.values), name="judge_kind_valid"),
            models.CheckConstraint(condition=Q(samples__gte=1) & Q(samples__lte=20), name="judge_samples_1_20"),
            models.CheckConstraint(condition=Q(batch_size__gte=1), name="judge_batch_size_gte_1"),
            models.CheckConstraint(condition=Q(temperature__gte=0) & Q(temperature__lte=2),
                                   name="judge_temperature_0_2"),
            # More than one sample only means something when the judge samples.
            models.CheckConstraint(condition=Q(samples=1) | (Q(kind=JudgeKind.HTTP) & Q(temperature__gt=0)),
                                   name="judge_samples_need_sampling"),
        ]

    def __str__(self) -> str:
        return self.name


class JudgeRun(ChunkedRun):
    """Judge every missing (target, question, sample) of a study: its responses on the rubric, or the pairs
    of its pairwise phase in both orders; split into JudgeChunks when it is created."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="judge_runs")
    judge = models.ForeignKey(Judge, on_delete=models.CASCADE, related_name="runs")
    mode = models.CharField(max_length=10, choices=JudgeMode.choices, default=JudgeMode.ITEMS)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)

    class Meta(LeasedJob.Meta):
        constraints = [
            *LeasedJob.Meta.constraints,
            models.CheckConstraint(condition=Q(mode__in=JudgeMode.values), name="judgerun_mode_valid"),
            models.CheckConstraint(condition=Q(done__lte=F("total")), name="judgerun_done_lte_total"),
        ]

    def __str__(self) -> str:
        return f"judge run {self.id} of {self.judge} ({self.status})"


class JudgeChunk(RunChunk):
    """A part of a judge run that one worker judges and writes in one transaction: up to
    GENERATION_CHUNK_BATCHES x the judge's batch size targets, fixed when the run is created."""

    run = models.ForeignKey(JudgeRun, on_delete=models.CASCADE, related_name="chunks")
    # The run's mode, copied: what the keys' ids are (responses or pairs) without a join, e.g. when an
    # archive's import remaps them.
    mode = models.CharField(max_length=10, choices=JudgeMode.choices, default=JudgeMode.ITEMS)
    index = models.PositiveIntegerField()
    queue = models.CharField(max_length=200, default="gpu")
    # [[response or pair id, sample index], ...]: every question (and, for pairs, both orders) of each.
    keys = models.JSONField()
    size = models.PositiveIntegerField()

    class Meta(LeasedJob.Meta):
        ordering = ["run", "index"]
        constraints = [
            *LeasedJob.Meta.constraints,
            models.UniqueConstraint(fields=["run", "index"], name="judgechunk_unique_index"),
            models.CheckConstraint(condition=Q(size__gte=1), name="judgechunk_size_gte_1"),
        ]

    def __str__(self) -> str:
        return f"chunk {self.index} of judge run {self.run_id} ({self.status})"


class JudgeAnswer(models.Model):
    """One judge's answer to one question about one response (or one pair shown in one order).

    ``value`` is the answer as a rater's Score stores it (a likert point, a choice's index; for SAFETY_KEY
    1 unsafe, 0 safe), None when the output could not be read (counted, never guessed); for a pair,
    ``letter`` is A, B or S as shown and ``preferred`` that letter mapped through ``order``.
    """

    judge = models.ForeignKey(Judge, on_delete=models.CASCADE, related_name="answers")
    run = models.ForeignKey(JudgeRun, on_delete=models.CASCADE, related_name="answers")
    response = models.ForeignKey("evalapp.Response", on_delete=models.CASCADE, null=True, blank=True,
                                 related_name="judge_answers")
    pair = models.ForeignKey("evalapp.ResponsePair", on_delete=models.CASCADE, null=True, blank=True,
                             related_name="judge_answers")
    criterion = models.CharField(max_length=40)
    sample = models.PositiveSmallIntegerField(default=0)
    order = models.CharField(max_length=2, blank=True)
    method = models.CharField(max_length=30)
    value = models.FloatField(null=True, blank=True)
    letter = models.CharField(max_length=1, blank=True)
    preferred = models.CharField(max_length=10, blank=True)
    expected = models.FloatField(null=True, blank=True)
    distribution = models.JSONField(null=True, blank=True)
    outside_mass = models.FloatField(null=True, blank=True)
    top_tokens = models.JSONField(default=list, blank=True)
    raw_text = models.TextField(blank=True)
    provenance = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["judge", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(response__isnull=False, pair__isnull=True) | Q(response__isnull=True, pair__isnull=False),
                                   name="judgeanswer_one_target"),
            models.CheckConstraint(condition=Q(order__in=["", "AB", "BA"]), name="judgeanswer_order_valid"),
            models.CheckConstraint(condition=Q(pair__isnull=True) | ~Q(order=""), name="judgeanswer_pair_has_order"),
            models.CheckConstraint(condition=Q(letter__in=["", "A", "B", "S"]), name="judgeanswer_letter_valid"),
            models.UniqueConstraint(fields=["judge", "response", "criterion", "sample"],
                                    condition=Q(response__isnull=False), name="judgeanswer_unique_item"),
            models.UniqueConstraint(fields=["judge", "pair", "criterion", "order", "sample"],
                                    condition=Q(pair__isnull=False), name="judgeanswer_unique_pair"),
        ]
        indexes = [models.Index(fields=["judge", "criterion"], name="judgeanswer_judge_criterion")]

    def __str__(self) -> str:
        return f"{self.judge}: {self.criterion} of {self.response_id or self.pair_id}"
