"""Command line for the model server, usable without Django.

    python -m modelserver generate --prompts prompts.jsonl --out out.jsonl \
        [--base bundled] [--adapter DIR [--baseline]] [--max-new-tokens N] [--temperature T]
        [--top-p P] [--repetition-penalty R] [--greedy] [--seed S] [--batch-size B]
        [--system-prompt TEXT] [--device auto|cpu|cuda]

Input lines: ``{"id": ..., "messages": [{"role": "user", "content": ...}, ...]}`` or
``{"id": ..., "text": "..."}``; an optional per-line ``"seed"`` overrides the derived one.
Without ``--adapter`` the baseline (base model) is generated; with ``--adapter`` the adapter
arm, and with ``--adapter --baseline`` both arms (one output line per prompt and arm).

Subcommands are registered by the functions in ``SUBCOMMANDS``: ``train`` (modelserver.training.cli) and
``judge`` (modelserver.judging.cli) are added there.
torch / transformers are only imported (via modelserver.inference) once a command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path


class InputError(ValueError):
    pass


def read_prompts(path: str, base_seed: int) -> list:
    from modelserver.corpus import validate_messages
    from modelserver.inference import GenerationRequest, request_seed

    requests = []
    seen: set[str] = set()
    fh = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{path}:{lineno}: invalid JSON ({exc})") from None
            if not isinstance(row, dict) or "id" not in row:
                raise InputError(f"{path}:{lineno}: each line needs an 'id'")
            key = str(row["id"])
            if key in seen:
                raise InputError(f"{path}:{lineno}: duplicate id {key!r}")
            seen.add(key)
            if "messages" in row:
                messages = row["messages"]
            elif isinstance(row.get("text"), str):
                messages = [{"role": "user", "content": row["text"]}]
            else:
                raise InputError(f"{path}:{lineno}: needs 'messages' (list) or 'text' (string)")
            try:
                messages = validate_messages(messages)
            except ValueError as exc:
                raise InputError(f"{path}:{lineno}: {exc}") from None
            seed = row.get("seed")
            seed = request_seed(base_seed, key) if seed is None else int(seed)
            requests.append(GenerationRequest(key=key, messages=messages, seed=seed))
    if not requests:
        raise InputError(f"{path}: no prompts")
    return requests


def add_generate_parser(sub) -> None:
    from modelserver.inference import DEFAULT_SYSTEM_PROMPT, GenerationParams

    d = GenerationParams()
    p = sub.add_parser("generate", help="generate responses for a JSONL file of prompts")
    p.add_argument("--base", default="bundled", help="'bundled', a local HF model dir or a .gguf (default: bundled)")
    p.add_argument("--adapter", metavar="DIR", help="LoRA adapter directory (adapter arm)")
    p.add_argument("--baseline", action="store_true",
                   help="also generate the baseline arm (implied when no --adapter is given)")
    p.add_argument("--prompts", required=True, help="input JSONL ('-' for stdin)")
    p.add_argument("--out", required=True, help="output JSONL ('-' for stdout)")
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty)
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--seed", type=int, default=0, help="run seed; each prompt's seed is derived from it and its id")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--system-prompt", default=DEFAULT_SYSTEM_PROMPT)
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from modelserver.inference import GenerationParams, ModelLoadError, TransientGenerationError, generate, load_model

    try:
        params = GenerationParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            repetition_penalty=args.repetition_penalty,
            do_sample=not args.greedy,
            system_prompt=args.system_prompt,
        )
        requests = read_prompts(args.prompts, args.seed)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2

    adapters = {"adapter": args.adapter} if args.adapter else None
    arms: list[str | None] = []
    if args.adapter is None or args.baseline:
        arms.append(None)
    if args.adapter:
        arms.append("adapter")
    try:
        loaded = load_model(args.base, adapters, device=args.device)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(requests) * len(arms), unit="resp", desc="generate", file=sys.stderr)
    out = sys.stdout if args.out == "-" else None
    try:
        if out is None:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            out = open(args.out, "w", encoding="utf-8")
        for arm in arms:
            last = 0

            def progress(done: int, total: int) -> None:
                nonlocal last
                if bar is not None:
                    bar.update(done - last)
                    bar.set_postfix(arm="baseline" if arm is None else "adapter")
                last = done

            outputs = generate(loaded, requests, params, adapter=arm, batch_size=args.batch_size, progress=progress)
            for o in outputs:
                out.write(json.dumps({
                    "id": o.key,
                    "arm": o.provenance["arm"],
                    "adapter_path": args.adapter if arm else None,
                    "text": o.text,
                    "finish_reason": o.finish_reason,
                    "prompt_tokens": o.prompt_tokens,
                    "output_tokens": o.output_tokens,
                    "seconds": round(o.seconds, 4),
                    "provenance": o.provenance,
                }, ensure_ascii=False) + "\n")
            out.flush()
    except TransientGenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL
    finally:
        if bar is not None:
            bar.close()
        if out is not None and out is not sys.stdout:
            out.close()
    return 0


# Each entry adds one subcommand to the `python -m modelserver` parser (set `func` via set_defaults).
def _add_train_parser(sub) -> None:
    from modelserver.training.cli import add_train_parser

    add_train_parser(sub)


def _add_judge_parser(sub) -> None:
    from modelserver.judging.cli import add_judge_parser

    add_judge_parser(sub)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_generate_parser, _add_train_parser,
                                                                   _add_judge_parser]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m modelserver", description="EmpathEval model server (no Django).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
