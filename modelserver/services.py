"""Generation runs: create, claim, execute chunk by chunk, and the playground.

torch and transformers are imported only inside the functions that run on a
worker, never at module import: the web process imports this module too.
"""

import hashlib
import logging
import threading
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from evalapp.models import Arm, Prompt, Response, Study
from modelserver.inference.errors import TransientGenerationError

from .models import GenerationRun, PlaygroundRequest, RunStatus

logger = logging.getLogger(__name__)


class GenerationError(Exception):
    """A request to generate that cannot be carried out as asked."""


# ----------------------------------------------------------------------------- seeds and params


def request_seed(run_seed: int, prompt_external_id: str, sample_index: int) -> int:
    """The sampling seed of one response.

    It leaves the arm out on purpose: both arms of a prompt draw from the same
    seed (common random numbers), which makes their comparison less noisy.
    """
    digest = hashlib.sha256(f"{run_seed}:{prompt_external_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def arm_generation_params(arm: Arm):
    from modelserver.inference.generation import DEFAULT_SYSTEM_PROMPT, GenerationParams

    values = dict(arm.generation_params or {})
    values["system_prompt"] = arm.system_prompt.strip() or DEFAULT_SYSTEM_PROMPT
    return GenerationParams.from_dict(values)


def resolve_adapter_path(reference: str) -> str:
    path = Path(reference)
    if not path.is_absolute():
        path = settings.BASE_DIR / path
    return str(path)


# ----------------------------------------------------------------------------- generation runs


def generation_run_create(
    *,
    study: Study,
    user,
    arms: list[Arm] | None = None,
    samples_per_prompt: int = 1,
    seed: int = 0,
    batch_size: int = 16,
) -> GenerationRun:
    """Create a run for every missing response of the given arms and queue it after commit."""
    arms = list(arms if arms is not None else study.arms.all())
    if not arms:
        raise GenerationError("The study has no arms to generate.")
    if any(arm.study_id != study.id for arm in arms):
        raise GenerationError("Every arm must belong to the study.")
    n_prompts = study.prompts.count()
    if not n_prompts:
        raise GenerationError("The study has no prompts: import some first.")
    if samples_per_prompt < 1 or batch_size < 1:
        raise GenerationError("Samples per prompt and batch size must be at least 1.")
    from .training_services import TrainingError, check_adapter_for_study

    for arm in arms:
        if arm.adapter:
            try:
                # Prompts may have been imported after the arm was set up: check again.
                check_adapter_for_study(resolve_adapter_path(arm.adapter), study)
            except TrainingError as exc:
                raise GenerationError(f"Arm “{arm.label}”: {exc}") from exc
    with transaction.atomic():
        # One active run per study: two runs would race for the same missing responses.
        Study.objects.select_for_update().filter(id=study.id).first()
        if GenerationRun.objects.filter(study=study, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]).exists():
            raise GenerationError("A generation run for this study is already queued or running.")
        run = GenerationRun.objects.create(
            study=study,
            created_by=user,
            samples_per_prompt=samples_per_prompt,
            seed=seed,
            batch_size=batch_size,
            total=n_prompts * len(arms) * samples_per_prompt,
        )
        run.arms.set(arms)
        transaction.on_commit(lambda: _dispatch("generate_responses", run.id))
    return run


def generation_run_resume(*, run: GenerationRun) -> GenerationRun:
    """Queue a failed (or abandoned) run again; it generates only what is missing."""
    with transaction.atomic():
        if not GenerationRun.requeue(run.id):
            raise GenerationError("Only a failed run, or a running one whose worker stopped reporting, can be resumed.")
        transaction.on_commit(lambda: _dispatch("generate_responses", run.id))
    run.refresh_from_db()
    return run


def generation_run_claim(*, run_id: int, worker: str) -> bool:
    return GenerationRun.claim(run_id, worker)


def seconds_until_claimable(*, run_id: int) -> float | None:
    """For a run held by another worker, how long until its lease lapses; None if it is finished."""
    run = GenerationRun.objects.filter(id=run_id).values("status", "heartbeat_at").first()
    if run is None or run["status"] not in (RunStatus.RUNNING, RunStatus.QUEUED):
        return None
    if run["status"] == RunStatus.QUEUED or run["heartbeat_at"] is None:
        return 0.0
    lapses_at = run["heartbeat_at"] + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)
    return max((lapses_at - timezone.now()).total_seconds(), 0.0)


def missing_keys(run: GenerationRun) -> list[tuple[Prompt, Arm, int]]:
    arms = list(run.arms.order_by("id"))
    prompts = list(run.study.prompts.order_by("id"))
    existing = set(
        Response.objects.filter(arm__in=arms, prompt__study=run.study).values_list("prompt_id", "arm_id", "sample_index")
    )
    return [
        (prompt, arm, sample)
        for arm in arms
        for prompt in prompts
        for sample in range(run.samples_per_prompt)
        if (prompt.id, arm.id, sample) not in existing
    ]


def generation_run_execute(*, run_id: int, worker: str) -> float | None:
    """Generate every missing response of the run, one transaction per chunk.

    Returns None when there is nothing more for this message to do, or the
    seconds after which the caller should try again: a redelivered message can
    arrive while the worker that holds the run is still alive, and dropping it
    then would strand the run if that worker died later.
    """
    if not GenerationRun.objects.filter(id=run_id).exists():
        logger.warning("Generation run %s is gone; nothing to do.", run_id)
        return None
    if not generation_run_claim(run_id=run_id, worker=worker):
        wait = seconds_until_claimable(run_id=run_id)
        if wait is None:
            logger.info("Generation run %s is finished; skipping.", run_id)
        else:
            logger.info("Generation run %s is held by a live worker; checking again in %.0f s.", run_id, wait + 1)
            return wait + 1
        return None
    run = GenerationRun.objects.select_related("study").get(id=run_id)
    try:
        _generate_missing(run, worker)
    except TransientGenerationError as exc:
        # Back to the queue so the task's retry can claim it again.
        GenerationRun.objects.filter(id=run.id, worker=worker).update(status=RunStatus.QUEUED, error=f"Retrying: {exc}")
        raise
    except Exception as exc:
        # Recorded on the run, which is what the researcher sees; retrying an
        # unknown error would only repeat it, so the task ends here.
        logger.exception("Generation run %s failed", run.id)
        GenerationRun.objects.filter(id=run.id).update(
            status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )
        return None
    _finish(run)
    return None


def arm_adapter_name(arm: Arm) -> str | None:
    return f"arm{arm.id}" if arm.adapter else None


def load_for_arms(arms: list[Arm]):
    """One loaded copy of the base weights for arms that share it, with each arm's adapter by name.

    The baseline arm then runs through the same wrapped model with its adapters
    disabled, so both arms use exactly the same base weights in memory.
    """
    from modelserver.inference.loading import get_cached_model

    bases = {arm.base_model for arm in arms}
    if len(bases) != 1:
        raise GenerationError("load_for_arms takes arms of one base model.")
    adapters = {arm_adapter_name(arm): resolve_adapter_path(arm.adapter) for arm in arms if arm.adapter}
    return get_cached_model(bases.pop(), adapters or None)


def _generate_missing(run: GenerationRun, worker: str) -> None:
    from modelserver.inference.generation import GenerationRequest, generate

    todo = missing_keys(run)
    by_arm: dict[int, list[tuple[Prompt, Arm, int]]] = {}
    for key in todo:
        by_arm.setdefault(key[1].id, []).append(key)
    run_arms = list(run.arms.order_by("id"))
    chunk = max(run.batch_size * settings.GENERATION_CHUNK_BATCHES, 1)
    for items in by_arm.values():
        arm = items[0][1]
        loaded = load_for_arms([a for a in run_arms if a.base_model == arm.base_model])
        params = arm_generation_params(arm)
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            requests = [
                GenerationRequest(
                    key=f"{prompt.id}:{sample}",
                    messages=prompt.messages,
                    seed=request_seed(run.seed, prompt.external_id, sample),
                )
                for prompt, _, sample in part
            ]
            outputs = generate(loaded, requests, params, adapter=arm_adapter_name(arm), batch_size=run.batch_size)
            _write_chunk(run, worker, arm, part, outputs)


def _write_chunk(run: GenerationRun, worker: str, arm: Arm, part, outputs) -> None:
    rows = []
    for (prompt, _, sample), output in zip(part, outputs, strict=True):
        provenance = dict(output.provenance)
        provenance.update(
            generation_run=run.id,
            seed=request_seed(run.seed, prompt.external_id, sample),
            seed_derivation="sha256(f'{run seed}:{prompt external id}:{sample index}')[:8] & (2**63-1); same for every arm",
            run_seed=run.seed,
            prompt_tokens=output.prompt_tokens,
            output_tokens=output.output_tokens,
            finish_reason=output.finish_reason,
            seconds=round(output.seconds, 4),
            worker=worker,
        )
        text = output.text
        if "\x00" in text:
            # PostgreSQL text cannot hold NUL; keep the position visible rather than drop it silently.
            text = text.replace("\x00", "\ufffd")
            provenance["text_sanitised"] = "NUL bytes replaced by U+FFFD"
        rows.append(Response(prompt=prompt, arm=arm, sample_index=sample, text=text, provenance=provenance))
    with transaction.atomic():
        # A redelivered message may find some of these written already: the unique
        # (prompt, arm, sample index) constraint makes the insert a no-op for them.
        Response.objects.bulk_create(rows, ignore_conflicts=True)
        done = _count_done(run)
        GenerationRun.objects.filter(id=run.id).update(done=min(done, run.total), heartbeat_at=timezone.now())


def _count_done(run: GenerationRun) -> int:
    return Response.objects.filter(
        arm__in=run.arms.all(), prompt__study_id=run.study_id, sample_index__lt=run.samples_per_prompt
    ).count()


def _finish(run: GenerationRun) -> None:
    done = _count_done(run)
    status = RunStatus.SUCCEEDED if done >= run.total else RunStatus.FAILED
    error = "" if status == RunStatus.SUCCEEDED else f"Only {done} of {run.total} responses exist after the run."
    GenerationRun.objects.filter(id=run.id).update(
        status=status, done=min(done, run.total), error=error, finished_at=timezone.now()
    )


# ----------------------------------------------------------------------------- playground


def playground_request_create(*, study: Study, user, messages: list[dict], seed: int = 0) -> PlaygroundRequest:
    from evalapp.models import validate_messages

    validate_messages(messages)
    if not study.arms.exists():
        raise GenerationError("The study has no arms yet.")
    request = PlaygroundRequest.objects.create(study=study, created_by=user, messages=messages, seed=seed)
    transaction.on_commit(lambda: _dispatch("generate_playground", request.id))
    return request


def playground_request_execute(*, request_id: int) -> None:
    from modelserver.inference.generation import GenerationRequest, generate

    claimed = PlaygroundRequest.objects.filter(id=request_id, status=RunStatus.QUEUED).update(status=RunStatus.RUNNING)
    if not claimed:
        return
    request = PlaygroundRequest.objects.select_related("study").get(id=request_id)
    try:
        outputs = []
        arms = list(request.study.arms.order_by("id"))
        for arm in arms:
            loaded = load_for_arms([a for a in arms if a.base_model == arm.base_model])
            [output] = generate(
                loaded,
                [GenerationRequest(key="playground", messages=request.messages, seed=request.seed)],
                arm_generation_params(arm),
                adapter=arm_adapter_name(arm),
                batch_size=1,
            )
            outputs.append(
                {
                    "arm_id": arm.id,
                    "label": arm.label,
                    "text": output.text.replace("\x00", "\ufffd"),
                    "output_tokens": output.output_tokens,
                    "seconds": round(output.seconds, 2),
                    "provenance": output.provenance,
                }
            )
    except Exception as exc:
        PlaygroundRequest.objects.filter(id=request_id).update(
            status=RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )
        if isinstance(exc, TransientGenerationError):
            raise
        logger.exception("Playground request %s failed", request_id)
        return
    PlaygroundRequest.objects.filter(id=request_id).update(
        status=RunStatus.SUCCEEDED, outputs=outputs, finished_at=timezone.now()
    )


# ----------------------------------------------------------------------------- dispatch


def _dispatch(task_name: str, object_id: int) -> None:
    from . import tasks

    task = getattr(tasks, task_name)
    if settings.CELERY_TASK_ALWAYS_EAGER and settings.EMPATHEVAL_EAGER_IN_THREAD:
        # The demo has no broker: run the same task in-process, off the request
        # thread, so the page can show live progress instead of hanging.
        threading.Thread(target=task.apply, args=((object_id,),), daemon=True).start()
    else:
        task.delay(object_id)
