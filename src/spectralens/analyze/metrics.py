"""Per-layer metrics from an ESD, with WeightWatcher's column names and formulas.

For the ascending eigenvalues lambda_1..lambda_k of W^T W (W of shape N x M, N >= M) and a
power-law fit (alpha, xmin, ...):

* ``norm`` = sum lambda = ||W||_F^2;  ``log_norm`` = log10 norm
* ``lambda_max`` = ``spectral_norm`` = max lambda = ||W||_op^2;  ``log_spectral_norm`` = log10 of it
* ``alpha_weighted`` = alpha * log10 lambda_max                  (Martin & Mahoney 2021, JMLR)
* ``log_alpha_norm`` = log10 sum lambda^alpha                    (the "Schatten alpha-norm")
* ``stable_rank`` = sum lambda / lambda_max
* ``entropy`` = -sum p log p / log(rank), p = lambda / sum lambda (WW's ``matrix_entropy``)
* ``mp_softrank`` = MP bulk edge / lambda_max, ``num_spikes`` = eigenvalues above the bulk
  (after the MP fit, see ``spectralens.fit.mp``).
"""
from __future__ import annotations

import math

import numpy as np
from ..fit import PowerLawFit

__all__ = ["COLUMNS", "SUMMARY_METRICS", "empty_row", "norm_metrics", "fit_columns", "gram_rank"]

# Output columns, in order. WeightWatcher names wherever the quantity is the same.
COLUMNS = [
    "name", "layer_type", "shape", "N", "M", "rf", "num_evals", "status",
    "alpha", "alpha_weighted", "xmin", "xmax", "D", "sigma", "num_pl_spikes", "warning",
    "lambda_max", "norm", "log_norm", "spectral_norm", "log_spectral_norm", "log_alpha_norm",
    "stable_rank", "entropy", "matrix_rank", "mp_softrank", "num_spikes", "dtype",
]
SUMMARY_METRICS = ["log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
                   "stable_rank", "mp_softrank"]

_FLOAT_COLS = ["alpha", "alpha_weighted", "xmin", "xmax", "D", "sigma", "lambda_max", "norm", "log_norm",
               "spectral_norm", "log_spectral_norm", "log_alpha_norm", "stable_rank", "entropy", "mp_softrank"]


def empty_row(name: str, layer_type: str, shape, N: int, M: int, rf: int, dtype, status: str) -> dict:
    """A row with identity columns set and every metric missing (NaN / -1 counts)."""
    row = {c: math.nan for c in _FLOAT_COLS}
    row.update(name=name, layer_type=layer_type, shape="x".join(str(int(s)) for s in shape), N=int(N), M=int(M),
               rf=int(rf), num_evals=int(M) * int(rf), status=status, num_pl_spikes=-1, num_spikes=-1,
               matrix_rank=-1, warning="", dtype=str(dtype).replace("torch.", ""))
    return row


def norm_metrics(evals: np.ndarray, N: int, eps: float | None = None) -> dict:
    """Norm-type metrics of an ascending ESD (no fit needed); ``eps``: see ``gram_rank``."""
    lam_max = float(evals[-1]) if evals.size else math.nan
    norm = float(evals.sum())
    rank = gram_rank(evals, N, eps)
    entropy = math.nan
    if lam_max > 0:
        p = evals / norm + 1e-10  # WeightWatcher's matrix_entropy, with its 1e-10 guards
        entropy = float(-(p * np.log(p)).sum() / math.log(rank + 1e-10)) if rank > 1 else 0.0
    return {
        "lambda_max": lam_max, "spectral_norm": lam_max, "norm": norm,
        "log_norm": _log10(norm), "log_spectral_norm": _log10(lam_max),
        "stable_rank": norm / lam_max if lam_max > 0 else math.nan,
        "entropy": entropy, "matrix_rank": rank, "num_evals": int(evals.size),
    }


def gram_rank(evals: np.ndarray, N: int, eps: float | None = None) -> int:
    """Numerical rank from Gram eigenvalues: #{lambda > lambda_max * N * eps}.

    ``eps`` is the unit roundoff of the precision the eigenvalues were computed in (default:
    that of ``evals.dtype``); eigenvalues computed in float32 and stored as float64 pass
    ``np.finfo(np.float32).eps``, so the rank counts what float32 can resolve.

    The threshold is on lambda, not on sqrt(lambda) as numpy's matrix_rank does on singular
    values: eigenvalues of a Gram matrix carry absolute errors ~ eps * lambda_max, so the
    square roots of the zero eigenvalues sit near sqrt(eps) * s_max, far above numpy's
    tolerance. For matrices of full numerical rank both rules agree (so does the entropy).
    """
    if evals.size == 0 or not evals[-1] > 0:
        return 0
    if eps is None:
        eps = np.finfo(evals.dtype if evals.dtype in (np.float32, np.float64) else np.float64).eps
    return int((evals > evals[-1] * int(N) * eps).sum())


def fit_columns(fit: PowerLawFit, evals: np.ndarray, lam_max: float) -> dict:
    """Power-law columns plus the alpha-derived norms (alpha_weighted, log_alpha_norm)."""
    alpha = float(fit.alpha)
    out = {"alpha": alpha, "xmin": float(fit.xmin), "xmax": float(fit.xmax), "D": float(fit.D),
           "sigma": float(fit.sigma), "num_pl_spikes": int(fit.num_pl_spikes), "warning": fit.warning or ""}
    if math.isfinite(alpha) and lam_max > 0:
        out["alpha_weighted"] = alpha * math.log10(lam_max)
        pos = evals[evals > 0]
        # log10 sum lambda^alpha, computed as a log-sum-exp so large alphas do not overflow
        a = alpha * np.log(pos)
        top = a.max()
        out["log_alpha_norm"] = float((top + np.log(np.exp(a - top).sum())) / math.log(10.0))
    return out


def _log10(x: float) -> float:
    return math.log10(x) if x > 0 and math.isfinite(x) else math.nan
