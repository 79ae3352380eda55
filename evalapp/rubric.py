"""A study's rubric as data: the criteria raters answer, checked, parsed and compared.

Pure (no Django), so the codebook, the analysis of an exported file and the forms share one
definition. A criterion is a dict:

    key        short identifier, [a-z][a-z0-9_]*, unique in the rubric (the export's `scale` column)
    question   what raters are asked
    kind       "likert" (whole numbers min..max) or "choice" (named options)
    min, max   likert only; labels: {"point": "anchor"} for any points in range (may be empty)
    options    choice only: [{"key", "label"}], stored as their index 0..n-1
    not_sure   "" or the label of a "not sure" answer; it counts as missing in agreement and
               in the comparison, and is counted and reported on its own
    rationale  "none", "optional" or "required": a free-text reason beside the answer
    level      "interval", "ordinal" or "nominal": which agreement metric fits (ICC only for
               interval; nominal is the only level a choice may have unless its options are ordered)
    description  optional longer guidance shown under the question
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "KINDS", "LEVELS", "RATIONALE", "RubricError", "answer_errors", "answer_text", "disagrees", "key_hints", "normalise",
    "option_letters", "parse_answer", "point_key", "points", "score_label", "validate",
]

KINDS = ("likert", "choice")
LEVELS = ("interval", "ordinal", "nominal")
RATIONALE = ("none", "optional", "required")
MAX_CRITERIA = 12
MAX_POINTS = 21  # 0-20 still fits a row of buttons; a wider scale is a slider, not a rubric item
MAX_OPTIONS = 8
NOT_SURE_KEY = "not_sure"
NOT_SURE_LETTER = "n"
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
# Keyboard letters for choice options: "n" is "not sure" everywhere, and "?" shows the keys.
_LETTERS = "abcdefghijklmopqrsuvwxyz"  # without n (not sure) and t (10 on a 0-10 scale)


class RubricError(ValueError):
    """A rubric that can't be used; the message says which criterion and why."""


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value.strip())
    return None


def normalise(criterion: dict) -> dict:
    """One criterion checked and filled in (defaults, choice bounds); raises RubricError."""
    if not isinstance(criterion, dict):
        raise RubricError("Each criterion must be an object with key, question and kind.")
    key = str(criterion.get("key", "")).strip()
    where = f"Criterion {key!r}" if key else "A criterion"
    if not _KEY.match(key):
        raise RubricError(f"{where}: the key must be lower-case letters, digits and _, starting with a letter "
                          "(at most 40 characters).")
    question = str(criterion.get("question", "")).strip()
    if not question:
        raise RubricError(f"{where}: the question raters are asked is missing.")
    kind = criterion.get("kind", "likert")
    if kind not in KINDS:
        raise RubricError(f"{where}: kind must be likert or choice, not {kind!r}.")
    rationale = criterion.get("rationale", "none") or "none"
    if rationale not in RATIONALE:
        raise RubricError(f"{where}: rationale must be none, optional or required.")
    not_sure = str(criterion.get("not_sure", "") or "").strip()
    out: dict[str, Any] = {"key": key, "question": question[:500], "kind": kind, "rationale": rationale,
                           "not_sure": not_sure[:100], "description": str(criterion.get("description", "") or "")[:2000]}
    if kind == "likert":
        low, high = _int(criterion.get("min")), _int(criterion.get("max"))
        if low is None or high is None:
            raise RubricError(f"{where}: a likert scale needs whole-number min and max.")
        if not low < high:
            raise RubricError(f"{where}: min ({low}) must be below max ({high}).")
        if low < 0 or high - low + 1 > MAX_POINTS:
            raise RubricError(f"{where}: a likert scale runs from 0 or above and has at most {MAX_POINTS} points.")
        labels = criterion.get("labels") or {}
        if not isinstance(labels, dict):
            raise RubricError(f"{where}: labels must map scale points to their anchor text.")
        clean = {}
        for point, text in labels.items():
            value = _int(point)
            if value is None or not low <= value <= high:
                raise RubricError(f"{where}: label for {point!r} is not a point of the scale {low}-{high}.")
            if str(text).strip():
                clean[str(value)] = str(text).strip()[:200]
        level = criterion.get("level", "interval")
        if level not in ("interval", "ordinal"):
            raise RubricError(f"{where}: a likert scale is analysed as interval or ordinal, not {level!r}.")
        out.update(min=low, max=high, labels=dict(sorted(clean.items(), key=lambda kv: int(kv[0]))), options=[],
                   level=level)
    else:
        options = criterion.get("options") or []
        if not isinstance(options, list) or not 2 <= len(options) <= MAX_OPTIONS:
            raise RubricError(f"{where}: a choice needs 2 to {MAX_OPTIONS} options.")
        clean_options = []
        for option in options:
            option = option if isinstance(option, dict) else {"key": option, "label": option}
            okey = str(option.get("key", "")).strip()
            if not _KEY.match(okey) or okey == NOT_SURE_KEY:
                raise RubricError(f"{where}: option key {okey!r} must be lower-case letters, digits and _ "
                                  f"(and not {NOT_SURE_KEY}: use not_sure for that).")
            clean_options.append({"key": okey, "label": str(option.get("label") or okey).strip()[:200]})
        if len({o["key"] for o in clean_options}) != len(clean_options):
            raise RubricError(f"{where}: option keys must be different.")
        level = criterion.get("level", "nominal")
        if level not in ("nominal", "ordinal"):
            raise RubricError(f"{where}: a choice is analysed as nominal (or ordinal when its options are "
                              f"ordered), not {level!r}.")
        out.update(min=0, max=len(clean_options) - 1, labels={}, options=clean_options, level=level)
    return out


def validate(criteria: Sequence[dict]) -> list[dict]:
    """The whole rubric checked: 1 to 12 criteria with different keys; returns them normalised."""
    if not isinstance(criteria, list | tuple) or not criteria:
        raise RubricError("A rubric needs at least one criterion.")
    if len(criteria) > MAX_CRITERIA:
        raise RubricError(f"A rubric has at most {MAX_CRITERIA} criteria; this one has {len(criteria)}.")
    if _holds_nul(criteria):
        # PostgreSQL cannot store it in text or JSON; refused here rather than as a database error.
        raise RubricError("A rubric's text must not contain the NUL character (\\x00).")
    out = [normalise(c) for c in criteria]
    keys = [c["key"] for c in out]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise RubricError(f"Criterion keys must be different: {', '.join(repeated)} appears more than once.")
    return out


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


def points(criterion: dict) -> list[int]:
    return list(range(criterion["min"], criterion["max"] + 1))


def option_letters(criterion: dict) -> list[str]:
    return list(_LETTERS[: len(criterion["options"])])


def point_key(criterion: dict, value: int) -> str:
    """The key that answers this likert point: its digit on scales up to 9; on 1-10 (or 2-10...) 0 is
    10; on 0-10, t is 10; wider scales have no keys (they are clicked)."""
    if criterion["max"] <= 9:
        return str(value)
    if criterion["max"] == 10:
        if criterion["min"] >= 1:
            return str(value % 10)
        return "t" if value == 10 else str(value)
    return ""


def key_hints(criterion: dict) -> str:
    """What the keyboard does on this criterion, for the `?` help (the same keys as point_key)."""
    if criterion["kind"] == "choice":
        hint = ", ".join(f"{letter}: {o['label']}" for letter, o in zip(option_letters(criterion), criterion["options"],
                                                                         strict=True))
    elif criterion["max"] <= 9:
        hint = f"{criterion['min']}-{criterion['max']}"
    elif criterion["max"] == 10 and criterion["min"] >= 1:
        hint = f"{criterion['min']}-9, 0 for 10"
    elif criterion["max"] == 10:
        hint = "0-9, t for 10"
    else:
        hint = "no keys on a scale past 10: click the number"
    if criterion["not_sure"]:
        hint += f", {NOT_SURE_LETTER}: {criterion['not_sure']}"
    return hint


def parse_answer(criterion: dict, raw: Any, rationale: Any = "") -> tuple[int | None, bool, str]:
    """(value, not_sure, rationale) from what a form or the API sent; raises RubricError.

    Likert: a whole number in range. Choice: the option key (its index is stored). Either: the
    string "not_sure" where the criterion offers it.
    """
    name = criterion["question"]
    text = str(rationale or "").strip()[:2000]
    if criterion["rationale"] == "required" and not text:
        raise RubricError(f"{name}: give a short reason for your answer.")
    if criterion["rationale"] == "none":
        text = ""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise RubricError(f"{name}: choose an answer.")
    if isinstance(raw, str) and raw.strip() == NOT_SURE_KEY:
        if not criterion["not_sure"]:
            raise RubricError(f"{name}: this question has no \"not sure\" answer.")
        return None, True, text
    if criterion["kind"] == "choice":
        keys = [o["key"] for o in criterion["options"]]
        if str(raw).strip() not in keys:
            raise RubricError(f"{name}: choose one of {', '.join(keys)}.")
        return keys.index(str(raw).strip()), False, text
    value = _int(raw)
    if value is None or not criterion["min"] <= value <= criterion["max"]:
        raise RubricError(f"{name}: answer with a whole number from {criterion['min']} to {criterion['max']}.")
    return value, False, text


def score_label(criterion: dict, value: int | None, not_sure: bool = False) -> str:
    """The answer as raters saw it: the option key, the likert point's anchor (if any), or not_sure."""
    if not_sure:
        return NOT_SURE_KEY
    if value is None:
        return ""
    if criterion["kind"] == "choice":
        return criterion["options"][value]["key"]
    return criterion["labels"].get(str(value), "")


def answer_text(criterion: dict, value: int | None, missing: str = "not sure") -> str:
    """A stored answer as raters read it: the option's label, or the point; None is "not sure"
    (the criterion's own label for it, else `missing`)."""
    if value is None:
        return criterion["not_sure"] or missing
    return criterion["options"][value]["label"] if criterion["kind"] == "choice" else str(value)


def disagrees(criterion: dict, values: Sequence[int | None], *, rule: str = "range", threshold: int = 3,
              sd_threshold: float = 1.5) -> bool:
    """Whether raters' answers to one item disagree enough to need an adjudicator.

    "Not sure" answers (None) are left out; fewer than two real answers never disagree. A choice
    disagrees on any difference. A likert scale uses the study's rule; the range threshold is
    capped at the scale's span, so a 0-2 scale with a study threshold of 3 still flags 0 vs 2.
    """
    real = [v for v in values if v is not None]
    if len(real) < 2:
        return False
    if criterion["kind"] == "choice":
        return len(set(real)) > 1
    if rule == "sd":
        mean = sum(real) / len(real)
        return math.sqrt(sum((v - mean) ** 2 for v in real) / (len(real) - 1)) >= sd_threshold
    return max(real) - min(real) >= min(threshold, criterion["max"] - criterion["min"])


def answer_errors(criteria: Sequence[dict], given: dict, reference: dict, *, scaled: bool = False) -> list[float]:
    """Per-criterion error of an answer against a reference ({key: stored value, None = not sure}).

    A likert error is the distance in points; a choice answered unlike the reference counts one.
    "Not sure" where the reference has an answer counts half the scale (half a choice), so being
    unsure is never a way around a calibration or gold check. `scaled` divides each error by its
    criterion's span, so errors on 0-2 and 1-10 scales compare (0 = the reference, 1 = the far end).
    Criteria without a reference are left out.
    """
    errors = []
    for criterion in criteria:
        ref = reference.get(criterion["key"])
        if ref is None:
            continue
        got = given.get(criterion["key"])
        span = criterion["max"] - criterion["min"] if criterion["kind"] == "likert" else 1
        if got is None:
            error = span / 2
        elif criterion["kind"] == "likert":
            error = float(abs(got - ref))
        else:
            error = float(got != ref)
        errors.append(error / span if scaled else error)
    return errors


def remap(old: dict, new: dict, value: int | None) -> int | None:
    """A stored answer to `old` in `new`'s terms: the same likert point, the same option by its key
    (reordered options move with it); None where it no longer means anything."""
    if value is None or old["kind"] != new["kind"]:
        return None
    if old["kind"] == "choice":
        keys = [o["key"] for o in new["options"]]
        key = old["options"][value]["key"] if 0 <= value < len(old["options"]) else None
        return keys.index(key) if key in keys else None
    if (old["min"], old["max"]) != (new["min"], new["max"]):
        return None  # 3 on 1-5 is not 3 on 1-10
    return value
