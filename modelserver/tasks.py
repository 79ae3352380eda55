"""Celery tasks: routing and retry policy only; the work is in services."""

from celery import shared_task

from modelserver.inference.errors import TransientGenerationError

from . import services

# Routed to the gpu queue by CELERY_TASK_ROUTES ("modelserver.*"), so a web
# process or a CPU worker never picks these up.
_GPU_TASK = {
    "bind": True,
    # acks_late + reject_on_worker_lost: a killed worker must not lose its run;
    # the message comes back and the run's lease decides who may continue it.
    "acks_late": True,
    "reject_on_worker_lost": True,
    # Only errors that may go away (CUDA out of memory, a lost device); never every exception.
    "autoretry_for": (TransientGenerationError,),
    "retry_backoff": 30,
    "retry_jitter": True,
    "max_retries": 3,
}


@shared_task(name="modelserver.generate_responses", **_GPU_TASK)
def generate_responses(self, run_id: int) -> None:
    retry_in = services.generation_run_execute(run_id=run_id, worker=self.request.hostname or "eager")
    if retry_in is not None:
        # Another worker holds the run; look again once its lease could have lapsed.
        raise self.retry(countdown=retry_in, max_retries=None)


@shared_task(name="modelserver.generate_playground", **_GPU_TASK)
def generate_playground(self, request_id: int) -> None:
    services.playground_request_execute(request_id=request_id)


@shared_task(name="modelserver.train_adapter", **_GPU_TASK)
def train_adapter(self, run_id: int) -> None:
    from . import training_services

    training_services.training_run_execute(run_id=run_id, worker=self.request.hostname or "eager")
