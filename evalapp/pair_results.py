"""The pairwise phase's results: the long table of counted judgments, and the statistics over it, cached.

Only judgments that count (raters.counting.counted_pair_judgments) are in the table; a pair whose
either response was excluded after a safety review stays in the table, marked, and is left out of the
statistics, as the 1-10 results leave out the ratings of an excluded response. The statistics are
evalapp.stats (pure); this module turns rows into their arrays and back. The final verdict of a pair
on a question (`final_verdicts`) is the adjudicated one where an adjudicator decided, else the strict
majority of its counted judgments (evalapp.pair_rubric.majority); the preference-pairs export and the
agreement with the 1-10 scores both use it.
"""

import hashlib
import json
import logging
from collections import Counter, defaultdict
from itertools import combinations

import numpy as np
from django.core.cache import cache
from django.db.models import Count, Max
from redis.exceptions import RedisError

from raters.counting import counted_pair_judgments, counted_ratings
from raters.models import Role, StudyMembership

from .models import (Adjudication, PairAdjudication, PairJudgment, PairVerdict, PairwisePhase, Rating, SafetyDecision,
                     Score, ScorePolicy, Study)
from .pair_rubric import FIRST, SECOND, TIE, majority
from .stats.agreement import krippendorff_alpha_ci
from .stats.pairwise import bradley_terry, bradley_terry_bootstrap, davidson, pair_summary, position_bias, wilson

logger = logging.getLogger(__name__)

N_BOOT = 500
SIDE_CONTROL = ("Sides were balanced by design (raters.pair_assignment): on every pair, over every pair of arms and "
                "for every rater, the first response was shown on the left about as often as on the right, so a "
                "preference for one side adds noise to the arm comparison but cannot favour an arm.")
TIES = ("Ties: the sign test drops them; the ties-aware test counts a tie as half a win, per prompt, over prompts "
        "(sign-flip permutation); Davidson's model fits them with its own parameter nu.")

PAIR_JUDGMENT_COLUMNS = [
    ("study_id", "Study id."),
    ("judgment_id", "Database id of the judgment (one judgment has one row per pairwise question)."),
    ("pair_id", "Opaque public id of the pair of responses (the id raters saw)."),
    ("prompt_id", "External id of the prompt both responses answer."),
    ("first_arm", "Label of the arm of the pair's first response (the arm with the lower id; unblinded)."),
    ("second_arm", "Label of the arm of the pair's second response."),
    ("first_response_id", "Public id of the first response (responses.csv)."),
    ("second_response_id", "Public id of the second response."),
    ("rater", "Rater pseudonym."),
    ("first_on_left", "1 if this rater saw the first response on the left (as A), 0 on the right."),
    ("left_arm", "Label of the arm shown on the left."),
    ("key", "Key of the pairwise question this row answers (the codebook lists the questions)."),
    ("verdict", "first, second or tie, in the pair's own terms."),
    ("preferred_arm", "Label of the arm preferred, or tie."),
    ("preferred_side", "left, right or tie: what the rater chose on screen."),
    ("final_verdict", "The pair's final verdict on the question: adjudicated, else the strict majority of counted "
                      "judgments; empty without one."),
    ("final_source", "adjudicated or majority; empty without a final verdict."),
    ("reason", "The rater's optional reason."),
    ("seconds_on_item", "Seconds the rater spent on the pair."),
    ("judged_at", "When the judgment was first submitted (UTC, ISO 8601)."),
    ("excluded", "1 if a response of the pair was excluded after safety review: left out of the analysis."),
    ("exclusion_reasons", "The safety review's reasons, ';'-separated."),
    ("simulated", "1 if the judgment was produced by the demo's rater simulation, not a person."),
]
PAIR_JUDGMENT_HEADER = [name for name, _ in PAIR_JUDGMENT_COLUMNS]


def _excluded(study: Study) -> dict[int, str]:
    return dict(SafetyDecision.objects.filter(response__prompt__study=study, excluded=True)
                .values_list("response_id", "exclusion_reason"))


def _adjudicated(study: Study) -> dict[tuple[str, str], str]:
    return {(pair, key): verdict for pair, key, verdict in PairAdjudication.objects.filter(pair__study=study)
            .values_list("pair__public_id", "key", "verdict")}


def judgment_records(study: Study) -> list[dict]:
    """One dict per counted verdict, with the pair's arms, the side shown and its safety exclusion."""
    pseudonyms = dict(StudyMembership.objects.filter(study=study, role=Role.RATER).values_list("user_id", "pseudonym"))
    excluded = _excluded(study)
    fields = ("judgment_id", "judgment__pair__public_id", "judgment__pair__prompt__external_id",
              "judgment__pair__first__arm__label", "judgment__pair__second__arm__label",
              "judgment__pair__first__public_id", "judgment__pair__second__public_id",
              "judgment__pair__first_id", "judgment__pair__second_id", "judgment__rater_id",
              "judgment__first_on_left", "key", "verdict", "judgment__reason", "judgment__seconds_on_item",
              "judgment__created_at", "judgment__simulated")
    rows = PairVerdict.objects.filter(judgment__in=counted_pair_judgments(study)).order_by("judgment_id", "id")
    out = []
    for (judgment, pair, prompt, first_arm, second_arm, first_public, second_public, first_id, second_id, rater,
         first_on_left, key, verdict, reason, seconds, created, simulated) in rows.values_list(*fields).iterator(2000):
        reasons = [excluded[r] or "excluded after safety review" for r in (first_id, second_id) if r in excluded]
        out.append({"judgment": judgment, "pair": pair, "prompt": prompt, "first_arm": first_arm,
                    "second_arm": second_arm, "first_response": first_public, "second_response": second_public,
                    "first_response_pk": first_id, "second_response_pk": second_id,
                    "rater": pseudonyms.get(rater, str(rater)), "first_on_left": first_on_left, "key": key,
                    "verdict": verdict, "reason": reason, "seconds": seconds, "created": created.isoformat(),
                    "excluded": bool(reasons), "exclusion_reasons": "; ".join(reasons), "simulated": simulated})
    return out


def final_verdicts(study: Study, records: list[dict]) -> dict[tuple[str, str], dict]:
    """(pair public id, key) -> {verdict, source, votes {first, second, tie}, n}; pairs without a final
    verdict (no adjudication and no strict majority) are absent."""
    votes: dict[tuple[str, str], list[str]] = defaultdict(list)
    for r in records:
        votes[(r["pair"], r["key"])].append(r["verdict"])
    adjudicated = _adjudicated(study)
    out = {}
    for cell in votes.keys() | adjudicated.keys():
        verdicts = votes.get(cell, [])
        count = Counter(verdicts)
        tally = {v: count[v] for v in (FIRST, SECOND, TIE)}
        if cell in adjudicated:
            out[cell] = {"verdict": adjudicated[cell], "source": "adjudicated", "votes": tally, "n": len(verdicts)}
        elif (verdict := majority(verdicts)) is not None:
            out[cell] = {"verdict": verdict, "source": "majority", "votes": tally, "n": len(verdicts)}
    return out


def pair_judgment_rows(study: Study):
    """The records as PAIR_JUDGMENT_COLUMNS rows (evalapp.exports.tables' pair_judgments.csv)."""
    records = judgment_records(study)
    final = final_verdicts(study, records)
    for r in records:
        arm = {FIRST: r["first_arm"], SECOND: r["second_arm"], TIE: "tie"}[r["verdict"]]
        side = TIE if r["verdict"] == TIE else ("left" if (r["verdict"] == FIRST) == r["first_on_left"] else "right")
        settled = final.get((r["pair"], r["key"]), {})
        yield (study.id, r["judgment"], r["pair"], r["prompt"], r["first_arm"], r["second_arm"], r["first_response"],
               r["second_response"], r["rater"], int(r["first_on_left"]),
               r["first_arm"] if r["first_on_left"] else r["second_arm"], r["key"], r["verdict"], arm, side,
               settled.get("verdict", ""), settled.get("source", ""), r["reason"], r["seconds"], r["created"],
               int(r["excluded"]), r["exclusion_reasons"], int(r["simulated"]))


def _fingerprint(study: Study) -> str:
    latest = {"m": Max("updated_at"), "n": Max("id"), "c": Count("id")}
    judgments = PairJudgment.objects.filter(pair__study=study).aggregate(**latest)
    ratings = Rating.objects.filter(response__prompt__study=study).aggregate(**latest)
    parts = [study.id, study.score_policy, judgments, ratings,
             PairAdjudication.objects.filter(pair__study=study).aggregate(m=Max("id"), c=Count("id")),
             Adjudication.objects.filter(response__prompt__study=study).aggregate(m=Max("id")),
             SafetyDecision.objects.filter(response__prompt__study=study).aggregate(m=Max("id")),
             StudyMembership.objects.filter(study=study).exclude(excluded_at=None, withdrawn_at=None).count(),
             PairwisePhase.objects.filter(study=study).values_list("status", flat=True).first()]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _key(study: Study, n_boot: int) -> str:
    return f"pairwise:{study.id}:{_fingerprint(study)}:{n_boot}"


def pairwise_results_forget(study: Study) -> None:
    """Drop the study's cached pairwise results (called before a study is deleted, as results_forget)."""
    try:
        cache.delete(_key(study, N_BOOT))
    except RedisError as exc:
        logger.warning("Results cache unavailable, not forgetting study %s's pairwise entry: %s", study.id, exc)


def pairwise_results(study: Study, *, n_boot: int = N_BOOT) -> dict:
    """Everything the pairwise results page shows, cached until a judgment, decision or rating changes
    (the same rule as evalapp.results; with Redis down it is computed every time, not refused)."""
    key = _key(study, n_boot)
    try:
        cached = cache.get(key)
    except RedisError as exc:
        logger.warning("Results cache unavailable, computing without it: %s", exc)
        cached = None
    if cached is not None:
        return cached
    result = _analyse(study, n_boot)
    try:
        cache.set(key, result, 3600)
    except RedisError as exc:
        logger.warning("Results cache unavailable, not saving: %s", exc)
    return result


def _analyse(study: Study, n_boot: int) -> dict:
    phase = PairwisePhase.objects.filter(study=study).first()
    records = judgment_records(study)
    used = [r for r in records if not r["excluded"]]
    judgments = {r["judgment"]: r["simulated"] for r in used}
    arms = list(study.arms.order_by("id").values_list("label", flat=True))
    result = {"phase": None if phase is None else {"status": phase.status, "criteria": phase.criteria,
                                                   "judgments_per_pair": phase.judgments_per_pair},
              "arms": arms, "reference": arms[0] if arms else None,
              "n_judgments": len(judgments), "n_simulated": sum(judgments.values()),
              "simulated": any(judgments.values()), "n_excluded_verdicts": len(records) - len(used),
              "side_control": SIDE_CONTROL, "ties": TIES, "criteria": []}
    if phase is None:
        return result
    final = final_verdicts(study, used)
    rubric = {c["key"]: c for c in study.rubric() if c["kind"] == "likert"}
    seed = study.design_seed % (2**31)
    for criterion in phase.criteria:
        rows = [r for r in used if r["key"] == criterion["key"]]
        block = {"key": criterion["key"], "question": criterion["question"], "n_verdicts": len(rows),
                 "n_pairs": len({r["pair"] for r in rows})}
        if rows:
            block.update(_criterion(rows, arms, n_boot, seed))
        if criterion["key"] in rubric:
            block["scores"] = score_agreement(study, criterion["key"], final, used)
        result["criteria"].append(block)
    return result


def _shown(rows: list[dict]) -> tuple[list, list, list, list]:
    """(prompt, left arm, right arm, verdict as shown: 1 left won, 0.5 tie, 0 right won) per verdict."""
    prompt, left, right, value = [], [], [], []
    for r in rows:
        a, b = (r["first_arm"], r["second_arm"]) if r["first_on_left"] else (r["second_arm"], r["first_arm"])
        prompt.append(r["prompt"])
        left.append(a)
        right.append(b)
        value.append(0.5 if r["verdict"] == TIE else float((r["verdict"] == FIRST) == r["first_on_left"]))
    return prompt, left, right, value


def _criterion(rows: list[dict], arms: list[str], n_boot: int, seed: int) -> dict:
    prompt, left, right, value = _shown(rows)
    seen = [a for a in arms if a in set(left) | set(right)]
    out = {"arm_pairs": [], "position_bias": {**position_bias(value), "control": SIDE_CONTROL}}
    for a, b in combinations(seen, 2):
        summary = pair_summary(prompt, left, right, value, a, b, seed=seed)
        if summary["n"]:
            out["arm_pairs"].append({"label": f"{b} vs {a}", "a": a, "b": b, **summary})
    out["strengths"] = _strengths(out["arm_pairs"], prompt, left, right, value, seen, n_boot, seed)
    out["alpha"] = _alpha(rows, seed)
    return out


def _strengths(arm_pairs: list[dict], prompt, left, right, value, arms: list[str], n_boot: int, seed: int) -> dict:
    """Bradley-Terry (ties dropped) and Davidson (ties modelled) log-strengths; None with the reason where no
    finite estimate exists (an arm that never loses, or never wins, has an infinite one)."""
    note = {"reference": arms[0] if arms else None,
            "method": "log-strengths relative to the reference arm (at 0) with Wald 95% CIs from the fit's standard "
                      "errors; Davidson's centered strengths (mean 0 over arms) with percentile 95% CIs from "
                      f"{n_boot} bootstrap resamples of prompts"}
    score, against = Counter(), Counter()
    for p in arm_pairs:
        score[p["b"]] += p["wins"] + p["ties"] / 2
        score[p["a"]] += p["losses"] + p["ties"] / 2
        against[p["b"]] += p["losses"] + p["ties"] / 2
        against[p["a"]] += p["wins"] + p["ties"] / 2
    met = {a for p in arm_pairs for a in (p["a"], p["b"])}
    if len(arms) < 2 or met != set(arms) or not all(score[a] > 0 and against[a] > 0 for a in arms):
        return {**note, "fitted": False, "why": "Not estimable yet: every arm needs some wins (or ties) and some "
                                                "losses (or ties) against the others."}
    i, j = [p["a"] for p in arm_pairs], [p["b"] for p in arm_pairs]
    wins_i, wins_j = [p["losses"] for p in arm_pairs], [p["wins"] for p in arm_pairs]
    ties = [p["ties"] for p in arm_pairs]
    out = {**note, "fitted": True, "arms": []}
    # Two arms are one GLM row with no residual degrees of freedom: statsmodels then divides by zero for a
    # dispersion the binomial family never uses.
    with np.errstate(all="ignore"):
        plain = (bradley_terry(i, j, wins_i, wins_j, labels=arms, reference=arms[0])
                 if sum(wins_i) + sum(wins_j) else None)
        fit = davidson(i, j, wins_i, wins_j, ties, labels=arms, reference=arms[0])
        boot = bradley_terry_bootstrap(prompt, left, right, value, n_boot=n_boot, seed=seed, labels=arms)
    out.update({"nu": fit["nu"], "nu_se": fit["nu_se"],
                "converged": fit["converged"] and (plain is None or plain["converged"]),
                "n_boot_used": boot["n_boot_used"]})
    for k, arm in enumerate(arms):
        out["arms"].append({"arm": arm, "bt": _wald(plain, k), "davidson": _wald(fit, k),
                            "centered": boot["centered"][k], "centered_ci95": boot["ci95"][k]})
    return out


def _wald(fit: dict | None, k: int) -> dict | None:
    if fit is None:
        return None
    estimate, se = fit["estimate"][k], fit["se"][k]
    ci = [estimate - 1.96 * se, estimate + 1.96 * se] if se is not None else [None, None]
    return {"estimate": estimate, "se": se, "ci95": ci}


def _alpha(rows: list[dict], seed: int) -> dict:
    """Krippendorff's alpha (nominal) over pairs: units are pairs, values first/second/tie, with a
    percentile bootstrap 95% CI over pairs (evalapp.stats.agreement)."""
    raters = sorted({r["rater"] for r in rows})
    pairs = sorted({r["pair"] for r in rows})
    rater_at, pair_at = {x: k for k, x in enumerate(raters)}, {x: k for k, x in enumerate(pairs)}
    matrix = np.full((len(raters), len(pairs)), np.nan)
    code = {FIRST: 0.0, SECOND: 1.0, TIE: 2.0}
    for r in rows:
        matrix[rater_at[r["rater"]], pair_at[r["pair"]]] = code[r["verdict"]]
    shared = int((np.isfinite(matrix).sum(axis=0) >= 2).sum())
    out = {"n_pairs": shared, "n_raters": len(raters), "value": None, "ci95": [None, None],
           "method": "Krippendorff's alpha, nominal; units are pairs, values first/second/tie"}
    if shared == 0 or np.unique(matrix[np.isfinite(matrix)]).size < 2:
        return {**out, "why": "Needs pairs judged by two raters or more, and more than one verdict among them."}
    alpha = krippendorff_alpha_ci(matrix, level="nominal", n_boot=1000, seed=seed, value_domain=[0.0, 1.0, 2.0])
    ci = [None if not np.isfinite(x) else float(x) for x in alpha["ci95"]]
    return {**out, "value": alpha["value"], "ci95": ci, "n_boot": alpha["n_boot"]}


def _mean_scores(study: Study, key: str, response_ids: set[int]) -> dict[int, float]:
    """Mean counted 1-10 score per response on one criterion; under the adjudicated policy the final
    score replaces the raters' where an adjudicator resolved it (as the 1-10 comparison does)."""
    values: dict[int, list[int]] = defaultdict(list)
    for response, value in Score.objects.filter(rating__in=counted_ratings(study), criterion__key=key,
                                                criterion__study=study, not_sure=False,
                                                rating__response_id__in=response_ids).values_list(
            "rating__response_id", "value"):
        values[response].append(value)
    means = {r: float(np.mean(v)) for r, v in values.items()}
    if study.score_policy == ScorePolicy.ADJUDICATED:
        for response, final in Adjudication.objects.filter(
                response_id__in=response_ids, scale=key, action=Adjudication.Action.RESOLVED,
                final_score__isnull=False).values_list("response_id", "final_score"):
            means[response] = float(final)
    return means


def score_agreement(study: Study, key: str, final: dict, records: list[dict]) -> dict:
    """The pairwise verdict against the 1-10 scores on the same criterion, over pairs with a final verdict."""
    from scipy import stats

    responses = {r["pair"]: (r["first_response_pk"], r["second_response_pk"]) for r in records}
    means = _mean_scores(study, key, {x for pair in responses.values() for x in pair})
    cells: Counter = Counter()
    verdicts, differences = [], []
    for (pair, k), settled in final.items():
        if k != key or pair not in responses:
            continue
        first, second = responses[pair]
        if first not in means or second not in means:
            continue
        difference = means[second] - means[first]
        verdict = {FIRST: -1, TIE: 0, SECOND: 1}[settled["verdict"]]
        verdicts.append(verdict)
        differences.append(difference)
        cells[(settled["verdict"], "second higher" if difference > 0 else "first higher" if difference < 0 else
               "equal")] += 1
    decisive = [(v, d) for v, d in zip(verdicts, differences, strict=True) if v != 0 and d != 0]
    agree = sum(1 for v, d in decisive if (v > 0) == (d > 0))
    out = {"n_pairs": len(verdicts), "n_decisive": len(decisive), "agree": agree,
           "agree_share": agree / len(decisive) if decisive else None, "agree_ci95": wilson(agree, len(decisive)),
           "cells": [{"verdict": v, "scores": s, "n": cells[(v, s)]} for v in (FIRST, TIE, SECOND)
                     for s in ("first higher", "equal", "second higher")],
           "kendall_tau_b": None, "kendall_p": None,
           "method": "verdict (-1 first, 0 tie, +1 second) against mean score(second) - mean score(first) on the "
                     "same criterion; decisive pairs have a verdict other than tie and unequal means"}
    if len(verdicts) >= 2 and len(set(verdicts)) > 1 and len(set(differences)) > 1:
        tau = stats.kendalltau(verdicts, differences, variant="b")
        out["kendall_tau_b"], out["kendall_p"] = float(tau.statistic), float(tau.pvalue)
    return out
