"""Linear mixed models with crossed random intercepts, fitted by REML the way lme4 does it.

score ~ X + (1|rater) + (1|prompt) is what the comparison needs. statsmodels' MixedLM can only fit
crossed effects as variance components of one all-covering group, which makes every likelihood
evaluation dense in the number of observations: 13 s at 250 prompts, 167 s at 1,000, about 11 minutes
a scale at 2,500 (bench/RESULTS.md). lme4 (Bates, Maechler, Bolker & Walker 2015, "Fitting linear
mixed-effects models using lme4", J. Stat. Softw. 67(1), section 3) profiles the fixed effects and
the residual variance out of the REML criterion, leaving only the relative standard deviations theta
to optimise, and solves the penalised least-squares system with a sparse Cholesky factor. No
well-kept Python package does this (statsmodels has no sparse crossed path; pymer4 needs R), so it is
written here.

The sparse step: every term is a random intercept, so each factor's block of Z'Z is diagonal (the
count of observations per level). Eliminating the factor with the most levels (the prompts) leaves a
dense system the size of the other factors' levels (the raters, a few hundred), so one evaluation of
the criterion costs O(nnz(Z'Z) + q_small^3) and the whole fit well under a second at 5,000 responses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import linalg, optimize, sparse, stats

__all__ = ["CrossedFit", "fit_crossed"]


@dataclass
class CrossedFit:
    beta: np.ndarray  # fixed effects, in the columns of X
    se: np.ndarray  # their standard errors (REML residual variance)
    p: np.ndarray  # two-sided Wald z p-values, as statsmodels' MixedLM reports them
    variances: dict[str, float]  # each random intercept's variance, and "residual"
    theta: np.ndarray  # the relative standard deviations the optimiser found
    reml_criterion: float  # -2 x the REML log-likelihood, lme4's "REML criterion at convergence"
    converged: bool
    message: str = ""
    warnings: list[str] = field(default_factory=list)


class _Problem:
    """The fixed cross-products of one data set, so that each theta costs no pass over the rows."""

    def __init__(self, y: np.ndarray, X: np.ndarray, codes: list[np.ndarray]):
        n = y.size
        self.n, self.p = n, X.shape[1]
        sizes = [int(c.max()) + 1 for c in codes]
        # The largest factor is eliminated through its diagonal block; the others stay dense.
        self.order = sorted(range(len(codes)), key=lambda k: -sizes[k])
        big, rest = self.order[0], self.order[1:]
        self.big_size = sizes[big]
        self.rest_sizes = [sizes[k] for k in rest]
        rows = np.arange(n)
        Zb = sparse.csr_matrix((np.ones(n), (rows, codes[big])), shape=(n, sizes[big]))
        Zo = sparse.hstack([sparse.csr_matrix((np.ones(n), (rows, codes[k])), shape=(n, sizes[k])) for k in rest],
                           format="csr") if rest else sparse.csr_matrix((n, 0))
        self.db = np.asarray(Zb.sum(axis=0)).ravel()  # Zb'Zb is diagonal: counts per level
        self.ZoZo = (Zo.T @ Zo).toarray()
        self.ZoZb = (Zo.T @ Zb).tocsr()
        self.ZbX, self.ZoX = Zb.T @ X, Zo.T @ X
        self.Zby, self.Zoy = Zb.T @ y, Zo.T @ y
        self.XX, self.Xy, self.yy = X.T @ X, X.T @ y, float(y @ y)
        # One theta per dense column, in the dense block's order.
        self.rest_index = np.repeat(np.arange(len(rest)), self.rest_sizes)

    def solve(self, theta: np.ndarray) -> dict:
        """Everything the criterion and the estimates need at `theta` (ordered as self.order)."""
        tb, to = theta[0], theta[1:][self.rest_index] if self.rest_sizes else np.zeros(0)
        d = tb * tb * self.db + 1.0  # the eliminated diagonal block of A = Lambda'Z'Z Lambda + I
        Aob = self.ZoZb.multiply(to[:, None]).multiply(tb).tocsr()  # Lambda_o Zo'Zb Lambda_b
        S = self.ZoZo * np.outer(to, to) + np.eye(to.size)
        if to.size:
            S -= (Aob.multiply(1.0 / d) @ Aob.T).toarray()
        chol = linalg.cho_factor(S, lower=True, check_finite=False) if to.size else None
        logdet_a = float(np.log(d).sum()) + (2.0 * float(np.log(np.diag(chol[0])).sum()) if to.size else 0.0)

        def a_solve(rb: np.ndarray, ro: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if not to.size:
                return rb / (d[:, None] if rb.ndim == 2 else d), ro
            dd = d[:, None] if rb.ndim == 2 else d
            vo = linalg.cho_solve(chol, ro - Aob @ (rb / dd), check_finite=False)
            vb = (rb - Aob.T @ vo) / dd
            return vb, vo

        # W = Z Lambda, so W'X and W'y are Z'X and Z'y scaled by theta per row of the block.
        WbX, WoX = tb * self.ZbX, to[:, None] * self.ZoX
        Wby, Woy = tb * self.Zby, to * self.Zoy
        Gb, Go = a_solve(WbX, WoX)
        gb, go = a_solve(Wby, Woy)
        M = self.XX - WbX.T @ Gb - WoX.T @ Go  # R_X'R_X
        beta = linalg.solve(M, self.Xy - WbX.T @ gb - WoX.T @ go, assume_a="pos")
        ub, uo = gb - Gb @ beta, go - Go @ beta
        # At the solution of the penalised normal equations the penalised RSS is y'y - solution'rhs.
        r2 = self.yy - float(beta @ self.Xy) - float(ub @ Wby) - float(uo @ Woy)
        sign, logdet_m = np.linalg.slogdet(M)
        return {"beta": beta, "M": M, "r2": max(r2, 1e-300), "logdet_a": logdet_a,
                "logdet_m": logdet_m if sign > 0 else np.inf}

    def criterion(self, theta: np.ndarray) -> float:
        s = self.solve(theta)
        df = self.n - self.p
        return s["logdet_a"] + s["logdet_m"] + df * (1.0 + np.log(2.0 * np.pi * s["r2"] / df))


def fit_crossed(y: npt.ArrayLike, X: npt.ArrayLike, factors: Sequence[npt.ArrayLike],
                names: Sequence[str] | None = None) -> CrossedFit:
    """REML fit of y = X beta + sum_k Z_k b_k + e with an independent random intercept per level of each factor.

    `factors` are per-row labels (any hashable values); levels are taken as given, so crossed and
    nested designs both work. Raises ValueError on inputs that define no model.
    """
    y = np.asarray(y, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    names = list(names) if names is not None else [f"factor{k}" for k in range(len(factors))]
    if not factors or len(names) != len(factors):
        raise ValueError("give at least one factor, and one name per factor")
    if y.ndim != 1 or X.shape[0] != y.size or any(len(f) != y.size for f in factors):
        raise ValueError("y, X and every factor need one entry per observation")
    if not np.isfinite(y).all() or not np.isfinite(X).all():
        raise ValueError("y and X must be finite")
    if np.ptp(y) == 0:
        raise ValueError("the scores do not vary: there is nothing to model")
    if np.linalg.matrix_rank(X) < X.shape[1] or y.size <= X.shape[1]:
        raise ValueError("the fixed-effects design is rank deficient or has no residual degrees of freedom")
    codes = [np.unique(np.asarray(f), return_inverse=True)[1].ravel() for f in factors]
    problem = _Problem(y, X, codes)
    k = len(codes)
    caught: list[str] = []
    best = None
    # Two starts (lme4 starts at theta = 1; a near-zero start guards against a poor local optimum
    # when a component is really zero); theta >= 0 as in lme4's parameterisation. L-BFGS-B gets close
    # fast; its finite-difference gradient stops early where the criterion is flat (a factor with few
    # levels), so a tight bounded Nelder-Mead polishes the better of the two (lme4's optimisers are
    # derivative-free for the same reason).
    bounds = [(0.0, None)] * k
    for start in (np.ones(k), np.full(k, 0.1)):
        res = optimize.minimize(problem.criterion, start, method="L-BFGS-B", bounds=bounds,
                                options={"ftol": 1e-12, "gtol": 1e-8, "maxiter": 500})
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    polished = optimize.minimize(problem.criterion, best.x, method="Nelder-Mead", bounds=bounds,
                                 options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 2000 * k})
    if polished.fun <= best.fun:
        best = polished
    assert best is not None
    converged = bool(best.success) and np.isfinite(best.fun)
    if not converged:
        caught.append(f"optimizer: {best.message}")
    theta = np.asarray(best.x, dtype=np.float64)
    s = problem.solve(theta)
    df = problem.n - problem.p
    sigma2 = s["r2"] / df
    cov = sigma2 * np.linalg.inv(s["M"])
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = s["beta"] / se
    p = 2.0 * stats.norm.sf(np.abs(z))
    ordered = [names[i] for i in problem.order]
    variances = {name: float(sigma2 * t * t) for name, t in zip(ordered, theta, strict=True)}
    variances["residual"] = float(sigma2)
    theta_by_input = np.empty(k)
    theta_by_input[problem.order] = theta
    return CrossedFit(beta=s["beta"], se=se, p=p, variances=variances, theta=theta_by_input,
                      reml_criterion=float(best.fun), converged=converged,
                      message=str(best.message), warnings=caught)
