"""Spectral norm ||W||_op = s_1(W), exactly or by power iteration.

Power iteration on W^T W converges at rate (s_2/s_1)^2 per step; from a fixed random start
(seeded, so results are reproducible) it costs 2 N M per iteration instead of the
O(N M min(N, M)) of an SVD. ``method="auto"`` uses it when min(N, M) > 2048.
"""
from __future__ import annotations

import torch

from .spectrum import eigenvalues

__all__ = ["spectral_norm", "power_iteration"]

_POWER_THRESHOLD = 2048


def power_iteration(
    W: torch.Tensor, *, iters: int = 100, tol: float = 1e-7, seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Largest singular value of W (N, M) or (B, N, M) by power iteration on W^T W.

    Stops when the relative change of the estimate is below ``tol`` (for every batch entry).
    Returns a tensor of shape () or (B,).
    """
    Wd = W.to(dtype)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(*W.shape[:-2], W.shape[-1], 1, generator=gen, dtype=dtype).to(W.device)
    v = v / v.norm(dim=-2, keepdim=True)
    sigma = torch.zeros(W.shape[:-2], dtype=dtype, device=W.device)
    for _ in range(iters):
        u = Wd @ v
        new_sigma = u.norm(dim=(-2, -1))
        v = Wd.transpose(-2, -1) @ u
        v = v / v.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        done = ((new_sigma - sigma).abs() <= tol * new_sigma.abs()).all()
        sigma = new_sigma
        if done:
            break
    return sigma


def spectral_norm(W: torch.Tensor, *, method: str = "auto", dtype: torch.dtype | None = None, **power_kwargs) -> torch.Tensor:
    """||W||_op for (N, M) or (B, N, M); ``method`` in {"auto", "exact", "power"}."""
    if method not in ("auto", "exact", "power"):
        raise ValueError(f"unknown method {method!r}; expected 'auto', 'exact' or 'power'")
    if method == "auto":
        method = "power" if min(W.shape[-2:]) > _POWER_THRESHOLD else "exact"
    if method == "power":
        return power_iteration(W, dtype=dtype or torch.float32, **power_kwargs)
    return eigenvalues(W, dtype=dtype)[..., -1].sqrt()
