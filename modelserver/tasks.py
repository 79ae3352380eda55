"""Celery tasks: routing and retry policy only; the work is in services.

Every job kind (a chunk of a generation or judge run, playground request, training run) goes through run_leased_job,
the one rule for a message:

- the job is gone or finished: nothing to do (a redelivered message after success is a no-op);
- a live worker holds it: look again once its lease could have lapsed (a new message with a countdown:
  dropping this one would strand the job if that worker died later);
- QUEUED, or RUNNING with a lapsed lease (its worker died): claim it and do the work;
- a transient error with retries left: give the job back to the queue and retry with backoff;
- a transient error on the last try, or any other error: the job becomes FAILED with the error, and
  the researcher can resume it.
"""

import logging

from celery import shared_task
from django.conf import settings

from modelserver.inference.errors import TransientGenerationError

from . import dispatch, judge_services, services, training_services
from .models import GenerationChunk, JudgeChunk, LeasedJob, PlaygroundRequest, TrainingRun

logger = logging.getLogger(__name__)

# Routed to the gpu queue by CELERY_TASK_ROUTES ("modelserver.*"), so a web process or a CPU worker never
# picks these up; a job for a model that GENERATION_QUEUES sends elsewhere is queued there explicitly.
_GPU_TASK = {
    "bind": True,
    # acks_late + reject_on_worker_lost: a killed worker must not lose its job;
    # the message comes back and the job's lease decides who may continue it.
    "acks_late": True,
    "reject_on_worker_lost": True,
    # Only errors that may go away (CUDA out of memory, a lost device); never every exception.
    "autoretry_for": (TransientGenerationError,),
    # Seconds before the first retry, doubling each time (with jitter); JOB_RETRY_BACKOFF_SECONDS.
    "retry_backoff": settings.JOB_RETRY_BACKOFF_SECONDS,
    "retry_jitter": True,
    "max_retries": 3,
}


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_leased_job(task, model: type[LeasedJob], job_id: int, work) -> None:
    """Apply the lifecycle to one message; ``work(job_id=, worker=)`` returns the fields of success."""
    name = f"{model._meta.verbose_name} {job_id}"
    worker = task.request.hostname or "eager"
    if not model.objects.filter(id=job_id).exists():
        logger.warning("%s is gone; nothing to do.", name.capitalize())
        return
    if not model.claim(job_id, worker):
        wait = model.seconds_until_claimable(job_id)
        if wait is None:
            logger.info("%s is finished; nothing to do.", name.capitalize())
        elif task.request.is_eager:
            # No broker: nothing would deliver the look-again message, and an eager retry would spin.
            logger.warning("%s is held by another worker; leaving it to that worker.", name.capitalize())
        else:
            logger.info("%s is held by a live worker; looking again in %.0f s.", name.capitalize(), wait + 1)
            # On the queue this message came from (as Celery's own retry does): the route would send a
            # big model's job back to the small card's queue.
            queue = (task.request.delivery_info or {}).get("routing_key")
            task.apply_async(args=(job_id,), countdown=wait + 1, queue=queue)
        return
    try:
        fields = work(job_id=job_id, worker=worker)
    except TransientGenerationError as exc:
        tries = task.request.retries + 1
        if task.request.retries >= task.max_retries:
            model.fail(job_id, worker, f"{_describe(exc)} (gave up after {tries} tries)")
            logger.error("%s failed: %s (gave up after %d tries)", name.capitalize(), exc, tries)
            return
        model.release(job_id, worker, f"Retrying ({tries} of {task.max_retries + 1} tries failed): {_describe(exc)}")
        raise  # autoretry_for schedules the retry, with backoff
    except Exception as exc:
        # Retrying an unknown error would only repeat it: recorded on the job, which is what the
        # researcher sees, and the message ends here.
        logger.exception("%s failed", name.capitalize())
        model.fail(job_id, worker, _describe(exc))
        return
    except BaseException:
        # Interrupted (Ctrl-C, a cold shutdown): hand the job back rather than leave a live-looking lease.
        model.release(job_id, worker, "Interrupted: the worker stopped before the job finished.")
        raise
    model.succeed(job_id, worker, **(fields or {}))


@shared_task(name=dispatch.GENERATE_CHUNK, **_GPU_TASK)
def generate_chunk(self, chunk_id: int) -> None:
    run_leased_job(self, GenerationChunk, chunk_id, services.generation_chunk_execute)


@shared_task(name=dispatch.GENERATE_PLAYGROUND, **_GPU_TASK)
def generate_playground(self, request_id: int) -> None:
    run_leased_job(self, PlaygroundRequest, request_id, services.playground_request_execute)


@shared_task(name=dispatch.TRAIN_ADAPTER, **_GPU_TASK)
def train_adapter(self, run_id: int) -> None:
    run_leased_job(self, TrainingRun, run_id, training_services.training_run_execute)


@shared_task(name=dispatch.JUDGE_CHUNK, **_GPU_TASK)
def judge_chunk(self, chunk_id: int) -> None:
    run_leased_job(self, JudgeChunk, chunk_id, judge_services.judge_chunk_execute)
