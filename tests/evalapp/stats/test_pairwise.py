"""Pairwise preference statistics: Bradley-Terry against published output, Davidson's ties, position bias."""

import numpy as np
import pytest

from evalapp.stats import pairwise as pw

# Stigler (1994) via Agresti (2002) p. 448 and BradleyTerry2's `citations`: rows cited, columns citing;
# the cited journal "wins".
JOURNALS = ["Biometrika", "Comm Statist", "JASA", "JRSS-B"]
CITATIONS = np.array([[714, 730, 498, 221], [33, 425, 68, 17], [320, 813, 1072, 142], [284, 276, 325, 188]])


def citation_pairs():
    i, j, wi, wj = [], [], [], []
    for a in range(4):
        for b in range(a + 1, 4):
            i.append(JOURNALS[a]), j.append(JOURNALS[b]), wi.append(CITATIONS[a, b]), wj.append(CITATIONS[b, a])
    return i, j, wi, wj


def test_bradley_terry_reproduces_btm_on_the_citations_data():
    # BradleyTerry2 vignette, citeModel: ..Comm Statist -2.94907 (0.10255), ..JASA -0.47965 (0.06059),
    # ..JRSS-B 0.26895 (0.07083), Biometrika the reference.
    fit = pw.bradley_terry(*citation_pairs(), labels=JOURNALS)
    assert fit["reference"] == "Biometrika" and fit["converged"]
    assert np.round(fit["estimate"], 4).tolist() == [0.0, -2.9491, -0.4796, 0.269]
    assert np.round(fit["se"][1:], 4).tolist() == [0.1025, 0.0606, 0.0708]
    # Another reference shifts every ability by the same amount.
    other = pw.bradley_terry(*citation_pairs(), labels=JOURNALS, reference="JASA")
    assert np.allclose(other["centered"], fit["centered"], atol=1e-8)


def test_davidson_without_ties_is_bradley_terry_and_with_ties_solves_its_score_equations():
    i, j, wi, wj = citation_pairs()
    assert pw.davidson(i, j, wi, wj, [0] * 6, labels=JOURNALS)["estimate"] == pytest.approx(
        pw.bradley_terry(i, j, wi, wj, labels=JOURNALS)["estimate"])
    ties = [40, 25, 30, 12, 8, 20]
    fit = pw.davidson(i, j, wi, wj, ties, labels=JOURNALS)
    assert fit["converged"] and fit["nu"] > 0
    # At the MLE each journal's expected score (wins + ties / 2) equals its observed score, and the
    # expected number of ties equals the observed one (Davidson 1970).
    lam = dict(zip(JOURNALS, fit["estimate"], strict=True))
    expected, observed = dict.fromkeys(JOURNALS, 0.0), dict.fromkeys(JOURNALS, 0.0)
    expected_ties = 0.0
    for a, b, x, y, t in zip(i, j, wi, wj, ties, strict=True):
        pa, pb = np.exp(lam[a]), np.exp(lam[b])
        pt = fit["nu"] * np.sqrt(pa * pb)
        n = x + y + t
        expected[a] += n * (pa + pt / 2) / (pa + pb + pt)
        expected[b] += n * (pb + pt / 2) / (pa + pb + pt)
        expected_ties += n * pt / (pa + pb + pt)
        observed[a] += x + t / 2
        observed[b] += y + t / 2
    assert [expected[k] for k in JOURNALS] == pytest.approx([observed[k] for k in JOURNALS], rel=1e-6)
    assert expected_ties == pytest.approx(sum(ties), rel=1e-6)


def simulate(strengths, nu, n_prompts, raters, seed, left_bias=0.0):
    """Judgments of every pair of arms on each prompt by `raters` raters, left/right at random;
    `left_bias` adds to the left side's log-ability (a rater drawn to the left response)."""
    rng = np.random.default_rng(seed)
    arms = list(strengths)
    rows = []
    for p in range(n_prompts):
        for a in range(len(arms)):
            for b in range(a + 1, len(arms)):
                for _ in range(raters):
                    left, right = (arms[a], arms[b]) if rng.random() < 0.5 else (arms[b], arms[a])
                    pl, pr = np.exp(strengths[left] + left_bias), np.exp(strengths[right])
                    pt = nu * np.sqrt(pl * pr)
                    u = rng.random() * (pl + pr + pt)
                    rows.append((f"p{p}", left, right, 1.0 if u < pl else 0.0 if u < pl + pr else 0.5))
    prompt, left, right, verdict = (list(c) for c in zip(*rows, strict=True))
    return prompt, left, right, verdict


def test_davidson_recovers_simulated_strengths_and_ties_with_bootstrap_cis_of_the_right_width():
    truth = {"A": 0.6, "B": 0.0, "C": -0.6}
    prompt, left, right, verdict = simulate(truth, nu=0.8, n_prompts=150, raters=3, seed=4)
    fit = pw.bradley_terry_bootstrap(prompt, left, right, verdict, n_boot=200, seed=1, labels=list(truth))
    assert fit["centered"] == pytest.approx(list(truth.values()), abs=0.15)
    assert fit["nu"] == pytest.approx(0.8, abs=0.15)
    assert fit["n_boot_used"] == 200
    # Over 40 simulations of this design each centered strength's estimate had a spread (sd) of
    # 0.055-0.062, so an honest 95% interval is about +-0.11 around the estimate.
    for (low, high), estimate in zip(fit["ci95"], fit["centered"], strict=True):
        assert low < estimate < high
        assert 0.08 < (high - low) / 2 < 0.16


def test_position_bias_is_recovered_from_raters_drawn_to_the_left():
    fair = simulate({"A": 0.3, "B": 0.0}, nu=0.3, n_prompts=400, raters=2, seed=7)
    biased = simulate({"A": 0.3, "B": 0.0}, nu=0.3, n_prompts=400, raters=2, seed=7, left_bias=0.6)
    fair_bias, left_bias = pw.position_bias(fair[3]), pw.position_bias(biased[3])
    assert fair_bias["ci95"][0] < 0.5 < fair_bias["ci95"][1] and fair_bias["p"] > 0.01
    # exp(0.6) / (1 + exp(0.6)) = 0.646 of decisive verdicts go left when both arms are equally often there.
    assert left_bias["left_share"] == pytest.approx(0.646, abs=0.04) and left_bias["p"] < 1e-6


def test_pair_summary_counts_from_either_side_and_states_how_ties_are_handled():
    # Arm "ft" against "base", shown on either side: ft wins twice, ties once, loses once on p1..p3.
    prompt = ["p1", "p1", "p2", "p3"]
    left = ["ft", "base", "ft", "base"]
    right = ["base", "ft", "base", "ft"]
    verdict = [pw.LEFT, pw.RIGHT, pw.TIE, pw.LEFT]
    out = pw.pair_summary(prompt, left, right, verdict, a="base", b="ft")
    assert (out["wins"], out["ties"], out["losses"], out["n"]) == (2, 1, 1, 4)
    assert out["win_ci95"][0] < 0.5 < out["win_ci95"][1]
    assert out["sign_test"]["n_decisive"] == 3 and "ties dropped" in out["sign_test"]["method"]
    # Per prompt: p1 +1 (both raters), p2 0 (a tie), p3 -1.
    assert out["n_prompts"] == 3 and out["mean_preference"] == pytest.approx(0.0)
    assert "ties as half a win" in out["ties_aware"]["method"] and out["ties_aware"]["p"] == pytest.approx(1.0)
    # Seen from the other arm, everything mirrors.
    mirror = pw.pair_summary(prompt, left, right, verdict, a="ft", b="base")
    assert (mirror["wins"], mirror["ties"], mirror["losses"]) == (1, 1, 2)


def test_a_clear_preference_is_significant_on_both_tests():
    prompt, left, right, verdict = simulate({"ft": 1.0, "base": 0.0}, nu=0.5, n_prompts=40, raters=3, seed=2)
    out = pw.pair_summary(prompt, left, right, verdict, a="base", b="ft")
    assert out["sign_test"]["p"] < 0.001 and out["ties_aware"]["p"] < 0.001 and out["mean_preference"] > 0.3
