"""Inter-rater agreement: Krippendorff's alpha (+ bootstrap CI), weighted kappa.

Matrices here are raters x items with NaN for a missing rating, the layout the
`krippendorff` package uses.  ICC lives in `icc.py` (items x raters, complete)
and is re-exported from this module.
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal, TypedDict

import krippendorff
import numpy as np
import numpy.typing as npt

from .icc import icc_all, icc_headline_form

__all__ = [
    "bootstrap_item_indices",
    "exact_agreement",
    "icc_all",
    "icc_headline_form",
    "krippendorff_alpha",
    "krippendorff_alpha_boot",
    "krippendorff_alpha_ci",
    "weighted_kappa_pairs",
    "within_one_agreement",
]

Level = Literal["nominal", "ordinal", "interval", "ratio"]
FloatArray = npt.NDArray[np.float64]


class AlphaCI(TypedDict):
    value: float
    ci95: tuple[float, float]
    n_boot: int  # resamples with a defined alpha (degenerate ones are dropped)


class KappaPair(TypedDict):
    raters: tuple[int, int]
    n: int
    kappa: float | None  # None when chance disagreement is 0 (both raters constant)


class KappaSummary(TypedDict):
    pairs: list[KappaPair]
    mean: float | None


def as_matrix(matrix: npt.ArrayLike) -> FloatArray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError("expected a 2-D raters x items matrix")
    return m


def value_domain_of(m: FloatArray, value_domain: npt.ArrayLike | None) -> FloatArray:
    observed = np.unique(m[~np.isnan(m)])
    if value_domain is None:
        return observed
    dom = np.asarray(value_domain, dtype=np.float64)
    if not np.isin(observed, dom).all():
        raise ValueError("matrix contains values outside value_domain")
    return dom


def krippendorff_alpha(
    matrix: npt.ArrayLike, level: Level = "interval", value_domain: npt.ArrayLike | None = None
) -> float:
    """Krippendorff's alpha of a raters x items matrix (NaN = missing)."""
    m = as_matrix(matrix)
    return float(
        krippendorff.alpha(
            reliability_data=m,
            level_of_measurement=level,
            value_domain=None if value_domain is None else value_domain_of(m, value_domain),
        )
    )


def bootstrap_item_indices(n_items: int, n_boot: int, seed: int = 0) -> npt.NDArray[np.int64]:
    """(n_boot, n_items) item indices drawn with replacement; shared by fast and naive paths."""
    return np.random.default_rng(seed).integers(0, n_items, size=(n_boot, n_items))


def _item_coincidences(m: FloatArray, dom: FloatArray) -> FloatArray:
    """Per-item coincidence matrices, flattened to (items, V*V).

    Same definition as krippendorff._coincidences: items with <2 ratings add 0.
    """
    counts = (m.T[:, :, None] == dom[None, None, :]).sum(axis=1).astype(np.float64)  # (N, V)
    pairable = counts.sum(axis=1)
    outer = counts[:, :, None] * counts[:, None, :]
    idx = np.arange(dom.size)
    outer[:, idx, idx] -= counts
    with np.errstate(invalid="ignore", divide="ignore"):
        per_item = np.where(pairable[:, None, None] >= 2, outer / (pairable - 1)[:, None, None], 0.0)
    return per_item.reshape(len(counts), -1)


def _distances(dom: FloatArray, level: Level, n_v: FloatArray) -> FloatArray:
    """Distance matrices, (B, V, V) for ordinal (depends on marginals), else (V, V)."""
    diff = dom[:, None] - dom[None, :]
    if level == "nominal":
        return (diff != 0).astype(np.float64)
    if level == "interval":
        return diff**2
    if level == "ratio":
        s = dom[:, None] + dom[None, :]
        return np.divide(diff, s, out=np.zeros_like(diff), where=s != 0) ** 2
    if level == "ordinal":
        v = dom.size
        cum = np.concatenate([np.zeros((n_v.shape[0], 1)), np.cumsum(n_v, axis=1)], axis=1)
        lo = np.minimum.outer(np.arange(v), np.arange(v))
        hi = np.maximum.outer(np.arange(v), np.arange(v))
        between = cum[:, hi + 1] - cum[:, lo]  # sum of n_g for g in [lo, hi]
        return (between - (n_v[:, :, None] + n_v[:, None, :]) / 2) ** 2
    raise ValueError(f"unknown level {level!r}")


def krippendorff_alpha_boot(
    matrix: npt.ArrayLike,
    level: Level,
    indices: npt.NDArray[np.int64],
    value_domain: npt.ArrayLike | None = None,
    chunk: int = 512,
) -> FloatArray:
    """Alpha for each resample of items (rows of `indices`), vectorised.

    Hand-written because neither `krippendorff` nor scipy.stats.bootstrap can
    reuse work across resamples: alpha only depends on the coincidence matrix,
    which is a sum of per-item matrices, so each resample is one row of
    (item counts) @ (per-item coincidences) instead of a full alpha() call.
    NaN where alpha is undefined (no variation in the resample).
    """
    m = as_matrix(matrix)
    dom = value_domain_of(m, value_domain)
    n_items, v = m.shape[1], dom.size
    per_item = _item_coincidences(m, dom)
    out = np.empty(indices.shape[0])
    for start in range(0, indices.shape[0], chunk):  # chunks bound memory to chunk*N
        idx = indices[start : start + chunk]
        b = idx.shape[0]
        offsets = (idx + np.arange(b)[:, None] * n_items).ravel()
        times = np.bincount(offsets, minlength=b * n_items).reshape(b, n_items).astype(np.float64)
        o = (times @ per_item).reshape(b, v, v)
        n_v = o.sum(axis=2)
        n = n_v.sum(axis=1)
        d = _distances(dom, level, n_v)
        d_b = d if d.ndim == 3 else np.broadcast_to(d, (b, v, v))
        observed = np.einsum("bij,bij->b", o, d_b)
        # E = (n_c n_k - [c==k] n_c)/(n-1); the diagonal term vanishes as d_cc = 0.
        expected = np.einsum("bi,bij,bj->b", n_v, d_b, n_v) / (n - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + b] = np.where(expected > 0, 1 - observed / expected, np.nan)
    return out


def krippendorff_alpha_ci(
    matrix: npt.ArrayLike,
    level: Level = "interval",
    n_boot: int = 2000,
    seed: int = 0,
    value_domain: npt.ArrayLike | None = None,
) -> AlphaCI:
    """Alpha with a percentile bootstrap 95% CI over items."""
    m = as_matrix(matrix)
    point = krippendorff_alpha(m, level, value_domain)
    boot = krippendorff_alpha_boot(m, level, bootstrap_item_indices(m.shape[1], n_boot, seed), value_domain)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return {"value": point, "ci95": (float("nan"), float("nan")), "n_boot": 0}
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"value": point, "ci95": (float(lo), float(hi)), "n_boot": int(boot.size)}


def _weighted_kappa(a: FloatArray, b: FloatArray, labels: FloatArray, weights: str) -> float | None:
    """Cohen's weighted kappa from the confusion matrix.

    Written out rather than sklearn.metrics.cohen_kappa_score: sklearn is not a
    project dependency and would be pulled in for ~10 lines of arithmetic.
    Weights use label *values* (|a-b| or (a-b)^2); for consecutive integer
    scales this equals sklearn's index-based weights.
    """
    ia = np.searchsorted(labels, a)
    ib = np.searchsorted(labels, b)
    k = labels.size
    conf = np.zeros((k, k))
    np.add.at(conf, (ia, ib), 1.0)
    diff = labels[:, None] - labels[None, :]
    w = np.abs(diff) if weights == "linear" else (diff != 0).astype(float) if weights == "unweighted" else diff**2
    expected = np.outer(conf.sum(axis=1), conf.sum(axis=0)) / conf.sum()
    denom = float((w * expected).sum())
    if denom == 0:
        return None
    return 1.0 - float((w * conf).sum()) / denom


def weighted_kappa_pairs(
    matrix: npt.ArrayLike,
    weights: Literal["quadratic", "linear", "unweighted"] = "quadratic",
    min_shared: int = 5,
    labels: npt.ArrayLike | None = None,
) -> KappaSummary:
    """Weighted kappa for every rater pair sharing >= min_shared items, and their mean.

    "unweighted" is Cohen's kappa for nominal answers (any difference is a full disagreement)."""
    if weights not in ("quadratic", "linear", "unweighted"):
        raise ValueError("weights must be 'quadratic', 'linear' or 'unweighted'")
    m = as_matrix(matrix)
    labs = value_domain_of(m, labels)
    pairs: list[KappaPair] = []
    for i, j in combinations(range(m.shape[0]), 2):
        shared = ~np.isnan(m[i]) & ~np.isnan(m[j])
        n = int(shared.sum())
        if n < min_shared:
            continue
        kappa = _weighted_kappa(m[i, shared], m[j, shared], labs, weights)
        pairs.append({"raters": (i, j), "n": n, "kappa": kappa})
    vals = [p["kappa"] for p in pairs if p["kappa"] is not None]
    return {"pairs": pairs, "mean": float(np.mean(vals)) if vals else None}


def _pairwise_agreement(matrix: npt.ArrayLike, tol: float) -> float | None:
    """Share of same-item rater pairs whose ratings differ by <= tol (pooled over items)."""
    m = as_matrix(matrix)
    hits = total = 0
    for i, j in combinations(range(m.shape[0]), 2):
        shared = ~np.isnan(m[i]) & ~np.isnan(m[j])
        total += int(shared.sum())
        hits += int((np.abs(m[i, shared] - m[j, shared]) <= tol).sum())
    return hits / total if total else None


def exact_agreement(matrix: npt.ArrayLike) -> float | None:
    """Share of rater pairs on the same item giving the identical score."""
    return _pairwise_agreement(matrix, 0.0)


def within_one_agreement(matrix: npt.ArrayLike) -> float | None:
    """Share of rater pairs on the same item whose scores differ by at most 1."""
    return _pairwise_agreement(matrix, 1.0)
