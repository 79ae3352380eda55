"""The study's results, computed once from the exported ratings and cached until the data changes.

The rows are evalapp.exports.tables' (the ratings export) and the statistics are evalapp.analysis
(pure), so what the results page shows is recomputable from the exported CSV. The plots' summary
is computed and cached with the results, so a page showing four plots reads the ratings once.
The cache only saves time: with Redis stopped the results are computed every time, not refused.
"""

import hashlib
import json
import logging
from collections import defaultdict
from itertools import combinations

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Max
from redis.exceptions import RedisError

from modelserver.judge_models import JudgeAnswer
from raters.models import StudyMembership

from . import plots
from .analysis import analyze_long
from .text_report import length_score_points, text_report
from .exports.tables import analysis_records, rating_rows
from .models import Adjudication, Rating, SafetyDecision, Study

logger = logging.getLogger(__name__)

N_BOOT = 2000


def _fingerprint(study: Study) -> str:
    latest = Rating.objects.filter(response__prompt__study=study).aggregate(m=Max("updated_at"), n=Max("id"))
    parts = [study.id, study.score_policy, latest["m"], latest["n"], Rating.objects.filter(response__prompt__study=study).count(),
             Adjudication.objects.filter(response__prompt__study=study).aggregate(m=Max("id"))["m"],
             SafetyDecision.objects.filter(response__prompt__study=study).aggregate(m=Max("id"))["m"],
             StudyMembership.objects.filter(study=study).exclude(excluded_at=None, withdrawn_at=None).count()]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def study_results(study: Study, *, n_boot: int = N_BOOT) -> dict:
    """Agreement and the model comparison per scale, cached until a rating or decision changes."""
    return _computed(study, n_boot)["results"]


def plot_inputs(study: Study) -> tuple[dict, dict]:
    """(plots.summarize of the records, the results): all a plot draws from, out of the same cache entry."""
    entry = _computed(study, N_BOOT)
    return entry["plots"], entry["results"]


def _cache_key(study: Study, n_boot: int) -> str:
    return f"computed:{study.id}:{_fingerprint(study)}:{n_boot}"


def judge_cache_key(study: Study, judge_id: int, n_boot: int) -> str:
    """The key of one judge's arm comparison (evalapp.judge_results): an entry of its own, so nothing a
    judge answers can reach the human results' entry, keyed by the judge's answers and the exclusions."""
    answers = JudgeAnswer.objects.filter(judge_id=judge_id, response__isnull=False).aggregate(n=Count("id"),
                                                                                               m=Max("id"))
    parts = [study.id, judge_id, answers["n"], answers["m"],
             SafetyDecision.objects.filter(response__prompt__study=study).aggregate(m=Max("id"))["m"],
             [(c["key"], c["level"]) for c in study.rubric()]]
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]
    return f"judge-computed:{study.id}:{judge_id}:{digest}:{n_boot}"


def results_forget(study: Study) -> None:
    """Drop the study's cached results, its judges' comparisons too (a deleted study's numbers must not
    outlive it). Entries of earlier states of the data are unreachable already and expire within the hour."""
    try:
        cache.delete_many([_cache_key(study, N_BOOT), *(judge_cache_key(study, judge_id, N_BOOT)
                                                        for judge_id in study.judges.values_list("id", flat=True))])
    except RedisError as exc:
        # The entry is keyed by the study's data, which is gone: nothing will ask for it, and it expires.
        logger.warning("Results cache unavailable, not forgetting study %s's entry: %s", study.id, exc)


def _computed(study: Study, n_boot: int) -> dict:
    key = _cache_key(study, n_boot)
    try:
        cached = cache.get(key)
    except RedisError as exc:
        logger.warning("Results cache unavailable, computing without it: %s", exc)
        cached = None
    if cached is not None:
        return cached
    records = analysis_records(rating_rows(study))
    entry = {"results": _analyse(study, records, n_boot), "plots": plots.summarize(records)}
    # Text measures describe what the arms wrote; cached with the results (ROUGE's stemmer costs
    # about 2 ms a response) and keyed on the ratings too, since they are correlated with scores.
    scored = [r for r in records if r["level"] != "nominal"]  # option indices don't correlate with length
    entry["results"]["text"] = text_report(study, scored)
    entry["plots"]["length_score"] = length_score_points(study, scored)
    try:
        cache.set(key, entry, 3600)
    except RedisError as exc:
        logger.warning("Results cache unavailable, not saving: %s", exc)
    return entry


def _analyse(study: Study, records: list[dict], n_boot: int) -> dict:
    result = {"n_rows": len(records), "simulated": any(r["simulated"] for r in records), "policy": study.score_policy,
              "arm_labels": sorted({r["arm"] for r in records})}
    if records and len({r["rater"] for r in records if not r["not_sure"]}) >= 2:
        seed = study.design_seed % (2**31)
        rows = [{"item": r["item"], "rater": r["rater"], "scale": r["scale"], "score": r["score"], "arm": r["arm"],
                 "prompt": r["prompt"], "level": r["level"], "not_sure": r["not_sure"]} for r in records]
        arms = {r["arm"] for r in rows}
        fit_mixed = True  # evalapp.stats.mixed fits any study's size in seconds (bench/RESULTS.md)
        if len(arms) == 2:
            result["agreement"] = analyze_long(rows, n_boot=n_boot, seed=seed, fit_mixed=fit_mixed)
            if any(r["comparison_score"] != r["score"] for r in records):
                # Agreement is about the raters' own scores; the comparison uses the policy's scores.
                for row, record in zip(rows, records, strict=True):
                    row["score"] = record["comparison_score"]
                result["comparison"] = analyze_long(rows, n_boot=n_boot, seed=seed, fit_mixed=fit_mixed)
            else:
                result["comparison"] = result["agreement"]
            result["comparisons"] = {result["comparison"]["settings"]["contrast"]: result["comparison"]} \
                if "contrast" in result["comparison"]["settings"] else {}
        else:
            result["agreement"] = analyze_long([{k: v for k, v in r.items() if k != "arm"} for r in rows],
                                               n_boot=n_boot, seed=seed)
            if len(arms) > 2:
                # Every pair of arms on its own (a prompt-engineered baseline is a third arm). Holm
                # adjusts across criteria within a pair; the pairs are not adjusted for each other.
                for row, record in zip(rows, records, strict=True):
                    row["score"] = record["comparison_score"]
                result["comparisons"] = {}
                for first, second in combinations(sorted(arms), 2):
                    pair = [r for r in rows if r["arm"] in (first, second)]
                    result["comparisons"][f"{second} - {first}"] = analyze_long(pair, n_boot=n_boot, seed=seed,
                                                                               fit_mixed=fit_mixed)
                result["comparison_note"] = (
                    f"{len(arms)} arms: each pair is compared on its own prompts; p-values are Holm-adjusted across "
                    "criteria within a pair, not across the pairs.")
        result["arm_means"] = arm_means(records, {c["key"]: (c["min"], c["max"]) for c in study.rubric()})
    result["subgroups"] = subgroups(records, study)
    unsafe = defaultdict(lambda: [0, 0])
    first = next(iter(study.rubric()), {}).get("key")  # one row per rating: its first criterion's
    for r in records:
        if r["scale"] == first:
            unsafe[r["arm"]][0] += r["unsafe"]
            unsafe[r["arm"]][1] += 1
    result["unsafe_flags"] = {arm: {"flagged": k, "ratings": n} for arm, (k, n) in unsafe.items()}
    result["confirmed_harmful"] = _harmful_by_arm(study)
    return result


def _harmful_by_arm(study: Study) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for label in SafetyDecision.objects.filter(response__prompt__study=study, classification="harmful").values_list(
        "response__arm__label", flat=True
    ):
        counts[label] += 1
    return dict(counts)


def arm_means(records: list[dict], bounds: dict | None = None) -> dict[str, dict[str, dict]]:
    """Mean per arm and likert criterion over per-prompt means, with a t-based 95% CI (prompts are
    the units); "not sure" answers are left out."""
    import numpy as np
    from scipy import stats

    per_prompt: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("level") != "nominal" and r["comparison_score"] is not None:
            per_prompt[(r["scale"], r["arm"])][r["prompt"]].append(r["comparison_score"])
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for (scale, arm), prompts in sorted(per_prompt.items()):
        means = np.array([np.mean(v) for v in prompts.values()])
        if means.size > 1:
            half = stats.t.ppf(0.975, means.size - 1) * means.std(ddof=1) / np.sqrt(means.size)
            ci = [float(means.mean() - half), float(means.mean() + half)]
            if bounds and scale in bounds:  # a t interval past the scale's ends is clipped to them
                ci = [max(ci[0], bounds[scale][0]), min(ci[1], bounds[scale][1])]
        else:
            ci = [None, None]
        out[scale][arm] = {"mean": float(means.mean()), "ci95": ci, "n_prompts": int(means.size)}
    return dict(out)


def subgroups(records: list[dict], study: Study, min_prompts: int = 3) -> dict:
    """The arm difference per prompt topic and per rater group, Holm-corrected over every subgroup test.

    Subgroups are exploratory: the number of comparisons is reported with the correction, and a
    subgroup needs at least `min_prompts` prompts rated in both arms to be tested at all.
    """
    import numpy as np

    from .stats.comparison import holm, per_prompt_differences, wilcoxon_test

    arms = sorted({r["arm"] for r in records})
    if len(arms) != 2:
        return {"tests": [], "n_comparisons": 0}
    tests = []
    likert = [c["key"] for c in study.rubric() if c["level"] != "nominal"]
    records = [r for r in records if r["comparison_score"] is not None]
    for kind in ("topic", "rater_group"):
        for value in sorted({r[kind] for r in records if r[kind]}):
            for scale in likert:
                rows = [r for r in records if r[kind] == value and r["scale"] == scale]
                _, diffs = per_prompt_differences([r["prompt"] for r in rows], [r["rater"] for r in rows],
                                                  [arms.index(r["arm"]) for r in rows],
                                                  [r["comparison_score"] for r in rows])
                if diffs.size < min_prompts:
                    continue
                test = wilcoxon_test(diffs) or {}
                tests.append({"kind": kind, "value": value, "scale": scale, "n_prompts": int(diffs.size),
                              "mean_diff": float(np.mean(diffs)), "p": test.get("p")})
    adjusted = holm({str(i): t["p"] for i, t in enumerate(tests)})
    for i, t in enumerate(tests):
        t["p_holm"] = adjusted[str(i)]
    return {"contrast": f"{arms[1]} - {arms[0]}", "tests": tests,
            "n_comparisons": sum(t["p"] is not None for t in tests), "correction": "Holm over all subgroup tests"}
