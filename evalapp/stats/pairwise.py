"""Pairwise preference judgments: which of two responses to one prompt a rater preferred.

Each judgment is one rater's verdict on one prompt's pair of responses from arms ``i`` and ``j``
(``i`` shown on the left): ``1`` the left response, ``0`` the right one, ``0.5`` "about the same".
Pure functions over arrays, no Django (evalapp.stats).

Ties are handled in three stated ways:

- the sign test drops them (wins against losses among decisive verdicts, exact binomial);
- the ties-aware test keeps them as half a win: each prompt's mean preference for arm j over arm i
  (+1 a win, 0 a tie, -1 a loss, averaged over its raters) is tested over prompts by a sign-flip
  permutation (comparison.sign_flip_test), so prompts, not ratings, are the unit;
- Davidson's (1970) extension of Bradley-Terry models them: with strengths ``pi`` and a tie
  parameter ``nu``, P(i beats j) = pi_i / D, P(tie) = nu sqrt(pi_i pi_j) / D, D = pi_i + pi_j +
  nu sqrt(pi_i pi_j); nu = 0 is the plain Bradley-Terry model.

Why not a library for Davidson: statsmodels has no paired-comparison model and choix fits plain
Bradley-Terry only; the plain model is fitted here as the logistic regression it is (statsmodels GLM,
which reproduces R's BradleyTerry2::BTm exactly), and the Davidson likelihood is maximised with scipy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import optimize, stats
from statsmodels.stats.proportion import proportion_confint

from .comparison import sign_flip_test

__all__ = [
    "bradley_terry",
    "bradley_terry_bootstrap",
    "davidson",
    "pair_summary",
    "position_bias",
    "wilson",
]

LEFT, TIE, RIGHT = 1.0, 0.5, 0.0
FloatArray = npt.NDArray[np.float64]


def wilson(k: int, n: int, alpha: float = 0.05) -> list[float | None]:
    if n == 0:
        return [None, None]
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    return [float(low), float(high)]


def _oriented(left: npt.ArrayLike, right: npt.ArrayLike, verdict: npt.ArrayLike, a, b) -> FloatArray:
    """Verdicts on pairs of arms a and b as b's score: 1 b preferred, 0.5 tie, 0 a preferred."""
    left, right = np.asarray(left), np.asarray(right)
    v = np.asarray(verdict, dtype=np.float64)
    out = np.full(v.shape, np.nan)
    b_left = (left == b) & (right == a)
    b_right = (left == a) & (right == b)
    out[b_left] = v[b_left]
    out[b_right] = 1.0 - v[b_right]
    return out


def pair_summary(
    prompt: npt.ArrayLike, left: npt.ArrayLike, right: npt.ArrayLike, verdict: npt.ArrayLike, a, b,
    n_draws: int = 20000, seed: int = 0,
) -> dict[str, object]:
    """Arm b against arm a: wins, ties and losses (b's view) with Wilson 95% CIs over judgments, the sign
    test (ties dropped) and the ties-aware sign-flip test over prompts (ties as half a win)."""
    score = _oriented(left, right, verdict, a, b)
    keep = np.isfinite(score)
    score, prompts = score[keep], np.asarray(prompt)[keep]
    n = int(score.size)
    wins, ties = int((score == 1.0).sum()), int((score == 0.5).sum())
    losses = n - wins - ties
    out: dict[str, object] = {
        "n": n, "wins": wins, "ties": ties, "losses": losses,
        "win_share": wins / n if n else None, "tie_share": ties / n if n else None,
        "loss_share": losses / n if n else None,
        "win_ci95": wilson(wins, n), "tie_ci95": wilson(ties, n), "loss_ci95": wilson(losses, n),
        "sign_test": None, "ties_aware": None,
    }
    if wins + losses:
        out["sign_test"] = {"p": float(stats.binomtest(wins, wins + losses, 0.5).pvalue),
                            "method": "exact sign test on decisive verdicts (ties dropped)",
                            "n_decisive": wins + losses}
    if n:
        per_prompt = pd.Series(2.0 * score - 1.0).groupby(prompts).mean().to_numpy()
        test = sign_flip_test(per_prompt, n_draws=n_draws, seed=seed)
        out["n_prompts"] = int(per_prompt.size)
        out["mean_preference"] = float(per_prompt.mean())
        if test is not None:
            out["ties_aware"] = {**test, "method": f"{test['method']} over prompts, ties as half a win"}
    return out


def position_bias(verdict: npt.ArrayLike) -> dict[str, object]:
    """The share of decisive verdicts won by the left side, with a Wilson 95% CI and an exact binomial
    test against one half (ties left out)."""
    v = np.asarray(verdict, dtype=np.float64)
    k, n = int((v == LEFT).sum()), int(((v == LEFT) | (v == RIGHT)).sum())
    return {"left_wins": k, "n_decisive": n, "left_share": k / n if n else None, "ci95": wilson(k, n),
            "p": float(stats.binomtest(k, n, 0.5).pvalue) if n else None}


def _index(items_i: npt.ArrayLike, items_j: npt.ArrayLike, labels: Sequence | None):
    i, j = np.asarray(items_i), np.asarray(items_j)
    names = list(labels) if labels is not None else sorted(set(i.tolist()) | set(j.tolist()), key=str)
    where = {name: k for k, name in enumerate(names)}
    return names, np.array([where[x] for x in i], dtype=np.int64), np.array([where[x] for x in j], dtype=np.int64)


def bradley_terry(
    items_i: npt.ArrayLike, items_j: npt.ArrayLike, wins_i: npt.ArrayLike, wins_j: npt.ArrayLike,
    labels: Sequence | None = None, reference=None,
) -> dict[str, object]:
    """Plain Bradley-Terry by maximum likelihood: log-odds(i beats j) = lambda_i - lambda_j.

    Fitted as a binomial GLM without intercept (columns +1 for i, -1 for j, the reference's dropped),
    as BradleyTerry2::BTm does, so ``estimate``/``se`` are BTm's coefficients and standard errors
    (the reference at 0). ``centered`` is the same abilities shifted to mean 0.
    """
    import statsmodels.api as sm

    names, i, j = _index(items_i, items_j, labels)
    ref = names.index(reference) if reference is not None else 0
    wi, wj = np.asarray(wins_i, dtype=np.float64), np.asarray(wins_j, dtype=np.float64)
    keep = (wi + wj) > 0
    i, j, wi, wj = i[keep], j[keep], wi[keep], wj[keep]
    x = np.zeros((i.size, len(names)))
    x[np.arange(i.size), i] += 1.0
    x[np.arange(i.size), j] -= 1.0
    x = np.delete(x, ref, axis=1)
    fit = sm.GLM(np.column_stack([wi, wj]), x, family=sm.families.Binomial()).fit()
    estimate = np.insert(np.asarray(fit.params, dtype=np.float64), ref, 0.0)
    se = np.insert(np.asarray(fit.bse, dtype=np.float64), ref, np.nan)
    return {"labels": names, "reference": names[ref], "estimate": estimate.tolist(),
            "se": [None if np.isnan(s) else float(s) for s in se],
            "centered": (estimate - estimate.mean()).tolist(), "converged": bool(fit.converged)}


def _davidson_nll(params: FloatArray, i, j, wi, wj, t, ref: int) -> tuple[float, FloatArray]:
    # params: the n - 1 free log-abilities, then log nu.
    lam = np.insert(params[:-1], ref, 0.0)
    log_nu = params[-1]
    li, lj = lam[i], lam[j]
    mid = log_nu + 0.5 * (li + lj)
    stacked = np.stack([li, lj, mid])
    log_d = np.logaddexp.reduce(stacked, axis=0)
    nll = -float(np.sum(wi * (li - log_d) + wj * (lj - log_d) + t * (mid - log_d)))
    # Gradient: d log_d / d lam_i = p_i + p_t / 2, and / d log_nu = p_t.
    p = np.exp(stacked - log_d)
    n = wi + wj + t
    g_i = wi + 0.5 * t - n * (p[0] + 0.5 * p[2])
    g_j = wj + 0.5 * t - n * (p[1] + 0.5 * p[2])
    grad_lam = np.zeros(lam.size)
    np.add.at(grad_lam, i, g_i)
    np.add.at(grad_lam, j, g_j)
    grad_nu = float(np.sum(t - n * p[2]))
    grad = -np.append(np.delete(grad_lam, ref), grad_nu)
    return nll, grad


def davidson(
    items_i: npt.ArrayLike, items_j: npt.ArrayLike, wins_i: npt.ArrayLike, wins_j: npt.ArrayLike,
    ties: npt.ArrayLike, labels: Sequence | None = None, reference=None,
) -> dict[str, object]:
    """Davidson's Bradley-Terry model with ties, by maximum likelihood (see the module docstring).

    Returns log-abilities (the reference at 0, and centered to mean 0), ``nu`` and the standard
    errors from the observed information. Without any tie nu's MLE is 0 and this is bradley_terry.
    """
    names, i, j = _index(items_i, items_j, labels)
    ref = names.index(reference) if reference is not None else 0
    wi, wj, t = (np.asarray(a, dtype=np.float64) for a in (wins_i, wins_j, ties))
    if not t.any():
        plain = bradley_terry(items_i, items_j, wins_i, wins_j, labels=names, reference=names[ref])
        return {**plain, "nu": 0.0, "nu_se": None}
    start = np.zeros(len(names))  # n - 1 abilities at 0, log nu at 0
    res = optimize.minimize(_davidson_nll, start, args=(i, j, wi, wj, t, ref), jac=True, method="BFGS",
                            options={"gtol": 1e-9, "maxiter": 1000})
    params = res.x
    # BFGS stops with "precision loss" once the score is as small as floating point allows; with
    # thousands of judgments that is still a converged fit, so judge it by the score itself.
    score = _davidson_nll(params, i, j, wi, wj, t, ref)[1]
    converged = bool(res.success) or float(np.max(np.abs(score))) < 1e-6 * max(1.0, float((wi + wj + t).sum()))
    hessian = _numeric_hessian(lambda p: _davidson_nll(p, i, j, wi, wj, t, ref)[1], params)
    try:
        cov = np.linalg.inv(hessian)
        se_free = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        se_free = np.full(params.size, np.nan)
    estimate = np.insert(params[:-1], ref, 0.0)
    se = np.insert(se_free[:-1], ref, np.nan)
    nu = float(np.exp(params[-1]))
    return {"labels": names, "reference": names[ref], "estimate": estimate.tolist(),
            "se": [None if np.isnan(s) else float(s) for s in se],
            "centered": (estimate - estimate.mean()).tolist(), "nu": nu,
            "nu_se": None if np.isnan(se_free[-1]) else float(nu * se_free[-1]),  # delta method from log nu
            "converged": converged}


def _numeric_hessian(gradient, x: FloatArray, step: float = 1e-5) -> FloatArray:
    n = x.size
    out = np.zeros((n, n))
    for k in range(n):
        e = np.zeros(n)
        e[k] = step
        out[:, k] = (gradient(x + e) - gradient(x - e)) / (2 * step)
    return (out + out.T) / 2


def _counts(prompt, left, right, verdict, names):
    """Judgments aggregated to (i, j, wins_i, wins_j, ties) over unordered arm pairs."""
    df = pd.DataFrame({"prompt": np.asarray(prompt), "left": np.asarray(left), "right": np.asarray(right),
                       "v": np.asarray(verdict, dtype=np.float64)})
    rank = {name: k for k, name in enumerate(names)}
    swap = df["left"].map(rank) > df["right"].map(rank)
    i = np.where(swap, df["right"], df["left"])
    j = np.where(swap, df["left"], df["right"])
    v = np.where(swap, 1.0 - df["v"], df["v"])  # i's score
    frame = pd.DataFrame({"i": i, "j": j, "wi": v == 1.0, "wj": v == 0.0, "t": v == 0.5})
    agg = frame.groupby(["i", "j"], sort=False)[["wi", "wj", "t"]].sum().reset_index()
    return agg["i"].to_numpy(), agg["j"].to_numpy(), agg["wi"].to_numpy(), agg["wj"].to_numpy(), agg["t"].to_numpy()


def bradley_terry_bootstrap(
    prompt: npt.ArrayLike, left: npt.ArrayLike, right: npt.ArrayLike, verdict: npt.ArrayLike,
    n_boot: int = 500, seed: int = 0, labels: Sequence | None = None,
) -> dict[str, object]:
    """Davidson strengths of every arm from judgments, with percentile 95% CIs from resampling prompts.

    Strengths are centered log-abilities (mean 0 over arms), so they do not depend on a reference arm.
    A resample in which some arm never meets another, or wins or loses everything, has no finite MLE and
    is skipped; ``n_boot_used`` says how many were kept.
    """
    prompt, left, right = np.asarray(prompt), np.asarray(left), np.asarray(right)
    verdict = np.asarray(verdict, dtype=np.float64)
    names = list(labels) if labels is not None else sorted(set(left.tolist()) | set(right.tolist()), key=str)
    fit = davidson(*_counts(prompt, left, right, verdict, names), labels=names)
    rng = np.random.default_rng(seed)
    unique = np.unique(prompt)
    rows_of = {p: np.flatnonzero(prompt == p) for p in unique}
    draws = []
    for _ in range(n_boot):
        rows = np.concatenate([rows_of[p] for p in rng.choice(unique, size=unique.size, replace=True)])
        i, j, wi, wj, t = _counts(prompt[rows], left[rows], right[rows], verdict[rows], names)
        if not _estimable(names, i, j, wi, wj, t):
            continue
        with np.errstate(all="ignore"):
            draw = davidson(i, j, wi, wj, t, labels=names)
        if draw["converged"] and np.all(np.abs(draw["centered"]) < 20):
            draws.append(draw["centered"])
    boots = np.asarray(draws)
    ci = ([[float(np.percentile(boots[:, k], 2.5)), float(np.percentile(boots[:, k], 97.5))]
           for k in range(len(names))] if len(draws) >= 20 else [[None, None] for _ in names])
    return {**fit, "ci95": ci, "n_boot": n_boot, "n_boot_used": len(draws)}


def _estimable(names, i, j, wi, wj, t) -> bool:
    """Whether a finite MLE exists: every arm's comparisons connect, and each arm has both some
    score (a win or tie) and some loss against the others (Zermelo's condition, ties as half)."""
    if len(names) < 2 or not len(i):
        return False
    score = dict.fromkeys(names, 0.0)
    against = dict.fromkeys(names, 0.0)
    for a, b, x, y, z in zip(i, j, wi, wj, t, strict=True):
        score[a] += x + z / 2
        score[b] += y + z / 2
        against[a] += y + z / 2
        against[b] += x + z / 2
    parent = {name: name for name in names}

    def root(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(i, j, strict=True):
        parent[root(a)] = root(b)
    return len({root(n) for n in names}) == 1 and all(score[n] > 0 and against[n] > 0 for n in names)
