"""Weighted kappa per rater pair and simple agreement shares."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from evalapp.stats.agreement import exact_agreement, weighted_kappa_pairs, within_one_agreement

NAN = np.nan


def _ratings(seed, raters=4, items=30):
    rng = np.random.default_rng(seed)
    m = np.clip(np.round(rng.normal(5, 2, items) + rng.normal(0, 1.2, (raters, items))), 1, 10)
    m[rng.random(m.shape) < 0.2] = NAN
    return m


@pytest.mark.parametrize("weights", ["quadratic", "linear"])
@pytest.mark.parametrize("seed", range(4))
def test_matches_sklearn(weights, seed):
    from sklearn import metrics  # test-only reference (a test dependency)
    m = _ratings(seed)
    labels = np.arange(1, 11)
    res = weighted_kappa_pairs(m, weights=weights, labels=labels)
    assert res["pairs"], "expected some pairs"
    for p in res["pairs"]:
        i, j = p["raters"]
        shared = ~np.isnan(m[i]) & ~np.isnan(m[j])
        ref = metrics.cohen_kappa_score(m[i, shared], m[j, shared], labels=labels, weights=weights)
        assert p["kappa"] == pytest.approx(ref, abs=1e-12)
        assert p["n"] == shared.sum()
    assert res["mean"] == pytest.approx(np.mean([p["kappa"] for p in res["pairs"]]))


def test_min_shared_filters_pairs():
    m = np.array([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7], [1, 2, NAN, NAN, NAN, NAN]])
    res = weighted_kappa_pairs(m, min_shared=5)
    assert [p["raters"] for p in res["pairs"]] == [(0, 1)]
    assert weighted_kappa_pairs(m, min_shared=50) == {"pairs": [], "mean": None}


def test_constant_raters_give_none_not_nan():
    m = np.array([[3.0] * 6, [3.0] * 6])
    res = weighted_kappa_pairs(m, labels=range(1, 11))
    assert res["pairs"][0]["kappa"] is None and res["mean"] is None


def test_agreement_shares():
    m = np.array([[1, 5, 7, NAN], [1, 6, 9, 2], [2, 5, NAN, 2]])
    # pairs: (0,1): 1=1, 5/6, 7/9 ; (0,2): 1/2, 5=5 ; (1,2): 1/2, 6/5, 2=2  -> 8 pairs
    assert exact_agreement(m) == pytest.approx(3 / 8)
    assert within_one_agreement(m) == pytest.approx(7 / 8)
    assert exact_agreement(np.array([[1, NAN], [NAN, 2]])) is None


@settings(max_examples=60, deadline=None)
@given(
    pair=arrays(np.float64, (2, 12), elements=st.integers(1, 10).map(float)),
    weights=st.sampled_from(["quadratic", "linear"]),
)
def test_kappa_symmetric_in_raters(pair, weights):
    a = weighted_kappa_pairs(pair, weights=weights, labels=range(1, 11))
    b = weighted_kappa_pairs(pair[::-1], weights=weights, labels=range(1, 11))
    ka, kb = a["pairs"][0]["kappa"], b["pairs"][0]["kappa"]
    assert (ka is None and kb is None) or ka == pytest.approx(kb, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(row=arrays(np.float64, 10, elements=st.integers(1, 10).map(float)))
def test_kappa_one_for_identical_raters(row):
    res = weighted_kappa_pairs(np.vstack([row, row]), labels=range(1, 11))
    k = res["pairs"][0]["kappa"]
    assert k is None if np.unique(row).size == 1 else k == pytest.approx(1.0)
