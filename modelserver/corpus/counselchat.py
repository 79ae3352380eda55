"""The bundled CounselChat files (Bertagnolli 2020, MIT licence: ``data/LICENSE-counsel-chat.txt``).

``counselchat_questions.jsonl``: one question a line (``question_id`` slug, ``text``, ``topic``,
``splits``, ``source_question_ids``); ``counselchat_answers.csv``: the therapists' answers, keyed
by the CSV's ``questionID``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from functools import cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
COUNSELCHAT_QUESTIONS = DATA_DIR / "counselchat_questions.jsonl"
COUNSELCHAT_ANSWERS = DATA_DIR / "counselchat_answers.csv"
COUNSELCHAT_LICENSE = DATA_DIR / "LICENSE-counsel-chat.txt"


@cache
def _most_upvoted_answers() -> dict[str, tuple[int, str]]:
    best: dict[str, tuple[int, str]] = {}
    if not COUNSELCHAT_ANSWERS.exists():
        return best
    with COUNSELCHAT_ANSWERS.open(encoding="utf-8", newline="") as handle:
        for record in csv.DictReader(handle):
            upvotes = int(record.get("upvotes") or 0)
            key = record["questionID"]
            if key not in best or upvotes > best[key][0]:
                best[key] = (upvotes, record["answerText"])
    return best


def best_counselchat_answer(source_ids: Iterable) -> str:
    """The most up-voted answer to any of a question's CSV ``questionID``s ("" when none)."""
    answers = _most_upvoted_answers()
    candidates = [answers[str(i)] for i in source_ids if str(i) in answers]
    return max(candidates)[1] if candidates else ""
