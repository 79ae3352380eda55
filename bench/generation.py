"""Generation throughput of the bundled model on CPU fp32: our batched loop vs a naive HF loop.

    .venv/bin/python bench/generation.py --repeats 3

For each repeat (configurations interleaved so machine noise hits all of them alike):
  naive   -- HF ``model.generate`` once per prompt (torch.manual_seed(seed) before each), and
  batched -- ``modelserver.inference.generation.generate`` at each --batch-sizes value,
on the same prompts (val/test-split questions from counselchat_questions.jsonl), same sampling
params, same number of new tokens, same process.  Reports generated tokens/s (median and range
over repeats) and the speed-up over the naive loop of the same repeat (median and range).

In the first repeat our loop also runs at batch 1 (reported, not used for the ratios); its
texts are the reference for batch invariance: the table counts how many responses of each
batched run are identical to the batch-of-one response (CPU fp32).  With --greedy, the naive
HF texts must equal the batch-of-one texts too (greedy is HF-exact).

Our loop prefills each prompt's system turn once per call and only the rest per row (the default of
``generate``); --full-prefill measures the one-shot prefill of every prompt instead.  Each batched run
also reports its prefill time (from the responses' provenance) and its share of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modelserver.corpus import COUNSELCHAT_QUESTIONS as DEFAULT_DATA  # noqa: E402


def load_questions(path: Path, n: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    held_out = [r for r in rows if {"val", "test"} & set(r.get("splits", []))]
    held_out.sort(key=lambda r: r["question_id"])
    if len(held_out) < n:
        raise SystemExit(f"only {len(held_out)} val/test questions in {path}, need {n}")
    return held_out[:n]


def naive_run(loaded, requests, params, stops):
    import torch

    from modelserver.inference.prompts import encode_prompt

    tok = loaded.tokenizer
    texts, n_tokens = [], 0
    start = time.perf_counter()
    with torch.inference_mode():
        for r in requests:
            _, ids = encode_prompt(tok, r.messages, params.system_prompt)
            kwargs = {"do_sample": False}
            if params.do_sample:
                kwargs = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
                torch.manual_seed(r.seed)
            out = loaded.model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=params.max_new_tokens,
                repetition_penalty=params.repetition_penalty,
                eos_token_id=stops,
                pad_token_id=tok.pad_token_id,
                **kwargs,
            )
            new = out[0, len(ids):]
            n_tokens += len(new)
            texts.append(tok.decode(new, skip_special_tokens=True).strip())
    return time.perf_counter() - start, n_tokens, texts


def batched_run(loaded, requests, params, batch_size, prefix_cache=True):
    from modelserver.inference.generation import generate

    start = time.perf_counter()
    outs = generate(loaded, requests, params, batch_size=batch_size, prefix_cache=prefix_cache)
    seconds = time.perf_counter() - start
    # every row of a batch records its batch's prefill time
    prefill = sum(o.provenance["prefill_seconds"] / o.provenance["batch_rows"] for o in outs)
    return seconds, sum(o.output_tokens for o in outs), [o.text for o in outs], prefill


def fmt(values):
    return f"{statistics.median(values):7.1f} [{min(values):.1f}-{max(values):.1f}]"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--batch-sizes", default="8,16,32")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--naive-prompts", type=int, default=0,
                    help="run the naive loop (and the batch-1 reference) on this many prompts only, picked evenly "
                         "over the length-sorted prompts (tokens/s is a rate); 0 = all")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: all CPUs in the affinity mask)")
    ap.add_argument("--greedy", action="store_true", help="greedy decoding instead of the default sampling params")
    ap.add_argument("--full-prefill", action="store_true",
                    help="our loop prefills every prompt in one forward (no system-prefix cache)")
    ap.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    import torch
    import transformers

    from modelserver.inference import GenerationParams, GenerationRequest, load_model
    from modelserver.inference.prompts import encode_prompt, stop_token_ids

    loaded = load_model("bundled", device="cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_s = time.perf_counter() - t0
    params = GenerationParams(max_new_tokens=args.max_new_tokens, do_sample=not args.greedy)
    questions = load_questions(args.prompts, args.n_prompts)
    requests = [
        GenerationRequest(q["question_id"], [{"role": "user", "content": q["text"]}], seed=i)
        for i, q in enumerate(questions)
    ]
    stops = stop_token_ids(loaded)
    lengths = [len(encode_prompt(loaded.tokenizer, r.messages, params.system_prompt)[1]) for r in requests]
    by_len = sorted(range(len(requests)), key=lambda i: lengths[i])
    if args.naive_prompts and args.naive_prompts < len(requests):
        step = len(requests) / args.naive_prompts
        subset = sorted(by_len[int(step * k + step / 2)] for k in range(args.naive_prompts))
    else:
        subset = list(range(len(requests)))
    naive_requests = [requests[i] for i in subset]
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}, "
          f"cpus {len(os.sched_getaffinity(0))}; model loaded in {load_s:.1f}s")
    print(f"{len(requests)} prompts (prompt tokens median {statistics.median(lengths):.0f}, "
          f"max {max(lengths)}, total {sum(lengths)}); naive loop and batch-1 reference on {len(subset)} of them "
          f"(prompt tokens median {statistics.median(lengths[i] for i in subset):.0f}); {params}; "
          f"prefill: {'one forward per prompt' if args.full_prefill else 'system-prefix cache'}")
    prefix_cache = not args.full_prefill

    runs: dict[str, list[dict]] = {"naive": [], "batch1": [], **{f"batch{b}": [] for b in sizes}}
    reference = None
    for rep in range(args.repeats):
        seconds, n_tok, texts = naive_run(loaded, naive_requests, params, stops)
        runs["naive"].append({"seconds": seconds, "tokens": n_tok, "tok_s": n_tok / seconds})
        print(f"repeat {rep + 1}: naive {n_tok} tok in {seconds:.1f}s = {n_tok / seconds:.1f} tok/s", flush=True)
        if reference is None:
            seconds, n_tok, reference, prefill = batched_run(loaded, naive_requests, params, 1, prefix_cache)
            same_hf = sum(x == y for x, y in zip(reference, texts))
            runs["batch1"].append({"seconds": seconds, "tokens": n_tok, "tok_s": n_tok / seconds,
                                   "prefill_seconds": prefill,
                                   "ratio": (n_tok / seconds) / runs["naive"][-1]["tok_s"],
                                   "same_as_naive_hf": same_hf})
            print(f"repeat {rep + 1}: batch  1 {n_tok} tok in {seconds:.1f}s = {n_tok / seconds:.1f} tok/s "
                  f"(reference; texts identical to naive HF: {same_hf}/{len(subset)})", flush=True)
        for b in sizes:
            seconds, n_tok, btexts, prefill = batched_run(loaded, requests, params, b, prefix_cache)
            same = sum(btexts[i] == ref for i, ref in zip(subset, reference))
            runs[f"batch{b}"].append({
                "seconds": seconds, "tokens": n_tok, "tok_s": n_tok / seconds, "prefill_seconds": prefill,
                "ratio": (n_tok / seconds) / runs["naive"][-1]["tok_s"], "same_as_batch1": same,
            })
            print(f"repeat {rep + 1}: batch {b:2d} {n_tok} tok in {seconds:.1f}s = {n_tok / seconds:.1f} tok/s "
                  f"({runs[f'batch{b}'][-1]['ratio']:.1f}x), texts identical to batch-of-one: {same}/{len(subset)}; "
                  f"prefill {prefill:.1f}s ({100 * prefill / seconds:.0f}% of the run)", flush=True)

    total = time.perf_counter() - t0
    print()
    print(f"| config | tok/s median [range] | speed-up vs naive, median [range] | texts identical to batch of 1 |")
    print("|---|---|---|---|")
    print(f"| naive HF generate, 1 prompt at a time | {fmt([r['tok_s'] for r in runs['naive']])} | 1.0x | "
          f"{runs['batch1'][0]['same_as_naive_hf']} of {len(subset)} (HF vs our batch 1) |")
    b1 = runs["batch1"][0]
    print(f"| our loop, batch 1 (first repeat only) | {b1['tok_s']:7.1f} | {b1['ratio']:.1f}x | reference |")
    for b in sizes:
        rs = runs[f"batch{b}"]
        print(f"| batched loop, batch {b} | {fmt([r['tok_s'] for r in rs])} | "
              f"{statistics.median(r['ratio'] for r in rs):.1f}x [{min(r['ratio'] for r in rs):.1f}-"
              f"{max(r['ratio'] for r in rs):.1f}] | "
              f"{', '.join(str(r['same_as_batch1']) for r in rs)} of {len(subset)} |")
    shares = ", ".join(
        f"batch {b}: {statistics.median(100 * r['prefill_seconds'] / r['seconds'] for r in runs[f'batch{b}']):.0f}%"
        for b in sizes
    )
    print(f"\nprefill share of the batched runs' time (median over repeats): {shares}")
    print(f"total wall time {total:.0f}s")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
                                         "total_seconds": total}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
