"""What training reports while it runs (:class:`TrainingProgress`) and what it leaves behind
(:class:`TrainingResult`, saved as ``training_result.json`` next to the adapter)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULT_FILE = "training_result.json"


@dataclass(frozen=True)
class TrainingProgress:
    phase: str  # "train" | "eval" | "perplexity" | "done"
    step: int
    total_steps: int
    loss: float | None = None
    val_loss: float | None = None
    tokens_per_s: float | None = None
    eta_s: float | None = None
    elapsed_s: float = 0.0
    epoch: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


ProgressFn = Callable[[TrainingProgress], None]


@dataclass
class TrainingResult:
    adapter_dir: str
    adapter_sha256: str
    base_ref: str
    base_path: str
    base_sha256: str
    config: dict
    manifest: dict
    loss_curve: list[dict]  # one entry per evaluation: step, train_loss (mean since the last one), val_loss
    train_losses: list[list[float]]  # [step, loss] for every step (all sessions)
    steps: list[dict]  # this session: step, loss, tokens, seconds
    perplexity: dict  # split, examples, tokens, base, adapter
    global_step: int
    total_steps: int
    resumed_from_step: int | None
    stopped_early: bool
    best_step: int | None
    best_val_loss: float | None
    tokens: dict  # train/val/test tokenisation stats
    tokens_per_s: float | None  # this session: real tokens / training-step seconds
    train_seconds: float  # optimizer steps only
    # seconds per phase: prepare (data, tokenise), load, train_loop (with eval, checkpoints), eval, save, perplexity
    timings: dict
    wall_seconds: float
    device: str
    dtype: str
    versions: dict
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingResult:
        return cls(**data)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> TrainingResult:
        return cls.from_dict(json.loads(Path(path).read_text()))


def loss_curve(log_history: Sequence[dict]) -> tuple[list[dict], list[list[float]]]:
    """(one entry per evaluation: step, mean train loss since the previous one, val loss; [step, loss] per step)."""
    train = sorted({int(e["step"]): float(e["loss"]) for e in log_history if "loss" in e}.items())
    evals = sorted({int(e["step"]): float(e["eval_loss"]) for e in log_history if "eval_loss" in e}.items())
    curve, prev = [], 0
    for step, val in evals:
        window = [loss for s, loss in train if prev < s <= step]
        curve.append({"step": step, "train_loss": sum(window) / len(window) if window else None, "val_loss": val})
        prev = step
    return curve, [[s, loss] for s, loss in train]
