"""The arm comparison under one LLM judge: the results page's statistics with the judge as the only rater.

The judge's value of a response on a criterion is the mean of its readable samples (a choice: the most
frequent answer, the lowest index on a tie, since a mean of option indices means nothing); a response
excluded after a safety review is left out, as the human results leave it out. The statistics are
evalapp.analysis' and results.arm_means, the human comparison's own, over rows whose one rater is the
judge, so a judge's numbers read like the human ones beside them. Nothing here is mixed into
results.study_results: the entry is cached on its own key (results.judge_cache_key), and the human
results never read JudgeAnswer.
"""

import logging
from collections import Counter, defaultdict
from itertools import combinations

from django.core.cache import cache
from redis.exceptions import RedisError

from modelserver.judge_models import SAFETY_KEY, Judge, JudgeAnswer

from .analysis import analyze_long
from .models import Response, SafetyDecision, Study
from .results import N_BOOT, arm_means, judge_cache_key

logger = logging.getLogger(__name__)

# Agreement among raters means nothing with one rater: only these of analysis' per-criterion block are kept.
KEPT = ("level", "n_items", "comparison")
LABEL = "Under judge {name} (not human ratings)"


def study_judge(study: Study, wanted: str) -> Judge | None:
    """The study's judge a query parameter names by id; None for anything else (the callers answer 404)."""
    return Judge.objects.filter(study=study, id=int(wanted)).first() if str(wanted).isdigit() else None


def judge_results(study: Study, judge: Judge, *, n_boot: int = N_BOOT) -> dict:
    """The judge's per-arm means and arm comparisons per criterion, cached until its answers change."""
    key = judge_cache_key(study, judge.id, n_boot)
    try:
        cached = cache.get(key)
    except RedisError as exc:
        logger.warning("Results cache unavailable, computing without it: %s", exc)
        cached = None
    if cached is not None:
        return cached
    result = _analyse(study, judge, n_boot)
    try:
        cache.set(key, result, 3600)
    except RedisError as exc:
        logger.warning("Results cache unavailable, not saving: %s", exc)
    return result


def judge_values(judge: Judge, *, response_ids=None) -> dict[tuple[int, str], float]:
    """{(response id, criterion key): the judge's value} over its readable answers (SAFETY_KEY included),
    samples combined as the module says; a (response, criterion) with no readable sample is absent."""
    answers = JudgeAnswer.objects.filter(judge=judge, response__isnull=False, value__isnull=False)
    if response_ids is not None:
        answers = answers.filter(response_id__in=list(response_ids))
    nominal = {c["key"] for c in judge.study.rubric() if c["level"] == "nominal"} | {SAFETY_KEY}
    samples: dict[tuple[int, str], list[float]] = defaultdict(list)
    for response_id, criterion, value in answers.values_list("response_id", "criterion", "value"):
        samples[(response_id, criterion)].append(value)
    out = {}
    for (response_id, criterion), values in samples.items():
        if criterion in nominal:
            counts = Counter(values)
            out[(response_id, criterion)] = min(v for v in counts if counts[v] == max(counts.values()))
        else:
            out[(response_id, criterion)] = sum(values) / len(values)
    return out


def _analyse(study: Study, judge: Judge, n_boot: int) -> dict:
    rubric = study.rubric()
    levels = {c["key"]: c["level"] for c in rubric}
    excluded = set(SafetyDecision.objects.filter(response__prompt__study=study, excluded=True)
                   .values_list("response_id", flat=True))
    responses = {rid: (public_id, prompt, arm) for rid, public_id, prompt, arm in
                 Response.objects.filter(prompt__study=study).exclude(id__in=excluded)
                 .values_list("id", "public_id", "prompt__external_id", "arm__label")}
    values = judge_values(judge, response_ids=responses)
    unreadable = Counter(JudgeAnswer.objects.filter(judge=judge, response_id__in=list(responses), value__isnull=True)
                         .values_list("criterion", flat=True))
    records = [{"item": responses[rid][0], "rater": f"judge:{judge.id}", "scale": key, "score": value,
                "comparison_score": value, "arm": responses[rid][2], "prompt": responses[rid][1],
                "level": levels[key], "not_sure": False}
               for (rid, key), value in sorted(values.items()) if key in levels]
    arms = sorted({r["arm"] for r in records})
    result = {"judge": {"id": judge.id, "name": judge.name, "kind": judge.kind, "model": judge.model,
                        "samples": judge.samples},
              "label": LABEL.format(name=judge.name), "n_rows": len(records), "arm_labels": arms,
              "n_excluded_responses": len(excluded), "unreadable": dict(unreadable),
              "unsafe_flags": _unsafe(values, responses) if judge.safety else None}
    result["arm_means"] = arm_means(records, {c["key"]: (c["min"], c["max"]) for c in rubric})
    rows = [{k: r[k] for k in ("item", "rater", "scale", "score", "arm", "prompt", "level", "not_sure")}
            for r in records]
    seed = study.design_seed % (2**31)
    # The mixed model's rater effect is undefined with one rater: not fitted (analysis says so per criterion).
    result["comparisons"] = {}
    for first, second in combinations(arms, 2):
        pair = [r for r in rows if r["arm"] in (first, second)]
        analysed = analyze_long(pair, n_boot=n_boot, seed=seed, fit_mixed=False)
        result["comparisons"][f"{second} - {first}"] = {
            "scales": {name: {k: block[k] for k in KEPT if k in block} for name, block in analysed["scales"].items()},
            "settings": analysed["settings"]}
    if len(arms) > 2:
        result["comparison_note"] = (f"{len(arms)} arms: each pair is compared on its own prompts; p-values are "
                                     "Holm-adjusted across criteria within a pair, not across the pairs.")
    return result


def _unsafe(values: dict, responses: dict) -> dict[str, dict[str, int]]:
    """Per arm, how many responses the judge called unsafe, of those it answered readably."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (rid, key), value in values.items():
        if key == SAFETY_KEY and rid in responses:
            out[responses[rid][2]][0] += int(value == 1)
            out[responses[rid][2]][1] += 1
    return {arm: {"flagged": k, "responses": n} for arm, (k, n) in sorted(out.items())}


def judge_criterion_results(study: Study, data: dict) -> list[dict]:
    """What the page shows per criterion, in rubric order: the judge's arm means and its comparisons."""
    out = []
    for criterion in study.rubric():
        key = criterion["key"]
        shown = {**criterion, "name": criterion["question"], "arms": data.get("arm_means", {}).get(key, {}),
                 "unreadable": data.get("unreadable", {}).get(key, 0), "comparisons": []}
        for contrast, analysis in data.get("comparisons", {}).items():
            comparison = analysis["scales"].get(key, {}).get("comparison")
            if not comparison:
                continue
            second, first = contrast.split(" - ", 1)
            entry = {"contrast": contrast, "labels": [first, second], "comparison": comparison}
            if criterion["level"] == "nominal":
                names = {str(i): o["label"] for i, o in enumerate(criterion["options"])}
                entry["choice_rows"] = [{"label": names.get(option, option), **o}
                                        for option, o in comparison["options"].items()]
            shown["comparisons"].append(entry)
        if shown["arms"] or shown["comparisons"]:
            out.append(shown)
    return out
