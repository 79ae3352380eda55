"""Splitting by question, never by row: all answers to one question land in one split."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .sources import Example

SPLITS = ("train", "val", "test", "excluded")


@dataclass
class Split:
    train: list[Example]
    val: list[Example]
    test: list[Example]
    excluded: list[Example]
    method: str

    def question_ids(self) -> dict[str, list[str]]:
        return {name: sorted({e.question_id for e in getattr(self, name)}) for name in SPLITS}

    def prompt_ids(self) -> dict[str, list[str]]:
        return {name: sorted({p for e in getattr(self, name) for p in e.prompt_ids}) for name in SPLITS}


def split_by_question(
    examples: Sequence[Example],
    val_fraction: float = 0.1,
    *,
    test_question_ids: Iterable[str] = (),
    exclude_question_ids: Iterable[str] = (),
    question_splits: dict[str, frozenset[str]] | None = None,
    seed: int = 0,
) -> Split:
    """Assign whole questions to train / val / test / excluded.

    * A question whose id or any prompt id is in ``exclude_question_ids`` (a study's prompts)
      goes to ``excluded``: never trained on, never used for model selection.
    * ``test_question_ids`` go to ``test``.
    * With ``question_splits`` (declared by the source, e.g. CounselChat's questions file) a
      question is train only if every split it declares is train; one with any test answer
      goes to test, else one with any val answer to val.
    * The remaining questions are shuffled with ``seed`` and ``val_fraction`` of them go to val.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    excluded_ids = {str(i) for i in exclude_question_ids}
    test_ids = {str(i) for i in test_question_ids}
    question_splits = question_splits or {}
    by_question: dict[str, list[Example]] = {}
    for e in examples:
        by_question.setdefault(e.question_id, []).append(e)

    assignment: dict[str, str] = {}
    undecided = []
    for qid, rows in by_question.items():
        ids = {qid} | {p for e in rows for p in e.prompt_ids}
        declared = question_splits.get(qid, frozenset())
        if ids & excluded_ids:
            assignment[qid] = "excluded"
        elif ids & test_ids or "test" in declared:
            assignment[qid] = "test"
        elif declared and declared != {"train"}:
            assignment[qid] = "val" if "val" in declared or "validation" in declared else "test"
        elif declared == {"train"}:
            assignment[qid] = "train"
        else:
            undecided.append(qid)
    undecided.sort()
    random.Random(seed).shuffle(undecided)
    n_val = round(len(undecided) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(undecided) > 1 and "val" not in assignment.values():
        n_val = 1
    for i, qid in enumerate(undecided):
        assignment[qid] = "val" if i < n_val else "train"

    parts: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for e in examples:
        parts[assignment[e.question_id]].append(e)
    if question_splits and undecided:
        method = "declared splits; undeclared questions shuffled by seed"
    elif question_splits:
        method = "declared splits"
    else:
        method = "questions shuffled by seed"
    return Split(parts["train"], parts["val"], parts["test"], parts["excluded"], method)
