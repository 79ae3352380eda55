"""The study's data in long form (for exports and the analysis) and the cached results.

Rows come from the database a chunk at a time; the statistics are evalapp.analysis
(pure), so what the results page shows is recomputable from the exported CSV.
"""

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterator

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import CharField, F, Func, Max

from raters.models import Role, StudyMembership

from .analysis import analyze_long
from .exports import RATINGS_COLUMNS
from .models import SCALE_KEYS, Adjudication, Rating, Response, SafetyDecision, ScorePolicy, Study

N_BOOT = 2000


def _exclusions(study: Study) -> tuple[dict[int, str], dict[int, str]]:
    raters = {}
    for user_id, withdrawn, excluded, reason in StudyMembership.objects.filter(study=study, role=Role.RATER).values_list(
        "user_id", "withdrawn_at", "excluded_at", "excluded_reason"
    ):
        if withdrawn:
            raters[user_id] = "rater withdrew"
        elif excluded:
            raters[user_id] = f"rater excluded: {reason}"
    responses = {
        rid: f"response excluded after safety review: {reason}"
        for rid, reason in SafetyDecision.objects.filter(response__prompt__study=study, excluded=True).values_list(
            "response_id", "exclusion_reason"
        )
    }
    return raters, responses


def _adjudicated(study: Study) -> dict[tuple[int, str], int]:
    return {
        (rid, scale): score
        for rid, scale, score in Adjudication.objects.filter(
            response__prompt__study=study, action=Adjudication.Action.RESOLVED
        ).values_list("response_id", "scale", "final_score")
    }


def rating_rows(study: Study, chunk_size: int = 5000) -> Iterator[tuple]:
    """One row per rating and scale, in RATINGS_COLUMNS order, streamed from the database.

    Rows come grouped by response (then rating id) so each response's raters' mean is computed from
    the handful of rows in hand: memory stays flat however many rows there are.
    """
    excluded_raters, excluded_responses = _exclusions(study)
    adjudicated = _adjudicated(study)
    pseudonyms = dict(StudyMembership.objects.filter(study=study, role=Role.RATER).values_list("user_id", "pseudonym"))
    groups = dict(StudyMembership.objects.filter(study=study, role=Role.RATER).values_list("user_id", "group"))
    policy = study.score_policy
    fields = ["id", "response_id", "response__public_id", "response__prompt__external_id", "response__prompt__topic",
              "response__arm__label", "response__arm__blind_code", "response__sample_index", "rater_id", "empathy",
              "fluency", "unsafe", "unsafe_category", "comment", "seconds_on_item", "created_at", "updated_at",
              "simulated"]
    ratings = Rating.objects.order_by("response_id", "id")
    if connection.vendor == "postgresql":
        # Timestamps formatted by the database: parsing them into datetimes only to print them
        # again was a third of the export's Python time.
        ratings = ratings.annotate(created_iso=_iso("created_at"), updated_iso=_iso("updated_at"))
        fields = [*fields[:15], "created_iso", "updated_iso", fields[-1]]
    responses = Response.objects.filter(prompt__study=study).order_by("id").values_list("id", flat=True)

    def chunks():
        # Keyset pages over the study's responses, then their ratings by the (response, id) index.
        # A server-side cursor got a first-rows plan (5x slower) and keyset pages over the joined
        # ratings made PostgreSQL walk the study from its start for every page (quadratic).
        last = 0
        per_page = max(chunk_size // 4, 1)
        while True:
            ids = list(responses.filter(id__gt=last)[:per_page])
            if not ids:
                return
            yield from ratings.filter(response_id__in=ids).values_list(*fields)
            last = ids[-1]

    def emit(group):
        counted = [r for r in group if r[8] not in excluded_raters]
        means = {scale: round(sum(r[col] for r in counted) / len(counted), 4) if counted else None
                 for scale, col in (("empathy", 9), ("fluency", 10))}
        for (rating_id, response_id, public_id, prompt_id, topic, arm, code, sample, rater_id, empathy, fluency,
             unsafe, category, comment, seconds, created, updated, simulated) in group:
            reasons = [r for r in (excluded_raters.get(rater_id), excluded_responses.get(response_id)) if r]
            for scale, score in (("empathy", empathy), ("fluency", fluency)):
                final = adjudicated.get((response_id, scale))
                used = final if final is not None and policy == ScorePolicy.ADJUDICATED else means[scale]
                yield (study.id, rating_id, public_id, prompt_id, topic, arm, code, sample,
                       pseudonyms.get(rater_id, str(rater_id)), groups.get(rater_id, ""), scale, score, final, used,
                       policy, int(unsafe), category, comment, seconds, _text(created), _text(updated),
                       int(bool(reasons)), "; ".join(reasons), int(simulated))

    group: list[tuple] = []
    for row in chunks():
        if group and row[1] != group[0][1]:
            yield from emit(group)
            group = []
        group.append(row)
    if group:
        yield from emit(group)


def _iso(field: str) -> Func:
    return Func(F(field), template="to_char(%(expressions)s AT TIME ZONE 'UTC', "
                                   "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')", output_field=CharField())


def _text(value) -> str:
    return value if isinstance(value, str) else value.isoformat()


RATING_HEADER = [name for name, _ in RATINGS_COLUMNS]


def analysis_records(rows) -> list[dict]:
    """The rows the analysis uses: excluded rows out; under the adjudicated policy the final score
    replaces each rater's score of an adjudicated response and scale in the model comparison."""
    index = {name: i for i, name in enumerate(RATING_HEADER)}
    records = []
    for row in rows:
        if row[index["excluded"]]:
            continue
        records.append({
            "item": row[index["response_id"]],
            "rater": row[index["rater"]],
            "scale": row[index["scale"]],
            "score": row[index["score"]],
            "comparison_score": row[index["adjudicated_score"]] if row[index["score_policy"]] == ScorePolicy.ADJUDICATED
            and row[index["adjudicated_score"]] is not None else row[index["score"]],
            "arm": row[index["arm"]],
            "prompt": row[index["prompt_id"]],
            "topic": row[index["topic"]],
            "rater_group": row[index["rater_group"]],
            "unsafe": row[index["unsafe"]],
            "simulated": row[index["simulated"]],
        })
    return records


def _fingerprint(study: Study) -> str:
    latest = Rating.objects.filter(response__prompt__study=study).aggregate(m=Max("updated_at"), n=Max("id"))
    parts = [study.id, study.score_policy, latest["m"], latest["n"], Rating.objects.filter(response__prompt__study=study).count(),
             Adjudication.objects.filter(response__prompt__study=study).aggregate(m=Max("id"))["m"],
             SafetyDecision.objects.filter(response__prompt__study=study).aggregate(m=Max("id"))["m"],
             StudyMembership.objects.filter(study=study).exclude(excluded_at=None, withdrawn_at=None).count()]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def study_results(study: Study, *, n_boot: int = N_BOOT) -> dict:
    """Agreement and the model comparison per scale, cached until a rating or decision changes."""
    key = f"results:{study.id}:{_fingerprint(study)}:{n_boot}"
    cached = cache.get(key)
    if cached is not None:
        return cached
    records = analysis_records(rating_rows(study))
    result = {"n_rows": len(records), "simulated": any(r["simulated"] for r in records), "policy": study.score_policy}
    if records and len({r["rater"] for r in records}) >= 2:
        seed = study.design_seed % (2**31)
        rows = [{"item": r["item"], "rater": r["rater"], "scale": r["scale"], "score": r["score"], "arm": r["arm"],
                 "prompt": r["prompt"]} for r in records]
        arms = {r["arm"] for r in rows}
        # statsmodels' crossed-effects MixedLM grows super-linearly with prompts (about 11 min a
        # scale at 2,500 prompts on 2 cores, bench/RESULTS.md): past the limit the page leaves it
        # out and says so; `manage.py analyze_ratings` on the export still fits it.
        n_prompts = len({r["prompt"] for r in records})
        fit_mixed = n_prompts <= settings.RESULTS_MIXED_MODEL_MAX_PROMPTS
        result["mixed_model_note"] = None if fit_mixed else (
            f"Mixed model not fitted on this page: {n_prompts} prompts is over the limit of "
            f"{settings.RESULTS_MIXED_MODEL_MAX_PROMPTS}; run analyze_ratings on the export for it.")
        if len(arms) == 2:
            result["agreement"] = analyze_long(rows, n_boot=n_boot, seed=seed, fit_mixed=fit_mixed)
            if any(r["comparison_score"] != r["score"] for r in records):
                # Agreement is about the raters' own scores; the comparison uses the policy's scores.
                for row, record in zip(rows, records, strict=True):
                    row["score"] = record["comparison_score"]
                result["comparison"] = analyze_long(rows, n_boot=n_boot, seed=seed, fit_mixed=fit_mixed)
            else:
                result["comparison"] = result["agreement"]
        else:
            result["agreement"] = analyze_long([{k: v for k, v in r.items() if k != "arm"} for r in rows],
                                               n_boot=n_boot, seed=seed)
        result["arm_means"] = arm_means(records)
    result["subgroups"] = subgroups(records, study)
    unsafe = defaultdict(lambda: [0, 0])
    for r in records:
        if r["scale"] == "empathy":
            unsafe[r["arm"]][0] += r["unsafe"]
            unsafe[r["arm"]][1] += 1
    result["unsafe_flags"] = {arm: {"flagged": k, "ratings": n} for arm, (k, n) in unsafe.items()}
    result["confirmed_harmful"] = _harmful_by_arm(study)
    cache.set(key, result, 3600)
    return result


def _harmful_by_arm(study: Study) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for label in SafetyDecision.objects.filter(response__prompt__study=study, classification="harmful").values_list(
        "response__arm__label", flat=True
    ):
        counts[label] += 1
    return dict(counts)


def arm_means(records: list[dict]) -> dict[str, dict[str, dict]]:
    """Mean per arm and scale over per-prompt means, with a t-based 95% CI (prompts are the units)."""
    import numpy as np
    from scipy import stats

    per_prompt: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        per_prompt[(r["scale"], r["arm"])][r["prompt"]].append(r["comparison_score"])
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for (scale, arm), prompts in sorted(per_prompt.items()):
        means = np.array([np.mean(v) for v in prompts.values()])
        if means.size > 1:
            half = stats.t.ppf(0.975, means.size - 1) * means.std(ddof=1) / np.sqrt(means.size)
            ci = [float(means.mean() - half), float(means.mean() + half)]
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
    for kind in ("topic", "rater_group"):
        for value in sorted({r[kind] for r in records if r[kind]}):
            for scale in SCALE_KEYS:
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
