"""Generation runs (and, later, adapters and training runs) as database rows."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class GenerationRun(models.Model):
    """Generate every missing (prompt, arm, sample index) response of a study.

    A run is claimed by a conditional update (status and a heartbeat lease), so
    two workers never run it at once; a redelivered message after a killed
    worker re-claims it once the lease has lapsed.
    """

    Status = RunStatus

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="generation_runs")
    arms = models.ManyToManyField("evalapp.Arm", related_name="generation_runs")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    samples_per_prompt = models.PositiveSmallIntegerField(default=1)
    seed = models.BigIntegerField(default=0)
    batch_size = models.PositiveSmallIntegerField(default=16)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=RunStatus.values), name="generationrun_status_valid"),
            models.CheckConstraint(condition=Q(samples_per_prompt__gte=1), name="generationrun_samples_gte_1"),
            models.CheckConstraint(condition=Q(batch_size__gte=1), name="generationrun_batch_size_gte_1"),
            models.CheckConstraint(condition=Q(done__lte=models.F("total")), name="generationrun_done_lte_total"),
        ]

    def __str__(self) -> str:
        return f"run {self.id} of study {self.study_id} ({self.status})"

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0

    @property
    def is_active(self) -> bool:
        return self.status in (RunStatus.QUEUED, RunStatus.RUNNING)


class PlaygroundRequest(models.Model):
    """A researcher's try-out conversation, answered by every arm side by side (unblinded)."""

    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="playground_requests")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    messages = models.JSONField()
    seed = models.BigIntegerField(default=0)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    # [{"arm_id", "label", "text", "provenance"}] in arm order
    outputs = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=RunStatus.values), name="playground_status_valid"),
        ]
