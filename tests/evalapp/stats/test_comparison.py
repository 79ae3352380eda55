"""Arm comparison on simulated crossed prompt x rater data."""

import numpy as np
import pytest

from evalapp.stats.comparison import (
    cluster_bootstrap_ci,
    compare_scale,
    compare_scales,
    effect_sizes,
    holm,
    mixed_model,
    per_prompt_differences,
    unsafe_rates,
    wilcoxon_test,
)


def simulate(seed, effect=1.0, prompts=40, raters=10, per_prompt=4):
    """Each prompt's two responses are scored by the same `per_prompt` random raters."""
    rng = np.random.default_rng(seed)
    prompt_fx = rng.normal(0, 1, prompts)
    rater_fx = rng.normal(0, 0.7, raters)
    p, r, a, s = [], [], [], []
    for i in range(prompts):
        for j in rng.choice(raters, per_prompt, replace=False):
            for arm in (0, 1):
                p.append(f"p{i}")
                r.append(j)
                a.append(arm)
                s.append(5 + prompt_fx[i] + rater_fx[j] + effect * arm + rng.normal(0, 1))
    return np.array(p), np.array(r), np.array(a), np.array(s)


def test_per_prompt_differences_by_hand():
    prompt = ["a", "a", "a", "b", "b", "c"]
    rater = [1, 2, 1, 1, 1, 1]
    arm = [0, 0, 1, 0, 1, 1]
    score = [4, 6, 8, 3, 3, 9]
    ids, d = per_prompt_differences(prompt, rater, arm, score)
    assert ids == ["a", "b"]  # "c" has no arm-0 rating
    np.testing.assert_allclose(d, [8 - 5, 0])


def test_recovers_plus_one_effect():
    data = simulate(seed=2024, effect=1.0)
    res = compare_scale(*data, n_boot=1000, seed=0)
    assert res["mean_diff"] == pytest.approx(1.0, abs=0.25)
    lo, hi = res["ci95"]
    assert lo < 1.0 < hi and lo > 0
    assert res["wilcoxon"]["p"] < 0.001
    mixed = res["mixed"]
    assert mixed["converged"] is True
    assert mixed["estimate"] == pytest.approx(1.0, abs=0.25)
    assert mixed["estimate"] - 1.96 * mixed["se"] < 1.0 < mixed["estimate"] + 1.96 * mixed["se"]
    assert mixed["p"] < 0.001
    assert res["d_z"] > 0.8 and res["prob_superiority"] > 0.8


def test_null_effect_mostly_not_significant():
    wil, mix, covered = [], [], []
    for seed in range(20):
        data = simulate(seed=1000 + seed, effect=0.0, prompts=30)
        res = compare_scale(*data, n_boot=300, seed=seed)
        wil.append(res["wilcoxon"]["p"])
        mix.append(res["mixed"]["p"])
        covered.append(res["ci95"][0] < 0 < res["ci95"][1])
    assert np.mean(np.array(wil) > 0.05) >= 0.8
    assert np.mean(np.array(mix) > 0.05) >= 0.8
    assert np.mean(covered) >= 0.8


def test_bootstrap_is_seeded_and_prompt_only_option_is_narrower():
    data = simulate(seed=5)
    assert cluster_bootstrap_ci(*data, n_boot=400, seed=1) == cluster_bootstrap_ci(*data, n_boot=400, seed=1)
    lo2, hi2 = cluster_bootstrap_ci(*data, n_boot=800, seed=1)
    lo1, hi1 = cluster_bootstrap_ci(*data, n_boot=800, seed=1, resample_raters=False)
    assert hi1 - lo1 < hi2 - lo2


def test_mixed_model_never_raises():
    res = mixed_model(["a", "a"], [1, 1], [0, 1], [3.0, 4.0])
    assert res["estimate"] is None and res["converged"] is False and res["reason"]
    res = mixed_model(["a", "b", "a", "b"], ["x", "y", "x", "y"], [0, 0, 1, 1], [np.nan] * 4)
    assert res["estimate"] is None and res["reason"]


def test_mixed_model_constant_scores_reports_not_crash():
    p, r, a, _ = simulate(seed=3, prompts=10)
    res = mixed_model(p, r, a, np.full(p.size, 5.0))
    assert isinstance(res["converged"], bool)
    assert res["estimate"] is None or res["converged"] is False or res["estimate"] == pytest.approx(0.0, abs=1e-6)


def test_wilcoxon_and_effect_sizes_edge_cases():
    assert wilcoxon_test([0.0, 0.0, 0.0]) is None
    assert effect_sizes([]) == {"d_z": None, "prob_superiority": None}
    es = effect_sizes([1.0, 1.0, -1.0, 0.0])
    assert es["prob_superiority"] == pytest.approx(0.5 + 0.125)
    assert es["d_z"] == pytest.approx(0.25 / np.std([1, 1, -1, 0], ddof=1))


def test_holm():
    adj = holm({"warmth": 0.01, "safety": 0.04, "clarity": 0.03, "broken": None})
    assert adj["broken"] is None
    assert [adj[k] for k in ("warmth", "clarity", "safety")] == pytest.approx([0.03, 0.06, 0.06])


def test_unsafe_rates_wilson():
    arm = [0] * 50 + [1] * 40
    unsafe = [True] * 5 + [False] * 45 + [True] * 0 + [False] * 40
    out = unsafe_rates(arm, unsafe)
    assert out[0]["k"] == 5 and out[0]["n"] == 50 and out[0]["rate"] == pytest.approx(0.1)
    lo, hi = out[0]["ci95"]
    assert lo == pytest.approx(0.0435, abs=1e-3) and hi == pytest.approx(0.2136, abs=1e-3)  # Wilson
    assert out[1]["rate"] == 0 and out[1]["ci95"][0] == pytest.approx(0, abs=1e-12) and out[1]["ci95"][1] > 0


def test_compare_scales_applies_holm():
    a = simulate(seed=8, effect=1.0)
    b = simulate(seed=9, effect=0.0)
    keys = ("prompt", "rater", "arm", "score")
    res = compare_scales({"warmth": dict(zip(keys, a)), "clarity": dict(zip(keys, b))}, n_boot=200)
    for name in ("warmth", "clarity"):
        assert res[name]["mixed_p_holm"] >= res[name]["mixed"]["p"]
        assert res[name]["wilcoxon_p_holm"] >= res[name]["wilcoxon"]["p"]
