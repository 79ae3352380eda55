"""Queue a job's task by name, once the transaction that created the job commits.

Services call this and never import the tasks (tasks import services: one direction, no cycle). The
task is looked up in Celery's registry by name (modelserver.apps imports the tasks at start-up), not
sent with send_task, because send_task ignores CELERY_TASK_ALWAYS_EAGER and the demo has no broker.

Where a message goes:
- a broker (REDIS_URL set): published to the gpu queue;
- no broker, inside ``inline()`` (the demo's preparation): run here, in this thread, before
  returning, with retries run as a worker runs them; nothing else executes that job;
- no broker, EMPATHEVAL_EAGER_IN_THREAD (the demo's web pages): run on a background thread, so a
  page can poll its progress instead of hanging;
- otherwise (the test suite): run at once, exceptions propagating.
"""

import contextlib
import contextvars
import logging
import threading

from celery import current_app
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

GENERATE_RESPONSES = "modelserver.generate_responses"
GENERATE_PLAYGROUND = "modelserver.generate_playground"
TRAIN_ADAPTER = "modelserver.train_adapter"

_inline = contextvars.ContextVar("modelserver_dispatch_inline", default=False)


@contextlib.contextmanager
def inline():
    """Run the jobs queued in this block in the calling thread (only where there is no broker)."""
    token = _inline.set(True)
    try:
        yield
    finally:
        _inline.reset(token)


def queue_after_commit(task_name: str, job_id: int) -> None:
    in_line = _inline.get()  # read now: the commit may come after the block has ended
    transaction.on_commit(lambda: _send(task_name, job_id, in_line))


def resume(model, job_id: int, task_name: str) -> bool:
    """Queue a failed (or abandoned) job of ``model`` again; False if it is in no state to resume."""
    with transaction.atomic():
        if not model.requeue(job_id):
            return False
        queue_after_commit(task_name, job_id)
    return True


def _send(task_name: str, job_id: int, in_line: bool) -> None:
    task = current_app.tasks[task_name]
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        task.delay(job_id)
    elif in_line:
        # throw=False: a retry then runs again here, as a worker would run it, instead of escaping.
        task.apply(args=(job_id,), throw=False)
    elif settings.EMPATHEVAL_EAGER_IN_THREAD:
        threading.Thread(target=task.apply, kwargs={"args": (job_id,), "throw": False}, daemon=True,
                         name=f"{task_name}-{job_id}").start()
    else:
        task.delay(job_id)
