"""LoRA training throughput of the bundled model on CPU: batching modes vs a naive batch-1 loop.

    .venv/bin/python bench/training.py --examples 28

The same N CounselChat training examples (a seeded sample of the train split, tokenised with
the chat template, cut at --max-length) are trained on once, in the same process, by:

  none   -- train_adapter, batches of --batch-size in random order, padded to the longest row;
  group  -- train_adapter, length-grouped batches (transformers' LengthGroupedSampler);
  pack   -- train_adapter, examples packed into rows of at most --max-length tokens;
  naive  -- a plain loop: one example per step, no padding (batch 1), same LoRA and optimizer;
  raw    -- (only when named in --modes) forward+backward of --batch-size x --max-length random
            tokens, 3 times, for LoRA on all-linear and on q_proj,v_proj: the cost of one full step.

Tokens are real (non-padding) tokens.  Per mode: median tokens/s over steps, aggregate tokens/s
(all tokens / all step seconds), share of padding, mean seconds per step; the ratio is each
mode's median over the naive loop's median.  Also extrapolates the wall time of a 50-step run of
4 x --max-length tokens from the padded modes' per-step time plus the fixed costs measured here.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sample_examples(n: int, seed: int):
    from modelserver.training import prepare_data
    from modelserver.training.evaluation import subsample

    data = prepare_data("counselchat", seed=seed)
    return subsample(data.train, n, seed), data.manifest


def run_trainer(mode: str, examples, manifest, args, tmp: Path) -> dict:
    from modelserver.training import PreparedData, TrainingConfig, train_adapter

    cfg = TrainingConfig(
        base="bundled", batching=mode, epochs=1, batch_size=args.batch_size, max_length=args.max_length,
        rank=args.rank, target_modules=args.targets if args.targets == "all-linear" else args.targets.split(","),
        eval_every=0, perplexity_max_examples=0, save_every=10_000, seed=args.seed, dropout=0.0,
        threads=args.threads,
    )
    data = PreparedData(list(examples), [], [], [], manifest)
    result = train_adapter(cfg, data, tmp / mode)
    steps = result.steps
    return {
        "steps": len(steps),
        "tokens": [s["tokens"] for s in steps],
        "padded": [s["padded_tokens"] for s in steps],
        "seconds": [s["seconds"] for s in steps],
        "timings": result.timings,
        "wall": result.wall_seconds,
    }


def run_naive(examples, args) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modelserver.inference import DEFAULT_SYSTEM_PROMPT, resolve_base
    from modelserver.training.tokens import tokenize_examples

    torch.set_num_threads(args.threads or max(1, len(os.sched_getaffinity(0))))
    torch.manual_seed(args.seed)
    base = resolve_base("bundled")
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    feats, _ = tokenize_examples(tok, examples, system_prompt=DEFAULT_SYSTEM_PROMPT, max_length=args.max_length)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, local_files_only=True)
    targets = args.targets if args.targets == "all-linear" else args.targets.split(",")
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                                             target_modules=targets, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    tokens, seconds = [], []
    for f in feats:
        start = time.perf_counter()
        out = model(input_ids=torch.tensor([f["input_ids"]]), labels=torch.tensor([f["labels"]]), use_cache=False)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
        tokens.append(len(f["input_ids"]))
    return {"steps": len(feats), "tokens": tokens, "padded": tokens, "seconds": seconds}


def run_raw(args) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from modelserver.inference import resolve_base

    torch.set_num_threads(args.threads or max(1, len(os.sched_getaffinity(0))))
    models = {}
    for targets in ("all-linear", "q_proj,v_proj"):
        model = AutoModelForCausalLM.from_pretrained(resolve_base("bundled"), dtype=torch.float32,
                                                     local_files_only=True)
        lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, task_type="CAUSAL_LM",
                          target_modules=targets if targets == "all-linear" else targets.split(","))
        models[targets] = get_peft_model(model, lora).train()
    x = torch.randint(100, 40_000, (args.batch_size, args.max_length), generator=torch.Generator().manual_seed(0))
    seconds = {t: [] for t in models}
    for _ in range(3):  # interleaved, so machine noise hits both alike
        for targets, model in models.items():
            start = time.perf_counter()
            model(input_ids=x, labels=x, use_cache=False).loss.backward()
            seconds[targets].append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
    return seconds


def summarise(run: dict) -> dict:
    rates = [t / s for t, s in zip(run["tokens"], run["seconds"]) if s > 0]
    return {
        "steps": run["steps"],
        "tokens": sum(run["tokens"]),
        "padding_share": 1 - sum(run["tokens"]) / sum(run["padded"]),
        "median_tok_s": statistics.median(rates),
        "aggregate_tok_s": sum(run["tokens"]) / sum(run["seconds"]),
        "mean_step_s": statistics.mean(run["seconds"]),
        "median_step_s": statistics.median(run["seconds"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=28, help="training examples each mode trains on once")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", default="all-linear")
    ap.add_argument("--modes", default="naive,none,group,pack")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all usable cores)")
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args()

    import torch

    modes = args.modes.split(",")
    if "raw" in modes:
        raw = run_raw(args)
        print(f"raw fwd+bwd of {args.batch_size} x {args.max_length} random tokens, {torch.get_num_threads()} threads:")
        for targets, secs in raw.items():
            times = ", ".join(f"{s:.2f}" for s in secs)
            print(f"  LoRA {targets:<14} {times} s (median {statistics.median(secs):.2f})")
        modes.remove("raw")
        if not modes:
            return
    examples, manifest = sample_examples(args.examples, args.seed)
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            start = time.perf_counter()
            if mode == "naive":
                runs[mode] = run_naive(examples, args)
            else:
                runs[mode] = run_trainer(mode, examples, manifest, args, Path(tmp))
            print(f"{mode}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
            gc.collect()

    summary = {mode: summarise(run) for mode, run in runs.items()}
    naive = summary.get("naive")
    print(f"\nbundled SmolLM2-135M, CPU fp32, {torch.get_num_threads()} threads, LoRA r={args.rank} {args.targets}, "
          f"{args.examples} examples, batch {args.batch_size}, max_length {args.max_length}")
    print(f"{'mode':<7} {'steps':>5} {'tokens':>7} {'padding':>8} {'median tok/s':>13} {'aggr tok/s':>11} "
          f"{'s/step':>7} {'x naive':>8}")
    for mode, s in summary.items():
        ratio = s["median_tok_s"] / naive["median_tok_s"] if naive else float("nan")
        print(f"{mode:<7} {s['steps']:>5} {s['tokens']:>7} {s['padding_share']:>7.1%} {s['median_tok_s']:>13.0f} "
              f"{s['aggregate_tok_s']:>11.0f} {s['median_step_s']:>7.2f} {ratio:>8.2f}")

    padded_modes = [m for m in ("group", "none") if m in runs]
    if padded_modes:
        m = padded_modes[0]
        padded_per_step = sum(runs[m]["padded"]) / summary[m]["steps"]
        per_step = summary[m]["median_step_s"] * (4 * args.max_length) / padded_per_step
        fixed = runs[m]["wall"] - sum(runs[m]["seconds"])
        print(f"\n50 steps of 4 x {args.max_length} tokens ({m} batching): ~{50 * per_step:.0f} s of steps "
              f"(median {per_step:.2f} s/step scaled to full rows) + ~{fixed:.0f} s fixed (tokenise, load, save), "
              "plus python/torch import and any evaluation / perplexity passes")
    if args.json:
        raw = {"args": vars(args), "runs": runs, "summary": summary,
               "python": platform.python_version(), "torch": torch.__version__}
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
