"""Queue a job's task by name, once the transaction that created the job commits; and which queue.

Services call this and never import the tasks (tasks import services: one direction, no cycle). The
task is looked up in Celery's registry by name (modelserver.apps imports the tasks at start-up), not
sent with send_task, because send_task ignores CELERY_TASK_ALWAYS_EAGER and the demo has no broker.

Where a message goes:
- a broker (REDIS_URL set): published to the job's queue (``gpu`` unless GENERATION_QUEUES names another
  for its base model, see ``queue_for_model``);
- no broker, inside ``inline()`` (the demo's preparation): run here, in this thread, before
  returning, with retries run as a worker runs them; nothing else executes that job;
- no broker, EMPATHEVAL_EAGER_IN_THREAD (the demo's web pages): run on a background thread, one thread
  for all the jobs queued together (a run's chunks), one after another, so a page can poll their
  progress instead of hanging and the web process never generates two chunks at once;
- otherwise (the test suite): run at once, exceptions propagating.

A broker that does not answer (Redis stopped) is found before the job is written: the check runs inside
the creating transaction, so the service fails with QueueUnavailable (503) and rolls back, rather than
leaving a job that no message will ever run. If Redis stops between that check and the publish after
commit, the job stays QUEUED and becomes resumable after a lease (LeasedJob._resumable), and the caller
hears so.
"""

import contextlib
import contextvars
import fnmatch
import logging
import threading

from celery import current_app
from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError

from evalapp.errors import ServiceError

logger = logging.getLogger(__name__)

GENERATE_CHUNK = "modelserver.generate_chunk"
GENERATE_PLAYGROUND = "modelserver.generate_playground"
TRAIN_ADAPTER = "modelserver.train_adapter"
JUDGE_CHUNK = "modelserver.judge_chunk"
# The queue of CELERY_TASK_ROUTES ("modelserver.*"): a model no GENERATION_QUEUES pattern names goes here.
DEFAULT_QUEUE = "gpu"

_inline = contextvars.ContextVar("modelserver_dispatch_inline", default=False)


class QueueUnavailable(ServiceError):
    """The broker does not answer: nothing can be queued now."""

    status = 503


@contextlib.contextmanager
def inline():
    """Run the jobs queued in this block in the calling thread (only where there is no broker)."""
    token = _inline.set(True)
    try:
        yield
    finally:
        _inline.reset(token)


def queue_for_model(base_ref: str) -> str:
    """The queue whose workers generate with this base model: the first GENERATION_QUEUES pattern that
    matches the reference (e.g. ``*70B*``), else ``gpu``."""
    for pattern, queue in settings.GENERATION_QUEUES.items():
        if fnmatch.fnmatchcase(base_ref, pattern):
            return queue
    return DEFAULT_QUEUE


def queue_for_models(base_refs) -> str:
    """One queue for a job that uses several models (the playground answers with every arm): the first
    that is not ``gpu``, since the card that holds the biggest model holds the others too."""
    queues = [queue_for_model(ref) for ref in base_refs]
    return next((queue for queue in queues if queue != DEFAULT_QUEUE), DEFAULT_QUEUE)


def queue_after_commit(task_name: str, job_id: int, queue: str | None = None) -> None:
    queue_all_after_commit(task_name, [(job_id, queue)])


def queue_all_after_commit(task_name: str, jobs: list[tuple[int, str | None]]) -> None:
    """Queue the task for each (job id, queue) in order (a run's chunks); queue None keeps the route (gpu)."""
    jobs = list(jobs)
    in_line = _inline.get()  # read now: the commit may come after the block has ended
    if jobs:
        if not settings.CELERY_TASK_ALWAYS_EAGER:
            check_broker()
        transaction.on_commit(lambda: _send(task_name, jobs, in_line))


def check_broker() -> None:
    """Raise QueueUnavailable unless the broker answers now (a fresh connection, no retries: a pooled one
    may still look connected to a Redis that has stopped)."""
    try:
        with current_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=0)
    except OperationalError as exc:
        logger.error("The broker does not answer: %s", exc)
        raise QueueUnavailable("The job queue is unavailable (the broker does not answer), so nothing was "
                               "queued or saved. Try again once it is back.") from exc


def resume(model, job_id: int, task_name: str, queue: str | None = None) -> bool:
    """Queue a failed (or abandoned) job of ``model`` again; False if it is in no state to resume."""
    with transaction.atomic():
        if not model.requeue(job_id):
            return False
        queue_after_commit(task_name, job_id, queue)
    return True


def _send(task_name: str, jobs: list[tuple[int, str | None]], in_line: bool) -> None:
    task = current_app.tasks[task_name]
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        for sent, (job_id, queue) in enumerate(jobs):
            try:
                # An explicit queue wins over CELERY_TASK_ROUTES.
                task.apply_async(args=(job_id,), queue=queue)
            except OperationalError as exc:
                logger.error("The broker stopped answering after %d of %d messages of %s: %s", sent, len(jobs),
                             task_name, exc)
                raise QueueUnavailable("The job queue stopped answering as the job was queued: it is saved, and "
                                       "can be resumed once the queue is back.") from exc
    elif in_line:
        for job_id, _ in jobs:
            # throw=False: a retry then runs again here, as a worker would run it, instead of escaping.
            task.apply(args=(job_id,), throw=False)
    elif settings.EMPATHEVAL_EAGER_IN_THREAD:
        def run_all():
            for job_id, _ in jobs:
                task.apply(args=(job_id,), throw=False)

        threading.Thread(target=run_all, daemon=True, name=f"{task_name}-{jobs[0][0]}").start()
    else:
        for job_id, _ in jobs:
            task.delay(job_id)
