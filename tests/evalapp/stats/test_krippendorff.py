"""Krippendorff's alpha: published values, package agreement, fast bootstrap, properties."""

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from evalapp.stats.agreement import (
    bootstrap_item_indices,
    krippendorff_alpha,
    krippendorff_alpha_boot,
    krippendorff_alpha_ci,
)
from bench.baselines import krippendorff_alpha_boot_naive

NAN = np.nan
# Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability", section C:
# 4 observers x 12 units, values 1-5, with missing data.  The paper reports
# nominal .743, ordinal .815, interval .849 (ratio .797); the krippendorff
# package's own tests/doctests assert .815, .797 and .743 on the same matrix.
K2011 = np.array([
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
])


@pytest.mark.parametrize(("level", "expected"), [
    ("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797),
])
def test_krippendorff_2011_worked_example(level, expected):
    assert krippendorff_alpha(K2011, level) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_fast_path_with_identity_resample_equals_point_estimate(level):
    identity = np.arange(K2011.shape[1])[None, :]
    fast = krippendorff_alpha_boot(K2011, level, identity)[0]
    assert fast == pytest.approx(krippendorff_alpha(K2011, level), abs=1e-12)


def _random_ratings(seed, raters=6, items=60, missing=0.3):
    rng = np.random.default_rng(seed)
    true = rng.normal(5.5, 2, items)
    m = np.clip(np.round(true + rng.normal(0, 1.5, (raters, items))), 1, 10)
    m[rng.random(m.shape) < missing] = NAN
    return m


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("level", ["ordinal", "interval"])
def test_point_estimate_matches_package_on_random_data(seed, level):
    m = _random_ratings(seed)
    assert krippendorff_alpha(m, level) == pytest.approx(krippendorff.alpha(m, level_of_measurement=level))


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_fast_bootstrap_equals_package_on_same_resamples(level):
    m = _random_ratings(7, items=40)
    idx = bootstrap_item_indices(m.shape[1], 200, seed=3)
    fast = krippendorff_alpha_boot(m, level, idx)
    naive = krippendorff_alpha_boot_naive(m, level, idx)
    np.testing.assert_allclose(fast, naive, rtol=0, atol=1e-10)


def test_fast_bootstrap_handles_degenerate_resamples_like_package():
    # Few items, little variation: some resamples have a single value -> alpha undefined (NaN).
    m = np.array([[1, 1, 1, 2], [1, 1, 1, NAN], [NAN, 1, 1, 2]], dtype=float)
    idx = bootstrap_item_indices(4, 300, seed=0)
    fast = krippendorff_alpha_boot(m, "interval", idx, value_domain=range(1, 11))
    naive = krippendorff_alpha_boot_naive(m, "interval", idx, value_domain=range(1, 11))
    assert np.isnan(fast).any()
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(naive))
    np.testing.assert_allclose(fast[~np.isnan(fast)], naive[~np.isnan(naive)], atol=1e-10)


def test_value_domain_does_not_change_interval_or_ordinal_alpha():
    m = _random_ratings(1)
    for level in ("interval", "ordinal"):
        assert krippendorff_alpha(m, level, value_domain=range(1, 11)) == pytest.approx(krippendorff_alpha(m, level))
    with pytest.raises(ValueError):
        krippendorff_alpha(m, "interval", value_domain=[1, 2, 3])


def test_ci_is_reproducible_and_contains_estimate():
    m = _random_ratings(2)
    a = krippendorff_alpha_ci(m, "interval", n_boot=500, seed=11)
    b = krippendorff_alpha_ci(m, "interval", n_boot=500, seed=11)
    assert a == b
    assert a["ci95"][0] < a["value"] < a["ci95"][1]
    assert a["n_boot"] == 500


# --- hypothesis properties -------------------------------------------------

scores = st.integers(min_value=1, max_value=10).map(float)


@st.composite
def rating_matrices(draw, min_raters=2, max_raters=6, min_items=3, max_items=25):
    r = draw(st.integers(min_raters, max_raters))
    n = draw(st.integers(min_items, max_items))
    m = draw(arrays(np.float64, (r, n), elements=scores))
    mask = draw(arrays(np.bool_, (r, n), elements=st.booleans()))
    if draw(st.booleans()):  # half the examples have missing ratings
        m[mask] = NAN
    m[:2, 0] = [1.0, 10.0]  # guarantees one pairable unit and two distinct values
    return m


@settings(max_examples=60, deadline=None)
@given(row=arrays(np.float64, st.integers(2, 30), elements=scores), raters=st.integers(2, 6))
def test_alpha_is_one_for_identical_raters(row, raters):
    if np.unique(row).size < 2:
        row = np.append(row, row[0] % 10 + 1)
    m = np.tile(row, (raters, 1))
    for level in ("interval", "ordinal"):
        assert krippendorff_alpha(m, level) == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(m=rating_matrices(), data=st.data())
def test_alpha_invariant_to_permuting_raters_and_items(m, data):
    pr = data.draw(st.permutations(range(m.shape[0])))
    pi = data.draw(st.permutations(range(m.shape[1])))
    for level in ("interval", "ordinal"):
        assert krippendorff_alpha(m[np.ix_(pr, pi)], level) == pytest.approx(krippendorff_alpha(m, level), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(m=rating_matrices(min_items=8), level=st.sampled_from(["interval", "ordinal"]))
def test_fast_bootstrap_matches_package_property(m, level):
    idx = bootstrap_item_indices(m.shape[1], 20, seed=0)
    fast = krippendorff_alpha_boot(m, level, idx)
    naive = krippendorff_alpha_boot_naive(m, level, idx)
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(naive))
    np.testing.assert_allclose(fast[~np.isnan(fast)], naive[~np.isnan(naive)], atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_bootstrap_ci_contains_point_estimate(seed):
    m = _random_ratings(seed, raters=5, items=50)
    res = krippendorff_alpha_ci(m, "interval", n_boot=400, seed=seed)
    assert res["ci95"][0] <= res["value"] <= res["ci95"][1]
