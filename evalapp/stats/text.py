"""Automatic text measures of chatbot responses.

Surface measures (length, sentences, intensifiers, questions, second person)
are plain regex counts; overlap with reference answers uses sacrebleu (BLEU)
and rouge-score (ROUGE-L), the reference implementations, rather than
home-grown versions. `response_measures` gives them for one response;
`mean_ci`, `paired_difference` and `spearman` are the small statistics the
text report draws from them (t intervals, Spearman's rho; scipy).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import TypedDict

__all__ = [
    "INTENSIFIERS",
    "MEASURES",
    "SECOND_PERSON",
    "SENTENCE_RULE",
    "asks_question",
    "intensifier_count",
    "mean_ci",
    "paired_difference",
    "question_count",
    "reference_overlap",
    "response_measures",
    "second_person_count",
    "sentences",
    "spearman",
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


# --- per-response measures -------------------------------------------------

SECOND_PERSON: frozenset[str] = frozenset({"you", "your", "yours", "yourself", "yourselves"})

SENTENCE_RULE = (
    "A sentence ends at '.', '!' or '?' (or a run of them such as '?!' or '...') followed by whitespace "
    "(closing quotes or brackets in between allowed), at a line break, or at the end of the text; pieces "
    "with no word are dropped. Abbreviations such as 'e.g.' also end a sentence (a limit of this simple "
    "rule). A question is a sentence whose final punctuation contains '?'."
)

# (key, label) of every measure `response_measures` returns, in report order.
MEASURES: tuple[tuple[str, str], ...] = (
    ("words", "words"),
    ("sentences", "sentences"),
    ("intensifier_rate", "intensifiers per 100 words"),
    ("questions", "questions asked"),
    ("second_person_rate", "second person per 100 words"),
    ("bleu", "sentence BLEU vs reference"),
    ("rouge_l", "ROUGE-L F1 vs reference"),
)

_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"'\u201d\u2019)\]]*\s+|\s*\n\s*")
_TRAILING_PUNCT = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*\s*$")


class ResponseMeasures(TypedDict):
    words: int
    sentences: int
    intensifier_rate: float | None  # per 100 words; None for a response without words
    questions: int
    second_person_rate: float | None  # per 100 words; None for a response without words
    bleu: float | None  # sacrebleu sentence BLEU, 0-100; None without a reference
    rouge_l: float | None  # ROUGE-L F1, 0-1; None without a reference


@lru_cache(maxsize=1)
def _sentence_bleu():  # type: ignore[no-untyped-def]
    from sacrebleu.metrics import BLEU

    # What sacrebleu.sentence_bleu builds on every call (exp smoothing, effective order), built once.
    return BLEU(effective_order=True)


def sentences(text: str) -> list[str]:
    """The sentences of a text, split by SENTENCE_RULE (stripped; pieces without a word dropped)."""
    return [s.strip() for s in _SENTENCE_BREAK.split(text) if _WORD.search(s)]


def question_count(text: str) -> int:
    """Number of sentences that are questions (their final punctuation contains '?')."""
    count = 0
    for sentence in sentences(text):
        end = _TRAILING_PUNCT.search(sentence)
        count += bool(end and "?" in end.group())
    return count


def second_person_count(text: str) -> int:
    """Tokens that are you/your/yours/yourself/yourselves, contractions of them included (you're, you'll)."""
    return sum(re.split("['\u2019]", tok, maxsplit=1)[0] in SECOND_PERSON for tok in words(text))


def response_measures(text: str, reference: str | None = None) -> ResponseMeasures:
    """The text measures of one response; BLEU and ROUGE-L only when a non-blank reference is given.

    BLEU is sacrebleu's `sentence_bleu` (its default exponential smoothing), ROUGE-L the F1 of
    rouge-score with the Porter stemmer; both against the one reference.
    """
    n = len(words(text))
    bleu = rouge = None
    if reference is not None and reference.strip():
        bleu = float(_sentence_bleu().sentence_score(text, [reference]).score)
        rouge = float(_rouge_scorer().score(reference, text)["rougeL"].fmeasure)
    return {
        "words": n,
        "sentences": len(sentences(text)),
        "intensifier_rate": 100 * intensifier_count(text) / n if n else None,
        "questions": question_count(text),
        "second_person_rate": 100 * second_person_count(text) / n if n else None,
        "bleu": bleu,
        "rouge_l": rouge,
    }


# --- statistics over the measures ------------------------------------------

def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def mean_ci(values: Sequence[float | None], confidence: float = 0.95) -> dict:
    """Mean with a t-based confidence interval; None values are left out.

    Returns {"mean", "ci95": [low, high], "n"}; the mean is None with no values, the interval
    [None, None] with fewer than two.
    """
    from scipy import stats

    xs = _finite(values)
    n = len(xs)
    if not n:
        return {"mean": None, "ci95": [None, None], "n": 0}
    mean = sum(xs) / n
    if n < 2:
        return {"mean": mean, "ci95": [None, None], "n": n}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}


def paired_difference(x: Sequence[float | None], y: Sequence[float | None], confidence: float = 0.95) -> dict:
    """Mean of the paired differences x[i] - y[i] with a paired t confidence interval.

    x and y are per-prompt values of two arms, aligned by prompt; a pair with a None (or NaN) on
    either side is left out. The interval is the t interval of the differences (scipy.stats.t,
    n - 1 degrees of freedom, prompts as the units), not a bootstrap: deterministic and cheap.
    Returns {"mean_diff", "ci95": [low, high], "n_prompts"}.
    """
    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    diffs = [a - b for a, b in zip(x, y, strict=True)
             if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    out = mean_ci(diffs, confidence)
    return {"mean_diff": out["mean"], "ci95": out["ci95"], "n_prompts": out["n"]}


def spearman(x: Sequence[float | None], y: Sequence[float | None]) -> dict:
    """Spearman's rho (scipy.stats.spearmanr) of paired values; pairs with a None or NaN are left out.

    Returns {"rho", "p", "n"}; rho and p are None when undefined: fewer than 3 pairs, or either
    side constant.
    """
    from scipy import stats

    if len(x) != len(y):
        raise ValueError("x and y must have the same length")
    pairs = [(float(a), float(b)) for a, b in zip(x, y, strict=True)
             if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    n = len(pairs)
    if n < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return {"rho": None, "p": None, "n": n}
    result = stats.spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    rho, p = float(result.statistic), float(result.pvalue)
    return {"rho": rho if math.isfinite(rho) else None, "p": p if math.isfinite(p) else None, "n": n}
