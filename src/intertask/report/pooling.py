"""Questions asked of many cells at once: how a cell's gain depends on something measured of it (the
divergence between its two tasks, its intermediate task's family, its model group), with an interval
that carries both sources of error such an answer has:

- each cell's own gain uncertainty (its standard error over seeds and test examples, from the gains
  table: significance.py), and
- which intermediate tasks the study happened to choose: a cell's true gain differs from the one the
  relation predicts by a task effect of variance tau^2, estimated from the cells' spread beyond their own
  standard errors (what resampling the tasks would see).

The model: gain_c = x_c' beta + u_c + e_c, the task effect u_c ~ (0, tau^2) and the cell's own error e_c
~ (0, se_c^2). beta by ordinary least squares; its interval from the residual variance, which holds
both parts (what is left beyond the cells' own errors is reported as tau^2), Student t with cells -
parameters degrees of freedom. Why not weights 1 / (se_c^2 + tau^2) (a random-effects meta-regression,
Knapp-Hartung): the gains' se come from 5 seeds, and a cell whose se happens to read low gets a large
weight and its error with it -- simulated with se estimated on 4 degrees of freedom, that interval
covered 92 % and flagged 7-8 % of null slopes (with the Knapp-Hartung floor 94-96 % and up to 5.8 %);
least squares covered 95-95.5 % and flagged 4.5-5 % in every case. Why not a bootstrap over tasks with
each cell's gain redrawn within its interval: with about ten tasks a percentile bootstrap of a slope
covers well under 95 %, and redrawing the measured gains counts their error twice.
tests/test_pooling.py measures coverage and false flags.

Rank correlation: Spearman's rho of gain and divergence within targets: both ranked within each
target, centred there, and correlated over all cells (pooling per-target rhos by Fisher's z let a
target of 6 cells whose rho happened to be -1 outweigh everything); its interval by Fisher's z with
the Bonett and Wright variance (1 + rho^2 / 2) / (n - 3), n the cells less one per extra target; its p by
permutation of the gains among the cells of each target (the null: the gains do not depend on the
divergence at all), and the smallest rho that a study of this size detects with the configured power.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

PERMUTATIONS = 10_000


@dataclass(frozen=True)
class Fit:
    beta: np.ndarray  # (p,)
    cov: np.ndarray  # (p, p), Knapp-Hartung scaled
    df: int  # cells - parameters
    tau2: float  # residual variance beyond the cells' own (mean se^2): the task effect
    cells: int

    def contrast(self, weights, confidence: float = 0.95, power: float = 0.8) -> dict:
        """A linear combination of the coefficients: estimate, se, interval, p, and the smallest true
        value detected with `power` (t test with `df` degrees of freedom)."""
        c = np.asarray(weights, float)
        value = float(c @ self.beta)
        se = float(np.sqrt(max(c @ self.cov @ c, 0.0)))
        if self.df < 1 or not np.isfinite(se):
            nan = float("nan")
            return {"estimate": value, "se": se, "ci_low": nan, "ci_high": nan, "p": nan, "mde": nan}
        h = stats.t.ppf(1 - (1 - confidence) / 2, self.df)
        p = float(2 * stats.t.sf(abs(value) / se, self.df)) if se > 0 else float(value == 0)
        mde = (h + stats.t.ppf(power, self.df)) * se
        return {
            "estimate": value,
            "se": se,
            "ci_low": value - h * se,
            "ci_high": value + h * se,
            "p": p,
            "mde": float(mde),
        }


def fit(gains, se, design) -> Fit:
    """Regression of `gains` (n,) on `design` (n, p), each gain with its standard error `se` (n,):
    ordinary least squares, the residual variance (the cells' own error plus the task effect) read from
    the residuals, Student t with n - rank degrees of freedom (module docstring)."""
    y = np.asarray(gains, float)
    x = np.asarray(design, float).reshape(len(y), -1)
    inv = np.linalg.pinv(x.T @ x)
    beta = inv @ x.T @ y
    df = len(y) - int(np.linalg.matrix_rank(x))
    residual = float(((y - x @ beta) ** 2).sum() / df) if df > 0 else float("nan")
    own = float(np.mean(np.asarray(se, float) ** 2))
    tau2 = max(0.0, residual - own) if np.isfinite(residual) else float("nan")
    return Fit(beta, inv * residual, df, tau2, len(y))


def dummies(labels) -> tuple[np.ndarray, list]:
    """One indicator column per distinct label, in order of first appearance."""
    levels = list(dict.fromkeys(labels))
    return np.array([[label == level for level in levels] for label in labels], float), levels


def slope(gains, se, x, groups) -> tuple[Fit, int]:
    """The common slope of gain on `x` with one intercept per group (target): (fit, index of the slope)."""
    intercepts, _ = dummies(groups)
    design = np.column_stack([intercepts, np.asarray(x, float)])
    return fit(gains, se, design), design.shape[1] - 1


def slope_test(gains, se, x, groups, seed: int = 0, confidence: float = 0.95, power: float = 0.8) -> dict:
    """The slope of `slope` with its t interval and smallest detectable slope, its p the larger of the
    t test's and a permutation test's (the gains permuted among the cells of each group: exact under
    the null that they do not depend on x at all). Least squares with cells of unequal error is a
    little liberal at a true slope of 0 (5.1-5.3 % at p <= 0.05 in 10,000 simulated studies); the
    permutation p is not, and the larger of the two keeps the false flags at or under the level."""
    fitted, index = slope(gains, se, x, groups)
    found = fitted.contrast(np.eye(len(fitted.beta))[index], confidence, power)
    if np.isfinite(found["p"]):
        found["p"] = max(found["p"], _permutation_slope_p(gains, x, groups, seed))
    return found | {"tau2": fitted.tau2}


def _permutation_slope_p(gains, x, groups, seed: int) -> float:
    y, x, groups = np.asarray(gains, float), np.asarray(x, float), np.asarray(groups)
    parts = [np.flatnonzero(groups == g) for g in dict.fromkeys(groups.tolist())]
    centred = x.copy()
    for i in parts:
        centred[i] = x[i] - x[i].mean()
    observed = abs(centred @ y)
    rng = np.random.default_rng(seed)
    null = np.zeros(PERMUTATIONS)
    for i in parts:
        shuffled = y[i][np.argsort(rng.random((PERMUTATIONS, len(i))), axis=1)]
        null += shuffled @ centred[i]
    return float((1 + (np.abs(null) >= observed - 1e-12).sum()) / (PERMUTATIONS + 1))


def mean(gains, se) -> Fit:
    """The random-effects mean of a set of cells' gains."""
    return fit(gains, se, np.ones((len(gains), 1)))


def rank_correlation(x, y, groups, seed: int = 0, confidence: float = 0.95, power: float = 0.8) -> dict:
    """Spearman's rho of y on x within each group, pooled (module docstring): rho, interval, permutation
    p, and the smallest rho detectable with `power` at this many cells."""
    x, y, groups = np.asarray(x, float), np.asarray(y, float), np.asarray(groups)
    parts = [np.flatnonzero(groups == g) for g in dict.fromkeys(groups.tolist())]
    parts = [i for i in parts if len(i) >= 4 and np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0]
    nan = float("nan")
    if not parts:
        return {"rho": nan, "ci_low": nan, "ci_high": nan, "p": nan, "detectable_rho": nan, "cells": 0}
    rng = np.random.default_rng(seed)
    centred = [
        (stats.rankdata(x[i]) - (len(i) + 1) / 2, stats.rankdata(y[i]) - (len(i) + 1) / 2) for i in parts
    ]
    norm = np.sqrt(sum((rx**2).sum() for rx, _ in centred) * sum((ry**2).sum() for _, ry in centred))
    rho = float(sum(rx @ ry for rx, ry in centred) / norm)
    null = np.zeros(PERMUTATIONS)
    for rx, ry in centred:
        null += ry[np.argsort(rng.random((PERMUTATIONS, len(rx))), axis=1)] @ rx
    extreme = 1 + int((np.abs(null / norm) >= abs(rho) - 1e-12).sum())
    n = sum(len(i) for i in parts) - (len(parts) - 1)  # one mean per target spent
    z_se = np.sqrt((1 + rho**2 / 2) / (n - 3))
    h = stats.norm.ppf(1 - (1 - confidence) / 2)
    clipped = np.clip(rho, -0.999999, 0.999999)
    detectable = np.tanh((h + stats.norm.ppf(power)) / np.sqrt(n - 3))
    return {
        "rho": rho,
        "ci_low": float(np.tanh(np.arctanh(clipped) - h * z_se)),
        "ci_high": float(np.tanh(np.arctanh(clipped) + h * z_se)),
        "p": extreme / (PERMUTATIONS + 1),
        "detectable_rho": float(detectable),
        "cells": int(sum(len(i) for i in parts)),
    }
