"""The model server's rows: generation runs and their chunks, playground requests, training runs (all leased
jobs) and adapters.

Every job kind shares one lifecycle (LeasedJob): QUEUED -> RUNNING -> SUCCEEDED or FAILED, one worker at a
time through a heartbeat lease, FAILED (or a lapsed RUNNING) resumable. modelserver/tasks.py applies it to
each message; ARCHITECTURE.md draws it. A generation run is split into chunks that are each such a job, so
that several workers share one run; the run's own status follows from its chunks (GenerationChunk).
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from .leases import ACTIVE, ChunkedRun, LeasedJob, RunChunk, RunStatus

__all__ = ["ACTIVE", "SAFETY_KEY", "Adapter", "ChunkedRun", "GenerationChunk", "GenerationRun", "Judge", "JudgeAnswer",
           "JudgeChunk", "JudgeKind", "JudgeMode", "JudgeRun", "LeasedJob", "PlaygroundRequest", "RunChunk", "RunStatus",
           "TrainingRun", "WorkerHeartbeat"]


class GenerationRun(ChunkedRun):
    """Generate every missing (prompt, arm, sample index) response of a study, in chunks.

    The run is split into GenerationChunks when it is created (ChunkedRun). Runs made before chunks
    existed have none (resume splits them).
    """

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="generation_runs")
    arms = models.ManyToManyField("evalapp.Arm", related_name="generation_runs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    samples_per_prompt = models.PositiveSmallIntegerField(default=1)
    seed = models.BigIntegerField(default=0)
    batch_size = models.PositiveSmallIntegerField(default=16)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    # Generation parameters this run sets over its arms' own (e.g. a larger max_new_tokens when
    # regenerating replies cut at the token limit, modelserver.truncation); each response's
    # provenance records the parameters it was really made with.
    generation_params = models.JSONField(default=dict, blank=True)

    class Meta(LeasedJob.Meta):
        constraints = [
            *LeasedJob.Meta.constraints,
            models.CheckConstraint(condition=Q(samples_per_prompt__gte=1), name="generationrun_samples_gte_1"),
            models.CheckConstraint(condition=Q(batch_size__gte=1), name="generationrun_batch_size_gte_1"),
            models.CheckConstraint(condition=Q(done__lte=models.F("total")), name="generationrun_done_lte_total"),
        ]

    def __str__(self) -> str:
        return f"run {self.id} of study {self.study_id} ({self.status})"


class GenerationChunk(RunChunk):
    """A part of a run that one worker generates and writes in one transaction: one arm, up to
    GENERATION_CHUNK_BATCHES x batch_size (prompt, sample index) keys, fixed when the run is created.
    """

    run = models.ForeignKey(GenerationRun, on_delete=models.CASCADE, related_name="chunks")
    arm = models.ForeignKey("evalapp.Arm", on_delete=models.CASCADE, related_name="+")
    index = models.PositiveIntegerField()
    # The Celery queue its messages go to, from the arm's base model (settings.GENERATION_QUEUES).
    queue = models.CharField(max_length=200, default="gpu")
    # [[prompt id, sample index], ...] in generation order.
    keys = models.JSONField()
    size = models.PositiveIntegerField()

    class Meta(LeasedJob.Meta):
        ordering = ["run", "index"]
        constraints = [
            *LeasedJob.Meta.constraints,
            models.UniqueConstraint(fields=["run", "index"], name="generationchunk_unique_index"),
            models.CheckConstraint(condition=Q(size__gte=1), name="generationchunk_size_gte_1"),
        ]

    def __str__(self) -> str:
        return f"chunk {self.index} of run {self.run_id} ({self.status})"


class PlaygroundRequest(LeasedJob):
    """A researcher's try-out conversation, answered by every arm side by side (unblinded)."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="playground_requests")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    messages = models.JSONField()
    seed = models.BigIntegerField(default=0)
    # [{"arm_id", "label", "text", "provenance"}] in arm order
    outputs = models.JSONField(default=list, blank=True)


class TrainingRun(LeasedJob):
    """A LoRA training job on the gpu queue, resumable from its last checkpoint."""

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # The study whose prompts must stay out of the training data (optional).
    study = models.ForeignKey("evalapp.Study", on_delete=models.SET_NULL, null=True, blank=True,
                              related_name="training_runs")
    name = models.CharField(max_length=200)
    config = models.JSONField()
    out_dir = models.CharField(max_length=500)
    progress = models.JSONField(default=dict, blank=True)


class Adapter(models.Model):
    """A registered LoRA adapter with everything needed to trust and reproduce it."""

    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="adapters")
    training_run = models.OneToOneField(TrainingRun, on_delete=models.SET_NULL, null=True, blank=True,
                                        related_name="adapter")
    path = models.CharField(max_length=500)
    base_ref = models.CharField(max_length=500)
    base_sha256 = models.CharField(max_length=64)
    adapter_sha256 = models.CharField(max_length=64)
    config = models.JSONField(default=dict)
    # Source hashes, row counts after each cleaning step, question ids per split.
    manifest = models.JSONField(default=dict)
    loss_curve = models.JSONField(default=list)
    train_losses = models.JSONField(default=list)
    perplexity = models.JSONField(default=dict)
    wall_seconds = models.FloatField(null=True, blank=True)
    device = models.CharField(max_length=50, blank=True)
    versions = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["created_by", "adapter_sha256"], name="adapter_unique_per_owner"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.adapter_sha256[:10]})"

    def training_question_ids(self) -> set[str]:
        ids = self.manifest.get("question_ids", {}).get("train", [])
        prompts = self.manifest.get("prompt_ids", {}).get("train", [])
        return set(ids) | set(prompts)


class WorkerHeartbeat(models.Model):
    """The last word of each Celery worker process, written on a timer inside it (modelserver.heartbeats).

    /healthz and the study page read it: a run queued while no gpu worker reports is named as such
    instead of sitting "queued" with no word of why.
    """

    hostname = models.CharField(max_length=200, unique=True)
    queues = models.JSONField(default=list)
    pid = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()

    class Meta:
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return f"{self.hostname} ({', '.join(self.queues)})"


# Judges' rows are their own module (the generation rows fill this one); importing them here registers them
# with the app and lets callers take every model server row from one place.
from .judge_models import SAFETY_KEY, Judge, JudgeAnswer, JudgeChunk, JudgeKind, JudgeMode, JudgeRun  # noqa: E402
