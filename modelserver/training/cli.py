"""``python -m modelserver train``: LoRA fine-tuning from the command line (no Django).

    python -m modelserver train --base bundled --data counselchat|FILE --out DIR
        [--max-steps N | --epochs E] [--lr LR] [--rank R] [--alpha A] [--dropout P]
        [--targets all-linear|q_proj,v_proj] [--max-length L] [--batch-size B] [--grad-accum G]
        [--eval-every N] [--save-every N] [--patience P] [--seed S]
        [--exclude-questions FILE] [--resume] [--batching none|group|pack] [--eval-examples N]
        [--perplexity-examples N] [--val-fraction F] [--device auto|cpu|cuda] [--threads N] [--no-progress]

Writes the adapter (adapter_model.safetensors + adapter_config.json), training_result.json and
loss.png to DIR; checkpoints go to DIR/checkpoints, and ``--resume`` continues from the last one.
Exit status: 0 done, 2 bad input, 130 interrupted (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import sys

from .config import TrainingConfig

_D = TrainingConfig()


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train`` options to ``parser`` (a subparser) and set ``func=run_cli``."""
    p = parser
    p.add_argument("--base", default=_D.base, help="'bundled', a local HF model dir or a .gguf (default: bundled)")
    p.add_argument("--data", default=_D.data, help="'counselchat' (bundled) or a .csv / .jsonl / .txt file")
    p.add_argument("--out", required=True, help="output directory for the adapter")
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--epochs", type=float, default=_D.epochs)
    p.add_argument("--lr", type=float, default=_D.learning_rate,
                   help=f"peak learning rate (default {_D.learning_rate})")
    p.add_argument("--rank", type=int, default=_D.rank)
    p.add_argument("--alpha", type=float, default=_D.alpha)
    p.add_argument("--dropout", type=float, default=_D.dropout)
    p.add_argument("--targets", default=_D.target_modules,
                   help="LoRA target modules: 'all-linear' or a comma-separated list such as q_proj,v_proj")
    p.add_argument("--max-length", type=int, default=_D.max_length, help="tokens per example (longer ones are cut)")
    p.add_argument("--batch-size", type=int, default=_D.batch_size)
    p.add_argument("--grad-accum", type=int, default=_D.grad_accum)
    p.add_argument("--batching", choices=("none", "group", "pack"), default=_D.batching,
                   help="random batches, length-grouped batches, or packed rows (default group)")
    p.add_argument("--eval-every", type=int, default=_D.eval_every, help="validation loss every N steps (0: never)")
    p.add_argument("--eval-examples", type=int, default=_D.eval_max_examples, help="validation examples used")
    p.add_argument("--perplexity-examples", type=int, default=_D.perplexity_max_examples,
                   help="held-out answers for the base/adapter perplexity (0: skip)")
    p.add_argument("--save-every", type=int, default=None, help="checkpoint every N steps (default: --eval-every)")
    p.add_argument("--patience", type=int, default=_D.patience, help="stop after N evaluations without improvement")
    p.add_argument("--val-fraction", type=float, default=_D.val_fraction,
                   help="share of questions held out for validation when the data declares no split")
    p.add_argument("--seed", type=int, default=_D.seed)
    p.add_argument("--exclude-questions", metavar="FILE",
                   help="ids never to train on (a study's prompts): one per line, a JSON list, or a JSONL "
                        "with external_id / question_id / id")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT/checkpoints")
    p.add_argument("--device", default=_D.device, help="auto (CUDA if available), cpu or cuda")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all usable cores)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.set_defaults(func=run_cli)
    return p


def add_train_parser(sub) -> None:
    """For ``modelserver.cli.SUBCOMMANDS``."""
    add_train_arguments(sub.add_parser("train", help="train a LoRA adapter"))


def _config(args: argparse.Namespace) -> TrainingConfig:
    from .sources import read_id_file

    targets = args.targets
    if isinstance(targets, str) and targets != "all-linear":
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    excluded = read_id_file(args.exclude_questions) if args.exclude_questions else []
    return TrainingConfig(
        base=args.base,
        data=args.data,
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        target_modules=targets,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        epochs=args.epochs,
        max_steps=args.max_steps,
        max_length=args.max_length,
        batching=args.batching,
        eval_every=args.eval_every,
        eval_max_examples=args.eval_examples,
        perplexity_max_examples=args.perplexity_examples,
        patience=args.patience,
        save_every=args.save_every,
        val_fraction=args.val_fraction,
        exclude_question_ids=excluded,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
    )


def run_cli(args: argparse.Namespace | list[str] | None = None) -> int:
    """Run ``train`` from parsed arguments (or an argv list); returns the exit status."""
    if not isinstance(args, argparse.Namespace):
        parser = add_train_arguments(argparse.ArgumentParser(prog="python -m modelserver train"))
        args = parser.parse_args(args)
    from pathlib import Path

    from modelserver.inference.errors import ModelLoadError

    from .plot import plot_loss
    from .sources import DataError
    from .train import train_adapter

    try:
        config = _config(args)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    bar = None
    state = {"step": None}

    def progress(p) -> None:
        nonlocal bar
        if args.no_progress:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=p.total_steps, initial=p.step, unit="step", desc="train", file=sys.stderr)
        if p.phase in ("train", "eval"):
            bar.total = p.total_steps
            bar.update(p.step - bar.n)
            post = {}
            if p.loss is not None:
                state["loss"] = p.loss
            if p.val_loss is not None:
                state["val"] = p.val_loss
            if "loss" in state:
                post["loss"] = f"{state['loss']:.3f}"
            if "val" in state:
                post["val"] = f"{state['val']:.3f}"
            if p.tokens_per_s:
                post["tok/s"] = f"{p.tokens_per_s:.0f}"
            if p.eta_s is not None:
                post["eta"] = f"{p.eta_s / 60:.1f}min"
            bar.set_postfix(post, refresh=True)
        else:
            bar.set_description(p.phase)

    try:
        result = train_adapter(config, args.data, Path(args.out), progress, resume=args.resume)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with the same command plus --resume (checkpoints in {args.out}/checkpoints)",
              file=sys.stderr)
        return 130
    except (ModelLoadError, DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    png = plot_loss(result, Path(args.out) / "loss.png")
    ppl = result.perplexity
    r = result
    lines = [
        f"adapter      {result.adapter_dir} (sha256 {result.adapter_sha256[:16]}...)",
        f"steps        {result.global_step}/{result.total_steps}"
        + (f" (resumed at {result.resumed_from_step})" if result.resumed_from_step is not None else "")
        + (" - stopped early" if result.stopped_early else ""),
        f"train loss   {r.train_losses[0][1]:.3f} -> {r.train_losses[-1][1]:.3f}" if r.train_losses else "",
        f"val loss     {r.loss_curve[0]['val_loss']:.3f} -> {r.best_val_loss:.3f} (best, step {r.best_step})"
        if r.loss_curve and r.best_val_loss is not None else "",
        f"perplexity   base {ppl['base']:.2f} -> adapter {ppl['adapter']:.2f} "
        f"on {ppl['examples']} {ppl['split']} answers" if ppl.get("base") else "",
        f"speed        {r.tokens_per_s:.0f} tokens/s, {r.train_seconds:.0f} s training, {r.wall_seconds:.0f} s total"
        if r.tokens_per_s else "",
        f"loss plot    {png}",
    ]
    print("\n".join(line for line in lines if line))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(run_cli(sys.argv[1:]))
