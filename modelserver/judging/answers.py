"""What a judge may answer to one question, and how its text is read back.

A criterion comes as ``evalapp.rubric`` produces it (the model library cannot import evalapp, so the
few fields used here are checked again): likert ``min``..``max``, or a choice whose options the
template lists as numbers 1..n (the stored value is the option's index, as in a rater's Score). A
pairwise question has the answers A, B and S (about the same).

``parse_answer`` reads free text (an HTTP judge without logprobs) by rules constrained to the valid
answers and returns None when they do not apply: an unparseable output is counted, never guessed.

- likert: the first number in the text; it must be a whole number in range (``"7.5"``, ``"11"`` on
  1-10, ``"seven"``: None). A text that mentions the scale before its answer ("On 1-10: 8") reads as
  its first number; the template asks for the value only, and the raw text is kept to audit this.
- choice: a leading whole number is the option's number (1..n, else None); otherwise the text must
  be, or start with as a whole word, exactly one option's key or label (case-insensitive).
- pairwise: after an optional "Response"/"Answer:" prefix and punctuation, the text must start with
  A, B or S as a whole word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PAIR_ANSWERS = ("A", "B", "S")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")
_LEADING_INT = re.compile(r"^\W*?(\d+)(?![\d.,]\d)")
_PAIR = re.compile(r"^[\W_]*(?:(?:response|answer|option)\b[\W_]*)?([ABS])(?![A-Za-z0-9])", re.I)


class AnswerError(ValueError):
    """A criterion the judge cannot be asked about (its fields are missing or out of shape)."""


@dataclass(frozen=True)
class AnswerSpace:
    """The valid answers of one question: the stored ``values`` and the ``texts`` the judge writes for them."""

    kind: str  # "likert", "choice" or "pair"
    values: tuple
    texts: tuple[str, ...]
    # Whether an expected value means anything: a likert scale, or a choice analysed as ordinal.
    ordered: bool


PAIR_SPACE = AnswerSpace("pair", PAIR_ANSWERS, PAIR_ANSWERS, ordered=False)


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AnswerError(f"{what} must be a whole number, not {value!r}.")
    return value


def check_criterion(criterion: Any) -> dict:
    """The criterion itself when it has what a judge prompt needs; AnswerError names what is missing."""
    if not isinstance(criterion, dict):
        raise AnswerError("A criterion must be an object with key, question and kind.")
    key = criterion.get("key")
    where = f"Criterion {key!r}"
    if not isinstance(key, str) or not key:
        raise AnswerError("A criterion needs a key.")
    if not isinstance(criterion.get("question"), str) or not criterion["question"].strip():
        raise AnswerError(f"{where}: the question is missing.")
    kind = criterion.get("kind")
    if kind == "likert":
        low, high = _whole(criterion.get("min"), f"{where}: min"), _whole(criterion.get("max"), f"{where}: max")
        if not 0 <= low < high:
            raise AnswerError(f"{where}: a likert scale needs 0 <= min < max, not {low}-{high}.")
        labels = criterion.get("labels") or {}
        if not isinstance(labels, dict):
            raise AnswerError(f"{where}: labels must map points to anchor texts.")
    elif kind == "choice":
        options = criterion.get("options")
        if not isinstance(options, list) or len(options) < 2:
            raise AnswerError(f"{where}: a choice needs at least two options.")
        for option in options:
            if not isinstance(option, dict) or not isinstance(option.get("key"), str):
                raise AnswerError(f"{where}: each option needs a key and a label.")
    else:
        raise AnswerError(f"{where}: kind must be likert or choice, not {kind!r}.")
    return criterion


def answer_space(criterion: dict) -> AnswerSpace:
    criterion = check_criterion(criterion)
    if criterion["kind"] == "likert":
        values = tuple(range(criterion["min"], criterion["max"] + 1))
        return AnswerSpace("likert", values, tuple(str(v) for v in values), ordered=True)
    n = len(criterion["options"])
    return AnswerSpace("choice", tuple(range(n)), tuple(str(i + 1) for i in range(n)),
                       ordered=criterion.get("level") == "ordinal")


def _starts_with_word(text: str, word: str) -> bool:
    return text.startswith(word) and (len(text) == len(word) or not text[len(word)].isalnum())


def parse_answer(text: Any, criterion: dict | AnswerSpace):
    """The stored value that ``text`` answers (see the module docstring), or None when no rule applies.

    ``criterion`` is a rubric criterion or :data:`PAIR_SPACE` (then the value is "A", "B" or "S").
    """
    if not isinstance(text, str) or not text.strip():
        return None
    space = criterion if isinstance(criterion, AnswerSpace) else answer_space(criterion)
    stripped = text.strip()
    if space.kind == "pair":
        match = _PAIR.match(stripped)
        return match.group(1).upper() if match else None
    if space.kind == "likert":
        match = _NUMBER.search(stripped)
        if match is None or not re.fullmatch(r"-?\d+", match.group()):
            return None
        value = int(match.group())
        return value if value in space.values else None
    leading = _LEADING_INT.match(stripped)
    if leading:
        number = int(leading.group(1))
        return number - 1 if 1 <= number <= len(space.values) else None
    lowered = stripped.lower().lstrip("*_\"' ")
    hits = {i for i, option in enumerate(criterion["options"])
            for word in (option["key"], str(option.get("label") or option["key"]))
            if _starts_with_word(lowered, word.lower().strip())}
    return hits.pop() if len(hits) == 1 else None
