"""Power-law fits of the tail of an eigenvalue spectrum, p(lambda) ~ lambda^-alpha for lambda >= xmin.

``fit_power_law(evals, method="ks")`` reproduces WeightWatcher 0.7.7's default ``analyze()`` fit
(``pl_package="ww"``, ``WW_powerlaw.WWFit``):

1. keep eigenvalues > ``evals_thresh`` (1e-5), sort ascending (an int ``xmax`` first drops the
   top ``xmax`` eigenvalues; a float ``xmax`` truncates the data at the eigenvalue nearest it);
2. N >= 20: every eigenvalue but the largest is a candidate xmin; for each,
   alpha = 1 + n / sum ln(x / xmin) over the n eigenvalues >= xmin (continuous MLE),
   D = max_k |1 - (x_(k)/xmin)^(1-alpha) - k/n| (k = 0..n-1); keep the smallest D
   (Clauset, Shalizi & Newman 2009, "Power-law distributions in empirical data", SIAM Rev.;
   Martin & Mahoney 2021, "Implicit self-regularization in deep neural networks", JMLR);
3. N < 20 (WW's small-N rule): bias-corrected alpha = 1 + (n - 1) / sum ln(x / xmin), tails of
   at least 8 points, xmin minimising D (WW also computes D - 0.868 / sqrt(n) but then
   re-selects by D in ``WWFit.__init__``; we return what WW returns);
4. sigma = (alpha - 1) / sqrt(n); num_pl_spikes = #{lambda >= xmin} over the eigenvalues given
   (after an int-xmax clip); warning "over-trained" if alpha < 2, "under-trained" if alpha > 6.

``method="hill"``: the Hill/median estimator (Hill 1975, "A simple general approach to inference
about the tail of a distribution", Ann. Stat.; TempBalance, AlphaDecay): xmin = ascending[N // 2],
alpha = 1 + n / sum ln(x / xmin) over the n = N - N // 2 top eigenvalues, D as above.

Limits: the KS scan assumes a continuous power law; D is WW's one-sided-CDF variant, so it
differs slightly from ``powerlaw.Fit``'s max(D+, D-). Bad data never raises: NaN fields + status.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .ks import ks_distance, ks_scan, tail_alphas

__all__ = ["PowerLawFit", "fit_power_law", "as_numpy_evals", "alpha_warning"]

OVER_TRAINED_THRESH = 2.0
UNDER_TRAINED_THRESH = 6.0
SMALL_N_CUTOFF = 20     # WW_powerlaw.SMALL_N_CUTOFF
SMALL_N_K_MIN = 8       # fit_powerlaw_smallN(k_min=8)
METHODS = ("ks", "hill")
FIX_FINGERS = (None, "xmin_peak", "clip_xmax")


@dataclass(frozen=True)
class PowerLawFit:
    """A power-law tail fit. All eigenvalue-valued fields are in the units of the input."""
    alpha: float          # tail exponent, p(lambda) ~ lambda^-alpha
    xmin: float           # start of the tail
    xmax: float           # largest eigenvalue used in the fit
    D: float              # KS distance of the fit on the tail (WW's formula)
    sigma: float          # standard error (alpha - 1) / sqrt(n_tail)
    num_pl_spikes: int    # number of eigenvalues >= xmin (the tail)
    num_evals: int        # eigenvalues given
    method: str           # "ks", "hill", "farms-hill", "farms-ks"
    status: str           # "ok" or a short reason
    warning: str          # "over-trained" (alpha < 2), "under-trained" (alpha > 6) or ""
    num_fingers: int = 0          # clip_xmax: top eigenvalues clipped (WW's num_fingers)
    raw_alpha: float = math.nan   # clip_xmax: alpha before clipping

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def alpha_warning(alpha: float) -> str:
    """WeightWatcher's warning column for alpha."""
    if alpha < OVER_TRAINED_THRESH:
        return "over-trained"
    if alpha > UNDER_TRAINED_THRESH:
        return "under-trained"
    return ""


def as_numpy_evals(evals) -> np.ndarray:
    """1-D float64 numpy copy of a numpy array, torch tensor or sequence of eigenvalues."""
    if hasattr(evals, "detach"):  # torch tensor, without importing torch here
        evals = evals.detach().to("cpu").double().numpy()
    arr = np.asarray(evals, dtype=np.float64)
    if arr.ndim > 1 and sum(d > 1 for d in arr.shape) > 1:
        raise ValueError(f"expected a 1-D array of eigenvalues, got shape {arr.shape} (fit one spectrum at a time)")
    return arr.reshape(-1)


def _failed(num_evals: int, method: str, status: str) -> PowerLawFit:
    nan = math.nan
    return PowerLawFit(nan, nan, nan, nan, nan, 0, num_evals, method, status, "")


def _result(alpha, xmin, xmax, D, sigma, all_evals, method, **extra) -> PowerLawFit:
    alpha, D, sigma = float(alpha), float(D), float(sigma)
    status = "ok" if math.isfinite(alpha) and math.isfinite(D) else "degenerate tail (tied eigenvalues)"
    return PowerLawFit(alpha=alpha, xmin=float(xmin), xmax=float(xmax), D=D, sigma=sigma,
                       num_pl_spikes=int(np.count_nonzero(all_evals >= xmin)), num_evals=int(all_evals.size),
                       method=method, status=status, warning=alpha_warning(alpha), **extra)


def _ww_fit(x: np.ndarray, candidates: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """(alpha, xmin, D, sigma) of WWFit on ascending positive data x (N >= 2)."""
    N = x.shape[0]
    if N >= SMALL_N_CUTOFF:
        scan = ks_scan(x, candidates=candidates)
        i = scan.best
        return scan.alphas[i], x[i], scan.Ds[i], scan.sigmas[i]
    # WWFit.fit_powerlaw_smallN: bias-corrected alpha, tails of >= 8 points. It also computes an
    # objective J = D - 0.868/sqrt(n), but WWFit.__init__ then re-selects by argmin(Ds) (D = 1 for
    # skipped candidates), so the winner is the smallest D: we reproduce what WW returns.
    alpha, s = tail_alphas(x, bias_corrected=True)
    alpha, s = alpha[:N - 1], s[:N - 1]
    n = np.arange(N, 1, -1, dtype=np.float64)
    valid = (n >= SMALL_N_K_MIN) & (s > 1e-12) & (alpha > 1.0)
    if candidates is not None:
        valid &= candidates
    if valid.any():
        rows = np.flatnonzero(valid)
        Ds = np.ones(N - 1)
        Ds[rows] = ks_distance(x, alpha, rows)
        i = int(np.argmin(np.where(valid, Ds, np.inf))) if candidates is not None else int(np.argmin(Ds))
        return alpha[i], x[i], Ds[i], (alpha[i] - 1.0) / math.sqrt(n[i])
    # WW's fallback: the whole sample as tail (documented difference: we report a sane sigma).
    s0 = float(np.sum(np.log(x / x[0])))
    if s0 <= 1e-12:
        return 1.0, x[0], 1.0, 0.0
    a0 = 1.0 + (N - 1.0) / s0
    D = ks_distance(x, np.full(N, a0), np.array([0]))[0]
    return a0, x[0], D, (a0 - 1.0) / math.sqrt(N)


def hill_fit(x: np.ndarray) -> tuple[float, float, float, float]:
    """(alpha, xmin, D, sigma) of the Hill/median estimator on ascending positive data (N >= 2)."""
    N = x.shape[0]
    k = N // 2
    tail = x[k:]
    n = tail.shape[0]
    s = float(np.sum(np.log(tail / tail[0])))
    alpha = 1.0 + n / s if s > 0 else math.inf
    alphas = np.full(N, alpha)
    D = ks_distance(x, alphas, np.array([k]))[0] if math.isfinite(alpha) else math.nan
    return alpha, tail[0], D, (alpha - 1.0) / math.sqrt(n)


def _validate(method, fix_fingers, xmax):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    if fix_fingers not in FIX_FINGERS:
        raise ValueError(f"unknown fix_fingers {fix_fingers!r}; expected one of {FIX_FINGERS}")
    if fix_fingers is not None and method != "ks":
        raise ValueError(f"fix_fingers={fix_fingers!r} needs method='ks', got {method!r}")
    if not (xmax is None or xmax == "force" or isinstance(xmax, (int, float, np.integer, np.floating))):
        raise ValueError(f"xmax must be None, 'force', an int (top eigenvalues to drop) or a float, got {xmax!r}")


def fit_power_law(evals, method: str = "ks", *, fix_fingers: str | None = None, xmax=None,
                  evals_thresh: float = 1e-5, xmin_max: float | None = None, max_fingers: int = 10,
                  finger_thresh: float = 1.0) -> PowerLawFit:
    """Fit p(lambda) ~ lambda^-alpha to the tail of ``evals`` (1-D numpy array or torch tensor).

    Args:
        evals: eigenvalues of W^T W, any order, shape (N,).
        method: "ks" (WeightWatcher's KS-scan MLE) or "hill" (median xmin).
        fix_fingers: None, "xmin_peak" (xmin restricted near the peak of the log-ESD) or
            "clip_xmax" (refit without the top 2..9 eigenvalues); see ``fit.fingers``.
        xmax: None or "force" (use everything), an int k (drop the top k eigenvalues, refused if
            k > N/2), or a float (truncate at the eigenvalue nearest to it), as WeightWatcher.
        evals_thresh: eigenvalues <= this are dropped before fitting (WW's EVALS_THRESH).
        xmin_max, max_fingers, finger_thresh: WW's fix_fingers parameters.

    Returns:
        PowerLawFit; on bad data (NaN/Inf, fewer than 2 eigenvalues above the threshold)
        NaN fields and a status naming the reason. Invalid *arguments* raise ValueError.
    """
    _validate(method, fix_fingers, xmax)
    ev = np.sort(as_numpy_evals(evals))
    num_evals = ev.size
    if num_evals and not np.all(np.isfinite(ev)):
        return _failed(num_evals, method, "non-finite eigenvalues")
    if isinstance(xmax, (int, np.integer)) and not isinstance(xmax, bool):
        k = abs(int(xmax))
        if k > num_evals / 2:
            return _failed(num_evals, method, f"xmax={k} clips more than half of the {num_evals} eigenvalues")
        ev = ev[:num_evals - k] if k else ev
        xmax = None
    x = ev[ev > evals_thresh]
    if x.size < 2 or x[-1] <= x[0] * (1 + 1e-12):
        reason = "too few eigenvalues" if x.size < 2 else "all eigenvalues equal"
        if x.size == 0 and num_evals:
            reason = f"no eigenvalues above {evals_thresh:g}"
        return _failed(num_evals, method, reason)
    if isinstance(xmax, (float, np.floating)):
        x = x[:int(np.argmin(np.abs(x - xmax))) + 1]   # WWFit.find_limit
        if x.size < 2:
            return _failed(num_evals, method, "too few eigenvalues below xmax")
    if method == "hill":
        alpha, xmin, D, sigma = hill_fit(x)
        return _result(alpha, xmin, x[-1], D, sigma, ev, method)
    if fix_fingers == "xmin_peak":
        from .fingers import xmin_peak_candidates
        cand = xmin_peak_candidates(x, xmin_max=xmin_max)
        if not cand.any():
            return _failed(num_evals, method, "no xmin candidate in the xmin_peak range")
        alpha, xmin, D, sigma = _ww_fit(x, cand)
        return _result(alpha, xmin, x[-1], D, sigma, ev, method)
    if fix_fingers == "clip_xmax":
        from .fingers import clip_xmax_fit
        (alpha, xmin, D, sigma, xmax_used), num_fingers, raw_alpha = clip_xmax_fit(
            x, _ww_fit, max_fingers=max_fingers, finger_thresh=finger_thresh)
        return _result(alpha, xmin, xmax_used, D, sigma, ev, method,
                       num_fingers=num_fingers, raw_alpha=float(raw_alpha))
    alpha, xmin, D, sigma = _ww_fit(x)
    return _result(alpha, xmin, x[-1], D, sigma, ev, method)
