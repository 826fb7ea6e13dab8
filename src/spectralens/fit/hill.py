"""Hill / "median" power-law estimator used by TempBalance and AlphaDecay.

For ascending eigenvalues lambda_1 <= ... <= lambda_N, take xmin = lambda_{floor(N/2)}
(0-based index into the ascending list) and the n = N - floor(N/2) eigenvalues >= xmin:

    alpha = 1 + n / sum_{j >= floor(N/2)} ln(lambda_j / xmin)

(Hill 1975; Zhou et al. "TempBalance", NeurIPS 2023; He et al. "AlphaDecay", arXiv 2506.14562.)
Cheap (one sort), stable, no xmin scan. Works on a batch: (..., N) -> (...).
"""
from __future__ import annotations

import torch

__all__ = ["hill_alpha"]


def hill_alpha(evals: torch.Tensor, *, xmin_index: int | None = None) -> torch.Tensor:
    """Hill/median alpha of ascending eigenvalues (..., N); NaN where undefined.

    ``xmin_index`` overrides floor(N/2). Input need not be sorted (it is sorted here).
    """
    ev = torch.sort(evals.to(torch.float64), dim=-1).values
    n_total = ev.shape[-1]
    if n_total < 2:
        return torch.full(ev.shape[:-1], float("nan"), dtype=torch.float64, device=ev.device)
    k = n_total // 2 if xmin_index is None else int(xmin_index)
    xmin = ev[..., k:k + 1]
    tail = ev[..., k:]
    logs = torch.log(tail / xmin).sum(dim=-1)
    n = tail.shape[-1]
    alpha = 1.0 + n / logs
    bad = ~(xmin.squeeze(-1) > 0) | ~(logs > 0) | ~torch.isfinite(alpha)
    return torch.where(bad, torch.full_like(alpha, float("nan")), alpha)
