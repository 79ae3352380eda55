"""Naive baselines the benchmarks time the product against, and the tests check it against.

Kept out of evalapp.stats: the product never calls them; they are the slow, obviously-right version.
"""

from __future__ import annotations

import krippendorff
import numpy as np
import numpy.typing as npt

from evalapp.stats.agreement import Level, as_matrix, value_domain_of


def krippendorff_alpha_boot_naive(
    matrix: npt.ArrayLike,
    level: Level,
    indices: npt.NDArray[np.int64],
    value_domain: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """One krippendorff.alpha call per resample: what krippendorff_alpha_boot computes, vectorised."""
    m = as_matrix(matrix)
    dom = value_domain_of(m, value_domain)
    out = np.empty(indices.shape[0])
    for b, idx in enumerate(indices):
        try:
            with np.errstate(invalid="ignore", divide="ignore"):
                out[b] = krippendorff.alpha(m[:, idx], level_of_measurement=level, value_domain=dom)
        except ValueError:  # no unit with two ratings in this resample
            out[b] = np.nan
    return out


def mixed_model_statsmodels(prompt, rater, arm, score) -> dict:
    """The comparison's mixed model as the product fitted it before evalapp.stats.mixed: statsmodels
    MixedLM with one all-covering group and the crossed intercepts as variance components (its
    documented way to crossed effects), dense in the number of ratings."""
    import pandas as pd
    from statsmodels.regression.mixed_linear_model import MixedLM

    df = pd.DataFrame({"prompt": pd.factorize(np.asarray(prompt))[0], "rater": pd.factorize(np.asarray(rater))[0],
                       "arm": np.asarray(arm, dtype=np.float64), "score": np.asarray(score, dtype=np.float64)})
    df["one"] = 1
    res = MixedLM.from_formula("score ~ arm", data=df, groups="one", re_formula="0",
                               vc_formula={"rater": "0 + C(rater)", "prompt": "0 + C(prompt)"}).fit(reml=True)
    return {"estimate": float(res.fe_params["arm"]), "se": float(res.bse_fe["arm"]),
            "variances": dict(zip(res.model.exog_vc.names, map(float, res.vcomp), strict=True)) | {
                "residual": float(res.scale)}}
