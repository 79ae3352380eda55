"""Text measures of a study's responses per arm: the results page's text section and its export.

Each response is measured by evalapp.stats.text (pure): words, sentences, intensifiers and second
person per 100 words, questions asked back, and sentence BLEU / ROUGE-L F1 against its prompt's
reference where the prompt has one. `text_report` summarises them per arm (prompts as the units),
as paired arm differences over prompts, and as Spearman correlations with the raters' mean scores;
its output is plain JSON, so the results cache can keep it. `text_measure_rows` is the per-response
export and `length_score_points` what evalapp.text_plots draws. The rows come from the database a
chunk at a time; only the small per-response measures are held.
"""

from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import combinations

from .models import Response, Study
from .stats.text import (
    INTENSIFIERS,
    MEASURES,
    SECOND_PERSON,
    SENTENCE_RULE,
    mean_ci,
    paired_difference,
    response_measures,
    spearman,
    words,
)

CHUNK_SIZE = 2000
MEASURE_KEYS = [key for key, _ in MEASURES]
REFERENCE_MEASURES = ("bleu", "rouge_l")
INTENSIFIER_NOTE = (
    "Intensifiers counted (case-insensitive, whole words): " + ", ".join(sorted(INTENSIFIERS))
    + "; \"so\" only where it modifies the next word (\"so sorry\"), not as a connective (\"so that\", \"So, ...\")."
)
SECOND_PERSON_NOTE = ("Second person: " + ", ".join(sorted(SECOND_PERSON))
                      + ", and their contractions (you're, you'll, you've, you'd).")

MEASURE_DESCRIPTIONS = {
    "words": "Number of words (runs of letters and digits; contractions such as it's count as one word).",
    "sentences": "Number of sentences. " + SENTENCE_RULE,
    "intensifier_rate": "Intensifiers per 100 words (empty for a response with no words). " + INTENSIFIER_NOTE,
    "questions": "Number of sentences that are questions (asked back to the user). " + SENTENCE_RULE,
    "second_person_rate": "Second-person words per 100 words (empty for a response with no words). "
                          + SECOND_PERSON_NOTE,
    "bleu": "Sentence BLEU (sacrebleu sentence_bleu, default exponential smoothing; 0-100) of the response "
            "against its prompt's reference answer; empty when the prompt has no reference.",
    "rouge_l": "ROUGE-L F1 (rouge-score, Porter stemmer; 0-1) of the response against its prompt's reference "
               "answer; empty when the prompt has no reference.",
}

TEXT_MEASURE_COLUMNS = [
    ("response_id", "Opaque public id of the response (as in responses.csv and ratings.csv)."),
    ("prompt_id", "External id of the prompt (question) the response answers."),
    ("arm", "Researcher's label of the model arm that wrote the response (unblinded)."),
    ("sample_index", "Sample index of the response for its prompt and arm."),
    *((key, MEASURE_DESCRIPTIONS[key]) for key in MEASURE_KEYS),
]
TEXT_MEASURE_HEADER = [name for name, _ in TEXT_MEASURE_COLUMNS]


def measured_responses(study: Study) -> Iterator[dict]:
    """Every response of the study with its measures: response_id, prompt, arm, sample_index and MEASURE_KEYS."""
    rows = Response.objects.filter(prompt__study=study).order_by("id").values_list(
        "public_id", "prompt__external_id", "arm__label", "sample_index", "text", "prompt__reference")
    for public_id, prompt, arm, sample, text, reference in rows.iterator(chunk_size=CHUNK_SIZE):
        yield {"response_id": public_id, "prompt": prompt, "arm": arm, "sample_index": sample,
               **response_measures(text, reference or None)}


def text_measure_rows(study: Study) -> Iterator[tuple]:
    """One row per response in TEXT_MEASURE_COLUMNS order; an undefined measure is an empty string."""
    for r in measured_responses(study):
        yield (r["response_id"], r["prompt"], r["arm"], r["sample_index"],
               *("" if r[key] is None else round(r[key], 4) for key in MEASURE_KEYS))


def mean_scores(records: Iterable[dict]) -> dict[str, dict[str, float]]:
    """{criterion key: {response public id: mean score over raters}}, criteria in order of first appearance.

    A record's score of None ("not sure", missing) is left out; a criterion with no score at all is
    kept (with no responses) so the report still lists it.
    """
    sums: dict[str, dict[str, list[float]]] = {}
    for r in records:
        cells = sums.setdefault(r["scale"], {})
        if r.get("score") is None:
            continue
        cell = cells.setdefault(r["item"], [0.0, 0])
        cell[0] += float(r["score"])
        cell[1] += 1
    return {scale: {item: total / n for item, (total, n) in cells.items()} for scale, cells in sums.items()}


def text_report(study: Study, records: Iterable[dict]) -> dict:
    """The text measures per arm, paired arm differences and correlations with scores (JSON-serialisable).

    - "arms": per arm (sorted by label), n_responses, n_prompts and per measure the mean over prompts
      (each prompt's samples averaged first) with a t 95% CI over prompts and its n of prompts.
    - "pairs": per pair of arms (a, b) sorted by label, the contrast "b - a": per measure the mean
      over prompts of b's prompt mean minus a's, a paired t 95% CI and n_prompts (prompts where both
      arms have the measure: for BLEU / ROUGE-L, prompts with a non-empty reference).
    - "reference": how many prompts have a reference and how many responses got BLEU / ROUGE-L.
    - "correlations": per criterion key in `records`, per measure, Spearman rho (p, n) between a
      response's measure and its mean score over raters, pooled and per arm.
    Every response counts, whether rated or not (and safety exclusions too: the measures describe
    what the arms wrote); the correlations use the responses the records score.
    """
    rows = list(measured_responses(study))
    arms = sorted({r["arm"] for r in rows})
    by_prompt: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_prompt[r["arm"]][r["prompt"]].append(r)
    prompt_means = {arm: {prompt: {key: _mean([r[key] for r in group]) for key in MEASURE_KEYS}
                          for prompt, group in prompts.items()} for arm, prompts in by_prompt.items()}
    return {
        "measures": [{"key": key, "label": label, "description": MEASURE_DESCRIPTIONS[key]} for key, label in MEASURES],
        "intensifiers": sorted(INTENSIFIERS),
        "intensifier_note": INTENSIFIER_NOTE,
        "second_person_note": SECOND_PERSON_NOTE,
        "sentence_rule": SENTENCE_RULE,
        "n_responses": len(rows),
        "arms": [_arm_summary(arm, by_prompt[arm], prompt_means[arm]) for arm in arms],
        "pairs": [_pair(a, b, prompt_means) for a, b in combinations(arms, 2)],
        "reference": {
            "n_prompts": len({r["prompt"] for r in rows if r["bleu"] is not None}),
            "n_prompts_total": len({r["prompt"] for r in rows}),
            "n_responses": sum(r["bleu"] is not None for r in rows),
        },
        "correlations": _correlations(rows, arms, mean_scores(records)),
    }


def _mean(values: list) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def _arm_summary(arm: str, prompts: dict[str, list[dict]], means: dict[str, dict]) -> dict:
    measures = []
    for key, label in MEASURES:
        summary = mean_ci([m[key] for m in means.values()])
        # Every measure is a count, a rate or a score that can't be negative: a t interval is clipped at 0.
        ci95 = [None if v is None else max(v, 0.0) for v in summary["ci95"]]
        measures.append({"key": key, "label": label, "mean": summary["mean"], "ci95": ci95,
                         "n_prompts": summary["n"]})
    return {"arm": arm, "n_responses": sum(len(g) for g in prompts.values()), "n_prompts": len(prompts),
            "measures": measures}


def _pair(a: str, b: str, prompt_means: dict[str, dict[str, dict]]) -> dict:
    shared = sorted(set(prompt_means[a]) & set(prompt_means[b]))
    measures = []
    for key, label in MEASURES:
        diff = paired_difference([prompt_means[b][p][key] for p in shared], [prompt_means[a][p][key] for p in shared])
        measures.append({"key": key, "label": label, **diff})
    return {"first": a, "second": b, "contrast": f"{b} - {a}", "n_prompts": len(shared), "measures": measures}


def _correlations(rows: list[dict], arms: list[str], scores: dict[str, dict[str, float]]) -> list[dict]:
    out = []
    by_arm = {arm: [i for i, r in enumerate(rows) if r["arm"] == arm] for arm in arms}
    for criterion, means in scores.items():
        ys = [means.get(r["response_id"]) for r in rows]
        measures = []
        for key, label in MEASURES:
            xs = [r[key] for r in rows]
            per_arm = [{"arm": arm, **spearman([xs[i] for i in picked], [ys[i] for i in picked])}
                       for arm, picked in by_arm.items()]
            measures.append({"key": key, "label": label, "pooled": spearman(xs, ys), "arms": per_arm})
        out.append({"criterion": criterion, "n_responses": len(means), "measures": measures})
    return out


def length_score_points(study: Study, records: Iterable[dict]) -> dict:
    """What evalapp.text_plots.length_score_plot draws: per criterion and arm, [words, mean score] of
    each scored response. Only word counts are computed (no BLEU), so this is cheap."""
    scores = mean_scores(records)
    lengths: dict[str, tuple[str, int]] = {}
    rows = Response.objects.filter(prompt__study=study).order_by("id").values_list("public_id", "arm__label", "text")
    for public_id, arm, text in rows.iterator(chunk_size=CHUNK_SIZE):
        lengths[public_id] = (arm, len(words(text)))
    arms = sorted({arm for arm, _ in lengths.values()})
    points: dict[str, dict[str, list[list[float]]]] = {}
    for criterion, means in scores.items():
        per_arm: dict[str, list[list[float]]] = {arm: [] for arm in arms}
        for item, score in means.items():
            if item in lengths:
                arm, n = lengths[item]
                per_arm[arm].append([n, score])
        points[criterion] = per_arm
    return {"criteria": list(scores), "arms": arms, "points": points}
