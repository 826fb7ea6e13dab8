"""Slow, obviously-correct reference implementations that the fast code is tested against.

Plain Python loops, float64, straight from the textbook definitions. No spectralens imports.
"""
from __future__ import annotations

import math

import numpy as np


def mle_alpha(tail: np.ndarray, xmin: float) -> float:
    """Continuous power-law MLE (Clauset, Shalizi & Newman 2009, eq. 3.1): 1 + n / sum ln(x / xmin)."""
    s = 0.0
    for v in tail:
        s += math.log(v / xmin)
    return 1.0 + len(tail) / s if s > 0 else math.inf


def ks_lower(tail: np.ndarray, xmin: float, alpha: float) -> float:
    """WeightWatcher's KS distance: max_k |1 - (x_k / xmin)^(1 - alpha) - k / n| over the sorted tail."""
    n = len(tail)
    worst = 0.0
    for k, v in enumerate(tail):
        fitted = 1.0 - (v / xmin) ** (1.0 - alpha)
        worst = max(worst, abs(fitted - k / n))
    return worst


def ks_two_sided(tail: np.ndarray, xmin: float, alpha: float) -> float:
    """Textbook KS distance max(D+, D-) with the empirical CDF stepping at each point (no ties)."""
    n = len(tail)
    worst = 0.0
    for k, v in enumerate(tail):
        fitted = 1.0 - (v / xmin) ** (1.0 - alpha)
        worst = max(worst, abs(fitted - k / n), abs(fitted - (k + 1) / n))
    return worst


def ks_scan_loop(data, *, thresh: float = 1e-5):
    """Every point but the last as xmin, keep the smallest KS distance (first on ties).

    Returns (alpha, xmin, D, sigma, alphas, Ds) on sorted data > thresh (WeightWatcher's N >= 20 rule).
    """
    x = np.sort(np.asarray(data, dtype=np.float64))
    x = x[x > thresh]
    alphas, Ds = [], []
    for i in range(len(x) - 1):
        tail = x[i:]
        alpha = mle_alpha(tail, x[i])
        alphas.append(alpha)
        Ds.append(ks_lower(tail, x[i], alpha) if alpha > 1 else 1.0)
    best = int(np.argmin(Ds))
    n = len(x) - best
    return alphas[best], x[best], Ds[best], (alphas[best] - 1) / math.sqrt(n), np.array(alphas), np.array(Ds)


def hill_loop(data) -> tuple[float, float]:
    """Hill/median estimator: xmin = ascending[N // 2], alpha = 1 + n / sum ln(x / xmin). Returns (alpha, xmin)."""
    x = sorted(float(v) for v in data)
    xmin = x[len(x) // 2]
    tail = x[len(x) // 2:]
    return mle_alpha(np.array(tail), xmin), xmin


def pareto_sample(alpha: float, n: int, xmin: float = 1.0, seed: int = 0) -> np.ndarray:
    """n draws from p(x) = (alpha - 1) xmin^(alpha-1) x^-alpha, x >= xmin, by inverse CDF."""
    u = np.random.default_rng(seed).random(n)
    return xmin * (1.0 - u) ** (-1.0 / (alpha - 1.0))


def mp_edges(sigma: float, Q: float) -> tuple[float, float]:
    """Marchenko-Pastur support [(sigma (1 - 1/sqrt(Q)))^2, (sigma (1 + 1/sqrt(Q)))^2]."""
    return (sigma * (1 - 1 / math.sqrt(Q))) ** 2, (sigma * (1 + 1 / math.sqrt(Q))) ** 2
