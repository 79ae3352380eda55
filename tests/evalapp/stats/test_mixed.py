"""evalapp.stats.mixed against lme4's published output and statsmodels' MixedLM on the same designs."""

import numpy as np
import pandas as pd
import pytest
from statsmodels.regression.mixed_linear_model import MixedLM

from evalapp.stats.comparison import mixed_model
from evalapp.stats.mixed import fit_crossed

# lme4's Penicillin data (Davies & Goldsmith 1972): diameter of growth inhibition, 24 plates x 6 samples,
# row by plate a..x, columns sample A..F.
PENICILLIN = """
27 23 26 23 23 21  27 23 26 23 23 21  25 21 25 24 24 20  26 23 25 23 23 20  25 22 26 22 23 20  24 22 25 23 22 19
24 20 23 21 22 19  26 22 26 24 24 21  24 21 24 22 22 20  24 21 24 23 22 19  26 23 26 24 24 21  25 22 26 24 24 20
26 24 26 24 25 22  26 23 26 23 23 20  26 23 25 24 24 22  25 22 25 23 23 20  25 21 24 23 23 20  25 22 24 23 23 19
24 21 23 21 21 19  26 23 26 24 24 21  25 21 24 22 22 18  25 22 25 22 22 20  24 21 24 22 24 19  24 21 24 22 21 18
"""


def test_penicillin_matches_lme4_published_fit():
    # Bates, "lme4: Mixed-effects modeling with R" (2010), section 2.1, lmer(diameter ~ 1 + (1|plate) +
    # (1|sample), Penicillin): REML criterion 330.9; variances plate 0.7169, sample 3.7311, residual
    # 0.3024; intercept 22.9722 (SE 0.8086).
    y = np.array(PENICILLIN.split(), dtype=float)
    plate, sample = np.repeat(np.arange(24), 6), np.tile(np.arange(6), 24)
    fit = fit_crossed(y, np.ones((y.size, 1)), [plate, sample], ["plate", "sample"])
    assert fit.converged
    assert fit.beta[0] == pytest.approx(22.9722, abs=5e-4)
    assert fit.se[0] == pytest.approx(0.8086, abs=5e-4)
    assert fit.variances["plate"] == pytest.approx(0.7169, abs=5e-4)
    assert fit.variances["sample"] == pytest.approx(3.7311, abs=5e-4)
    assert fit.variances["residual"] == pytest.approx(0.3024, abs=5e-4)
    assert fit.reml_criterion == pytest.approx(330.9, abs=0.05)


def _ratings(n_prompts, n_raters=40, k=3, rater_sd=0.7, seed=0):
    rng = np.random.default_rng(seed)
    prompt_effect, rater_effect = rng.normal(0, 1, n_prompts), rng.normal(0, rater_sd, n_raters)
    rows = []
    for p in range(n_prompts):
        for arm in (0, 1):
            for r in rng.choice(n_raters, k, replace=False):
                rows.append((p, r, arm, 5 + prompt_effect[p] + rater_effect[r] + 0.4 * arm + rng.normal(0, 1.2)))
    return pd.DataFrame(rows, columns=["prompt", "rater", "arm", "score"])


def _statsmodels(df):
    fit = MixedLM.from_formula("score ~ arm", data=df.assign(one=1), groups="one", re_formula="0",
                               vc_formula={"rater": "0 + C(rater)", "prompt": "0 + C(prompt)"}).fit(reml=True)
    return fit, dict(zip(fit.model.exog_vc.names, fit.vcomp, strict=True))


@pytest.mark.parametrize(("n_prompts", "rater_sd", "seed"), [(30, 0.7, 1), (80, 0.7, 2), (150, 0.7, 3), (60, 0.0, 4)])
def test_equals_statsmodels_mixedlm_to_three_decimals(n_prompts, rater_sd, seed):
    df = _ratings(n_prompts, rater_sd=rater_sd, seed=seed)
    ours = fit_crossed(df["score"], np.column_stack([np.ones(len(df)), df["arm"]]), [df["rater"], df["prompt"]],
                       ["rater", "prompt"])
    theirs, vcomp = _statsmodels(df)
    assert ours.beta[1] == pytest.approx(theirs.fe_params["arm"], abs=1e-3)
    assert ours.beta[0] == pytest.approx(theirs.fe_params["Intercept"], abs=1e-3)
    for name in ("rater", "prompt"):
        assert ours.variances[name] == pytest.approx(vcomp[name], abs=1e-3)
    assert ours.variances["residual"] == pytest.approx(theirs.scale, abs=1e-3)
    # statsmodels' SE inverts the observed Hessian of all parameters, lme4's (ours) is sigma^2 (R_X'R_X)^-1
    # given the variances: the same as the study grows, a few thousandths apart on 30 prompts.
    assert ours.se[1] == pytest.approx(theirs.bse_fe["arm"], abs=2e-3 if n_prompts < 50 else 5e-4)


def test_mixed_model_uses_the_crossed_fit_and_reports_variances():
    df = _ratings(40, seed=5)
    res = mixed_model(df["prompt"], df["rater"], df["arm"], df["score"])
    theirs, vcomp = _statsmodels(df)
    assert res["converged"] and res["reason"] is None
    assert res["estimate"] == pytest.approx(theirs.fe_params["arm"], abs=1e-3)
    assert set(res["variances"]) == {"rater", "prompt", "residual"}


def test_a_component_at_zero_is_found_on_the_boundary():
    rng = np.random.default_rng(9)
    prompt = np.repeat(np.arange(50), 6)
    rater = np.tile(np.arange(6), 50)
    y = rng.normal(0, 1, 50)[prompt] + rng.normal(0, 1, prompt.size)  # no rater effect at all
    fit = fit_crossed(y, np.ones((y.size, 1)), [rater, prompt], ["rater", "prompt"])
    assert fit.converged
    assert fit.variances["rater"] < 0.02


def test_one_factor_is_a_random_intercept_model():
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(20), 5)
    y = rng.normal(0, 1, 20)[g] + rng.normal(0, 1, g.size)
    ours = fit_crossed(y, np.ones((y.size, 1)), [g], ["g"])
    theirs = MixedLM(y, np.ones((y.size, 1)), groups=g).fit(reml=True)
    assert ours.variances["g"] == pytest.approx(float(np.asarray(theirs.cov_re)[0, 0]), abs=1e-3)
    assert ours.beta[0] == pytest.approx(float(theirs.fe_params[0]), abs=1e-4)


@pytest.mark.parametrize("bad", [
    {"y": [1.0, np.nan, 2.0, 3.0]},
    {"X": np.ones((4, 2))},  # rank deficient
    {"factors": []},
    {"factors": [[0, 1, 0]]},  # wrong length
])
def test_inputs_that_define_no_model_raise_value_error(bad):
    args = {"y": [1.0, 2.0, 3.0, 4.0], "X": np.ones((4, 1)), "factors": [[0, 1, 0, 1]]}
    args.update(bad)
    with pytest.raises(ValueError):
        fit_crossed(args["y"], args["X"], args["factors"])


def test_scales_to_a_5000_response_study():
    # Not a timing assertion (bench/analysis.py measures it): the fit must simply run and recover the
    # simulated effect at full size, which statsmodels' crossed fit could not in a test's time.
    df = _ratings(2500, n_raters=200, seed=11)
    res = mixed_model(df["prompt"], df["rater"], df["arm"], df["score"])
    assert res["converged"]
    assert res["estimate"] == pytest.approx(0.4, abs=4 * res["se"])
