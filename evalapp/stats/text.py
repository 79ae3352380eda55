"""Automatic text measures of chatbot responses.

Surface measures (length, intensifiers, questions) are plain regex counts;
overlap with reference answers uses sacrebleu (corpus BLEU) and rouge-score
(ROUGE-L), the reference implementations, rather than home-grown versions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import TypedDict

__all__ = [
    "INTENSIFIERS",
    "asks_question",
    "intensifier_count",
    "reference_overlap",
    "text_measures",
    "words",
]

INTENSIFIERS: frozenset[str] = frozenset({
    "really", "very", "so", "extremely", "totally", "absolutely", "incredibly", "truly",
    "completely", "deeply", "utterly", "super", "highly", "immensely", "tremendously",
    "awfully", "terribly", "genuinely", "remarkably", "exceptionally", "profoundly",
})

_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)*")
# "so" is only an intensifier before a modified word ("so sorry"), not as a
# clause connective ("So, ...", "so that", "... so I ..."); clauses split at commas.
_SO_NOT_INTENSIFIER_NEXT = frozenset({
    "that", "i", "you", "we", "they", "he", "she", "it", "if", "the", "a", "an", "this",
    "what", "when", "on", "far", "as", "to", "and", "or", "is", "are", "was", "let",
})


class TextMeasures(TypedDict):
    n_responses: int
    words_per_response: float | None  # mean over responses
    intensifiers_per_100_words: float | None  # pooled: all intensifiers / all words
    question_share: float | None  # share of responses containing a "?"


class Overlap(TypedDict):
    bleu: float  # sacrebleu corpus BLEU, 0-100
    rouge_l: float  # mean ROUGE-L F1 over responses, 0-1 (best reference per response)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (contractions kept whole)."""
    return [w.lower() for w in _WORD.findall(text)]


def intensifier_count(text: str) -> int:
    """Number of intensifier tokens; "so" counted only when it modifies the next word."""
    count = 0
    for clause in re.split(r"[.!?;:,\n]+", text):
        toks = words(clause)
        for i, tok in enumerate(toks):
            if tok not in INTENSIFIERS:
                continue
            if tok == "so" and (i + 1 >= len(toks) or toks[i + 1] in _SO_NOT_INTENSIFIER_NEXT):
                continue
            count += 1
    return count


def asks_question(text: str) -> bool:
    """True if the response contains a question mark."""
    return "?" in text


def text_measures(responses: Sequence[str]) -> TextMeasures:
    """Length, intensifier rate and question share of a list of responses."""
    n = len(responses)
    if n == 0:
        return {"n_responses": 0, "words_per_response": None,
                "intensifiers_per_100_words": None, "question_share": None}
    counts = [len(words(r)) for r in responses]
    total = sum(counts)
    return {
        "n_responses": n,
        "words_per_response": total / n,
        "intensifiers_per_100_words": 100 * sum(intensifier_count(r) for r in responses) / total if total else None,
        "question_share": sum(asks_question(r) for r in responses) / n,
    }


@lru_cache(maxsize=1)
def _rouge_scorer():  # type: ignore[no-untyped-def]
    from rouge_score import rouge_scorer  # import lazily: pulls in nltk

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def reference_overlap(responses: Sequence[str], references: Sequence[str | Sequence[str]]) -> Overlap:
    """Corpus BLEU and mean ROUGE-L F1 of responses against their reference answer(s).

    references[i] is one string or a list of strings for responses[i]; with
    several references BLEU uses all of them and ROUGE-L the best-matching one.
    """
    from sacrebleu.metrics import BLEU

    if len(responses) != len(references):
        raise ValueError("responses and references must have the same length")
    if not responses:
        raise ValueError("no responses")
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(not r for r in refs):
        raise ValueError("every response needs at least one reference")
    width = max(len(r) for r in refs)
    # sacrebleu wants reference *streams*; None pads responses with fewer refs.
    streams = [[r[j] if j < len(r) else None for r in refs] for j in range(width)]
    bleu = BLEU().corpus_score(list(responses), streams).score
    scorer = _rouge_scorer()
    rouge = [scorer.score_multi(r, hyp)["rougeL"].fmeasure for hyp, r in zip(responses, refs, strict=True)]
    return {"bleu": float(bleu), "rouge_l": float(sum(rouge) / len(rouge))}
