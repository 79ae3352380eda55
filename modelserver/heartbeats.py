"""Which Celery workers are alive, per queue: each worker process writes a heartbeat row on a timer.

A bootstep rather than Celery's own worker heartbeats: those are events, seen only by a process that
listens on the event bus (and switched off by ``--without-heartbeat``); a row in the database is read by
any web process with one query, and survives a Redis restart. Django is imported inside the functions:
evalapp.celery adds the step before Django is set up.
"""

import logging
import os
from datetime import datetime, timedelta

from celery import bootsteps

logger = logging.getLogger(__name__)


def record(hostname: str, queues: list[str], *, pid: int | None = None, started_at: datetime | None = None) -> None:
    from django.utils import timezone

    from .models import WorkerHeartbeat

    now = timezone.now()
    defaults = {"queues": sorted(queues), "pid": pid, "seen_at": now}
    if started_at is not None:
        defaults["started_at"] = started_at
    WorkerHeartbeat.objects.update_or_create(hostname=hostname[:200], defaults=defaults,
                                             create_defaults={**defaults, "started_at": started_at or now})


def forget(hostname: str) -> None:
    """A worker that stops cleanly takes its row away, so it is not counted as a silent one."""
    from .models import WorkerHeartbeat

    WorkerHeartbeat.objects.filter(hostname=hostname[:200]).delete()


def queue_status(queue: str, now: datetime | None = None) -> dict:
    """The workers of ``queue``: alive (heard within two beats) or silent, and when the last one spoke."""
    from django.conf import settings
    from django.utils import timezone

    from .models import WorkerHeartbeat

    now = now or timezone.now()
    alive_after = now - timedelta(seconds=2 * settings.WORKER_HEARTBEAT_SECONDS + 5)
    rows = [row for row in WorkerHeartbeat.objects.all() if queue in row.queues]
    alive = [row for row in rows if row.seen_at >= alive_after]
    last = max((row.seen_at for row in rows), default=None)
    return {
        "queue": queue,
        "alive": len(alive),
        "workers": [{"hostname": row.hostname, "seconds_since_seen": round((now - row.seen_at).total_seconds(), 1),
                     "alive": row in alive} for row in rows],
        "last_seen": last,
        "seconds_since_seen": None if last is None else (now - last).total_seconds(),
    }


def silent_gpu_queue(now: datetime | None = None, study=None) -> dict | None:
    """None while a worker of each GPU queue that matters is alive, or where there is no broker (the demo
    runs jobs itself); else the first silent queue's status, for the sentence "no GPU worker has reported
    for N minutes". The queues that matter: ``gpu``, and those the study's unfinished chunks wait on (a
    big model's queue, GENERATION_QUEUES)."""
    from django.conf import settings

    from .models import ACTIVE, GenerationChunk

    if settings.CELERY_TASK_ALWAYS_EAGER:
        return None
    queues = ["gpu"]
    if study is not None:
        waiting = GenerationChunk.objects.filter(run__study=study, status__in=ACTIVE).exclude(queue="gpu")
        queues += sorted(set(waiting.values_list("queue", flat=True)))
    for queue in queues:
        status = queue_status(queue, now)
        if not status["alive"]:
            seconds = status["seconds_since_seen"]
            status["minutes_since_seen"] = None if seconds is None else max(1, int(seconds // 60))
            return status
    return None


class HeartbeatStep(bootsteps.StartStopStep):
    """Writes this worker's row at start, every WORKER_HEARTBEAT_SECONDS, and deletes it at a clean stop."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None
        self.started_at = None

    def _queues(self, worker) -> list[str]:
        return sorted(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)

    def _beat(self, worker) -> None:
        from django.db import close_old_connections

        # The timer thread keeps its own connection: drop it if the database went away meanwhile.
        close_old_connections()
        try:
            record(worker.hostname, self._queues(worker), pid=os.getpid(), started_at=self.started_at)
        except Exception:  # a heartbeat that fails must never take the worker down; the next one retries
            logger.exception("Could not record this worker's heartbeat")

    def start(self, worker):
        from django.conf import settings
        from django.utils import timezone

        self.started_at = timezone.now()
        self._beat(worker)
        self.tref = worker.timer.call_repeatedly(settings.WORKER_HEARTBEAT_SECONDS, self._beat, (worker,),
                                                 priority=10)

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        try:
            forget(worker.hostname)
        except Exception:
            logger.exception("Could not remove this worker's heartbeat")
