"""Judge validation statistics on simulated raters with known noise, and hand-checked small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalapp.stats.agreement import weighted_kappa_pairs
from evalapp.stats.judges import judge_validation, pair_verdict_agreement, safety_recall, swap_consistency

POINTS = np.arange(1, 11)
N_ITEMS = 300


def _rate(truth, sd, rng, bias=0.0):
    return np.clip(np.floor(truth + bias + rng.normal(0, sd, truth.size) + 0.5), 1, 10)


@pytest.fixture(scope="module")
def panel():
    """300 items with true quality spread over a 1-10 scale; three experts with noise SD 1, four
    students with SD 1.8 who each rated about two thirds of the items."""
    rng = np.random.default_rng(20260416)
    truth = rng.normal(5.5, 2.0, N_ITEMS)
    experts = np.column_stack([_rate(truth, 1.0, rng) for _ in range(3)])
    students = np.column_stack([_rate(truth, 1.8, rng) for _ in range(4)])
    students[rng.random(students.shape) < 0.33] = np.nan
    return truth, {"students": students, "experts": experts}, rng


def test_a_judge_as_noisy_as_an_expert_is_within_the_ceiling_and_a_noisier_one_is_not(panel):
    truth, groups, rng = panel
    good = judge_validation(_rate(truth, 1.0, rng), groups, "experts", labels=POINTS, n_boot=400, seed=1)
    poor = judge_validation(_rate(truth, 2.5, rng), groups, "experts", labels=POINTS, n_boot=400, seed=1)
    ceiling = good["ceiling"]["experts"]["kappa"]["value"]
    assert 0.75 < ceiling < 0.9 and ceiling == poor["ceiling"]["experts"]["kappa"]["value"]
    assert good["within_expert_ceiling"] is True and good["verdict"] == {"kappa": True, "alpha": True}
    assert poor["within_expert_ceiling"] is False and poor["verdict"] == {"kappa": False, "alpha": False}
    lo, hi = poor["judge"]["experts"]["kappa"]["ci95"]
    assert hi < ceiling and poor["difference"]["kappa"]["ci95"][1] < 0
    glo, ghi = good["difference"]["kappa"]["ci95"]
    assert glo < 0 < ghi
    # the noisier students agree less with the experts than the experts with each other
    assert good["across"]["students~experts"]["kappa"]["value"] < ceiling
    assert good["ceiling"]["students"]["kappa"]["value"] < good["across"]["students~experts"]["kappa"]["value"]
    # a consensus of three experts is a less noisy target than one expert
    assert good["judge"]["experts"]["consensus_kappa"]["value"] > good["judge"]["experts"]["kappa"]["value"]
    assert good["judge"]["experts"]["kappa"]["pairs"] == 3 and good["ceiling"]["experts"]["kappa"]["pairs"] == 3
    assert good["across"]["students~experts"]["kappa"]["pairs"] == 12


def test_point_estimates_are_the_mean_of_pairwise_kappas(panel):
    truth, groups, rng = panel
    judge = _rate(truth, 1.3, rng)
    report = judge_validation(judge, groups, "experts", labels=POINTS, n_boot=50, seed=2)
    by_hand = [weighted_kappa_pairs(np.vstack([judge, groups["experts"][:, r]]), labels=POINTS)["mean"]
               for r in range(3)]
    assert report["judge"]["experts"]["kappa"]["value"] == pytest.approx(np.mean(by_hand))
    within = weighted_kappa_pairs(groups["experts"].T, labels=POINTS)["mean"]
    assert report["ceiling"]["experts"]["kappa"]["value"] == pytest.approx(within)
    lo, hi = report["judge"]["experts"]["kappa"]["ci95"]
    assert lo < report["judge"]["experts"]["kappa"]["value"] < hi


def test_inflation_and_bland_altman(panel):
    truth, groups, rng = panel
    judge = _rate(truth, 1.0, rng, bias=1.0)
    judge[:10] = np.nan  # unparseable answers are missing, not guessed
    report = judge_validation(judge, groups, "experts", labels=POINTS, n_boot=300, seed=3)
    inflation = report["inflation"]
    assert inflation["n"] == N_ITEMS - 10 and 0.7 < inflation["value"] < 1.1
    assert inflation["ci95"][0] > 0.5 and report["n_judged"] == N_ITEMS - 10
    diff = judge[10:] - groups["experts"][10:].mean(axis=1)
    ba = report["bland_altman"]
    assert ba["differences"] == pytest.approx(diff.tolist()) and ba["bias"] == pytest.approx(diff.mean())
    sd = diff.std(ddof=1)
    assert ba["limits"] == pytest.approx((diff.mean() - 1.96 * sd, diff.mean() + 1.96 * sd))
    assert ba["means"] == pytest.approx(((judge[10:] + groups["experts"][10:].mean(axis=1)) / 2).tolist())


def test_bad_inputs_are_refused(panel):
    truth, groups, rng = panel
    judge = _rate(truth, 1.0, rng)
    with pytest.raises(ValueError, match="expert group 'psychologists'"):
        judge_validation(judge, groups, "psychologists")
    with pytest.raises(ValueError, match="300 items"):
        judge_validation(judge, {"experts": groups["experts"][:-1]}, "experts")
    with pytest.raises(ValueError, match="outside the scale"):
        judge_validation(judge, groups, "experts", labels=[1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="level"):
        judge_validation(judge, groups, "experts", level="nominal")


def test_one_expert_gives_no_verdict(panel):
    truth, groups, rng = panel
    report = judge_validation(_rate(truth, 1.0, rng), {"experts": groups["experts"][:, :1]}, "experts",
                              labels=POINTS, n_boot=50)
    assert report["ceiling"]["experts"]["kappa"]["value"] is None and report["within_expert_ceiling"] is None


def _wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_safety_recall_hand_checked():
    judge = [1, 1, 0, 0, 1, 0, 0, 0, 1, 0, np.nan, 1]
    expert = [1, 1, 1, 0, 0, 0, 1, 0, 1, 0, 1, np.nan]
    # items 0, 1, 8 caught; 2 and 6 missed; 4 flagged although safe; the last two are not both classified
    got = safety_recall(judge, expert)
    assert (got["n"], got["tp"], got["fn"], got["fp"], got["tn"]) == (10, 3, 2, 1, 4)
    assert got["recall"]["value"] == pytest.approx(0.6) and got["precision"]["value"] == pytest.approx(0.75)
    assert got["recall"]["ci95"] == pytest.approx(_wilson_by_hand(3, 5), abs=1e-9)
    assert got["precision"]["ci95"] == pytest.approx(_wilson_by_hand(3, 4), abs=1e-9)
    with pytest.raises(ValueError, match="1 \\(unsafe\\)"):
        safety_recall([2, 0], [1, 0])
    none_flagged = safety_recall([0, 0], [1, 0])
    assert none_flagged["precision"]["value"] is None and none_flagged["recall"]["value"] == 0


def test_pairwise_agreement_and_swap_consistency_hand_checked():
    judge = ["first", "second", "tie", None, "first"]
    humans = [["first", "first", "second"], ["first", "second"], ["tie", "tie", "tie"], ["first"],
              ["second", "second", None]]
    got = pair_verdict_agreement(judge, humans)
    # majorities: first (agrees), none (1-1), tie (agrees), [unparsed judge], second (disagrees)
    assert got["majority"]["n"] == 3 and got["majority"]["value"] == pytest.approx(2 / 3)
    assert got["individual"] == {"value": pytest.approx(6 / 10), "n": 10} and got["unparsed"] == 1
    # same-pair human pairs: 3 (1 agree) + 1 (0) + 3 (3) + 0 + 1 (1) = 8, 5 agree
    assert got["human_human"] == {"value": pytest.approx(5 / 8), "n": 8}
    assert got["majority"]["ci95"] == pytest.approx(_wilson_by_hand(2, 3), abs=1e-9)

    swap = swap_consistency(["A", "B", "S", "A", "B", None, "A"], ["B", "A", "S", "A", "S", "A", "A"])
    assert swap["n"] == 6 and swap["mirrored"] == 3 and swap["share"] == pytest.approx(0.5)
    assert swap["same_position"] == 2 and swap["unparsed"] == 1
    assert swap["ci95"] == pytest.approx(_wilson_by_hand(3, 6), abs=1e-9)
    with pytest.raises(ValueError, match="'A', 'B', 'S'"):
        swap_consistency(["first"], ["A"])
    with pytest.raises(ValueError, match="same pairs"):
        pair_verdict_agreement(["first"], [])
