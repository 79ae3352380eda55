"""The lifecycle every job kind shares (LeasedJob): QUEUED -> RUNNING -> SUCCEEDED or FAILED, one worker at a
time through a heartbeat lease, FAILED (or a lapsed RUNNING) resumable; and a job split into chunks that
several workers share (ChunkedRun, RunChunk). Abstract models only: the rows are in modelserver.models and
modelserver.judge_models. modelserver/tasks.py applies the lifecycle to each message; ARCHITECTURE.md draws it.
"""

from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.db.models.functions import Coalesce, Greatest
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
    def held_live(cls) -> Q:
        """Held by a worker whose lease has not lapsed."""
        return Q(status=RunStatus.RUNNING, heartbeat_at__gte=cls._lapsed())

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


class ChunkedRun(LeasedJob):
    """A job split into chunks (a concrete subclass's ``chunks``, each a RunChunk), any worker claiming any
    chunk. The run's own lease fields follow its chunks: RUNNING (with the last claimer as ``worker``) once
    a chunk is claimed, its heartbeat renewed with every chunk's, SUCCEEDED when every chunk has, FAILED
    when a chunk failed for good and none is still running. Generation runs and judge runs are such runs.
    """

    class Meta(LeasedJob.Meta):
        abstract = True

    @classmethod
    def chunk_model(cls):
        return cls._meta.get_field("chunks").related_model

    @property
    def percent(self) -> int:
        return int(100 * self.done / self.total) if self.total else 0

    @classmethod
    def lock(cls, run_id: int) -> None:
        """Take the run's row lock. Every change of a chunk's status takes it first (then the chunk's), so
        two workers finishing the last two chunks at once cannot both miss that the run is done."""
        list(cls.objects.select_for_update().filter(id=run_id).values_list("id", flat=True))

    @classmethod
    def settle(cls, run_id: int) -> None:
        """Finish the run once no chunk of it is queued or running (under ``lock``)."""
        statuses = set(cls.chunk_model().objects.filter(run_id=run_id).values_list("status", flat=True).distinct())
        if not statuses or statuses & set(ACTIVE):
            return
        # A failed chunk has already written the run's error; success clears a retry's note.
        done = {"status": RunStatus.SUCCEEDED, "error": ""} if statuses == {RunStatus.SUCCEEDED} else {}
        cls.objects.filter(id=run_id, status__in=ACTIVE).update(
            **({"status": RunStatus.FAILED} | done), finished_at=timezone.now())

    @classmethod
    def requeue_chunks(cls, run_id: int) -> list[tuple[int, str]] | None:
        """Queue again, as (chunk id, queue), every chunk of a resumable run that has not succeeded and that
        no live worker holds (a second message for a chunk is harmless: it finds the chunk taken or done).
        None if the run is in no state to resume."""
        with transaction.atomic():
            cls.lock(run_id)
            if not cls.objects.filter(cls._resumable(), id=run_id).exists():
                return None
            now = timezone.now()
            chunks = cls.chunk_model().objects.filter(run_id=run_id).exclude(
                cls.chunk_model().held_live() | Q(status=RunStatus.SUCCEEDED))
            picked = list(chunks.order_by("index").values_list("id", "queue"))
            cls.chunk_model().objects.filter(id__in=[chunk_id for chunk_id, _ in picked]).update(
                status=RunStatus.QUEUED, error="", finished_at=None, heartbeat_at=now)
            cls.objects.filter(id=run_id).update(status=RunStatus.QUEUED, error="", finished_at=None, heartbeat_at=now)
            cls.settle(run_id)
        return picked

    @classmethod
    def abandon(cls, job_ids, error: str) -> int:
        with transaction.atomic():
            ids = list(cls.objects.select_for_update().filter(id__in=job_ids, status__in=ACTIVE)
                       .values_list("id", flat=True))
            cls.chunk_model().objects.filter(run_id__in=ids, status__in=ACTIVE).update(
                status=RunStatus.FAILED, error=error, finished_at=timezone.now())
            return super().abandon(ids, error)


class RunChunk(LeasedJob):
    """A part of a ChunkedRun (a concrete subclass's ``run``) that one worker does and writes in one
    transaction. Each chunk has its own lease and message, so every worker on the chunk's queue can take
    one; the overrides below carry each change of the chunk's status over to its run, under the run's row
    lock."""

    class Meta(LeasedJob.Meta):
        abstract = True

    @classmethod
    def run_model(cls):
        return cls._meta.get_field("run").related_model

    @classmethod
    def _carry(cls, job_id: int, transition, follow) -> bool:
        """Run LeasedJob's ``transition()`` under the run's row lock, then ``follow(run_id, active_run, label)``
        if it took (``active_run``: the run's row while it is queued or running; ``label()``: "Chunk i of n")."""
        with transaction.atomic():
            row = cls.objects.filter(id=job_id).values_list("run_id", "index").first()
            if row is None:
                return False
            cls.run_model().lock(row[0])
            if not transition():
                return False
            label = lambda: f"Chunk {row[1] + 1} of {cls.objects.filter(run_id=row[0]).count()}"  # noqa: E731
            follow(row[0], cls.run_model().objects.filter(id=row[0], status__in=ACTIVE), label)
        return True

    @classmethod
    def claim(cls, job_id: int, worker: str) -> bool:
        def follow(run_id, run, label):
            attempts = cls.objects.filter(id=job_id).values_list("attempts", flat=True).get()
            now = timezone.now()
            run.update(status=RunStatus.RUNNING, worker=worker[:200], heartbeat_at=now,
                       started_at=Coalesce(models.F("started_at"), now), attempts=Greatest(models.F("attempts"), attempts))

        return cls._carry(job_id, lambda: super(RunChunk, cls).claim(job_id, worker), follow)

    @classmethod
    def beat(cls, job_id: int, worker: str, **fields) -> bool:
        return cls._carry(job_id, lambda: super(RunChunk, cls).beat(job_id, worker, **fields),
                          lambda run_id, run, label: run.update(heartbeat_at=timezone.now()))

    @classmethod
    def succeed(cls, job_id: int, worker: str, **fields) -> bool:
        def follow(run_id, run, label):
            # A retry's note on the run is stale once its chunk has succeeded; a failure's is not.
            failed = cls.objects.filter(run_id=run_id, status=RunStatus.FAILED).exists()
            run.update(heartbeat_at=timezone.now(), **({} if failed else {"error": ""}))
            cls.run_model().settle(run_id)

        return cls._carry(job_id, lambda: super(RunChunk, cls).succeed(job_id, worker, **fields), follow)

    @classmethod
    def fail(cls, job_id: int, worker: str, error: str) -> bool:
        def follow(run_id, run, label):
            # The run stops at its first failure, as a single worker's run did: the chunks not started yet
            # would mostly repeat the error. Resume queues them again with the failed one.
            cls.objects.filter(run_id=run_id, status=RunStatus.QUEUED).update(
                status=RunStatus.FAILED, error=f"Not started: {label().lower()} failed.", finished_at=timezone.now())
            run.update(error=f"{label()}: {error}")
            cls.run_model().settle(run_id)

        return cls._carry(job_id, lambda: super(RunChunk, cls).fail(job_id, worker, error), follow)

    @classmethod
    def release(cls, job_id: int, worker: str, error: str) -> bool:
        return cls._carry(job_id, lambda: super(RunChunk, cls).release(job_id, worker, error),
                          lambda run_id, run, label: run.update(error=f"{label()}: {error}",
                                                                heartbeat_at=timezone.now()))
