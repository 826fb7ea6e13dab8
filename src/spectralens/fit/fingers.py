"""WeightWatcher's ``fix_fingers`` options: keep a few large outliers ("fingers") from spoiling alpha.

* ``xmin_peak``: histogram log10 of the eigenvalues (> threshold) into 100 bins; the left edge
  of the fullest bin is the ESD peak p. Only xmin candidates in [0.95 p, xmin_max] may win, with
  xmin_max = 1.5 p by default (``WeightWatcher.fit_powerlaw``, ``fix_fingers='xmin_peak'``).
  Differences from WW 0.7.7, on purpose: WW passes (log10(0.95 p), 1.5 p) as the range (the
  lower end is a log, the upper is not) and hands the tuple to a fitter that cannot take one,
  so with weightwatcher 0.7.7 + powerlaw 2.0 this option always returns ``status='failed'``.
  We use the documented intent, [0.95 p, 1.5 p], with the same KS scan as the default fit.
* ``clip_xmax`` (``RMT_Util.fit_clipped_powerlaw``): fit once (first fit), then for
  idx = 2 .. max_fingers - 1 refit without the top idx eigenvalues; accept the first refit whose
  alpha + finger_thresh < first alpha (num_fingers = idx - 1) and stop; also stop (keeping the
  first fit) once a refit's alpha <= 2. ``max_fingers`` is reset to 10 unless >= N/2, as WW does.
  Reported xmax is the largest eigenvalue of the accepted (clipped) fit; num_pl_spikes still
  counts every eigenvalue >= xmin.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["xmin_peak_candidates", "clip_xmax_fit", "esd_peak"]


def esd_peak(x: np.ndarray, bins: int = 100) -> float:
    """Left edge of the fullest of ``bins`` log10 bins of positive eigenvalues x: 10**edge."""
    counts, edges = np.histogram(np.log10(x), bins=bins)
    return float(10.0 ** edges[int(np.argmax(counts))])


def xmin_peak_candidates(x: np.ndarray, *, xmin_max: float | None = None) -> np.ndarray:
    """Bool mask (N-1,) of the xmin candidates x_0..x_{N-2} allowed by ``xmin_peak``."""
    peak = esd_peak(x)
    hi = 1.5 * peak if xmin_max is None else float(xmin_max)
    cand = x[:-1]
    return (cand >= 0.95 * peak) & (cand <= hi)


def clip_xmax_fit(x: np.ndarray, fit: Callable, *, max_fingers: int = 10, finger_thresh: float = 1.0,
                  min_alpha: float = 2.0):
    """WW's clipped power-law refits on ascending data x; ``fit(x) -> (alpha, xmin, D, sigma)``.

    Returns ((alpha, xmin, D, sigma, xmax), num_fingers, raw_alpha).
    """
    N = x.shape[0]
    if max_fingers is None or max_fingers < 0 or max_fingers < N / 2:
        max_fingers = 10
    first = fit(x)
    best, best_xmax, num_fingers = first, x[-1], 0
    for idx in range(2, max_fingers):
        if N - idx < 2:
            break
        clipped = x[:-idx]
        cur = fit(clipped)
        if cur[0] + finger_thresh < first[0]:
            best, best_xmax, num_fingers = cur, clipped[-1], idx - 1
            break
        if min_alpha is not None and cur[0] <= min_alpha:
            break
    alpha, xmin, D, sigma = best
    return (alpha, xmin, D, sigma, best_xmax), num_fingers, first[0]
