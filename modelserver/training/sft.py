"""LoRA supervised fine-tuning of a chat model with the transformers Trainer.

Why the Trainer and not a plain loop: it already does what an interrupted CPU run needs -
checkpoints with optimizer, scheduler and RNG state, resuming at the checkpoint's step (skipping
the batches already seen), gradient accumulation with token-weighted loss, best-checkpoint
tracking and early stopping - all tested upstream.  We override only ``evaluate`` (to get a
token-weighted validation loss instead of Trainer's mean of batch means), ``compute_loss`` (to
count real tokens for tokens/s) and ``_get_train_sampler`` (length grouping that also works on
small data sets, see batching.LengthGroupedSampler).

Layout of ``out_dir``::

    adapter_model.safetensors, adapter_config.json   final (best, when evaluated) adapter
    training_result.json                              TrainingResult.to_dict()
    checkpoints/checkpoint-<step>/                    Trainer checkpoints, for resume
    checkpoints/run.json                              settings a resumed run must match

torch / transformers / peft are imported inside the functions.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from modelserver.inference.generation import DEFAULT_SYSTEM_PROMPT

from .batching import (
    BATCHING_MODES,
    IGNORE_INDEX,
    LengthGroupedSampler,
    PackedCollator,
    SFTCollator,
    TokenizeStats,
    answer_nll,
    pack_features,
    subsample,
    tokenize_conversation,
    tokenize_examples,
)
from .data import COUNSELCHAT, PreparedData, prepare_data
from .plot import plot_loss

__all__ = [
    "IGNORE_INDEX",
    "PackedCollator",
    "SFTCollator",
    "TrainingConfig",
    "TrainingProgress",
    "TrainingResult",
    "plot_loss",
    "tokenize_conversation",
    "train_adapter",
]

RESULT_FILE = "training_result.json"
CHECKPOINT_DIR = "checkpoints"
RUN_FILE = "run.json"
# Settings that may differ when resuming (how long to train and how often to look); all other
# settings must match the checkpoint's run, or the resumed run would silently be a different one.
RESUMABLE_FIELDS = frozenset({
    "max_steps", "epochs", "patience", "eval_every", "save_every", "save_total_limit", "eval_on_start",
    "eval_max_examples", "eval_batch_size", "perplexity_max_examples", "device", "threads",
})


@dataclass
class TrainingConfig:
    base: str = "bundled"
    data: str = COUNSELCHAT  # recorded in the result; train_adapter also accepts prepared data
    # LoRA
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    # optimisation
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    batch_size: int = 4
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    # tokenisation / batching
    max_length: int = 256
    batching: str = "group"  # "none" (random batches), "group" (similar lengths), "pack" (several examples a row)
    padding_side: str = "right"
    train_on: str = "all"  # assistant turns to learn: "all" or the "last"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # evaluation, early stopping, checkpoints
    eval_every: int = 50  # 0: no periodic evaluation (and no early stopping)
    eval_on_start: bool = True  # val loss of the untrained adapter (= base) as the curve's step 0
    eval_max_examples: int | None = 32  # None: all validation examples
    eval_batch_size: int = 8
    patience: int = 0  # evaluations without improvement before stopping; 0: never stop early
    save_every: int | None = None  # default: eval_every (or 50); must be a multiple of eval_every
    save_total_limit: int = 2
    perplexity_max_examples: int | None = 64  # None: all held-out examples; 0: skip perplexity
    # data split (used when train_adapter is given a source rather than prepared data)
    val_fraction: float = 0.1
    exclude_question_ids: list[str] = field(default_factory=list)
    use_source_splits: bool = True
    seed: int = 0
    device: str = "auto"
    # CPU threads; None: every core this process may use.  On a machine shared with other busy
    # processes fewer threads can be faster (OpenMP threads wait on each other when descheduled).
    threads: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        self.exclude_question_ids = sorted({str(i) for i in self.exclude_question_ids})
        checks = [
            (self.rank >= 1, "rank must be >= 1"),
            (self.alpha > 0, "alpha must be > 0"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be >= 1"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1 (or None to use epochs)"),
            (self.max_steps is not None or self.epochs > 0, "epochs must be > 0"),
            (self.max_length >= 8, "max_length must be >= 8"),
            (self.batching in BATCHING_MODES, f"batching must be one of {BATCHING_MODES}"),
            (self.padding_side in ("left", "right"), "padding_side must be 'left' or 'right'"),
            (self.train_on in ("all", "last"), "train_on must be 'all' or 'last'"),
            (bool(self.system_prompt and self.system_prompt.strip()), "system_prompt must be non-empty"),
            (self.eval_every >= 0 and self.patience >= 0, "eval_every and patience must be >= 0"),
            (self.patience == 0 or self.eval_every > 0, "patience needs eval_every > 0"),
            (self.save_every is None or self.save_every >= 1, "save_every must be >= 1"),
            (self.save_total_limit >= 1, "save_total_limit must be >= 1"),
            (self.threads is None or self.threads >= 1, "threads must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.eval_every and self.save_every and self.save_every % self.eval_every:
            # The Trainer keeps the best checkpoint only among evaluated ones.
            raise ValueError(f"save_every ({self.save_every}) must be a multiple of eval_every ({self.eval_every})")

    @property
    def checkpoint_every(self) -> int:
        return self.save_every or self.eval_every or 50

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown training setting(s): {sorted(unknown)}")
        return cls(**data)


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


# --------------------------------------------------------------------------- helpers


def library_versions() -> dict:
    import accelerate
    import peft
    import safetensors
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "safetensors": safetensors.__version__,
    }


def _resolve_device(device: str) -> str:
    from modelserver.inference.loading import resolve_device

    return resolve_device(device)


def _loss_curve(log_history: Sequence[dict]) -> tuple[list[dict], list[list[float]]]:
    train = sorted({int(e["step"]): float(e["loss"]) for e in log_history if "loss" in e}.items())
    evals = sorted({int(e["step"]): float(e["eval_loss"]) for e in log_history if "eval_loss" in e}.items())
    curve, prev = [], 0
    for step, val in evals:
        window = [loss for s, loss in train if prev < s <= step]
        curve.append({"step": step, "train_loss": sum(window) / len(window) if window else None, "val_loss": val})
        prev = step
    return curve, [[s, loss] for s, loss in train]


def _check_resume(ckpt_root: Path, run: dict) -> None:
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


# --------------------------------------------------------------------------- training


def train_adapter(
    config: TrainingConfig,
    data: PreparedData | str | Path | None = None,
    out_dir: str | Path = "adapter",
    progress: ProgressFn | None = None,
    *,
    resume: bool = False,
) -> TrainingResult:
    """Train a LoRA adapter and save it (safetensors) with ``training_result.json`` in ``out_dir``.

    ``data``: prepared data (:func:`~modelserver.training.data.prepare_data`), or a source
    (``"counselchat"`` / a file) split with the config's val_fraction / exclusions / seed;
    ``None`` means ``config.data``.  With ``resume=True`` training continues from the last
    checkpoint in ``out_dir/checkpoints`` (at that checkpoint's step); without it an existing
    checkpoint directory is an error.  ``progress`` is called with a :class:`TrainingProgress`
    after every step and evaluation; an exception raised there stops training (the last
    checkpoint stays, so the run can be resumed).
    """
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        EarlyStoppingCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_utils import get_last_checkpoint

    from modelserver.inference.loading import resolve_base, sha256_of_adapter, sha256_of_weights

    wall_start = time.monotonic()
    notes: list[str] = []
    out = Path(out_dir).expanduser()
    ckpt_root = out / CHECKPOINT_DIR
    last_ckpt = get_last_checkpoint(str(ckpt_root)) if ckpt_root.is_dir() else None
    if last_ckpt and not resume:
        raise ValueError(
            f"{ckpt_root} already holds checkpoints; pass resume=True to continue that run or use a new directory"
        )
    if data is None:
        data = config.data
    if not isinstance(data, PreparedData):
        config = replace(config, data=str(data))
        data = prepare_data(
            data,
            val_fraction=config.val_fraction,
            exclude_question_ids=config.exclude_question_ids,
            use_source_splits=config.use_source_splits,
            seed=config.seed,
        )
    manifest = data.manifest

    device = _resolve_device(config.device)
    on_cuda = device.startswith("cuda")
    if device == "cpu":
        torch.set_num_threads(config.threads or max(1, len(os.sched_getaffinity(0))))
    transformers.set_seed(config.seed)

    base_path = resolve_base(config.base)
    base_sha = sha256_of_weights(base_path)
    tokenizer = AutoTokenizer.from_pretrained(base_path, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"The tokenizer in {base_path} has no chat template; a chat model is required.")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = config.padding_side

    def tok(examples):
        return tokenize_examples(
            tokenizer, examples, system_prompt=config.system_prompt, max_length=config.max_length,
            train_on=config.train_on,
        )

    train_feats, train_stats = tok(data.train)
    if not train_feats:
        raise ValueError("No training example has an answer token left after tokenisation")
    val_feats, val_stats = tok(subsample(data.val, config.eval_max_examples, config.seed))
    held_out = list(data.test) + list(data.excluded)
    ppl_split = "test+excluded" if held_out else "val"
    ppl_feats, ppl_stats = tok(subsample(held_out or data.val, config.perplexity_max_examples, config.seed + 1))
    eval_every, patience = config.eval_every, config.patience
    if eval_every and not val_feats:
        notes.append("no validation examples: periodic evaluation and early stopping disabled")
        eval_every, patience = 0, 0

    timings = {"prepare": time.monotonic() - wall_start}
    pad_id = tokenizer.pad_token_id
    if config.batching == "pack":
        train_dataset = pack_features(train_feats, config.max_length, seed=config.seed)
        collator = PackedCollator(pad_id)
    else:
        train_dataset = train_feats
        collator = SFTCollator(pad_id, config.padding_side)

    # The data is identified by content (file digests, ids per split), not by how its path was spelled.
    run = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_FIELDS and k != "data"}
    run.update(
        base_sha256=base_sha,
        data_sources=[s["sha256"] for s in manifest.sources],
        train_question_ids=manifest.question_ids.get("train"),
        val_question_ids=manifest.question_ids.get("val"),
    )
    ckpt_root.mkdir(parents=True, exist_ok=True)
    if last_ckpt:
        _check_resume(ckpt_root, run)
    else:
        (ckpt_root / RUN_FILE).write_text(json.dumps(run, indent=1))

    dtype = torch.bfloat16 if on_cuda else torch.float32
    t0 = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, local_files_only=True)
    model.to(device)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft asks transformers a deprecated question (is_gradient_checkpointing); not ours to fix.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(model, lora)
    timings["load"] = time.monotonic() - t0

    # ------------------------------------------------------------ trainer
    meter = {"tokens": 0, "seconds": 0.0, "eval_seconds": 0.0, "steps": [], "step_start": None, "pending_tokens": 0,
             "pending_slots": 0}

    class _Trainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            n = inputs.pop("num_tokens", None)
            if n is not None and model.training:
                meter["pending_tokens"] += int(n)
                meter["pending_slots"] += int(inputs["input_ids"].numel())
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )

        def _get_train_sampler(self, train_dataset=None):
            if config.batching == "group":
                lengths = [len(f["input_ids"]) for f in train_feats]
                return LengthGroupedSampler(lengths, config.batch_size, seed=config.seed)
            return super()._get_train_sampler(train_dataset)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            start = time.monotonic()
            total, count = answer_nll(
                self.model, val_feats, pad_token_id=pad_id, batch_size=config.eval_batch_size, device=device
            )
            seconds = time.monotonic() - start
            meter["eval_seconds"] += seconds
            metrics = {
                f"{metric_key_prefix}_loss": total / max(count, 1),
                f"{metric_key_prefix}_tokens": count,
                f"{metric_key_prefix}_runtime": round(seconds, 3),
            }
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    class _Progress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            meter["first_step"] = state.global_step

        def on_step_begin(self, args, state, control, **kwargs):
            meter["step_start"] = time.monotonic()
            meter["pending_tokens"] = meter["pending_slots"] = 0

        def on_step_end(self, args, state, control, **kwargs):
            seconds = time.monotonic() - meter["step_start"]
            meter["seconds"] += seconds
            meter["tokens"] += meter["pending_tokens"]
            meter["steps"].append({
                "step": state.global_step, "loss": None, "tokens": meter["pending_tokens"],
                "padded_tokens": meter["pending_slots"], "seconds": round(seconds, 4),
            })

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs and meter["steps"] and meter["steps"][-1]["step"] == state.global_step:
                meter["steps"][-1]["loss"] = float(logs["loss"])
            if progress is None or not ("loss" in logs or "eval_loss" in logs):
                return
            done = len(meter["steps"])
            rate = meter["tokens"] / meter["seconds"] if meter["seconds"] else None
            eta = (state.max_steps - state.global_step) * meter["seconds"] / done if done else None
            progress(
                TrainingProgress(
                    phase="eval" if "eval_loss" in logs else "train",
                    step=state.global_step,
                    total_steps=state.max_steps,
                    loss=float(logs["loss"]) if "loss" in logs else None,
                    val_loss=float(logs["eval_loss"]) if "eval_loss" in logs else None,
                    tokens_per_s=rate,
                    eta_s=eta,
                    elapsed_s=time.monotonic() - wall_start,
                    epoch=state.epoch,
                )
            )

    callbacks: list = [_Progress()]
    if patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        args = TrainingArguments(
            output_dir=str(ckpt_root),
            per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.eval_batch_size,
            gradient_accumulation_steps=config.grad_accum,
            num_train_epochs=config.epochs,
            max_steps=config.max_steps or -1,
            learning_rate=config.learning_rate,
            lr_scheduler_type=config.lr_scheduler,
            warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a fraction of the total steps
            weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm,
            logging_strategy="steps",
            logging_steps=1,
            eval_strategy="steps" if eval_every else "no",
            eval_steps=eval_every or None,
            eval_on_start=bool(eval_every and config.eval_on_start and not last_ckpt),
            save_strategy="steps",
            save_steps=config.save_every or eval_every or 50,
            save_total_limit=config.save_total_limit,
            load_best_model_at_end=bool(eval_every),
            metric_for_best_model="eval_loss" if eval_every else None,
            greater_is_better=False if eval_every else None,
            restore_callback_states_from_checkpoint=True,
            seed=config.seed,
            data_seed=config.seed,
            bf16=on_cuda,
            use_cpu=device == "cpu",
            train_sampling_strategy="random",  # "group" uses our LengthGroupedSampler (_get_train_sampler)
            remove_unused_columns=False,
            dataloader_num_workers=0,
            report_to="none",
            disable_tqdm=True,
        )
    trainer = _Trainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=val_feats or None,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    # disable_tqdm makes the Trainer print every log dict; progress goes through `progress` instead.
    trainer.remove_callback(PrinterCallback)
    resumed_from = None
    if last_ckpt:
        resumed_from = int(Path(last_ckpt).name.rsplit("-", 1)[-1])
    t0 = time.monotonic()
    trainer.train(resume_from_checkpoint=last_ckpt)
    timings["train_loop"] = time.monotonic() - t0
    timings["eval"] = meter["eval_seconds"]
    state = trainer.state

    # ------------------------------------------------------------ save, perplexity, result
    model = trainer.model
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    adapter_sha = sha256_of_adapter(out)
    timings["save"] = time.monotonic() - t0

    if progress is not None:
        elapsed = time.monotonic() - wall_start
        progress(TrainingProgress("perplexity", state.global_step, state.max_steps, elapsed_s=elapsed))
    t0 = time.monotonic()
    nll_kw = {"pad_token_id": pad_id, "batch_size": config.eval_batch_size, "device": device}
    nll_adapter, n_ppl = answer_nll(model, ppl_feats, **nll_kw)
    with model.disable_adapter():
        nll_base, _ = answer_nll(model, ppl_feats, **nll_kw)
    timings["perplexity"] = time.monotonic() - t0
    perplexity = {
        "split": ppl_split,
        "examples": len(ppl_feats),
        "tokens": n_ppl,
        "base": math.exp(nll_base / n_ppl) if n_ppl else None,
        "adapter": math.exp(nll_adapter / n_ppl) if n_ppl else None,
    }

    curve, train_losses = _loss_curve(state.log_history)
    stopped_early = bool(patience) and state.global_step < state.max_steps
    # The adapter saved above is the best *checkpointed* evaluation (load_best_model_at_end).
    best_step = best_val = None
    if eval_every and state.best_model_checkpoint:
        best_step = int(Path(state.best_model_checkpoint).name.rsplit("-", 1)[-1])
        best_val = next(
            (float(e["eval_loss"]) for e in state.log_history if e.get("step") == best_step and "eval_loss" in e), None
        )
    elif eval_every:
        notes.append("no evaluated checkpoint was better than none: the adapter is the last step's")
    result = TrainingResult(
        adapter_dir=str(out.resolve()),
        adapter_sha256=adapter_sha,
        base_ref=config.base,
        base_path=str(base_path),
        base_sha256=base_sha,
        config=config.to_dict(),
        manifest=manifest.to_dict(),
        loss_curve=curve,
        train_losses=train_losses,
        steps=meter["steps"],
        perplexity=perplexity,
        global_step=state.global_step,
        total_steps=state.max_steps,
        resumed_from_step=resumed_from,
        stopped_early=stopped_early,
        best_step=best_step,
        best_val_loss=best_val,
        tokens={
            "train": asdict(train_stats),
            "val": asdict(val_stats),
            "perplexity": asdict(ppl_stats),
            "train_rows": len(train_dataset),
        },
        tokens_per_s=meter["tokens"] / meter["seconds"] if meter["seconds"] else None,
        train_seconds=round(meter["seconds"], 3),
        timings={k: round(v, 3) for k, v in timings.items()},
        wall_seconds=round(time.monotonic() - wall_start, 3),
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        versions=library_versions(),
        notes=notes,
    )
    result.save(out / RESULT_FILE)
    if progress is not None:
        progress(TrainingProgress("done", state.global_step, state.max_steps, elapsed_s=result.wall_seconds))
    return result


def remove_checkpoints(out_dir: str | Path) -> None:
    """Delete ``out_dir/checkpoints`` once a run is final (they hold optimizer state, ~3x the adapter)."""
    shutil.rmtree(Path(out_dir) / CHECKPOINT_DIR, ignore_errors=True)


__all__ += ["TokenizeStats", "remove_checkpoints", "library_versions"]
