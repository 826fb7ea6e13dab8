"""FARMS: alpha from the pooled ESD of fixed-aspect-ratio submatrices.

The shape of a weight matrix's ESD (and so its fitted alpha) depends on its aspect ratio
N / M (the Marchenko-Pastur bulk widens as Q -> 1), which biases comparisons of alpha across
layers of different shapes. FARMS (Hu et al., "Eigenspectrum analysis of neural networks
without aspect ratio bias", ICML 2025, arXiv 2506.06280) instead analyses many submatrices of
one fixed aspect ratio Q and pools their eigenvalues into one ESD before the usual tail fit.

Here (W transposed so N >= M; Q = ``aspect_ratio``):

* submatrix shape (r, c) with r = round(Q c): c = ``window`` if given, else the largest c with
  c <= M and Q c <= N;
* windows tile W: ceil(N / r) row positions and ceil(M / c) column positions, evenly spaced
  from the first to the last possible offset (adjacent windows overlap when r, c do not
  divide N, M), so every entry is covered;
* the c eigenvalues of every window's Gram matrix (float64) are concatenated, and
  ``fit_power_law(pooled, method)`` gives alpha (Hill by default, or the KS scan).

Limits: window placement is our reading of the paper's "sliding window" (not its code);
``num_evals`` of the result counts pooled eigenvalues. A matrix too small for one window
(N < aspect_ratio) is fitted whole.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .power_law import PowerLawFit, fit_power_law

__all__ = ["farms_alpha", "farms_eigenvalues"]


def _offsets(extent: int, size: int) -> list[int]:
    count = math.ceil(extent / size)
    if count <= 1:
        return [0]
    return sorted({int(round(v)) for v in np.linspace(0, extent - size, count)})


def farms_eigenvalues(W: torch.Tensor, *, aspect_ratio: float = 2.0, window: int | None = None) -> torch.Tensor:
    """Pooled eigenvalues (K * c,) of the fixed-aspect-ratio windows of W (N, M), float64."""
    if W.dim() != 2:
        raise ValueError(f"farms needs a 2-D matrix, got shape {tuple(W.shape)}")
    if not aspect_ratio >= 1:
        raise ValueError(f"aspect_ratio must be >= 1, got {aspect_ratio}")
    from spectralens.linalg import eigenvalues
    if W.shape[0] < W.shape[1]:
        W = W.T
    N, M = W.shape
    c = int(window) if window is not None else min(M, int(N // aspect_ratio))
    if window is not None and not 1 <= c <= M:
        raise ValueError(f"window must be in [1, {M}] for a {tuple(W.shape)} matrix, got {window}")
    r = int(round(aspect_ratio * c))
    if c < 1 or r > N:
        return eigenvalues(W, dtype=torch.float64)
    blocks = [W[i:i + r, j:j + c] for i in _offsets(N, r) for j in _offsets(M, c)]
    return eigenvalues(torch.stack(blocks), dtype=torch.float64).reshape(-1)


def farms_alpha(W: torch.Tensor, *, aspect_ratio: float = 2.0, window: int | None = None,
                method: str = "hill", evals_thresh: float = 1e-5) -> PowerLawFit:
    """FARMS alpha of W (N, M): fit_power_law on the pooled ESD of aspect-ratio-``aspect_ratio`` windows.

    Returns a PowerLawFit with ``method`` = "farms-hill" or "farms-ks". Non-finite W gives a
    status, not an exception.
    """
    if method not in ("hill", "ks"):
        raise ValueError(f"unknown method {method!r}; expected 'hill' or 'ks'")
    if W.dim() == 2 and W.numel() and not bool(torch.isfinite(W).all()):
        nan = math.nan
        return PowerLawFit(nan, nan, nan, nan, nan, 0, min(W.shape), f"farms-{method}", "non-finite weights", "")
    pooled = farms_eigenvalues(W, aspect_ratio=aspect_ratio, window=window)
    fit = fit_power_law(pooled, method=method, evals_thresh=evals_thresh)
    return dataclasses.replace(fit, method=f"farms-{method}")
