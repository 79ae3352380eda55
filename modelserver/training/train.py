"""``train_adapter``: one LoRA fine-tuning run, as the steps it takes.

prepare the data -> tokenise the splits -> record (or check, on resume) the run -> load the base
with a fresh LoRA -> run the Trainer -> save the adapter -> perplexity of base and adapter on
held-out questions -> ``training_result.json``.

torch / transformers / peft are imported inside the functions.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from modelserver.inference.fingerprints import sha256_of_adapter, sha256_of_weights
from modelserver.inference.loading import resolve_base, resolve_device
from modelserver.inference.provenance import library_versions

from .checkpoints import CHECKPOINT_DIR, checkpoint_step, record_or_check_run, run_identity
from .collate import PackedCollator, SFTCollator, pack_features
from .config import TrainingConfig
from .data import PreparedData, prepare_data
from .evaluation import perplexity, subsample
from .result import RESULT_FILE, ProgressFn, TrainingProgress, TrainingResult, loss_curve
from .tokens import TokenizeStats, tokenize_examples

TRAINING_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "safetensors")


@dataclass
class _Features:
    train: list[dict]
    val: list[dict]
    held_out: list[dict]  # for perplexity
    held_out_split: str
    stats: dict[str, TokenizeStats]


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
    import transformers
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_utils import get_last_checkpoint

    from .callbacks import SFTTrainer, StepMeter, training_callbacks

    wall_start = time.monotonic()
    notes: list[str] = []
    out = Path(out_dir).expanduser()
    ckpt_root = out / CHECKPOINT_DIR
    last_ckpt = get_last_checkpoint(str(ckpt_root)) if ckpt_root.is_dir() else None
    if last_ckpt and not resume:
        raise ValueError(
            f"{ckpt_root} already holds checkpoints; pass resume=True to continue that run or use a new directory"
        )
    config, data = _prepared(config, data)
    device = _use_device(config)
    transformers.set_seed(config.seed)
    base_path = resolve_base(config.base)
    base_sha = sha256_of_weights(base_path)
    tokenizer = _load_tokenizer(base_path, config.padding_side)
    feats = _tokenize_splits(tokenizer, config, data)
    eval_every, patience = config.eval_every, config.patience
    if eval_every and not feats.val:
        notes.append("no validation examples: periodic evaluation and early stopping disabled")
        eval_every, patience = 0, 0
    timings = {"prepare": time.monotonic() - wall_start}
    pad_id = tokenizer.pad_token_id
    if config.batching == "pack":
        train_dataset = pack_features(feats.train, config.max_length, seed=config.seed)
        collator = PackedCollator(pad_id)
    else:
        train_dataset = feats.train
        collator = SFTCollator(pad_id, config.padding_side)
    record_or_check_run(ckpt_root, run_identity(config, base_sha, data.manifest), resuming=bool(last_ckpt))

    t0 = time.monotonic()
    model, dtype = _lora_model(base_path, config, device)
    timings["load"] = time.monotonic() - t0

    meter = StepMeter()
    trainer = SFTTrainer(
        model=model,
        args=_training_arguments(config, ckpt_root, device, eval_every, resuming=bool(last_ckpt)),
        train_dataset=train_dataset,
        eval_dataset=feats.val or None,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=training_callbacks(meter, progress, wall_start, patience),
        meter=meter,
        group_lengths=[len(f["input_ids"]) for f in feats.train] if config.batching == "group" else None,
        group_seed=config.seed,
        val_features=feats.val,
        pad_token_id=pad_id,
        eval_batch_size=config.eval_batch_size,
        device=device,
    )
    # disable_tqdm makes the Trainer print every log dict; progress goes through `progress` instead.
    trainer.remove_callback(PrinterCallback)
    t0 = time.monotonic()
    trainer.train(resume_from_checkpoint=last_ckpt)
    timings["train_loop"] = time.monotonic() - t0
    timings["eval"] = meter.eval_seconds
    state, model = trainer.state, trainer.model

    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    adapter_sha = sha256_of_adapter(out)
    timings["save"] = time.monotonic() - t0

    if progress is not None:
        elapsed = time.monotonic() - wall_start
        progress(TrainingProgress("perplexity", state.global_step, state.max_steps, elapsed_s=elapsed))
    t0 = time.monotonic()
    ppl = perplexity(model, feats.held_out, feats.held_out_split, pad_token_id=pad_id,
                     batch_size=config.eval_batch_size, device=device)
    timings["perplexity"] = time.monotonic() - t0

    curve, train_losses = loss_curve(state.log_history)
    best_step, best_val = _best_evaluation(state, eval_every, notes)
    result = TrainingResult(
        adapter_dir=str(out.resolve()),
        adapter_sha256=adapter_sha,
        base_ref=config.base,
        base_path=str(base_path),
        base_sha256=base_sha,
        config=config.to_dict(),
        manifest=data.manifest.to_dict(),
        loss_curve=curve,
        train_losses=train_losses,
        steps=meter.steps,
        perplexity=ppl,
        global_step=state.global_step,
        total_steps=state.max_steps,
        resumed_from_step=checkpoint_step(last_ckpt) if last_ckpt else None,
        stopped_early=bool(patience) and state.global_step < state.max_steps,
        best_step=best_step,
        best_val_loss=best_val,
        tokens={**{name: asdict(s) for name, s in feats.stats.items()}, "train_rows": len(train_dataset)},
        tokens_per_s=meter.tokens_per_s,
        train_seconds=round(meter.seconds, 3),
        timings={k: round(v, 3) for k, v in timings.items()},
        wall_seconds=round(time.monotonic() - wall_start, 3),
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        versions=library_versions(TRAINING_LIBRARIES),
        notes=notes,
    )
    result.save(out / RESULT_FILE)
    if progress is not None:
        progress(TrainingProgress("done", state.global_step, state.max_steps, elapsed_s=result.wall_seconds))
    return result


def _prepared(config: TrainingConfig, data) -> tuple[TrainingConfig, PreparedData]:
    if data is None:
        data = config.data
    if isinstance(data, PreparedData):
        return config, data
    config = replace(config, data=str(data))
    return config, prepare_data(
        data,
        val_fraction=config.val_fraction,
        exclude_question_ids=config.exclude_question_ids,
        use_source_splits=config.use_source_splits,
        seed=config.seed,
    )


def _use_device(config: TrainingConfig) -> str:
    import torch

    device = resolve_device(config.device)
    if device == "cpu":
        torch.set_num_threads(config.threads or max(1, len(os.sched_getaffinity(0))))
    return device


def _load_tokenizer(base_path: Path, padding_side: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_path, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"The tokenizer in {base_path} has no chat template; a chat model is required.")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def _tokenize_splits(tokenizer, config: TrainingConfig, data: PreparedData) -> _Features:
    def tok(examples):
        return tokenize_examples(
            tokenizer, examples, system_prompt=config.system_prompt, max_length=config.max_length,
            train_on=config.train_on,
        )

    train, train_stats = tok(data.train)
    if not train:
        raise ValueError("No training example has an answer token left after tokenisation")
    val, val_stats = tok(subsample(data.val, config.eval_max_examples, config.seed))
    # Perplexity on questions never trained on nor selected on; the validation split when there are none.
    held_out = list(data.test) + list(data.excluded)
    ppl, ppl_stats = tok(subsample(held_out or data.val, config.perplexity_max_examples, config.seed + 1))
    return _Features(
        train, val, ppl, "test+excluded" if held_out else "val",
        {"train": train_stats, "val": val_stats, "perplexity": ppl_stats},
    )


def _lora_model(base_path: Path, config: TrainingConfig, device: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
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
    return model, dtype


def _training_arguments(config: TrainingConfig, ckpt_root: Path, device: str, eval_every: int, *, resuming: bool):
    from transformers import TrainingArguments

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return TrainingArguments(
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
            eval_on_start=bool(eval_every and config.eval_on_start and not resuming),
            save_strategy="steps",
            save_steps=config.save_every or eval_every or 50,
            save_total_limit=config.save_total_limit,
            load_best_model_at_end=bool(eval_every),
            metric_for_best_model="eval_loss" if eval_every else None,
            greater_is_better=False if eval_every else None,
            restore_callback_states_from_checkpoint=True,
            seed=config.seed,
            data_seed=config.seed,
            bf16=device.startswith("cuda"),
            use_cpu=device == "cpu",
            train_sampling_strategy="random",  # "group" uses our LengthGroupedSampler (SFTTrainer)
            remove_unused_columns=False,
            dataloader_num_workers=0,
            report_to="none",
            disable_tqdm=True,
        )


def _best_evaluation(state, eval_every: int, notes: list[str]) -> tuple[int | None, float | None]:
    """The saved adapter is the best *checkpointed* evaluation (load_best_model_at_end)."""
    if not eval_every:
        return None, None
    if not state.best_model_checkpoint:
        notes.append("no evaluated checkpoint was better than none: the adapter is the last step's")
        return None, None
    step = checkpoint_step(state.best_model_checkpoint)
    val = next((float(e["eval_loss"]) for e in state.log_history if e.get("step") == step and "eval_loss" in e), None)
    return step, val
