"""The model server's rows: generation runs, playground requests, training runs (all leased jobs) and adapters.

Every job kind shares one lifecycle (LeasedJob): QUEUED -> RUNNING -> SUCCEEDED or FAILED, one worker at a
time through a heartbeat lease, FAILED (or a lapsed RUNNING) resumable. modelserver/tasks.py applies it to
each message; ARCHITECTURE.md draws it.
"""

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


class LeasedJob(models.Model):
    """A job on the gpu queue that one worker at a time holds through a heartbeat lease.

    Every state change is a conditional update checked by its row count, so two workers never run a
    job at once and a late worker never overwrites the one that took its job over.
    """

    Status = RunStatus

    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=RunStatus.values), name="%(class)s_status_valid"),
        ]

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @staticmethod
    def _lapsed():
        # One lease for every job kind; the setting kept the name it had when only generation was leased.
        return timezone.now() - timedelta(seconds=settings.GENERATION_LEASE_SECONDS)

    @classmethod
    def _held_by(cls, job_id: int, worker: str):
        return cls.objects.filter(id=job_id, status=RunStatus.RUNNING, worker=worker[:200])

    @classmethod
    def claim(cls, job_id: int, worker: str) -> bool:
        """Take the job for this worker; False if it is gone, finished, or a live worker holds it."""
        claimable = Q(status=RunStatus.QUEUED) | Q(status=RunStatus.RUNNING, heartbeat_at__lt=cls._lapsed())
        now = timezone.now()
        return bool(cls.objects.filter(claimable, id=job_id).update(
            status=RunStatus.RUNNING, worker=worker[:200], heartbeat_at=now, started_at=now, error="",
            attempts=models.F("attempts") + 1,
        ))

    @classmethod
    def seconds_until_claimable(cls, job_id: int) -> float | None:
        """How long until a live holder's lease lapses; None if the job is gone or finished."""
        row = cls.objects.filter(id=job_id).values("status", "heartbeat_at").first()
        if row is None or row["status"] not in ACTIVE:
            return None
        if row["status"] == RunStatus.QUEUED or row["heartbeat_at"] is None:
            return 0.0
        lapses_at = row["heartbeat_at"] + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)
        return max((lapses_at - timezone.now()).total_seconds(), 0.0)

    @classmethod
    def beat(cls, job_id: int, worker: str, **fields) -> bool:
        """Renew the lease (with any progress fields); False once another worker has taken the job over."""
        return bool(cls._held_by(job_id, worker).update(heartbeat_at=timezone.now(), **fields))

    @classmethod
    def succeed(cls, job_id: int, worker: str, **fields) -> bool:
        return bool(cls._held_by(job_id, worker).update(
            status=RunStatus.SUCCEEDED, error="", finished_at=timezone.now(), **fields))

    @classmethod
    def fail(cls, job_id: int, worker: str, error: str) -> bool:
        return bool(cls._held_by(job_id, worker).update(
            status=RunStatus.FAILED, error=error, finished_at=timezone.now()))

    @classmethod
    def release(cls, job_id: int, worker: str, error: str) -> bool:
        """Give the job back to the queue (for a retry): the next message claims it at once."""
        return bool(cls._held_by(job_id, worker).update(status=RunStatus.QUEUED, error=error,
                                                        heartbeat_at=timezone.now()))

    @classmethod
    def _resumable(cls) -> Q:
        # A QUEUED job untouched for a whole lease lost its message (a broker restart, a retry that never
        # came back): without this nothing would ever run it, and it would block its study for good.
        # For a queued job, heartbeat_at is when it was last given back to the queue.
        lapsed = cls._lapsed()
        return (Q(status=RunStatus.FAILED) | Q(status=RunStatus.RUNNING, heartbeat_at__lt=lapsed)
                | Q(status=RunStatus.QUEUED, heartbeat_at__lt=lapsed)
                | Q(status=RunStatus.QUEUED, heartbeat_at__isnull=True, created_at__lt=lapsed))

    @property
    def is_resumable(self) -> bool:
        """_resumable() for a row in hand (the run lists show a Resume button without a query per run)."""
        lapsed = self._lapsed()
        if self.status == RunStatus.FAILED:
            return True
        if self.status == RunStatus.RUNNING:
            return self.heartbeat_at is not None and self.heartbeat_at < lapsed
        return self.status == RunStatus.QUEUED and (self.heartbeat_at or self.created_at) < lapsed

    @classmethod
    def requeue(cls, job_id: int) -> bool:
        """Queue again a failed job, one whose worker stopped reporting, or a queued one whose message was lost."""
        return bool(cls.objects.filter(cls._resumable(), id=job_id).update(
            status=RunStatus.QUEUED, error="", finished_at=None, heartbeat_at=timezone.now()))

    @classmethod
    def abandon(cls, job_ids, error: str) -> int:
        """Mark active jobs FAILED (resumable) whose only possible worker is known to be gone."""
        return cls.objects.filter(id__in=job_ids, status__in=ACTIVE).update(
            status=RunStatus.FAILED, error=error, finished_at=timezone.now())


class GenerationRun(LeasedJob):
    """Generate every missing (prompt, arm, sample index) response of a study.

    A run is claimed by a conditional update (status and a heartbeat lease), so
    two workers never run it at once; a redelivered message after a killed
    worker re-claims it once the lease has lapsed.
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

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0


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
