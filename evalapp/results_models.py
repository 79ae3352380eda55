"""A study's computed results, one row per state of its data: the results pages read these, never compute.

A row is keyed by the study and the fingerprint of everything its numbers depend on (evalapp.results
`_fingerprint`), unique together, so two tabs or a retried request asking for the same data find one row
and queue one computation. The task (`evalapp.compute_results`) claims a row by a conditional update and
writes its stage as it goes; the entry is written once, with DONE, so a failed computation leaves none.
Imported by evalapp.models so Django finds it; it names Study by string, so it imports nothing of the kernel.
"""

import math

from django.db import models
from django.db.models import Q


class ComputationStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class ResultsComputation(models.Model):
    study = models.ForeignKey("evalapp.Study", on_delete=models.CASCADE, related_name="results_computations")
    fingerprint = models.CharField(max_length=64)
    # Part of the fingerprint too; kept so the task knows how many resamples to draw.
    n_boot = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=ComputationStatus.choices, default=ComputationStatus.QUEUED)
    stage = models.CharField(max_length=80, blank=True)
    percent = models.PositiveSmallIntegerField(default=0)
    # What the pages show (results, the plots' summary, the text report), in evalapp.results' JSON encoding.
    entry = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    # Who holds the row while it runs: a worker whose claim was taken over cannot write its entry.
    claim = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When the last message for it was sent: a QUEUED row older than a lease lost its message.
    queued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    # Renewed at every stage: a RUNNING row whose heartbeat lapsed lost its worker.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["study", "fingerprint"], name="results_computation_once"),
            # Only a finished computation has an entry: no half-written results are ever read.
            models.CheckConstraint(condition=Q(entry__isnull=True) | Q(status=ComputationStatus.DONE),
                                   name="results_computation_entry_when_done"),
        ]
        indexes = [models.Index(fields=["study", "status", "finished_at"], name="results_computation_latest")]

    def progress(self) -> dict:
        return {"status": self.status, "stage": self.stage, "percent": self.percent, "error": self.error or None,
                "queued_at": self.queued_at.isoformat() if self.queued_at else None}


def encode_entry(value):
    """JSON that PostgreSQL takes and `decode_entry` turns back into the same values: numbers as dict keys (the
    plots' score counts) and non-finite floats (jsonb has no NaN) are spelled out; numpy scalars are Python's."""
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: encode_entry(v) for k, v in value.items()}
        return {"__pairs__": [[encode_entry(k), encode_entry(v)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [encode_entry(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy scalars and arrays
        return encode_entry(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return {"__float__": repr(value)}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # as results_json has always written anything else (dates)


def decode_entry(value):
    if isinstance(value, dict):
        if set(value) == {"__pairs__"}:
            return {decode_entry(k): decode_entry(v) for k, v in value["__pairs__"]}
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: decode_entry(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_entry(v) for v in value]
    return value
