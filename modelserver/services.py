"""Generation runs (create, resume, generate chunk by chunk) and the playground.

torch and transformers are imported only inside the functions that run on a
worker, never at module import: the web process imports this module too.
"""

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.dispatch import Signal

from evalapp.errors import ServiceError
from evalapp.models import Arm, Prompt, Response, Study

from . import dispatch
from .inference.seeds import SEED_DERIVATION, request_seed
from .models import ACTIVE, GenerationRun, PlaygroundRequest

logger = logging.getLogger(__name__)

# Sent as each response of a run is generated (run_id, done, total): the demo draws its progress bar
# from it. The run's own `done` moves only per chunk, when the responses are written.
generation_progress = Signal()


class GenerationError(ServiceError):
    """A request to generate that cannot be carried out as asked."""

    status = 409  # the API has always answered a refused generation with Conflict


# ----------------------------------------------------------------------------- seeds and params


def arm_generation_params(arm: Arm, overrides: dict | None = None):
    """The arm's sampling settings, with a run's ``overrides`` (GenerationRun.generation_params) on top."""
    from modelserver.inference.params import DEFAULT_SYSTEM_PROMPT, GenerationParams

    values = dict(arm.generation_params or {})
    values.update(overrides or {})
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
    generation_params: dict | None = None,
) -> GenerationRun:
    """Create a run for every missing response of the given arms and queue it after commit.

    ``generation_params`` override the arms' own for this run only (and so for the provenance of
    every response it writes); a resumed run keeps them.
    """
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
        try:
            arm_generation_params(arm, generation_params)
        except (TypeError, ValueError) as exc:
            raise GenerationError(f"Arm “{arm.label}”: {exc}") from exc
        if arm.adapter:
            try:
                # Prompts may have been imported after the arm was set up: check again.
                check_adapter_for_study(resolve_adapter_path(arm.adapter), study)
            except TrainingError as exc:
                raise GenerationError(f"Arm “{arm.label}”: {exc}") from exc
    with transaction.atomic():
        # One active run per study: two runs would race for the same missing responses.
        Study.objects.select_for_update().filter(id=study.id).first()
        if GenerationRun.objects.filter(study=study, status__in=ACTIVE).exists():
            raise GenerationError("A generation run for this study is already queued or running.", status=409)
        run = GenerationRun.objects.create(
            study=study,
            created_by=user,
            samples_per_prompt=samples_per_prompt,
            seed=seed,
            batch_size=batch_size,
            total=n_prompts * len(arms) * samples_per_prompt,
            generation_params=dict(generation_params or {}),
        )
        run.arms.set(arms)
        dispatch.queue_after_commit(dispatch.GENERATE_RESPONSES, run.id)
    return run


def generation_run_resume(*, run: GenerationRun) -> GenerationRun:
    """Queue a failed (or abandoned) run again; it generates only what is missing."""
    if not dispatch.resume(GenerationRun, run.id, dispatch.GENERATE_RESPONSES):
        raise GenerationError("Only a failed run, or a running one whose worker stopped reporting, can be resumed.",
                              status=409)
    run.refresh_from_db()
    return run


def generation_runs_abandon(*, study: Study, reason: str) -> int:
    """Fail the study's active runs when the only process that could run them is known to be gone."""
    return GenerationRun.abandon(study.generation_runs.filter(status__in=ACTIVE).values("id"), reason)


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


def generation_run_execute(*, job_id: int, worker: str) -> dict:
    """Generate every missing response of a claimed run, one transaction per chunk (tasks.run_leased_job)."""
    run = GenerationRun.objects.select_related("study").get(id=job_id)
    _generate_missing(run, worker)
    done = _count_done(run)
    if done < run.total:
        raise GenerationError(f"Only {done} of {run.total} responses exist after the run.")
    return {"done": run.total}


def arm_adapter_name(arm: Arm) -> str | None:
    return f"arm{arm.id}" if arm.adapter else None


def load_for_arms(arms: list[Arm]):
    """One loaded copy of the base weights for arms that share it, with each arm's adapter by name.

    The baseline arm then runs through the same wrapped model with its adapters
    disabled, so both arms use exactly the same base weights in memory.
    """
    from modelserver.inference.cache import get_cached_model

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
    generated = [0]

    def progress(done: int, total: int) -> None:
        generation_progress.send(sender=GenerationRun, run_id=run.id, done=generated[0] + done, total=len(todo))
        if done == total:
            generated[0] += total

    for items in by_arm.values():
        arm = items[0][1]
        loaded = load_for_arms([a for a in run_arms if a.base_model == arm.base_model])
        params = arm_generation_params(arm, run.generation_params)
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
            outputs = generate(loaded, requests, params, adapter=arm_adapter_name(arm), batch_size=run.batch_size,
                               progress=progress)
            _write_chunk(run, worker, arm, part, outputs)


def _write_chunk(run: GenerationRun, worker: str, arm: Arm, part, outputs) -> None:
    rows = []
    for (prompt, _, sample), output in zip(part, outputs, strict=True):
        provenance = dict(output.provenance)
        provenance.update(
            generation_run=run.id,
            seed=request_seed(run.seed, prompt.external_id, sample),
            seed_derivation=SEED_DERIVATION,
            run_seed=run.seed,
            prompt_tokens=output.prompt_tokens,
            output_tokens=output.output_tokens,
            finish_reason=output.finish_reason,
            seconds=round(output.seconds, 4),
            worker=worker,
        )
        if run.generation_params:
            # What this run set over the arm's own settings (provenance["params"] holds the result).
            provenance["run_generation_params"] = dict(run.generation_params)
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
        GenerationRun.beat(run.id, worker, done=min(_count_done(run), run.total))


def _count_done(run: GenerationRun) -> int:
    return Response.objects.filter(
        arm__in=run.arms.all(), prompt__study_id=run.study_id, sample_index__lt=run.samples_per_prompt
    ).count()


# ----------------------------------------------------------------------------- playground


def playground_request_create(*, study: Study, user, messages: list[dict], seed: int = 0) -> PlaygroundRequest:
    from evalapp.models import validate_messages

    validate_messages(messages)
    if not study.arms.exists():
        raise GenerationError("The study has no arms yet.")
    request = PlaygroundRequest.objects.create(study=study, created_by=user, messages=messages, seed=seed)
    dispatch.queue_after_commit(dispatch.GENERATE_PLAYGROUND, request.id)
    return request


def playground_request_execute(*, job_id: int, worker: str) -> dict:
    """Answer a claimed request with every arm in turn (tasks.run_leased_job); each answer renews the lease."""
    from modelserver.inference.generation import GenerationRequest, generate

    request = PlaygroundRequest.objects.select_related("study").get(id=job_id)
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
        PlaygroundRequest.beat(job_id, worker)
    return {"outputs": outputs}
