"""Arm 1 vs arm 0 comparison of one rating scale, from long-form arrays.

Each observation is one rater's score of one prompt's response in one arm.
The unit of analysis is the prompt: raters' scores are averaged per prompt and
arm, and the arm difference is taken per prompt (paired design).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TypedDict

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

__all__ = [
    "cluster_bootstrap_ci",
    "compare_choice",
    "sign_flip_test",
    "compare_scale",
    "compare_scales",
    "effect_sizes",
    "holm",
    "mixed_model",
    "per_prompt_differences",
    "unsafe_rates",
    "wilcoxon_test",
]

FloatArray = npt.NDArray[np.float64]


class MixedResult(TypedDict):
    estimate: float | None
    se: float | None
    p: float | None
    converged: bool
    reason: str | None  # why estimate is None / not converged; None when all is well
    warnings: list[str]
    variances: dict[str, float] | None  # rater, prompt and residual variance


class Cells(TypedDict):
    prompts: list[object]  # prompts rated in both arms, in output order
    sums: FloatArray  # (2P, R) score sums per (prompt, arm) x rater; row = 2*p + arm
    counts: FloatArray  # (2P, R) rating counts


def _frame(prompt: npt.ArrayLike, rater: npt.ArrayLike, arm: npt.ArrayLike, score: npt.ArrayLike) -> pd.DataFrame:
    df = pd.DataFrame({"prompt": np.asarray(prompt), "rater": np.asarray(rater),
                       "arm": np.asarray(arm, dtype=np.int64), "score": np.asarray(score, dtype=np.float64)})
    if not df["arm"].isin([0, 1]).all():
        raise ValueError("arm must be 0 or 1")
    df = df[np.isfinite(df["score"])]
    both = df.groupby("prompt")["arm"].nunique()
    return df[df["prompt"].isin(both[both == 2].index)].reset_index(drop=True)


def _cells(df: pd.DataFrame) -> Cells:
    p_codes, prompts = pd.factorize(df["prompt"], sort=True)
    r_codes, raters = pd.factorize(df["rater"], sort=True)
    rows = 2 * p_codes + df["arm"].to_numpy()
    sums = np.zeros((2 * len(prompts), len(raters)))
    counts = np.zeros_like(sums)
    np.add.at(sums, (rows, r_codes), df["score"].to_numpy())
    np.add.at(counts, (rows, r_codes), 1.0)
    return {"prompts": list(prompts), "sums": sums, "counts": counts}


def per_prompt_differences(
    prompt: npt.ArrayLike, rater: npt.ArrayLike, arm: npt.ArrayLike, score: npt.ArrayLike
) -> tuple[list[object], FloatArray]:
    """(prompt ids, mean(arm 1) - mean(arm 0) per prompt); prompts missing an arm are dropped."""
    c = _cells(_frame(prompt, rater, arm, score))
    means = c["sums"].sum(axis=1) / c["counts"].sum(axis=1)
    return c["prompts"], means[1::2] - means[0::2]


def _multiplicities(rng: np.random.Generator, n: int, b: int) -> FloatArray:
    """(b, n) counts of how often each of n clusters is drawn in b resamples of size n."""
    idx = rng.integers(0, n, size=(b, n)) + np.arange(b)[:, None] * n
    return np.bincount(idx.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def cluster_bootstrap_ci(
    prompt: npt.ArrayLike, rater: npt.ArrayLike, arm: npt.ArrayLike, score: npt.ArrayLike,
    n_boot: int = 2000, seed: int = 0, resample_raters: bool = True,
) -> tuple[float, float]:
    """Percentile 95% CI of the mean per-prompt difference, resampling prompts AND raters.

    Two-way (pigeonhole) cluster bootstrap, Owen (2007): prompts and raters are
    drawn independently with replacement and each rating is weighted by
    (times its prompt drawn) x (times its rater drawn).  Hand-vectorised because
    scipy.stats.bootstrap resamples one axis only; with per-cell sums the
    rater weights become one matrix product per batch of resamples.
    It is conservative (Owen: rating-level noise is counted more than once),
    most visibly when effects barely vary across prompts; resample_raters=False
    gives the plain prompt bootstrap.
    """
    c = _cells(_frame(prompt, rater, arm, score))
    n_p, n_r = len(c["prompts"]), c["sums"].shape[1]
    if n_p < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    stats_b = np.empty(n_boot)
    for start in range(0, n_boot, 500):  # batches bound memory at 500 x 2P
        b = min(500, n_boot - start)
        w_p = _multiplicities(rng, n_p, b)
        w_r = _multiplicities(rng, n_r, b) if resample_raters else np.ones((b, n_r))
        s = w_r @ c["sums"].T  # (b, 2P): rater-weighted score sum per prompt-arm
        n = w_r @ c["counts"].T
        with np.errstate(invalid="ignore", divide="ignore"):
            diff = s[:, 1::2] / n[:, 1::2] - s[:, 0::2] / n[:, 0::2]
        ok = np.isfinite(diff)  # a prompt-arm can lose all its raters in a resample
        w = np.where(ok, w_p, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            stats_b[start : start + b] = (w * np.where(ok, diff, 0)).sum(axis=1) / w.sum(axis=1)
    stats_b = stats_b[np.isfinite(stats_b)]
    if stats_b.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(stats_b, [2.5, 97.5])
    return (float(lo), float(hi))


def wilcoxon_test(diffs: npt.ArrayLike) -> dict[str, float] | None:
    """Wilcoxon signed-rank on per-prompt differences; None if undefined (all zero / too few)."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if np.count_nonzero(d) < 1:
        return None
    try:
        r = stats.wilcoxon(d)
    except ValueError:
        return None
    return {"statistic": float(r.statistic), "p": float(r.pvalue)}


def effect_sizes(diffs: npt.ArrayLike) -> dict[str, float | None]:
    """Cohen's d_z (mean/SD of differences) and dependent-samples probability of superiority.

    PS = P(diff > 0) + 0.5 * P(diff == 0) over prompts (Grissom & Kim).
    """
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"d_z": None, "prob_superiority": None}
    sd = float(np.std(d, ddof=1)) if d.size > 1 else 0.0
    d_z = float(d.mean() / sd) if sd > 0 else None
    return {"d_z": d_z, "prob_superiority": float(np.mean(d > 0) + 0.5 * np.mean(d == 0))}


def mixed_model(
    prompt: npt.ArrayLike, rater: npt.ArrayLike, arm: npt.ArrayLike, score: npt.ArrayLike
) -> MixedResult:
    """Fit score ~ arm + (1|rater) + (1|prompt) by REML; never raises.

    Fitted by evalapp.stats.mixed.fit_crossed (lme4's profiled REML with the prompts' block
    eliminated), which gives statsmodels MixedLM's estimates and variance components with crossed
    variance components, in a fraction of a second instead of minutes at thousands of prompts. The
    SE is lme4's, sigma^2 (R_X'R_X)^-1; statsmodels inverts the observed Hessian of all parameters
    instead, which differs in the third decimal only on small designs (tests/evalapp/stats/test_mixed.py).
    """
    from .mixed import fit_crossed

    out: MixedResult = {"estimate": None, "se": None, "p": None, "converged": False,
                        "reason": None, "warnings": [], "variances": None}
    try:
        df = _frame(prompt, rater, arm, score)
        if len(df) < 4 or df["rater"].nunique() < 2 or df["prompt"].nunique() < 2:
            out["reason"] = "too few observations, raters or prompts"
            return out
        arm_column = df["arm"].to_numpy(dtype=np.float64)
        X = np.column_stack([np.ones(len(df)), arm_column])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = fit_crossed(df["score"].to_numpy(), X,
                              [pd.factorize(df["rater"])[0], pd.factorize(df["prompt"])[0]], ["rater", "prompt"])
        out["warnings"] = sorted({str(w.message) for w in caught} | set(fit.warnings))
        est, se, p = float(fit.beta[1]), float(fit.se[1]), float(fit.p[1])
    except Exception as exc:  # numerical failures of any kind must not break a report
        out["reason"] = f"{type(exc).__name__}: {exc}"
        return out
    out.update(estimate=est, se=se, p=p, variances=fit.variances)
    out["converged"] = bool(fit.converged and np.isfinite(se) and se > 0)
    if not out["converged"]:
        out["reason"] = fit.warnings[0] if fit.warnings else "optimizer did not converge or SE undefined"
    return out


def holm(pvalues: Mapping[str, float | None]) -> dict[str, float | None]:
    """Holm-adjusted p-values across scales; None stays None and is not counted."""
    keys = [k for k, p in pvalues.items() if p is not None and np.isfinite(p)]
    adjusted = dict.fromkeys(pvalues)
    if keys:
        _, padj, _, _ = multipletests([pvalues[k] for k in keys], method="holm")
        adjusted.update({k: float(p) for k, p in zip(keys, padj, strict=True)})
    return adjusted


def unsafe_rates(arm: npt.ArrayLike, unsafe: npt.ArrayLike) -> dict[int, dict[str, object]]:
    """Unsafe share per arm with Wilson 95% CIs: {arm: {"k", "n", "rate", "ci95"}}."""
    a = np.asarray(arm, dtype=np.int64)
    u = np.asarray(unsafe, dtype=bool)
    out: dict[int, dict[str, object]] = {}
    for arm_value in (0, 1):
        sel = u[a == arm_value]
        n, k = int(sel.size), int(sel.sum())
        if n == 0:
            out[arm_value] = {"k": 0, "n": 0, "rate": None, "ci95": (None, None)}
            continue
        lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
        out[arm_value] = {"k": k, "n": n, "rate": k / n, "ci95": (float(lo), float(hi))}
    return out


def compare_scale(
    prompt: npt.ArrayLike, rater: npt.ArrayLike, arm: npt.ArrayLike, score: npt.ArrayLike,
    n_boot: int = 2000, seed: int = 0, fit_mixed: bool = True,
) -> dict[str, object]:
    """All comparison statistics for one scale (arm 1 minus arm 0)."""
    _, diffs = per_prompt_differences(prompt, rater, arm, score)
    result: dict[str, object] = {
        "n_prompts": int(diffs.size),
        "mean_diff": float(diffs.mean()) if diffs.size else None,
        "ci95": cluster_bootstrap_ci(prompt, rater, arm, score, n_boot, seed),
        "wilcoxon": wilcoxon_test(diffs),
        **effect_sizes(diffs),
    }
    result["mixed"] = mixed_model(prompt, rater, arm, score) if fit_mixed else None
    return result


def compare_scales(
    data: Mapping[str, Mapping[str, npt.ArrayLike]], n_boot: int = 2000, seed: int = 0, fit_mixed: bool = True
) -> dict[str, dict[str, object]]:
    """compare_scale per scale plus Holm-adjusted p-values across scales.

    `data[scale]` has keys prompt, rater, arm, score.  Adds "wilcoxon_p_holm"
    and "mixed_p_holm" to each scale's result.
    """
    results = {name: compare_scale(d["prompt"], d["rater"], d["arm"], d["score"], n_boot, seed, fit_mixed)
               for name, d in data.items()}
    wil = holm({n: (r["wilcoxon"] or {}).get("p") for n, r in results.items()})  # type: ignore[union-attr]
    mix = holm({n: (r["mixed"] or {}).get("p") for n, r in results.items()})  # type: ignore[union-attr]
    for name, r in results.items():
        r["wilcoxon_p_holm"] = wil[name]
        r["mixed_p_holm"] = mix[name]
    return results


def sign_flip_test(diffs: npt.ArrayLike, n_draws: int = 20000, seed: int = 0) -> dict[str, object] | None:
    """Two-sided paired test of per-prompt differences by flipping their signs (zeros drop out).

    When every non-zero difference has the same size (one rating per prompt and arm of a yes/no
    answer) this is the exact sign test on the discordant prompts, i.e. McNemar's exact test,
    computed with scipy's binomtest; otherwise exact enumeration up to 16 non-zero differences,
    then a seeded Monte Carlo of n_draws sign vectors. scipy's wilcoxon would fall back to a
    normal approximation on these tied differences, anti-conservative at the sizes studies have.
    """
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    n = int(d.size)
    if n == 0:
        return None
    if np.allclose(np.abs(d), abs(d[0])):
        k = int((d > 0).sum())
        return {"p": float(stats.binomtest(k, n, 0.5).pvalue), "method": "exact sign test (McNemar)",
                "n_nonzero": n}
    observed = abs(d.sum()) - 1e-12
    if n <= 16:
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        p, method = float(np.mean(np.abs(signs @ d) >= observed)), "exact sign-flip permutation"
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_draws, n))
        p = float((1 + np.sum(np.abs(signs @ d) >= observed)) / (n_draws + 1))
        method = f"sign-flip permutation, {n_draws} draws"
    return {"p": p, "method": method, "n_nonzero": n}


def compare_choice(
    prompt: npt.ArrayLike, arm: npt.ArrayLike, value: npt.ArrayLike, options: list[float] | None = None,
    n_boot: int = 2000, seed: int = 0,
) -> dict[str, object]:
    """A nominal criterion's arms compared answer by answer (arm 1 minus arm 0).

    Per option: the share of ratings choosing it in each arm with a Wilson 95% CI (ratings pooled,
    so the CI ignores clustering within prompts: read it as descriptive), and the paired test over
    prompts: each prompt's share in arm 1 minus its share in arm 0, tested by sign_flip_test (the
    exact McNemar test with one rating per prompt and arm), with a prompt-bootstrap 95% CI of the
    mean difference. Options are Holm-adjusted among themselves, except that a two-option answer
    is one test (the second option's differences are the first's, negated); the criterion's own
    `p` is the smallest adjusted option p, which evalapp.analysis puts in the Holm family of the
    study's criteria.
    """
    df = pd.DataFrame({"prompt": np.asarray(prompt), "arm": np.asarray(arm, dtype=np.int64),
                       "value": np.asarray(value, dtype=np.float64)})
    opts = sorted(set(df["value"].tolist())) if options is None else list(options)
    both = df.groupby("prompt")["arm"].nunique()
    paired = df[df["prompt"].isin(both[both == 2].index)]
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {"n_prompts": int((both == 2).sum()), "options": {}}
    pvalues = {}
    for option in opts:
        per_arm = {}
        for arm_value in (0, 1):
            sel = df.loc[df["arm"] == arm_value, "value"].to_numpy()
            n, k = int(sel.size), int((sel == option).sum())
            ci = proportion_confint(k, n, alpha=0.05, method="wilson") if n else (None, None)
            per_arm[arm_value] = {"k": k, "n": n, "share": k / n if n else None,
                                  "ci95": [float(ci[0]), float(ci[1])] if n else [None, None]}
        shares = paired.assign(hit=(paired["value"] == option).astype(float)).groupby(["prompt", "arm"])["hit"].mean()
        diffs = (shares.xs(1, level="arm") - shares.xs(0, level="arm")).to_numpy() if len(shares) else np.array([])
        ci95: list[float | None] = [None, None]
        if diffs.size >= 2 and n_boot > 0:
            boots = diffs[rng.integers(0, diffs.size, size=(n_boot, diffs.size))].mean(axis=1)
            ci95 = [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]
        test = sign_flip_test(diffs, seed=seed) if diffs.size else None
        key = str(int(option)) if float(option).is_integer() else str(option)
        out["options"][key] = {  # type: ignore[index]
            "arms": per_arm, "mean_diff": float(diffs.mean()) if diffs.size else None, "ci95": ci95, "test": test,
        }
        pvalues[key] = (test or {}).get("p")
    adjusted = pvalues if len(opts) <= 2 else holm(pvalues)
    for key, p in adjusted.items():
        out["options"][key]["p_holm"] = p  # type: ignore[index]
    finite = [p for p in adjusted.values() if p is not None]
    out["p"] = min(finite) if finite else None
    return out
