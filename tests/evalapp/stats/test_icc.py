"""ICC: Shrout & Fleiss (1979) Table 2 values and agreement with pingouin."""

import numpy as np
import pytest

from evalapp.stats.agreement import icc_all, icc_headline_form

# Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges.
SF1979 = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])
# Published in the paper's Table 4 (two decimals).
SF_PUBLISHED = {"ICC1": 0.17, "ICC2": 0.29, "ICC3": 0.71, "ICC1k": 0.44, "ICC2k": 0.62, "ICC3k": 0.91}
# pingouin 0.7 on pandas 3 warns about its own dropna(inplace=True); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword:Warning")

PINGOUIN_TYPES = {"ICC1": "ICC(1,1)", "ICC2": "ICC(A,1)", "ICC3": "ICC(C,1)",
                  "ICC1k": "ICC(1,k)", "ICC2k": "ICC(A,k)", "ICC3k": "ICC(C,k)"}


@pytest.mark.parametrize(("form", "expected"), SF_PUBLISHED.items())
def test_shrout_fleiss_table(form, expected):
    assert round(icc_all(SF1979)[form]["value"], 2) == expected


def _pingouin(x):
    import pingouin as pg
    import pandas as pd

    n, k = x.shape
    long = pd.DataFrame({"t": np.repeat(np.arange(n), k), "r": np.tile(np.arange(k), n), "s": x.ravel()})
    saved = pg.options.get("round.column.CI95")
    pg.options["round.column.CI95"] = None  # pingouin rounds CIs to 2 dp by default
    try:
        out = pg.intraclass_corr(long, targets="t", raters="r", ratings="s")
    finally:
        pg.options["round.column.CI95"] = saved
    return out.set_index("Type")


@pytest.mark.parametrize("seed", range(6))
def test_matches_pingouin_on_random_data(seed):
    rng = np.random.default_rng(seed)
    n, k = rng.integers(5, 40), rng.integers(2, 7)
    x = np.clip(np.round(rng.normal(5, 2, (n, 1)) + rng.normal(0, 1.5, (n, k)) + rng.normal(0, 1, k)), 1, 10)
    ours = icc_all(x)
    ref = _pingouin(x)
    for name, pg_type in PINGOUIN_TYPES.items():
        row = ref.loc[pg_type]
        assert ours[name]["value"] == pytest.approx(row["ICC"], abs=1e-10)
        np.testing.assert_allclose(ours[name]["ci95"], row["CI95"], atol=1e-8)
        assert ours[name]["F"] == pytest.approx(row["F"])
        assert ours[name]["pval"] == pytest.approx(row["pval"], abs=1e-12)


def test_shrout_fleiss_matches_pingouin_including_ci():
    ours, ref = icc_all(SF1979), _pingouin(SF1979.astype(float))
    for name, pg_type in PINGOUIN_TYPES.items():
        np.testing.assert_allclose(ours[name]["ci95"], ref.loc[pg_type, "CI95"], atol=1e-8)


def test_ci_brackets_value():
    for res in icc_all(SF1979).values():
        assert res["ci95"][0] < res["value"] < res["ci95"][1]


def test_rejects_incomplete_matrix():
    x = SF1979.astype(float)
    x[0, 0] = np.nan
    with pytest.raises(ValueError):
        icc_all(x)


def test_headline_form():
    assert icc_headline_form("different_raters_per_item")["single"] == "ICC1"
    assert icc_headline_form("different_raters_per_item")["average"] == "ICC1k"
    assert icc_headline_form("same_raters_all_items")["single"] == "ICC2"
    assert icc_headline_form("fixed_raters_only")["single"] == "ICC3"
    with pytest.raises(ValueError):
        icc_headline_form("nonsense")
