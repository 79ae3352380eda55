"""Planning a study: the power of a design to detect an improvement, simulated under a fitted model.

Two modes, the two a study can run:

- **1-10 scores** (``Components``): score = mean + effect x arm + prompt + prompt x arm + rater + residual,
  each a normal draw with the component's sd; by default rounded and clipped to the scale as raters
  answer. Each response is scored by ``raters_per_response`` raters drawn from a pool of ``n_raters``.
  Each simulated study is analysed as the results page analyses it: per-prompt mean difference of the
  two arms, Wilcoxon signed-rank over prompts (normal approximation) and the paired t-test (the
  closed form's test).
- **Pairwise** (``PairwiseModel``): each prompt's pair is judged by ``raters_per_response`` raters under
  Davidson's model (log-strength difference ``effect``, tie parameter ``nu``, a prompt-level sd of the
  difference), analysed by the ties-aware sign-flip test over prompts the results page uses, and by the
  sign test on decisive verdicts (the closed form's test).

The simulator is checked against closed forms where they exist (tests/evalapp/stats/test_planning.py):
the paired t-test's power from statsmodels' ``TTestPower`` and the sign test's from the binomial.
The width of Krippendorff's alpha's 95% CI is read as the 2.5-97.5 percentile range of alpha over the
simulated studies: the sampling spread a study of that design should expect.

Why simulate rather than use formulas: rounding to the scale, rater effects with few raters per
response, ties and prompt heterogeneity have no closed form, and they are what a pilot tells us about.

More than two arms: the planner plans one contrast (arm B against arm A) at a time. A study of three
arms plans each contrast it means to test; the results page's Holm adjustment over criteria and
contrasts is not simulated, so plan at a smaller alpha (alpha / number of contrasts) to allow for it.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

__all__ = [
    "Components",
    "PairwiseModel",
    "estimate_components",
    "estimate_pairwise_model",
    "power_curve",
    "simulate_pairwise_power",
    "simulate_score_power",
]


@dataclass(frozen=True)
class Components:
    """Standard deviations of a 1-10 criterion's parts, on its own scale."""

    mean: float = 7.0
    prompt_sd: float = 1.0
    arm_prompt_sd: float = 0.5
    rater_sd: float = 0.8
    residual_sd: float = 1.2
    low: int = 1
    high: int = 10


@dataclass(frozen=True)
class PairwiseModel:
    nu: float = 0.5  # Davidson's tie parameter (0: no ties)
    prompt_sd: float = 0.3  # sd over prompts of the log-strength difference


def estimate_components(prompt: npt.ArrayLike, rater: npt.ArrayLike, arm: npt.ArrayLike, score: npt.ArrayLike,
                        low: int = 1, high: int = 10) -> tuple[Components, float]:
    """Fit score ~ arm + (1|prompt) + (1|prompt:arm) + (1|rater) by REML to a pilot's ratings (arm 0/1);
    returns the components and the pilot's estimated effect (arm 1 minus arm 0)."""
    import pandas as pd
    from statsmodels.regression.mixed_linear_model import MixedLM

    df = pd.DataFrame({"prompt": pd.factorize(np.asarray(prompt))[0], "rater": pd.factorize(np.asarray(rater))[0],
                       "arm": np.asarray(arm, dtype=np.float64), "score": np.asarray(score, dtype=np.float64)})
    df["cell"] = df["prompt"] * 2 + df["arm"].astype(int)
    df["one"] = 1
    if df["prompt"].nunique() < 3 or df["rater"].nunique() < 2:
        raise ValueError("A pilot needs ratings of at least 3 prompts by at least 2 raters.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = MixedLM.from_formula(
            "score ~ arm", data=df, groups="one", re_formula="0",
            vc_formula={"prompt": "0 + C(prompt)", "cell": "0 + C(cell)", "rater": "0 + C(rater)"},
        ).fit(reml=True)
    vc = dict(zip(fit.model.exog_vc.names, np.sqrt(np.clip(fit.vcomp, 0, None)), strict=True))
    components = Components(mean=float(fit.fe_params["Intercept"]), prompt_sd=float(vc["prompt"]),
                            arm_prompt_sd=float(vc["cell"]), rater_sd=float(vc["rater"]),
                            residual_sd=float(np.sqrt(fit.scale)), low=low, high=high)
    return components, float(fit.fe_params["arm"])


def _score_studies(c: Components, effect: float, n_prompts: int, k: int, n_raters: int, n_sims: int,
                   rng: np.random.Generator, discrete: bool):
    """Scores of n_sims simulated studies: (sims, prompts, arm, k) and the raters of each score."""
    if k > n_raters:
        raise ValueError(f"Each response needs {k} raters but the pool has {n_raters}.")
    u = rng.normal(0, c.prompt_sd, (n_sims, n_prompts, 1, 1))
    w = rng.normal(0, c.arm_prompt_sd, (n_sims, n_prompts, 2, 1))
    severity = rng.normal(0, c.rater_sd, (n_sims, n_raters))
    # k distinct raters per response, drawn at random from the pool.
    keys = rng.random((n_sims, n_prompts, 2, n_raters))
    who = np.argsort(keys, axis=-1)[..., :k]
    r = np.take_along_axis(severity[:, None, None, :], who, axis=-1)
    e = rng.normal(0, c.residual_sd, (n_sims, n_prompts, 2, k))
    y = c.mean + effect * np.arange(2)[None, None, :, None] + u + w + r + e
    if discrete:
        y = np.clip(np.rint(y), c.low, c.high)
    return y, who


def _alpha_interval(y: npt.NDArray, who: npt.NDArray, n_raters: int, n_alpha: int) -> list[float] | None:
    from .agreement import krippendorff_alpha

    alphas = []
    for s in range(min(n_alpha, y.shape[0])):
        matrix = np.full((n_raters, y.shape[1] * 2), np.nan)
        items = np.repeat(np.arange(y.shape[1] * 2), y.shape[3])
        matrix[who[s].reshape(-1), items] = y[s].reshape(-1)
        with np.errstate(all="ignore"):
            value = krippendorff_alpha(matrix, level="interval")
        if np.isfinite(value):
            alphas.append(value)
    if len(alphas) < 10:
        return None
    return [float(np.percentile(alphas, 2.5)), float(np.median(alphas)), float(np.percentile(alphas, 97.5))]


def simulate_score_power(components: Components, effect: float, n_prompts: int, raters_per_response: int,
                         n_raters: int, n_sims: int = 1000, alpha: float = 0.05, seed: int = 0,
                         discrete: bool = True, n_alpha: int = 100) -> dict[str, object]:
    """Power of a 1-10 design to detect `effect` (arm 1 minus arm 0, in scale points) at `alpha`."""
    rng = np.random.default_rng(seed)
    y, who = _score_studies(components, effect, n_prompts, raters_per_response, n_raters, n_sims, rng, discrete)
    diffs = y[:, :, 1, :].mean(axis=-1) - y[:, :, 0, :].mean(axis=-1)  # (sims, prompts)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_p = stats.ttest_1samp(diffs, 0.0, axis=1).pvalue
        nonzero = np.count_nonzero(diffs, axis=1) > 0
        w_p = np.ones(n_sims)
        if nonzero.any():
            # The normal approximation (tie-corrected): scipy's exact and permutation paths for small or
            # tied samples take seconds per thousand studies. Below about 15 prompts it differs a little
            # from the results page's p-value, which uses them.
            w_p[nonzero] = stats.wilcoxon(diffs[nonzero], axis=1, method="approx").pvalue
    t_p = np.nan_to_num(t_p, nan=1.0)
    return {
        "mode": "scores", "effect": effect, "n_prompts": n_prompts, "raters_per_response": raters_per_response,
        "n_raters": n_raters, "n_sims": n_sims, "alpha": alpha, "seed": seed, "discrete": discrete,
        "components": asdict(components),
        "power_wilcoxon": float(np.mean(w_p < alpha)), "power_t": float(np.mean(t_p < alpha)),
        "mc_se": float(np.sqrt(0.25 / n_sims)),  # at most, the simulation's own standard error
        "mean_diff": float(diffs.mean()),
        "alpha_interval": _alpha_interval(y, who, n_raters, n_alpha),
    }


def _pairwise_judgments(model: PairwiseModel, effect: float, n_prompts: int, k: int, n_sims: int,
                        rng: np.random.Generator) -> npt.NDArray:
    """+1/0/-1 (arm 1 won, tie, arm 0 won) of k judgments of each prompt's pair: (sims, prompts, k)."""
    delta = effect + rng.normal(0, model.prompt_sd, (n_sims, n_prompts, 1))
    p1, p0 = np.exp(delta / 2), np.exp(-delta / 2)
    pt = model.nu  # nu * sqrt(p1 * p0) with p1 * p0 = 1
    total = p1 + p0 + pt
    u = rng.random((n_sims, n_prompts, k)) * total
    return np.where(u < p1, 1.0, np.where(u < p1 + p0, -1.0, 0.0))  # arm 1's view


# Gauss-Hermite (probabilists') nodes for expectations over a prompt's normal log-strength difference.
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(41)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()
MAX_PROMPT_SD = 5.0  # beyond it a prompt's verdicts are all but fixed either way: more says nothing


def _davidson_moments(effect: float, nu: float, prompt_sd: float) -> tuple[float, float, float]:
    """Under the simulator's model: the expected shares of wins and losses (arm 1's view) over prompts,
    and the variance over prompts of a prompt's expected score (win - loss)."""
    delta = effect + prompt_sd * _NODES
    p1, p0 = np.exp(delta / 2), np.exp(-delta / 2)
    total = p1 + p0 + nu
    win, loss = p1 / total, p0 / total
    m = win - loss
    mean_m = float(_WEIGHTS @ m)
    return float(_WEIGHTS @ win), float(_WEIGHTS @ loss), float(_WEIGHTS @ (m - mean_m) ** 2)


def estimate_pairwise_model(prompt: npt.ArrayLike, score: npt.ArrayLike) -> tuple[PairwiseModel, float]:
    """The pairwise simulator's parameters from a pilot: `score` is +1/0/-1 per judgment (arm 1 won,
    tie, arm 0 won) and `prompt` the prompt it judged. Returns (PairwiseModel(nu, prompt_sd), effect).

    By moment matching, not the Davidson fit of evalapp.stats.pairwise: the expected shares of wins
    and losses under the model (the prompt's log-strength difference normal around `effect` with sd
    `prompt_sd`, Davidson's verdict probabilities given it) are matched to the pilot's, and the
    variance over prompts of a prompt's expected score to the observed variance of the prompts' mean
    scores less the binomial noise of their few judgments (the pooled within-prompt variance over
    each prompt's number of judgments; method of moments, clipped at 0). With prompt_sd 0 this is
    Davidson's maximum likelihood fit of two items (effect log(wins / losses), nu ties /
    sqrt(wins x losses)), which the Davidson fit would give; the fit has no prompt spread, so matching
    moments is what lets prompt_sd in. Alternates the two steps until they agree.
    """
    codes = np.unique(np.asarray(prompt), return_inverse=True)[1].reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    if codes.size != s.size:
        raise ValueError("prompt and score must be the same length.")
    if not np.isin(s, (-1.0, 0.0, 1.0)).all():
        raise ValueError("Each score must be +1 (arm 1 won), 0 (tie) or -1 (arm 0 won).")
    n_prompts = int(codes.max()) + 1 if codes.size else 0
    wins, losses, ties = int((s == 1).sum()), int((s == -1).sum()), int((s == 0).sum())
    if n_prompts < 3:
        raise ValueError("A pairwise pilot needs judgments of at least 3 prompts.")
    if not wins or not losses:
        raise ValueError("A pairwise pilot needs at least one win for each arm: "
                         f"it has {wins} for arm 1 and {losses} for arm 0, so the effect would be infinite.")
    k = np.bincount(codes, minlength=n_prompts).astype(np.float64)
    means = np.bincount(codes, weights=s, minlength=n_prompts) / k
    squares = np.bincount(codes, weights=(s - means[codes]) ** 2, minlength=n_prompts)
    if not (k >= 2).any():
        raise ValueError("A pairwise pilot needs some prompts judged at least twice, to tell the prompts' "
                         "spread from the noise of single judgments.")
    within = squares[k >= 2].sum() / (k[k >= 2] - 1).sum()
    between = max(float(np.var(means, ddof=1) - within * np.mean(1 / k)), 0.0)

    n = wins + losses + ties
    w_share, l_share = wins / n, losses / n
    effect, nu, sd = float(np.log(wins / losses)), ties / np.sqrt(wins * losses), 0.0
    for _ in range(100):
        if between > 0:
            spread = lambda x: _davidson_moments(effect, nu, x)[2] - between  # noqa: E731
            sd = MAX_PROMPT_SD if spread(MAX_PROMPT_SD) < 0 else float(optimize.brentq(spread, 0.0, MAX_PROMPT_SD))
        if ties:
            fit = optimize.root(lambda p: np.subtract(_davidson_moments(p[0], np.exp(p[1]), sd)[:2],
                                                      (w_share, l_share)), [effect, np.log(nu)])
            new_effect, new_nu = float(fit.x[0]), float(np.exp(fit.x[1]))
        else:
            new_effect, new_nu = float(optimize.brentq(
                lambda e: _davidson_moments(e, 0.0, sd)[0] - w_share, -50.0, 50.0)), 0.0
        done = abs(new_effect - effect) < 1e-9 and abs(new_nu - nu) < 1e-9
        effect, nu = new_effect, new_nu
        if done:
            break
    return PairwiseModel(nu=float(nu), prompt_sd=sd), effect


def simulate_pairwise_power(model: PairwiseModel, effect: float, n_prompts: int, raters_per_response: int,
                            n_sims: int = 1000, alpha: float = 0.05, seed: int = 0,
                            n_draws: int = 2000) -> dict[str, object]:
    """Power of a pairwise design to detect a log-strength difference `effect` (arm 1 over arm 0)."""
    from .comparison import sign_flip_test

    rng = np.random.default_rng(seed)
    k = raters_per_response
    score = _pairwise_judgments(model, effect, n_prompts, k, n_sims, rng)
    wins, losses = (score == 1).sum(axis=(1, 2)), (score == -1).sum(axis=(1, 2))
    decisive = wins + losses
    sign_p = np.array([stats.binomtest(int(w), int(d), 0.5).pvalue if d else 1.0
                       for w, d in zip(wins, decisive, strict=True)])
    per_prompt = score.mean(axis=2)
    aware_p = np.array([(sign_flip_test(row, n_draws=n_draws, seed=seed + s) or {"p": 1.0})["p"]
                        for s, row in enumerate(per_prompt)])
    return {
        "mode": "pairwise", "effect": effect, "n_prompts": n_prompts, "raters_per_response": k, "n_sims": n_sims,
        "alpha": alpha, "seed": seed, "model": asdict(model),
        "power_ties_aware": float(np.mean(aware_p < alpha)), "power_sign": float(np.mean(sign_p < alpha)),
        "mc_se": float(np.sqrt(0.25 / n_sims)),
        "tie_share": float(np.mean(score == 0)),
    }


def power_curve(kind: str, model, effect: float, prompts: list[int], raters_per_response: int,
                n_raters: int | None = None, n_sims: int = 500, alpha: float = 0.05, seed: int = 0) -> list[dict]:
    """Power at each number of prompts, each point seeded from `seed` so the curve is reproducible."""
    out = []
    for index, n in enumerate(prompts):
        if kind == "scores":
            out.append(simulate_score_power(model, effect, n, raters_per_response, n_raters or raters_per_response,
                                            n_sims=n_sims, alpha=alpha, seed=seed + index, n_alpha=50))
        elif kind == "pairwise":
            out.append(simulate_pairwise_power(model, effect, n, raters_per_response, n_sims=n_sims, alpha=alpha,
                                               seed=seed + index))
        else:
            raise ValueError(f"kind must be 'scores' or 'pairwise', got {kind!r}")
    return out
