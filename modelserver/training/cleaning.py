"""Cleaning training examples; each step records how many rows it changed or dropped.

Drop rows with an empty turn, strip HTML (nh3 with no allowed tags, then ``html.unescape``),
normalise whitespace, drop rows that became empty, drop exact duplicate conversations (first kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from modelserver.corpus import normalise_whitespace, strip_html

from .sources import Example


@dataclass(frozen=True)
class CleaningStep:
    step: str
    rows: int  # rows left after the step
    changed: int = 0  # rows whose text the step modified
    dropped: int = 0


def clean_examples(examples: Sequence[Example]) -> tuple[list[Example], list[CleaningStep]]:
    """Drop empty rows, strip HTML, normalise whitespace, drop exact duplicates; counts after each step."""
    steps = [CleaningStep("loaded", len(examples))]
    kept = [e for e in examples if all(m["content"].strip() for m in e.messages)]
    steps.append(CleaningStep("drop_empty", len(kept), dropped=len(examples) - len(kept)))

    def apply(rows, fn):
        out, changed = [], 0
        for e in rows:
            msgs = tuple({"role": m["role"], "content": fn(m["content"])} for m in e.messages)
            if msgs != e.messages:
                changed += 1
                e = replace(e, messages=msgs)
            out.append(e)
        return out, changed

    kept, changed = apply(kept, strip_html)
    steps.append(CleaningStep("strip_html", len(kept), changed=changed))
    kept, changed = apply(kept, normalise_whitespace)
    steps.append(CleaningStep("normalise_whitespace", len(kept), changed=changed))
    before = len(kept)
    kept = [e for e in kept if all(m["content"] for m in e.messages)]
    steps.append(CleaningStep("drop_empty_after_cleaning", len(kept), dropped=before - len(kept)))
    seen: set[tuple] = set()
    unique = []
    for e in kept:
        k = e.key()
        if k not in seen:
            seen.add(k)
            unique.append(e)
    steps.append(CleaningStep("drop_duplicates", len(unique), dropped=len(kept) - len(unique)))
    return unique, steps
