"""The planner's simulator against closed forms, and the pilot's components recovered."""

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from evalapp.stats import planning


def test_score_power_matches_the_paired_t_tests_closed_form():
    # Continuous scores, no rater effect: each prompt's difference is normal with
    # sd sqrt(2 arm_prompt_sd^2 + 2 residual_sd^2 / k), and the paired t-test's power is exact.
    c = planning.Components(prompt_sd=1.0, arm_prompt_sd=0.6, rater_sd=0.0, residual_sd=1.5)
    k, n, effect = 3, 30, 0.4
    sd = np.sqrt(2 * 0.6**2 + 2 * 1.5**2 / k)
    closed = TTestPower().power(effect_size=effect / sd, nobs=n, alpha=0.05)
    sim = planning.simulate_score_power(c, effect, n, k, n_raters=6, n_sims=2000, seed=3, discrete=False, n_alpha=0)
    assert sim["power_t"] == pytest.approx(closed, abs=3 * np.sqrt(closed * (1 - closed) / 2000))
    # Wilcoxon's efficiency on normal data is 3/pi of the t-test's: a little less power, not much.
    assert closed - 0.08 < sim["power_wilcoxon"] < sim["power_t"] + 0.02
    # No effect: the test holds its level.
    null = planning.simulate_score_power(c, 0.0, n, k, n_raters=6, n_sims=2000, seed=4, discrete=False, n_alpha=0)
    assert null["power_t"] == pytest.approx(0.05, abs=0.015)


def sign_test_power(n_judgments, p_win, p_loss, alpha=0.05):
    """Exact: decisive verdicts are binomial, wins among them binomial again."""
    decisive = p_win + p_loss
    q = p_win / decisive
    power = 0.0
    for d in range(1, n_judgments + 1):
        wins = np.arange(d + 1)
        reject = np.array([stats.binomtest(int(w), d, 0.5).pvalue < alpha for w in wins])
        power += stats.binom.pmf(d, n_judgments, decisive) * stats.binom.pmf(wins, d, q)[reject].sum()
    return power


def test_pairwise_power_matches_the_sign_tests_closed_form():
    model = planning.PairwiseModel(nu=0.6, prompt_sd=0.0)
    effect, n, k = 0.5, 20, 2
    p1, p0 = np.exp(effect / 2), np.exp(-effect / 2)
    total = p1 + p0 + 0.6
    closed = sign_test_power(n * k, p1 / total, p0 / total)
    sim = planning.simulate_pairwise_power(model, effect, n, k, n_sims=1500, seed=2, n_draws=500)
    assert sim["power_sign"] == pytest.approx(closed, abs=3 * np.sqrt(closed * (1 - closed) / 1500))
    assert sim["tie_share"] == pytest.approx(0.6 / total, abs=0.01)


def test_more_prompts_more_power_and_the_curve_is_reproducible():
    c = planning.Components()
    curve = planning.power_curve("scores", c, 0.5, [10, 40, 120], raters_per_response=2, n_raters=8, n_sims=300,
                                 seed=5)
    powers = [point["power_wilcoxon"] for point in curve]
    assert powers == sorted(powers) and powers[-1] > 0.9 and powers[0] < 0.5
    again = planning.power_curve("scores", c, 0.5, [10, 40, 120], raters_per_response=2, n_raters=8, n_sims=300,
                                 seed=5)
    assert [p["power_wilcoxon"] for p in again] == powers
    # The alpha interval narrows with more items.
    widths = [p["alpha_interval"][2] - p["alpha_interval"][0] for p in curve]
    assert widths[0] > widths[-1]


def test_components_of_a_simulated_pilot_are_recovered():
    truth = planning.Components(mean=6.0, prompt_sd=1.2, arm_prompt_sd=0.5, rater_sd=0.8, residual_sd=1.0)
    rng = np.random.default_rng(0)
    y, who = planning._score_studies(truth, 0.7, 80, 3, 10, 1, rng, discrete=False)
    prompt = np.repeat(np.arange(80), 6)
    arm = np.tile(np.repeat([0, 1], 3), 80)
    fitted, effect = planning.estimate_components(prompt, who[0].reshape(-1), arm, y[0].reshape(-1))
    assert effect == pytest.approx(0.7, abs=0.25)
    assert fitted.prompt_sd == pytest.approx(1.2, abs=0.3) and fitted.residual_sd == pytest.approx(1.0, abs=0.15)
    assert fitted.rater_sd == pytest.approx(0.8, abs=0.4) and fitted.arm_prompt_sd == pytest.approx(0.5, abs=0.3)


def test_a_design_with_more_raters_per_response_than_the_pool_is_refused():
    with pytest.raises(ValueError, match="pool has 2"):
        planning.simulate_score_power(planning.Components(), 0.5, 10, 3, n_raters=2, n_sims=10)


def _pilot_judgments(model, effect, n_prompts, k, seed):
    y = planning._pairwise_judgments(model, effect, n_prompts, k, 1, np.random.default_rng(seed))[0]
    return np.repeat(np.arange(n_prompts), k), y.reshape(-1)


@pytest.mark.parametrize(("truth", "effect"), [(planning.PairwiseModel(nu=0.6, prompt_sd=1.0), 0.5),
                                               (planning.PairwiseModel(nu=0.0, prompt_sd=0.8), -0.3),
                                               (planning.PairwiseModel(nu=1.0, prompt_sd=0.0), 0.4)])
def test_a_pairwise_pilots_parameters_are_recovered(truth, effect):
    prompt, score = _pilot_judgments(truth, effect, 1500, 4, seed=11)
    model, estimate = planning.estimate_pairwise_model(prompt, score)
    assert estimate == pytest.approx(effect, abs=0.1)
    assert model.nu == pytest.approx(truth.nu, abs=0.1)
    assert model.prompt_sd == pytest.approx(truth.prompt_sd, abs=0.2)


def test_without_prompt_spread_the_pairwise_estimate_is_davidsons_fit():
    from evalapp.stats.pairwise import davidson

    # Every prompt judged alike: the prompts' means do not vary, the spread is clipped to 0, and the
    # moments are those of Davidson's maximum likelihood fit of the two arms.
    prompt, score = np.repeat(np.arange(30), 5), np.tile([1, 1, 1, 0, -1], 30)
    model, effect = planning.estimate_pairwise_model(prompt, score)
    fit = davidson(["B"], ["A"], [90], [30], [30], reference="A")
    assert model.prompt_sd == 0.0
    assert effect == pytest.approx(fit["estimate"][fit["labels"].index("B")], abs=1e-5)
    assert effect == pytest.approx(np.log(3))
    assert model.nu == pytest.approx(fit["nu"], rel=1e-4)


def test_a_pairwise_pilot_without_a_win_for_each_arm_is_refused():
    with pytest.raises(ValueError, match="at least one win for each arm"):
        planning.estimate_pairwise_model([0, 0, 1, 1, 2, 2], [1, 0, 1, 1, 0, 1])
    with pytest.raises(ValueError, match="judged at least twice"):
        planning.estimate_pairwise_model([0, 1, 2, 3], [1, -1, 0, 1])
