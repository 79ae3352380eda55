"""evalapp.analysis: long-form re-analysis against published values and the stats modules."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from evalapp.analysis import analyze_long, validate_long
from evalapp.stats import agreement

from .stats.test_krippendorff import K2011

# Shrout & Fleiss (1979) Table 2: 6 targets x 4 judges.
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
SF_PUBLISHED = {"ICC1": 0.17, "ICC2": 0.29, "ICC3": 0.71, "ICC1k": 0.44, "ICC2k": 0.62, "ICC3k": 0.91}


def sf_rows() -> list[dict]:
    return [{"item": f"t{i}", "rater": f"j{j}", "score": v} for i, row in enumerate(SHROUT_FLEISS)
            for j, v in enumerate(row)]


def k2011_rows() -> list[dict]:
    return [{"item": f"u{u}", "rater": f"o{o}", "score": K2011[o, u]}
            for o in range(K2011.shape[0]) for u in range(K2011.shape[1]) if not np.isnan(K2011[o, u])]


def simulated(n_prompts=60, n_raters=12, per_item=3, effect=1.0, seed=0, lo=1, hi=5, arms=("base", "tuned")):
    """Each response (prompt x arm) scored by per_item of n_raters raters."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        quality = rng.normal(0, 1)
        for a, label in enumerate(arms):
            for r in rng.choice(n_raters, per_item, replace=False):
                score = np.clip(np.round((lo + hi) / 2 + quality + effect * a + rng.normal(0, 0.7)), lo, hi)
                rows.append({"item": f"p{p}-{label}", "rater": f"r{r}", "score": score, "arm": label,
                             "prompt": f"p{p}"})
    return pd.DataFrame(rows)


def test_shrout_fleiss_all_six_forms_and_two_way_headline():
    s = analyze_long(sf_rows(), n_boot=100)["scales"]["score"]
    assert {f: round(v["value"], 2) for f, v in s["icc"].items()} == SF_PUBLISHED
    assert s["icc_headline"]["design"] == "same_raters_all_items"
    assert (s["icc_headline"]["single"], s["icc_headline"]["average"]) == ("ICC2", "ICC2k")
    assert all(lo <= s["icc"][f]["value"] <= hi for f in SF_PUBLISHED for lo, hi in [s["icc"][f]["ci95"]])
    assert (s["n_items"], s["n_raters"], s["n_ratings"]) == (6, 4, 24)


def test_krippendorff_2011_and_single_rating_item_kept_in_counts():
    s = analyze_long(k2011_rows(), n_boot=300)["scales"]["score"]
    assert s["krippendorff_alpha_interval"]["value"] == pytest.approx(0.849, abs=5e-4)
    assert s["krippendorff_alpha_ordinal"]["value"] == pytest.approx(0.815, abs=5e-4)
    lo, hi = s["krippendorff_alpha_interval"]["ci95"]
    assert lo <= 0.849 <= hi
    # Unit 12 has one rating (observer 2's "3"): counted, but not in pair statistics.
    assert (s["n_items"], s["n_ratings"], s["n_items_single_rating"]) == (12, 41, 1)
    assert s["value_domain"] == [1, 2, 3, 4, 5]
    assert s["icc"] is None and "different numbers of ratings" in s["icc_note"]


def test_slot_matrix_gives_the_same_statistics_as_the_raters_x_items_matrix():
    df = simulated(n_prompts=40, n_raters=15, seed=3)
    s = analyze_long(df, n_boot=50)["scales"]["score"]
    r_codes, _ = pd.factorize(df["rater"], sort=True)
    u_codes, _ = pd.factorize(df["item"], sort=True)
    m = np.full((r_codes.max() + 1, u_codes.max() + 1), np.nan)
    m[r_codes, u_codes] = df["score"]
    for level in ("interval", "ordinal"):
        assert s[f"krippendorff_alpha_{level}"]["value"] == pytest.approx(agreement.krippendorff_alpha(m, level))
    assert s["exact_agreement"] == pytest.approx(agreement.exact_agreement(m))
    assert s["within_one_agreement"] == pytest.approx(agreement.within_one_agreement(m))
    assert s["weighted_kappa"]["mean"] == pytest.approx(agreement.weighted_kappa_pairs(m)["mean"])


def test_different_raters_per_item_reports_one_way_icc_only():
    df = simulated(n_prompts=30, n_raters=10, seed=1)
    s = analyze_long(df, n_boot=50)["scales"]["score"]
    assert s["icc_headline"]["design"] == "different_raters_per_item"
    assert (s["icc_headline"]["single"], s["icc_headline"]["average"]) == ("ICC1", "ICC1k")
    assert s["icc"]["ICC2"]["value"] is None and s["icc"]["ICC3k"]["value"] is None
    # ICC1 does not depend on the order of an item's ratings: compare with any arrangement.
    matrix = df.sort_values(["item", "score"])["score"].to_numpy().reshape(-1, 3)
    assert s["icc"]["ICC1"]["value"] == pytest.approx(agreement.icc_all(matrix)["ICC1"]["value"])


@pytest.mark.parametrize(("lo", "hi"), [(0, 3), (1, 5), (1, 10)])
def test_any_integer_scale(lo, hi):
    df = simulated(lo=lo, hi=hi, seed=lo + hi)
    s = analyze_long(df, n_boot=100, fit_mixed=False)["scales"]["score"]
    assert lo <= min(s["value_domain"]) and max(s["value_domain"]) <= hi
    assert 0 < s["krippendorff_alpha_interval"]["value"] <= 1
    assert 0 < s["krippendorff_alpha_ordinal"]["value"] <= 1
    assert s["comparison"]["mean_diff"] > 0


def test_arm_labels_map_in_sorted_order_and_comparison_per_scale_with_holm():
    a = simulated(arms=("tuned", "base"), effect=1.0, seed=5).assign(scale="empathy")
    b = simulated(arms=("tuned", "base"), effect=0.0, seed=6, lo=0, hi=3).assign(scale="safety")
    out = analyze_long(pd.concat([a, b]), n_boot=200)
    assert out["settings"]["arm_mapping"] == {"base": 0, "tuned": 1}
    emp = out["scales"]["empathy"]["comparison"]
    # simulated() adds the effect to its second label ("base"), so tuned - base is negative.
    assert emp["contrast"] == "tuned - base" and emp["mean_diff"] < -0.5
    assert emp["n_prompts"] == 60 and emp["ci95"][1] < 0
    assert emp["mixed"]["estimate"] == pytest.approx(emp["mean_diff"], abs=0.1)
    for scale in ("empathy", "safety"):
        c = out["scales"][scale]["comparison"]
        assert c["wilcoxon_p_holm"] >= c["wilcoxon"]["p"]


def test_no_arm_means_no_comparison_and_missing_prompt_uses_item():
    assert "comparison" not in analyze_long(sf_rows(), n_boot=20)["scales"]["score"]
    df = simulated(n_prompts=20, seed=2).drop(columns="prompt")
    df["item"] = df["item"].str.split("-").str[0]  # item ids = prompt ids, arms tell the responses apart
    out = analyze_long(df, n_boot=50, fit_mixed=False)
    s = out["scales"]["score"]
    assert out["settings"]["prompt_column"] == "item"
    assert s["n_items"] == 40 and s["comparison"]["n_prompts"] == 20


def test_degenerate_input_is_json_without_nan():
    rows = [{"item": i, "rater": r, "score": 2, "arm": i % 2, "prompt": i // 2} for i in range(4) for r in "ab"]
    out = analyze_long(rows, n_boot=20)
    json.dumps(out, allow_nan=False)
    s = out["scales"]["score"]
    assert s["krippendorff_alpha_interval"]["value"] is None
    assert s["comparison"]["mixed"]["estimate"] is None or s["comparison"]["mixed"]["reason"]


def test_analyze_long_rejects_duplicates_and_bad_arms():
    with pytest.raises(ValueError, match="duplicate"):
        analyze_long([*sf_rows(), sf_rows()[0]])
    with pytest.raises(ValueError, match="two labels"):
        analyze_long([{**r, "arm": i % 3} for i, r in enumerate(sf_rows())], n_boot=10)


def test_validate_long_cases():
    rows = [{"item": "a", "rater": "x", "score": "1"}, {"item": "a", "rater": "y", "score": "2"}]
    assert validate_long(rows) == []
    assert "empty file" in str(validate_long([], columns=[])[0])
    assert "no data rows" in " ".join(map(str, validate_long([], columns=["item", "rater", "score"])))
    assert "missing column(s) score" in str(validate_long([{"item": "a", "rater": "x"}])[0])
    bad = validate_long([*rows, {"item": "b", "rater": "x", "score": "high"}, {"item": "b", "rater": "y",
                                                                           "score": "nan"}])
    assert [p.rows for p in bad] == [[4, 5]] and "rows 4, 5" in str(bad[0])
    dup = validate_long([*rows, {"item": "a", "rater": "x", "score": "3"}])
    assert [p.rows for p in dup] == [[2, 4]]
    assert "only one rater" in str(validate_long([{"item": i, "rater": "x", "score": "1"} for i in "ab"])[0])
    numbered = validate_long([*rows, {"item": "", "rater": "x", "score": "1"}], row_numbers=[2, 3, 9])
    assert [p.rows for p in numbered] == [[9]]
