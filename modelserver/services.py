"""Generation runs (create and split into chunks, resume, generate one chunk) and the playground.

torch and transformers are imported only inside the functions that run on a
worker, never at module import: the web process imports this module too.
"""

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.dispatch import Signal

from evalapp.errors import ServiceError
from evalapp.models import Arm, Prompt, Response, Study

from . import dispatch
from .inference.seeds import SEED_DERIVATION, request_seed
from .models import ACTIVE, GenerationChunk, GenerationRun, PlaygroundRequest, RunStatus

logger = logging.getLogger(__name__)

# Sent as each response of a run is generated (run_id, done, total: the run's responses to generate, those of
# its finished chunks and of this one so far): the demo draws its progress bar from it. The run's own `done`
# moves only per chunk, when the responses are written.
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
        _split(run)
    run.refresh_from_db()
    return run


def generation_run_resume(*, run: GenerationRun) -> GenerationRun:
    """Queue again the chunks of a failed (or abandoned) run that did not succeed; each generates only
    what is missing. A run made before runs had chunks is split now."""
    with transaction.atomic():
        chunks = GenerationRun.requeue_chunks(run.id)
        if chunks is None:
            raise GenerationError("Only a failed run, or a running one whose worker stopped reporting, can be "
                                  "resumed.", status=409)
        if chunks:
            dispatch.queue_all_after_commit(dispatch.GENERATE_CHUNK, chunks)
        elif not run.chunks.exists():
            _split(run)
    run.refresh_from_db()
    return run


def generation_runs_abandon(*, study: Study, reason: str) -> int:
    """Fail the study's active runs when the only process that could run them is known to be gone."""
    return GenerationRun.abandon(study.generation_runs.filter(status__in=ACTIVE).values("id"), reason)


def missing_keys(run: GenerationRun) -> list[tuple[int, Arm, int]]:
    """(prompt id, arm, sample index) of every response of the run not written yet, in generation order."""
    arms = list(run.arms.order_by("id"))
    prompt_ids = list(run.study.prompts.order_by("id").values_list("id", flat=True))
    existing = set(
        Response.objects.filter(arm__in=arms, prompt__study=run.study).values_list("prompt_id", "arm_id", "sample_index")
    )
    return [
        (prompt_id, arm, sample)
        for arm in arms
        for prompt_id in prompt_ids
        for sample in range(run.samples_per_prompt)
        if (prompt_id, arm.id, sample) not in existing
    ]


def _split(run: GenerationRun) -> None:
    """Cut the run's missing responses into chunks (per arm, GENERATION_CHUNK_BATCHES batches each) and
    queue one message per chunk, on its arm's queue, after commit. Called inside the creating transaction.

    The chunks are fixed here rather than by each worker as it goes, so that any number of workers split
    the same work the same way: each chunk generates the same batches, with the same seeds, whoever runs it.
    """
    size = max(run.batch_size * settings.GENERATION_CHUNK_BATCHES, 1)
    by_arm: dict[Arm, list[list[int]]] = {}
    for prompt_id, arm, sample in missing_keys(run):
        by_arm.setdefault(arm, []).append([prompt_id, sample])
    chunks = [
        GenerationChunk(run=run, arm=arm, queue=dispatch.queue_for_model(arm.base_model), keys=keys[start:start + size],
                        size=len(keys[start:start + size]))
        for arm, keys in by_arm.items() for start in range(0, len(keys), size)
    ]
    for index, chunk in enumerate(chunks):
        chunk.index = index
    GenerationChunk.objects.bulk_create(chunks)
    done = min(_count_done(run), run.total)
    if chunks:
        GenerationRun.objects.filter(id=run.id).update(done=done)
        dispatch.queue_all_after_commit(dispatch.GENERATE_CHUNK, [(chunk.id, chunk.queue) for chunk in chunks])
    else:
        # Nothing is missing: the run is done as it starts, and no worker needs to hear of it.
        GenerationRun.objects.filter(id=run.id).update(status=RunStatus.SUCCEEDED, done=done,
                                                       finished_at=run.created_at)


def generation_chunk_execute(*, job_id: int, worker: str) -> dict:
    """Generate the missing responses of a claimed chunk and write them in one transaction
    (tasks.run_leased_job). A chunk delivered again after its worker died generates only what is missing."""
    from modelserver.inference.generation import GenerationRequest, generate

    chunk = GenerationChunk.objects.select_related("run", "arm").get(id=job_id)
    run, arm = chunk.run, chunk.arm
    prompts = Prompt.objects.in_bulk([prompt_id for prompt_id, _ in chunk.keys])
    existing = set(Response.objects.filter(arm=arm, prompt_id__in=prompts).values_list("prompt_id", "sample_index"))
    part = [(prompts[prompt_id], sample) for prompt_id, sample in chunk.keys if (prompt_id, sample) not in existing]
    if part:
        loaded = load_for_arms([a for a in run.arms.all() if a.base_model == arm.base_model])
        # A first load can take longer than a chunk: renew the lease now, or see that it was taken over.
        if not GenerationChunk.beat(chunk.id, worker):
            logger.warning("Chunk %s of run %s was taken over while its model loaded; leaving it.", chunk.index, run.id)
            return {}
        requests = [
            GenerationRequest(key=f"{prompt.id}:{sample}", messages=prompt.messages,
                              seed=request_seed(run.seed, prompt.external_id, sample))
            for prompt, sample in part
        ]
        outputs = generate(loaded, requests, arm_generation_params(arm, run.generation_params),
                           adapter=arm_adapter_name(arm), batch_size=run.batch_size,
                           progress=_progress(chunk, worker, len(chunk.keys) - len(part)))
        _write_chunk(chunk, worker, part, outputs)
    present = Response.objects.filter(arm=arm, prompt_id__in=prompts).values_list("prompt_id", "sample_index")
    if not {tuple(key) for key in chunk.keys} <= set(present):
        raise GenerationError(f"Some responses of chunk {chunk.index + 1} are missing after it was written.")
    return {}


def _progress(chunk: GenerationChunk, worker: str, skipped: int):
    """The progress callback of one chunk: the demo's signal, and the lease renewed as rows finish (a
    chunk that runs longer than expected must not look abandoned while its worker is alive)."""
    from time import monotonic

    sizes = GenerationChunk.objects.filter(run_id=chunk.run_id).aggregate(
        total=Sum("size"), done=Sum("size", filter=Q(status=RunStatus.SUCCEEDED)))
    before = (sizes["done"] or 0) + skipped
    every = max(settings.GENERATION_LEASE_SECONDS / 4, 1)
    last_beat = [monotonic()]

    def progress(done: int, total: int) -> None:
        generation_progress.send(sender=GenerationRun, run_id=chunk.run_id, done=before + done,
                                 total=sizes["total"] or 0)
        if monotonic() - last_beat[0] >= every:
            last_beat[0] = monotonic()
            GenerationChunk.beat(chunk.id, worker)

    return progress


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


def _write_chunk(chunk: GenerationChunk, worker: str, part, outputs) -> None:
    run = chunk.run
    rows = []
    for (prompt, sample), output in zip(part, outputs, strict=True):
        provenance = dict(output.provenance)
        provenance.update(
            generation_run=run.id,
            generation_chunk=chunk.index,
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
        rows.append(Response(prompt=prompt, arm=chunk.arm, sample_index=sample, text=text, provenance=provenance))
    with transaction.atomic():
        # The run's row lock first (as every chunk's change of status takes it): the count below then sees
        # the rows of every chunk committed before this one, whichever worker wrote them.
        GenerationRun.lock(run.id)
        # A worker whose lease was taken over may still be writing: the unique (prompt, arm, sample index)
        # constraint makes the insert a no-op for rows the other one wrote first.
        Response.objects.bulk_create(rows, ignore_conflicts=True)
        GenerationRun.objects.filter(id=run.id).update(done=min(_count_done(run), run.total))
        GenerationChunk.beat(chunk.id, worker)


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
    queue = dispatch.queue_for_models(study.arms.values_list("base_model", flat=True))
    dispatch.queue_after_commit(dispatch.GENERATE_PLAYGROUND, request.id, queue)
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
