"""``python -m modelserver judge``: a local model judges a JSONL file of responses on a rubric (no Django).

    python -m modelserver judge --items items.jsonl --rubric rubric.json --out scores.jsonl \
        [--base bundled] [--batch-size B] [--device auto|cpu|cuda] [--seed S]

Item lines: ``{"id": ..., "messages": [...] or "text": "...", "response": "..."}``; any other field
(an arm, a model name) is ignored and never reaches the prompt. The rubric file is a JSON list of
criteria as the site's rubric stores them (or ``{"criteria": [...]}``). One output line per item and
criterion: the value (argmax), the expected score, the distribution over valid values, the mass
outside them, the top tokens and the provenance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_rubric(path: str) -> list[dict]:
    from .answers import check_criterion

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from None
    criteria = data.get("criteria") if isinstance(data, dict) else data
    if not isinstance(criteria, list) or not criteria:
        raise ValueError(f"{path}: expected a non-empty list of criteria (or an object with 'criteria')")
    keys = [check_criterion(c)["key"] for c in criteria]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: criterion keys must be different")
    return criteria


def read_items(path: str) -> list:
    from .judge import items_from_rows

    rows = []
    fh = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc})") from None
    return items_from_rows(rows)


def add_judge_parser(sub) -> None:
    p = sub.add_parser("judge", help="judge a JSONL file of responses on a rubric with a local model")
    p.add_argument("--base", default="bundled", help="'bundled', a local HF model dir or a .gguf (default: bundled)")
    p.add_argument("--items", required=True, help="input JSONL of {id, messages|text, response} ('-' for stdin)")
    p.add_argument("--rubric", required=True, help="JSON list of criteria")
    p.add_argument("--out", required=True, help="output JSONL ('-' for stdout)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    p.add_argument("--seed", type=int, default=0, help="recorded; the probability read-out draws nothing")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    p.set_defaults(func=cmd_judge)


def cmd_judge(args: argparse.Namespace) -> int:
    from modelserver.inference import ModelLoadError, TransientGenerationError

    from .judge import judge_items

    if args.batch_size < 1:
        print("error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        criteria = read_rubric(args.rubric)
        items = read_items(args.items)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items) * len(criteria), unit="judgment", desc="judge", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:
        scores = judge_items(args.base, items, criteria, batch_size=args.batch_size, device=args.device,
                             seed=args.seed, progress=progress)
    except (ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TransientGenerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL
    finally:
        if bar is not None:
            bar.close()
    out = sys.stdout
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        out = open(args.out, "w", encoding="utf-8")
    try:
        for score in scores:
            out.write(json.dumps({"id": score.key, **{k: v for k, v in score.to_dict().items() if k != "key"}},
                                 ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0
