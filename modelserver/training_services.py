"""Training runs and the adapter registry; the overlap rule between an adapter and a study.

torch is imported only inside the worker-side function, never at module import.
"""

import json
import logging
import time
from pathlib import Path

from django.conf import settings
from django.db import transaction

from evalapp.errors import ServiceError
from evalapp.models import Study

from . import dispatch
from .inference.errors import TransientGenerationError
from .models import Adapter, TrainingRun

logger = logging.getLogger(__name__)
RESULT_FILE = "training_result.json"


class TrainingError(ServiceError):
    """A training request, or an adapter for a study, that cannot be accepted as asked."""


def adapter_manifest(adapter_path: str) -> dict | None:
    """The training data manifest saved next to an adapter, or None for adapters trained elsewhere."""
    result = Path(adapter_path) / RESULT_FILE
    if not result.is_file():
        return None
    try:
        return json.loads(result.read_text())["manifest"]
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(f"{result} is unreadable: {exc}") from exc


def adapter_study_overlap(adapter_path: str, study: Study) -> list[str] | None:
    """Study prompt ids whose answers the adapter was trained on; None when that cannot be known."""
    manifest = adapter_manifest(adapter_path)
    if manifest is None:
        return None
    trained = set(manifest.get("question_ids", {}).get("train", [])) | set(manifest.get("prompt_ids", {}).get("train", []))
    return sorted(set(study.prompts.values_list("external_id", flat=True)) & trained)


def check_adapter_for_study(adapter_path: str, study: Study) -> None:
    overlap = adapter_study_overlap(adapter_path, study)
    if overlap:
        shown = ", ".join(overlap[:20]) + (f" and {len(overlap) - 20} more" if len(overlap) > 20 else "")
        raise TrainingError(
            f"The adapter was trained on {len(overlap)} of this study's prompts ({shown}); "
            "evaluate it on questions it never saw, or retrain it excluding them."
        )


def adapter_register(*, path: str, user, name: str, training_run: TrainingRun | None = None) -> Adapter:
    data = json.loads((Path(path) / RESULT_FILE).read_text())
    adapter, _ = Adapter.objects.update_or_create(
        created_by=user,
        adapter_sha256=data["adapter_sha256"],
        defaults={
            "name": name, "training_run": training_run, "path": str(path), "base_ref": data["base_ref"],
            "base_sha256": data["base_sha256"], "config": data["config"], "manifest": data["manifest"],
            "loss_curve": data["loss_curve"], "train_losses": data.get("train_losses", []),
            "perplexity": data["perplexity"], "wall_seconds": data["wall_seconds"], "device": data["device"],
            "versions": data["versions"],
        },
    )
    return adapter


def training_run_create(*, user, name: str, config: dict, study: Study | None = None) -> TrainingRun:
    config = dict(config)
    if study is not None:
        # The study's prompts never enter training: that is what makes the comparison honest.
        config["exclude_question_ids"] = sorted(set(config.get("exclude_question_ids", []))
                                                | set(study.prompts.values_list("external_id", flat=True)))
    with transaction.atomic():
        run = TrainingRun.objects.create(created_by=user, study=study, name=name, config=config, out_dir="")
        run.out_dir = str(Path(settings.EMPATHEVAL_ADAPTER_DIR) / f"training-run-{run.id}")
        run.save(update_fields=["out_dir"])
        dispatch.queue_after_commit(dispatch.TRAIN_ADAPTER, run.id, _queue(run))
    return run


def training_run_resume(*, run: TrainingRun) -> None:
    if not dispatch.resume(TrainingRun, run.id, dispatch.TRAIN_ADAPTER, _queue(run)):
        raise TrainingError("Only a failed training, or one whose worker stopped reporting, can be resumed.",
                            status=409)


def _queue(run: TrainingRun) -> str:
    return dispatch.queue_for_model(str(run.config.get("base") or "bundled"))


def training_run_execute(*, job_id: int, worker: str) -> dict:
    """Train a claimed run, from its last checkpoint if it has one, and register the adapter.

    Called by tasks.run_leased_job, which records any failure on the run; CUDA running out of memory is
    passed on as transient, so the task retries (from the checkpoints) instead of failing the run.
    """
    import torch

    from modelserver import training

    run = TrainingRun.objects.get(id=job_id)
    last_write = [0.0]

    def progress(p):
        # Throttled: a progress row per step would hammer the database on a GPU.
        if time.monotonic() - last_write[0] >= 2 or p.phase == "done":
            last_write[0] = time.monotonic()
            TrainingRun.beat(job_id, worker, progress=p.to_dict())

    config = training.TrainingConfig.from_dict(run.config)
    resume = (Path(run.out_dir) / "checkpoints").is_dir()
    try:
        training.train_adapter(config, None, run.out_dir, progress, resume=resume)
    except torch.cuda.OutOfMemoryError as exc:
        raise TransientGenerationError(f"CUDA out of memory while training: {exc}") from exc
    adapter = adapter_register(path=run.out_dir, user=run.created_by, name=run.name, training_run=run)
    logger.info("Training run %s registered adapter %s", job_id, adapter.id)
    return {}
