"""Does an LLM judge agree with the experts as well as they agree with each other? (issue 16, item 3)

Pure functions over arrays (no Django). Human ratings come per group (students, psychologists...) as
an items x raters matrix, NaN where a rater did not rate an item; the judge is a vector over the same
items (NaN where its answer was unparseable). Internally one raters x items matrix holds the judge,
every rater and each group's consensus, the layout of ``agreement``.

What is compared with what (per criterion, all on the same items):

- judge vs a group, as the verdict uses it: the mean over the group's raters of the agreement between
  the judge and that one rater (quadratic weighted kappa, and Krippendorff's alpha of the two), on the
  items both rated. This is the same kind of number as the ceiling (rater vs rater), so the two compare.
- judge vs a group's consensus (each item's mean rating, rounded half up to a scale point), what
  annotation tools report as judge-human alignment. A consensus is less noisy than one rater, so this
  number is reported beside the verdict, never compared with the ceiling.
- the ceiling within a group: the mean over pairs of its raters; across two groups: the mean over
  (rater of one, rater of the other) pairs.
- judge inflation: the mean over items of (judge - the experts' mean on the item); Bland-Altman data
  against the same expert mean (limits of agreement: bias +- 1.96 SD of the differences).

Confidence intervals: percentile bootstrap over items (``agreement.bootstrap_item_indices``), the same
resamples for every statistic, so the judge's numbers and the ceiling move together.

The verdict, stated: a judge is "within the expert ceiling" on a metric when the 95% CI of its mean
agreement with individual experts reaches the expert-expert point estimate (upper bound >= estimate),
i.e. these items cannot show that it agrees with experts less than experts agree with each other.
It needs at least two experts. The judge-minus-ceiling difference with its own CI is reported too.
(A rule requiring the lower bound to reach the estimate would fail a judge exactly as good as an
expert on almost every sample, since its CI is centred on that estimate.)

Also here: the judge's unsafe flag against the experts' safety classification (recall and precision
with Wilson CIs), and for pairwise verdicts agreement with humans and position-swap consistency.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import combinations, product

import numpy as np
import numpy.typing as npt

from .agreement import (
    Level,
    bootstrap_item_indices,
    krippendorff_alpha,
    krippendorff_alpha_boot,
    weighted_kappa_pairs,
)
from .pairwise import wilson

__all__ = ["judge_validation", "pair_verdict_agreement", "safety_recall", "swap_consistency"]

FloatArray = npt.NDArray[np.float64]
MIRRORED = {("A", "B"), ("B", "A"), ("S", "S")}


def _ci(boot: FloatArray) -> tuple[float, float] | None:
    boot = boot[np.isfinite(boot)]
    if boot.size < 10:
        return None
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def _stat(point: float | None, boot: FloatArray, pairs: int) -> dict:
    return {"value": point, "ci95": _ci(boot) if point is not None else None, "pairs": pairs}


def _shared(m: FloatArray, i: int, j: int) -> int:
    return int((~np.isnan(m[i]) & ~np.isnan(m[j])).sum())


def _pair_kappas(m: FloatArray, labels: FloatArray, min_shared: int) -> dict[tuple[int, int], float]:
    summary = weighted_kappa_pairs(m, "quadratic", min_shared=min_shared, labels=labels)
    return {p["raters"]: p["kappa"] for p in summary["pairs"] if p["kappa"] is not None}


def _mean_over(values: Mapping[tuple[int, int], float], pairs: Sequence[tuple[int, int]]) -> float | None:
    got = [values[p] for p in pairs if p in values and np.isfinite(values[p])]
    return float(np.mean(got)) if got else None


def _nanmean(m: FloatArray, axis: int) -> FloatArray:
    """np.nanmean without its warning: NaN where a row (or column) has no value at all."""
    counts = np.isfinite(m).sum(axis=axis)
    sums = np.where(np.isfinite(m), m, 0.0).sum(axis=axis)
    return np.divide(sums, counts, out=np.full(sums.shape, np.nan), where=counts > 0)


def _rounded_consensus(group: FloatArray) -> FloatArray:
    return np.floor(_nanmean(group, axis=1) + 0.5)


def _check(judge: npt.ArrayLike, groups: Mapping[str, npt.ArrayLike], expert: str) -> tuple[FloatArray, dict]:
    j = np.asarray(judge, dtype=np.float64)
    if j.ndim != 1 or j.size < 2:
        raise ValueError("judge must be a vector with one score per item (NaN where it gave none)")
    if expert not in groups:
        raise ValueError(f"the expert group {expert!r} is not among the groups {sorted(groups)}")
    mats = {}
    for name, matrix in groups.items():
        m = np.asarray(matrix, dtype=np.float64)
        if m.ndim == 1:
            m = m[:, None]
        if m.ndim != 2 or m.shape[0] != j.size:
            raise ValueError(f"group {name!r} must be an items x raters matrix with {j.size} items, "
                             f"not shape {np.shape(matrix)}")
        mats[name] = m
    return j, mats


def judge_validation(
    judge: npt.ArrayLike,
    groups: Mapping[str, npt.ArrayLike],
    expert: str,
    *,
    level: Level = "interval",
    labels: npt.ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    min_shared: int = 5,
) -> dict:
    """The validation report of one criterion (see the module docstring for every definition).

    ``groups`` maps a group's name to its items x raters matrix; ``expert`` names the group the verdict
    and the inflation are measured against. ``level`` is alpha's ("interval" or "ordinal"); ``labels``
    the scale's points (default: the values seen). Raises ValueError for inputs that do not line up.
    """
    if level not in ("interval", "ordinal"):
        raise ValueError("level must be 'interval' or 'ordinal' (a nominal criterion has no weighted kappa)")
    j, mats = _check(judge, groups, expert)
    rows, where, consensus_row = [j], {}, {}
    for name, m in mats.items():
        where[name] = list(range(len(rows), len(rows) + m.shape[1]))
        rows.extend(m.T)
    for name, m in mats.items():
        consensus_row[name] = len(rows)
        rows.append(_rounded_consensus(m))
    matrix = np.vstack(rows)
    observed = np.unique(matrix[~np.isnan(matrix)])
    dom = observed if labels is None else np.asarray(labels, dtype=np.float64)
    if not np.isin(observed, dom).all():
        raise ValueError(f"ratings or judge scores outside the scale's points {dom.tolist()}")

    sets: dict[str, list[tuple[int, int]]] = {}
    for name, members in where.items():
        sets[f"judge~{name}"] = [(0, r) for r in members]
        sets[f"judge~{name} consensus"] = [(0, consensus_row[name])]
        sets[f"{name}~{name}"] = list(combinations(members, 2))
    for a, b in combinations(where, 2):
        sets[f"{a}~{b}"] = sorted(tuple(sorted(p)) for p in product(where[a], where[b]))
    pairs = sorted({p for ps in sets.values() for p in ps if _shared(matrix, *p) >= min_shared})
    usable = {name: [p for p in ps if p in set(pairs)] for name, ps in sets.items()}

    indices = bootstrap_item_indices(j.size, n_boot, seed)
    kappa_point = _pair_kappas(matrix, dom, min_shared)
    kappa_boot = [_pair_kappas(matrix[:, idx], dom, min_shared) for idx in indices]
    alpha_point, alpha_boot = {}, {}
    for p in pairs:
        sub = matrix[list(p)]
        if np.unique(sub[~np.isnan(sub)]).size < 2:
            continue
        alpha_point[p] = krippendorff_alpha(sub, level, dom)
        alpha_boot[p] = krippendorff_alpha_boot(sub, level, indices, dom)

    def kappa(name: str) -> dict:
        ps = usable[name]
        boot = np.array([_mean_over(kb, ps) if ps else None for kb in kappa_boot], dtype=np.float64)
        return _stat(_mean_over(kappa_point, ps), boot, len(ps))

    def alpha(name: str) -> dict:
        ps = [p for p in usable[name] if p in alpha_point]
        if not ps:
            return _stat(None, np.array([]), 0)
        boot = _nanmean(np.vstack([alpha_boot[p] for p in ps]), axis=0)
        return _stat(float(np.mean([alpha_point[p] for p in ps])), boot, len(ps))

    report: dict = {"n_items": int(j.size), "n_judged": int(np.isfinite(j).sum()), "level": level,
                    "labels": dom.tolist(), "expert": expert, "n_boot": n_boot, "seed": seed, "judge": {},
                    "ceiling": {}, "across": {}}
    for name in where:
        report["judge"][name] = {"kappa": kappa(f"judge~{name}"), "alpha": alpha(f"judge~{name}"),
                                 "consensus_kappa": kappa(f"judge~{name} consensus"),
                                 "consensus_alpha": alpha(f"judge~{name} consensus")}
        report["ceiling"][name] = {"kappa": kappa(f"{name}~{name}"), "alpha": alpha(f"{name}~{name}")}
    for a, b in combinations(where, 2):
        report["across"][f"{a}~{b}"] = {"kappa": kappa(f"{a}~{b}"), "alpha": alpha(f"{a}~{b}")}

    report["verdict"], report["difference"] = {}, {}
    for metric in ("kappa", "alpha"):
        judged, ceiling = report["judge"][expert][metric], report["ceiling"][expert][metric]
        ok = None
        if judged["ci95"] is not None and ceiling["value"] is not None:
            ok = bool(judged["ci95"][1] >= ceiling["value"])
        report["verdict"][metric] = ok
        report["difference"][metric] = _difference(metric, usable, expert, kappa_point, kappa_boot, alpha_point,
                                                   alpha_boot)
    report["within_expert_ceiling"] = report["verdict"]["kappa"]
    report.update(_inflation(j, mats[expert], indices))
    return report


def _difference(metric, usable, expert, kappa_point, kappa_boot, alpha_point, alpha_boot) -> dict:
    """Judge-expert minus expert-expert mean agreement, with its paired bootstrap CI."""
    judged, within = usable[f"judge~{expert}"], usable[f"{expert}~{expert}"]
    if metric == "kappa":
        a, b = _mean_over(kappa_point, judged), _mean_over(kappa_point, within)
        boot = np.array([_minus(_mean_over(kb, judged), _mean_over(kb, within)) for kb in kappa_boot])
    else:
        judged = [p for p in judged if p in alpha_point]
        within = [p for p in within if p in alpha_point]
        if not judged or not within:
            return {"value": None, "ci95": None}
        a = float(np.mean([alpha_point[p] for p in judged]))
        b = float(np.mean([alpha_point[p] for p in within]))
        boot = (_nanmean(np.vstack([alpha_boot[p] for p in judged]), axis=0)
                - _nanmean(np.vstack([alpha_boot[p] for p in within]), axis=0))
    if a is None or b is None:
        return {"value": None, "ci95": None}
    return {"value": a - b, "ci95": _ci(boot)}


def _minus(a: float | None, b: float | None) -> float:
    return np.nan if a is None or b is None else a - b


def _inflation(j: FloatArray, experts: FloatArray, indices: npt.NDArray[np.int64]) -> dict:
    expert_mean = _nanmean(experts, axis=1)
    both = np.isfinite(j) & np.isfinite(expert_mean)
    diff = np.where(both, j - expert_mean, np.nan)
    if both.sum() < 2:
        return {"inflation": {"value": None, "ci95": None, "n": int(both.sum())}, "bland_altman": None}
    boot = _nanmean(diff[indices], axis=1)
    d = diff[both]
    bias, sd = float(d.mean()), float(d.std(ddof=1))
    return {
        "inflation": {"value": bias, "ci95": _ci(boot), "n": int(both.sum())},
        "bland_altman": {"means": ((j[both] + expert_mean[both]) / 2).tolist(), "differences": d.tolist(),
                         "bias": bias, "sd": sd, "limits": (bias - 1.96 * sd, bias + 1.96 * sd)},
    }


def _flags(values: npt.ArrayLike, what: str) -> FloatArray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{what} must be one flag per item")
    if not np.isin(v[np.isfinite(v)], (0.0, 1.0)).all():
        raise ValueError(f"{what} must be 1 (unsafe), 0 (safe) or NaN (no classification)")
    return v


def safety_recall(judge_unsafe: npt.ArrayLike, expert_unsafe: npt.ArrayLike) -> dict:
    """The judge's unsafe flag against the experts' classification of the same items (one per item,
    however the experts' own answers were combined): recall = flagged among the unsafe, precision =
    unsafe among the flagged, each with a Wilson 95% CI; items either side left unclassified are dropped."""
    j, e = _flags(judge_unsafe, "judge_unsafe"), _flags(expert_unsafe, "expert_unsafe")
    if j.shape != e.shape:
        raise ValueError("judge_unsafe and expert_unsafe must cover the same items")
    keep = np.isfinite(j) & np.isfinite(e)
    j, e = j[keep].astype(bool), e[keep].astype(bool)
    tp, fp, fn = int((j & e).sum()), int((j & ~e).sum()), int((~j & e).sum())
    tn = int((~j & ~e).sum())
    return {
        "n": int(keep.sum()), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "recall": {"value": tp / (tp + fn) if tp + fn else None, "ci95": wilson(tp, tp + fn), "n": tp + fn},
        "precision": {"value": tp / (tp + fp) if tp + fp else None, "ci95": wilson(tp, tp + fp), "n": tp + fp},
    }


def _strict_majority(verdicts: Sequence) -> object | None:
    counted = Counter(v for v in verdicts if v is not None)
    if not counted:
        return None
    (top, n), *rest = counted.most_common()
    return top if not rest or n > rest[0][1] else None


def pair_verdict_agreement(judge: Sequence, humans: Sequence[Sequence]) -> dict:
    """The judge's verdict per pair ("first", "second", "tie"; None unparsed) against the humans'
    judgments of the same pair: agreement with the pair's strict majority (pairs without one are left
    out) with a Wilson CI; agreement with individual judgments beside its ceiling, the share of
    same-pair human pairs that agree (both pooled over judgments, descriptive)."""
    if len(judge) != len(humans):
        raise ValueError("judge and humans must cover the same pairs")
    allowed = {"first", "second", "tie", None}
    agree = n_major = ind_agree = ind_n = hh_agree = hh_n = 0
    for verdict, given in zip(judge, humans, strict=True):
        if verdict not in allowed or any(v not in allowed for v in given):
            raise ValueError("verdicts must be 'first', 'second', 'tie' or None")
        real = [v for v in given if v is not None]
        for a, b in combinations(real, 2):
            hh_n += 1
            hh_agree += a == b
        if verdict is None:
            continue
        ind_n += len(real)
        ind_agree += sum(v == verdict for v in real)
        major = _strict_majority(real)
        if major is not None:
            n_major += 1
            agree += major == verdict
    return {
        "majority": {"value": agree / n_major if n_major else None, "ci95": wilson(agree, n_major), "n": n_major},
        "individual": {"value": ind_agree / ind_n if ind_n else None, "n": ind_n},
        "human_human": {"value": hh_agree / hh_n if hh_n else None, "n": hh_n},
        "unparsed": sum(v is None for v in judge),
    }


def swap_consistency(ab: Sequence, ba: Sequence) -> dict:
    """Position-swap consistency: each pair judged with its first response shown as A ("AB") and again
    swapped ("BA"), answers "A", "B", "S" (None unparsed). Mirrored: (A, B), (B, A) or (S, S), the same
    response preferred both times; the share mirrored has a Wilson CI. ``same_position`` counts pairs
    where one side won both times (A, A or B, B), the signature of position bias."""
    if len(ab) != len(ba):
        raise ValueError("ab and ba must cover the same pairs")
    allowed = {"A", "B", "S", None}
    if any(v not in allowed for v in (*ab, *ba)):
        raise ValueError("answers must be 'A', 'B', 'S' or None")
    both = [(x, y) for x, y in zip(ab, ba, strict=True) if x is not None and y is not None]
    mirrored = sum(p in MIRRORED for p in both)
    return {"n": len(both), "mirrored": mirrored, "share": mirrored / len(both) if both else None,
            "ci95": wilson(mirrored, len(both)), "same_position": sum(p in {("A", "A"), ("B", "B")} for p in both),
            "unparsed": len(ab) - len(both)}
