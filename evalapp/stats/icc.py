"""Intraclass correlations (Shrout & Fleiss 1979) with McGraw & Wong (1996) F-test CIs.

Formulas follow pingouin.intraclass_corr; written out on numpy/scipy so the
app does not depend on pingouin (and its pandas/sklearn stack) at runtime, and
so CIs are not rounded to two decimals as pingouin displays them.
"""

from __future__ import annotations

from typing import Literal, TypedDict

import numpy as np
import numpy.typing as npt
from scipy.stats import f as f_dist

__all__ = ["ICCResult", "icc_all", "icc_headline_form"]


class ICCResult(TypedDict):
    value: float
    ci95: tuple[float, float]
    F: float
    df1: int
    df2: int
    pval: float


def icc_all(matrix: npt.ArrayLike, alpha: float = 0.05) -> dict[str, ICCResult]:
    """All six ICC forms for a complete items x raters matrix.

    Keys: ICC1, ICC2, ICC3 (single rater) and ICC1k, ICC2k, ICC3k (mean of k
    raters). In pingouin's naming ICC2 = ICC(A,1), ICC3 = ICC(C,1).
    """
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim != 2 or np.isnan(x).any():
        raise ValueError("icc_all needs a complete 2-D items x raters matrix")
    n, k = x.shape
    if n < 2 or k < 2:
        raise ValueError("need at least 2 items and 2 raters")

    # Two-way ANOVA without replication.
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    df_b, df_w, df_e = n - 1, n * (k - 1), (n - 1) * (k - 1)
    msb = ss_rows / df_b
    msj = ss_cols / (k - 1)
    mse = ss_err / df_e
    msw = (ss_cols + ss_err) / df_w

    icc1 = (msb - msw) / (msb + (k - 1) * msw)
    icc2 = (msb - mse) / (msb + (k - 1) * mse + k * (msj - mse) / n)
    icc3 = (msb - mse) / (msb + (k - 1) * mse)
    icc1k = (msb - msw) / msb
    icc2k = (msb - mse) / (msb + (msj - mse) / n)
    icc3k = (msb - mse) / msb

    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = msb / msw
        f3 = msb / mse
    q = 1 - alpha / 2
    # One-way and consistency forms: exact F intervals.
    f1l, f1u = f1 / f_dist.ppf(q, df_b, df_w), f1 * f_dist.ppf(q, df_w, df_b)
    f3l, f3u = f3 / f_dist.ppf(q, df_b, df_e), f3 * f_dist.ppf(q, df_e, df_b)
    # Absolute agreement: Satterthwaite-approximated df (McGraw & Wong case 2A).
    fj = msj / mse
    vn = df_e * (k * icc2 * fj + n * (1 + (k - 1) * icc2) - k * icc2) ** 2
    vd = df_b * k**2 * icc2**2 * fj**2 + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2
    v = vn / vd
    f2u = f_dist.ppf(q, df_b, v)
    f2l = f_dist.ppf(q, v, df_b)
    l2 = n * (msb - f2u * mse) / (f2u * (k * msj + (k * n - k - n) * mse) + n * msb)
    u2 = n * (f2l * msb - mse) / (k * msj + (k * n - k - n) * mse + n * f2l * msb)

    p1 = float(f_dist.sf(f1, df_b, df_w))
    p3 = float(f_dist.sf(f3, df_b, df_e))

    def res(value: float, lo: float, hi: float, fval: float, d2: int, p: float) -> ICCResult:
        # With few items the F bounds can cross the pole of the average-measure transform (ICC2k's
        # k*l / (1 + l*(k-1)) at l = -1/(k-1)) and come out inverted: no interval, rather than a wrong one.
        if not lo <= hi:
            lo = hi = float("nan")
        return {"value": float(value), "ci95": (float(lo), float(hi)), "F": float(fval),
                "df1": df_b, "df2": d2, "pval": p}

    return {
        "ICC1": res(icc1, (f1l - 1) / (f1l + k - 1), (f1u - 1) / (f1u + k - 1), f1, df_w, p1),
        "ICC2": res(icc2, l2, u2, f3, df_e, p3),
        "ICC3": res(icc3, (f3l - 1) / (f3l + k - 1), (f3u - 1) / (f3u + k - 1), f3, df_e, p3),
        "ICC1k": res(icc1k, 1 - 1 / f1l, 1 - 1 / f1u, f1, df_w, p1),
        "ICC2k": res(icc2k, l2 * k / (1 + l2 * (k - 1)), u2 * k / (1 + u2 * (k - 1)), f3, df_e, p3),
        "ICC3k": res(icc3k, 1 - 1 / f3l, 1 - 1 / f3u, f3, df_e, p3),
    }


Design = Literal["different_raters_per_item", "same_raters_all_items", "fixed_raters_only"]

_HEADLINE: dict[str, dict[str, str]] = {
    "different_raters_per_item": {
        "single": "ICC1",
        "average": "ICC1k",
        "why": "Each item is scored by its own random set of raters, so rater effects cannot be "
        "separated from error: one-way random model (Shrout & Fleiss case 1).",
    },
    "same_raters_all_items": {
        "single": "ICC2",
        "average": "ICC2k",
        "why": "Every rater scores every item and raters are a sample of possible raters: two-way "
        "random model, absolute agreement (case 2); generalises to other raters.",
    },
    "fixed_raters_only": {
        "single": "ICC3",
        "average": "ICC3k",
        "why": "Every rater scores every item and these raters are the only ones of interest: "
        "two-way mixed model, consistency (case 3); ignores rater mean offsets.",
    },
}


def icc_headline_form(design: Design) -> dict[str, str]:
    """Which ICC form to report for a rating design: {"single", "average", "why"}.

    Use "average" when the analysed score is the mean over the k raters of an
    item, "single" for the reliability of one rater's score.
    """
    try:
        return dict(_HEADLINE[design])
    except KeyError:
        raise ValueError(f"unknown design {design!r}; expected one of {sorted(_HEADLINE)}") from None
