"""UMAP's low-dimensional curve: the ``a``, ``b`` that ``spread`` and ``min_dist`` stand for.

Its own module (NumPy only) because the config checks a pair fits before any run (:mod:`job.config`), and the
layout (:mod:`job.reduce.layout`) and placement use it.
"""

from __future__ import annotations

import numpy as np


def ab_params(spread: float, min_dist: float) -> tuple[float, float]:
    """``a``, ``b`` of the curve 1 / (1 + a x^(2b)) nearest (least squares over 300 points of [0, 3 spread]) to
    1 for x < min_dist and exp(-(x - min_dist) / spread) beyond: umap-learn's ``find_ab_params``, fitted by
    Levenberg-Marquardt from (1, 1) as scipy's ``curve_fit`` does."""
    x = np.linspace(0, spread * 3, 300)
    y = np.where(x < min_dist, 1.0, np.exp(-(x - min_dist) / spread))
    positive = x > 0
    log_x = np.where(positive, np.log(np.where(positive, x, 1.0)), 0.0)
    params, damping = np.array([1.0, 1.0]), 1e-3

    def residual(p: np.ndarray) -> np.ndarray:
        value: np.ndarray = 1.0 / (1.0 + p[0] * np.where(positive, x, 0.0) ** (2 * p[1])) - y
        return value

    cost = float(residual(params) @ residual(params))
    for _ in range(200):
        power = np.where(positive, np.exp(2 * params[1] * log_x), 0.0)
        f = 1.0 / (1.0 + params[0] * power)
        jac = np.column_stack([-power * f * f, -params[0] * power * 2 * log_x * f * f])
        r = f - y
        normal, grad = jac.T @ jac, jac.T @ r
        step = np.linalg.solve(normal + damping * np.diag(np.diag(normal)), -grad)
        trial = params + step
        trial_cost = float(residual(trial) @ residual(trial))
        if trial_cost < cost:
            converged = abs(cost - trial_cost) <= 1e-15 * max(cost, 1e-300) or np.abs(step).max() < 1e-12
            params, cost, damping = trial, trial_cost, damping / 10
            if converged:
                break
        else:
            damping *= 10
            if damping > 1e12:
                break
    return float(params[0]), float(params[1])
