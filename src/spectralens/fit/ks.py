"""Vectorised Kolmogorov-Smirnov xmin scan for the continuous power-law MLE.

For ascending data x_0 <= ... <= x_{N-1} (all > 0) and a candidate xmin = x_i, the tail is
x_i..x_{N-1}, n_i = N - i points (xmin itself included, as WeightWatcher and Clauset et al. do):

    alpha_i = 1 + n_i / sum_{j >= i} ln(x_j / x_i)       (Clauset, Shalizi & Newman 2009, eq. 3.1)
    sigma_i = (alpha_i - 1) / sqrt(n_i)                  (its standard error)
    D_i     = max_{k = 0..n_i-1} | 1 - (x_{i+k} / x_i)^(1 - alpha_i) - k / n_i |

D_i is WeightWatcher 0.7.7's KS distance (``WW_powerlaw.WWFit.fit_power_law_standard``): the
fitted CDF against the *lower* empirical CDF k/n only (not max(D+, D-) as in the ``powerlaw``
package). Candidates are every data point except the last (i = 0..N-2); the winner is the first
index of the smallest D_i (np.argmin).

Cost. All alphas come from one reverse cumulative sum, O(N). A full D scan needs every pair
(i, j >= i): ~N^2/2 exponentials. Two implementations, same answer:

* ``prune=False``: rows of candidates in blocks, O(block * N) memory (never N x N).
* ``prune=True`` (default for N > 200): bound and refine. Sample G + 1 evenly spaced points of
  every tail; |F - E| at them is a lower bound of D_i, and because the fitted CDF F and the
  empirical CDF E are both non-decreasing, the deviation between two sampled points k_a < k_b
  is at most max(F_b - E_a, E_b - F_a): an upper bound. The exact D of the 8 candidates with
  the smallest lower bounds is another upper bound on the minimum D* (usually a tight one).
  Candidates whose lower bound exceeds the smallest upper bound cannot win; the others are re-bounded with a 4x finer grid (32, 128,
  ..., 8192 points) and the survivors (typically tens) get the exact D. Typically O(N G) work
  instead of O(N^2); a pure power law (flat D curve, many near-ties) is the slow case.
  ``Ds`` is then exact for the survivors and NaN elsewhere.

Computed with numpy in float64 (single-threaded, like WeightWatcher, so no thread contention).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["KSScan", "ks_scan", "ks_distance", "tail_alphas"]

_BLOCK_ELEMENTS = 1 << 21  # ~2M float64 elements (16 MiB) per block of the exact D computation
_PROBES = 8                # candidates per refinement level whose exact D tightens the upper bound


@dataclass(frozen=True)
class KSScan:
    """Result of a scan: per-candidate arrays (index i = xmin x_i) and the chosen index."""
    alphas: np.ndarray   # (N-1,) MLE alpha per candidate xmin
    Ds: np.ndarray       # (N-1,) KS distance per candidate (NaN where pruned away)
    sigmas: np.ndarray   # (N-1,) (alpha - 1) / sqrt(n)
    best: int            # index of the chosen xmin in the sorted data


def tail_alphas(x: np.ndarray, *, bias_corrected: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """alpha_i and s_i = sum_{j>=i} ln(x_j/x_i) for every i of ascending x (N,), O(N).

    A reverse cumulative sum of ln(x) - ln(x_{N-1}) (summed from the top, so short tails are
    accurate). ``bias_corrected`` uses n - 1 in the numerator (WeightWatcher's small-N rule).
    """
    L = np.log(x) - np.log(x[-1])
    suffix = np.cumsum(L[::-1])[::-1]
    n = np.arange(x.shape[0], 0, -1, dtype=np.float64)
    s = np.maximum(suffix - n * L, 0.0)  # round-off can give -1e-17 on tied tails
    num = n - 1.0 if bias_corrected else n
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 1.0 + num / s
    return alpha, s


def _deviation(L: np.ndarray, alpha: np.ndarray, rows: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fitted CDF F and empirical CDF E = k/n at offsets k (R, K) of the tails of ``rows``."""
    n = (L.shape[0] - rows).astype(np.float64)[:, None]
    j = np.minimum(rows[:, None] + k, L.shape[0] - 1)
    dL = L[j] - L[rows][:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        F = -np.expm1(np.where(dL > 0, (1.0 - alpha[rows])[:, None] * dL, 0.0))
    return F, k / n


def ks_distance(x: np.ndarray, alpha: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Exact D_i for candidates ``rows`` (ascending ints, default 0..N-2), block by block.

    D_i = 1 where alpha_i is not > 1 (WeightWatcher's convention).
    """
    N = x.shape[0]
    L = np.log(x)
    rows = np.arange(N - 1) if rows is None else np.asarray(rows)
    out = np.ones(rows.shape[0])
    start = 0
    while start < rows.shape[0]:
        a = int(rows[start])
        step = max(1, _BLOCK_ELEMENTS // (N - a))
        chunk = rows[start:start + step]
        k = np.arange(a, N)[None, :] - chunk[:, None]           # j - i, negative before the tail
        F, E = _deviation(L, alpha, chunk, np.maximum(k, 0))
        dev = np.where(k >= 0, np.abs(F - E), 0.0)
        out[start:start + chunk.shape[0]] = dev.max(axis=1)
        start += chunk.shape[0]
    return np.where(alpha[rows] > 1, out, 1.0)


def _bounds(L: np.ndarray, alpha: np.ndarray, rows: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower/upper bounds of D_i from ``grid`` + 1 evenly spaced points of each tail of ``rows``."""
    step = max(1, _BLOCK_ELEMENTS // (grid + 1))
    parts = [_bounds_block(L, alpha, rows[s:s + step], grid) for s in range(0, rows.size, step)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _bounds_block(L: np.ndarray, alpha: np.ndarray, rows: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    n = (L.shape[0] - rows).astype(np.float64)
    g = np.arange(grid + 1, dtype=np.float64)
    k = np.floor(g[None, :] * (n - 1)[:, None] / grid + 0.5)       # 0 .. n-1, non-decreasing
    F, E = _deviation(L, alpha, rows, k.astype(np.int64))
    lower = np.abs(F - E).max(axis=1)
    # points strictly between sampled offsets k_a < k_b have E in [(k_a + 1)/n, (k_b - 1)/n]
    gap = np.maximum(F[:, 1:] - E[:, :-1] - 1.0 / n[:, None], E[:, 1:] - 1.0 / n[:, None] - F[:, :-1])
    upper = np.maximum(lower, gap.max(axis=1))
    bad = ~(alpha[rows] > 1)
    return np.where(bad, 1.0, lower), np.where(bad, 1.0, upper)


def ks_scan(x: np.ndarray, *, candidates: np.ndarray | None = None, prune: bool | None = None,
            grids: tuple[int, ...] = (32, 128, 512, 2048, 8192)) -> KSScan:
    """Every x_i (i < N-1) as xmin: alphas, sigmas, KS distances and the argmin of D.

    Args:
        x: ascending, positive, finite float64 data (N,), N >= 2.
        candidates: optional bool mask (N-1,) of the xmins allowed to win (fix_fingers).
        prune: bound-and-refine (default when N > 200); the chosen xmin is the same either way.
        grids: coarse-to-fine points per tail for the bounds of the pruned scan.
    """
    x = np.asarray(x, dtype=np.float64)
    N = x.shape[0]
    alpha, _ = tail_alphas(x)
    alpha_c = alpha[:N - 1]
    with np.errstate(invalid="ignore"):
        sigmas = (alpha_c - 1.0) / np.sqrt(np.arange(N, 1, -1, dtype=np.float64))
    allowed = np.ones(N - 1, dtype=bool) if candidates is None else np.asarray(candidates, dtype=bool)
    if prune is None:
        prune = N > 200
    Ds = np.full(N - 1, np.nan)
    rows = np.flatnonzero(allowed)
    if prune:
        L = np.log(x)
        best_upper, done = np.inf, []
        for grid in grids:
            if rows.size < 64:
                break
            lower, upper = _bounds(L, alpha, rows, grid)
            # exact D of the few most promising candidates: a tight upper bound on D*
            probe = np.sort(rows[np.argsort(lower, kind="stable")[:_PROBES]])
            best_upper = min(best_upper, float(upper.min()), float(ks_distance(x, alpha, probe).min()))
            rows = rows[lower <= best_upper + 1e-12]    # the winner has lower <= D* <= best_upper
            short = (N - rows) <= 4 * grid              # tails this short: exact D costs no more
            done.append(rows[short])
            rows = rows[~short]
        rows = np.sort(np.concatenate(done + [rows]))
    if rows.size:
        Ds[rows] = ks_distance(x, alpha, rows)
    masked = np.where(allowed & ~np.isnan(Ds), Ds, np.inf)
    best = int(np.argmin(masked))  # first index of the minimum, like WeightWatcher's np.argmin
    return KSScan(alphas=alpha_c, Ds=Ds, sigmas=sigmas, best=best)
