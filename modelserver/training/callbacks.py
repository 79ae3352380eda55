"""The Trainer's hooks: a meter of real tokens and step seconds, progress reports, early stopping,
and the few Trainer methods we override.

Imports transformers at the top: :mod:`.train` imports this module only once training runs.

We override only ``evaluate`` (a token-weighted validation loss instead of Trainer's mean of batch
means), ``compute_loss`` (to count real tokens for tokens/s) and ``_get_train_sampler`` (length
grouping that also works on small data sets, see :class:`~.collate.LengthGroupedSampler`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import EarlyStoppingCallback, Trainer, TrainerCallback

from .collate import LengthGroupedSampler
from .evaluation import answer_nll
from .result import ProgressFn, TrainingProgress


@dataclass
class StepMeter:
    """What the hooks measure this session: real (unpadded) tokens and seconds per optimizer step."""

    tokens: int = 0
    seconds: float = 0.0
    eval_seconds: float = 0.0
    steps: list[dict] = field(default_factory=list)
    step_start: float = 0.0
    pending_tokens: int = 0
    pending_slots: int = 0

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.seconds if self.seconds else None


class SFTTrainer(Trainer):
    def __init__(self, *args, meter: StepMeter, group_lengths: Sequence[int] | None, group_seed: int,
                 val_features: Sequence[dict], pad_token_id: int, eval_batch_size: int, device: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.meter = meter
        self.group_lengths = group_lengths
        self.group_seed = group_seed
        self.val_features = val_features
        self.pad_token_id = pad_token_id
        self.eval_batch = eval_batch_size
        self.eval_device = device

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        n = inputs.pop("num_tokens", None)
        if n is not None and model.training:
            self.meter.pending_tokens += int(n)
            self.meter.pending_slots += int(inputs["input_ids"].numel())
        return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    def _get_train_sampler(self, train_dataset=None):
        if self.group_lengths is not None:
            return LengthGroupedSampler(self.group_lengths, self.args.per_device_train_batch_size, seed=self.group_seed)
        return super()._get_train_sampler(train_dataset)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        start = time.monotonic()
        total, count = answer_nll(
            self.model, self.val_features, pad_token_id=self.pad_token_id, batch_size=self.eval_batch,
            device=self.eval_device,
        )
        seconds = time.monotonic() - start
        self.meter.eval_seconds += seconds
        metrics = {
            f"{metric_key_prefix}_loss": total / max(count, 1),
            f"{metric_key_prefix}_tokens": count,
            f"{metric_key_prefix}_runtime": round(seconds, 3),
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class ProgressCallback(TrainerCallback):
    """Times each optimizer step into the meter and reports a :class:`TrainingProgress` per log."""

    def __init__(self, meter: StepMeter, progress: ProgressFn | None, wall_start: float):
        self.meter, self.progress, self.wall_start = meter, progress, wall_start

    def on_step_begin(self, args, state, control, **kwargs):
        self.meter.step_start = time.monotonic()
        self.meter.pending_tokens = self.meter.pending_slots = 0

    def on_step_end(self, args, state, control, **kwargs):
        meter = self.meter
        seconds = time.monotonic() - meter.step_start
        meter.seconds += seconds
        meter.tokens += meter.pending_tokens
        meter.steps.append({
            "step": state.global_step, "loss": None, "tokens": meter.pending_tokens,
            "padded_tokens": meter.pending_slots, "seconds": round(seconds, 4),
        })

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        meter = self.meter
        if "loss" in logs and meter.steps and meter.steps[-1]["step"] == state.global_step:
            meter.steps[-1]["loss"] = float(logs["loss"])
        if self.progress is None or not ("loss" in logs or "eval_loss" in logs):
            return
        done = len(meter.steps)
        self.progress(
            TrainingProgress(
                phase="eval" if "eval_loss" in logs else "train",
                step=state.global_step,
                total_steps=state.max_steps,
                loss=float(logs["loss"]) if "loss" in logs else None,
                val_loss=float(logs["eval_loss"]) if "eval_loss" in logs else None,
                tokens_per_s=meter.tokens_per_s,
                eta_s=(state.max_steps - state.global_step) * meter.seconds / done if done else None,
                elapsed_s=time.monotonic() - self.wall_start,
                epoch=state.epoch,
            )
        )


def training_callbacks(meter: StepMeter, progress: ProgressFn | None, wall_start: float, patience: int) -> list:
    callbacks: list = [ProgressCallback(meter, progress, wall_start)]
    if patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    return callbacks
