"""Trainer checkpoints under ``out_dir/checkpoints`` and the record that lets a resumed run prove
it is the same run (``checkpoints/run.json``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .config import RESUMABLE_FIELDS, TrainingConfig

CHECKPOINT_DIR = "checkpoints"
RUN_FILE = "run.json"


def run_identity(config: TrainingConfig, base_sha256: str, manifest) -> dict:
    """The settings a resumed run must match, with the data identified by content (file digests,
    ids per split), not by how its path was spelled."""
    run = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_FIELDS and k != "data"}
    run.update(
        base_sha256=base_sha256,
        data_sources=[s["sha256"] for s in manifest.sources],
        train_question_ids=manifest.question_ids.get("train"),
        val_question_ids=manifest.question_ids.get("val"),
    )
    return run


def record_or_check_run(ckpt_root: Path, run: dict, *, resuming: bool) -> None:
    """A new run writes ``run.json``; a resumed one must match it."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    if not resuming:
        (ckpt_root / RUN_FILE).write_text(json.dumps(run, indent=1))
        return
    try:
        previous = json.loads((ckpt_root / RUN_FILE).read_text())
    except (OSError, ValueError):
        raise ValueError(
            f"{ckpt_root} has checkpoints but no readable {RUN_FILE}; cannot check they belong to this run"
        ) from None
    diffs = [k for k in sorted(set(previous) | set(run)) if previous.get(k) != run.get(k)]
    if diffs:
        raise ValueError(
            f"Cannot resume from {ckpt_root}: the run differs in {', '.join(diffs)}. "
            "Only " + ", ".join(sorted(RESUMABLE_FIELDS)) + " may change on resume; use a new output directory."
        )


def checkpoint_step(path: str | Path) -> int:
    """The step of ``checkpoint-<step>``."""
    return int(Path(path).name.rsplit("-", 1)[-1])


def remove_checkpoints(out_dir: str | Path) -> None:
    """Delete ``out_dir/checkpoints`` once a run is final (they hold optimizer state, ~3x the adapter)."""
    shutil.rmtree(Path(out_dir) / CHECKPOINT_DIR, ignore_errors=True)
