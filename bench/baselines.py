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
