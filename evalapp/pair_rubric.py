"""The questions of a pairwise phase, as plain data: which of two responses is better on what.

A pairwise criterion is {"key", "question"}; every verdict is one of VERDICTS. A key that is also a key
of the study's 1-10 rubric ties the two modes together: the results set the pairwise verdict beside
the difference of the two responses' mean scores on that criterion.

When raters disagree (the stated rule, `needs_adjudication`): a pair's criterion goes to the
adjudicators when no verdict holds a strict majority of its counted judgments (for instance one "left",
one "right" and one "about the same" among three, or two against two). The preference-pairs export
uses the same majority (`majority`) and leaves out ties and pairs without one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

FIRST, SECOND, TIE = "first", "second", "tie"
VERDICTS = (FIRST, SECOND, TIE)
KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_CRITERIA = 10

# The defaults, keyed like the default 1-10 rubric so the two modes can be compared.
DEFAULT_CRITERIA = (
    {"key": "empathy", "question": "Which response is more empathetic and supportive?"},
    {"key": "fluency", "question": "Which response is more fluent?"},
)


class PairCriteriaError(ValueError):
    pass


def validate(criteria: Sequence[dict]) -> list[dict]:
    """Normalised criteria or PairCriteriaError naming what is wrong."""
    if not isinstance(criteria, (list, tuple)) or not criteria:
        raise PairCriteriaError("A pairwise phase needs at least one question.")
    if len(criteria) > MAX_CRITERIA:
        raise PairCriteriaError(f"At most {MAX_CRITERIA} questions.")
    out, seen = [], set()
    for n, criterion in enumerate(criteria, start=1):
        if not isinstance(criterion, dict):
            raise PairCriteriaError(f"Question {n} must be an object with a key and a question.")
        key = str(criterion.get("key", "")).strip()
        question = str(criterion.get("question", "")).strip()
        if not KEY.match(key):
            raise PairCriteriaError(f"Question {n}: the key must be lower-case letters, digits or _ "
                                    "(starting with a letter, at most 40).")
        if key in seen:
            raise PairCriteriaError(f"Question {n}: the key {key!r} is used twice.")
        if not question or len(question) > 300 or "\x00" in question:
            raise PairCriteriaError(f"Question {n}: write the question (at most 300 characters).")
        seen.add(key)
        out.append({"key": key, "question": question})
    return out


def parse_lines(text: str) -> list[dict]:
    """Criteria from the designer's text box, one "key: question" per line."""
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, question = line.partition(":")
        if not sep:
            raise PairCriteriaError(f"Line {n}: write it as key: question.")
        rows.append({"key": key.strip(), "question": question.strip()})
    return validate(rows)


def as_lines(criteria: Sequence[dict]) -> str:
    return "\n".join(f"{c['key']}: {c['question']}" for c in criteria)


def majority(verdicts: Sequence[str]) -> str | None:
    """The verdict held by a strict majority of `verdicts`, or None."""
    if not verdicts:
        return None
    verdict, n = Counter(verdicts).most_common(1)[0]
    return verdict if 2 * n > len(verdicts) else None


def needs_adjudication(verdicts: Sequence[str]) -> bool:
    return len(verdicts) >= 2 and majority(verdicts) is None
