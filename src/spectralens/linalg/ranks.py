"""Rank-like summaries of a matrix from its spectrum.

For M with singular values s_1 >= ... >= s_k:

* stable rank      st(M) = ||M||_F^2 / ||M||_op^2 = sum s_i^2 / s_1^2         (1 <= st <= rank)
* nuclear rank     nr(M) = ||M||_*^2 / ||M||_F^2 = (sum s_i)^2 / sum s_i^2     (1 <= nr <= rank)
  (Davis & Drusvyatskiy, "When do spectral gradient updates help in deep learning?",
  arXiv 2512.04299: a spectral step beats a Euclidean one when nr(G) >= st(A).)
* spectral entropy H = -sum p_i log p_i / log(rank), p_i = s_i^2 / sum s_j^2
  (WeightWatcher's normalised "entropy"; in [0, 1]).
* effective rank   erank = exp(-sum q_i log q_i), q_i = s_i / sum s_j (Roy & Vetterli 2007).

All functions accept (N, M) or batched (B, N, M) tensors and return a float tensor of shape
() or (B,). The ``*_from_eigenvalues`` forms take the ascending eigenvalues of M^T M, so a
caller that already has the ESD (or an accumulated Gram, as the training monitor does)
does not recompute it.
"""
from __future__ import annotations

import torch

from .spectrum import eigenvalues

__all__ = [
    "stable_rank", "nuclear_rank", "spectral_entropy", "effective_rank",
    "stable_rank_from_eigenvalues", "nuclear_rank_from_eigenvalues",
    "spectral_entropy_from_eigenvalues", "effective_rank_from_eigenvalues",
    "stable_rank_from_gram", "numerical_rank_from_eigenvalues",
]


def stable_rank_from_eigenvalues(evals: torch.Tensor) -> torch.Tensor:
    """st = sum(lambda) / max(lambda) over the last dim; NaN for an all-zero spectrum."""
    top = evals.amax(dim=-1)
    return evals.sum(dim=-1) / torch.where(top > 0, top, torch.nan)


def nuclear_rank_from_eigenvalues(evals: torch.Tensor) -> torch.Tensor:
    """nr = (sum sqrt(lambda))^2 / sum(lambda); NaN for an all-zero spectrum."""
    total = evals.sum(dim=-1)
    return evals.clamp_min(0).sqrt().sum(dim=-1) ** 2 / torch.where(total > 0, total, torch.nan)


def numerical_rank_from_eigenvalues(evals: torch.Tensor, largest_dim: int) -> torch.Tensor:
    """Number of singular values above max(s) * N * eps (numpy's matrix_rank rule)."""
    s = evals.clamp_min(0).sqrt()
    tol = s.amax(dim=-1, keepdim=True) * largest_dim * torch.finfo(s.dtype).eps
    return (s > tol).sum(dim=-1)


def spectral_entropy_from_eigenvalues(evals: torch.Tensor, largest_dim: int | None = None) -> torch.Tensor:
    """Normalised spectral entropy -sum p log p / log(rank), p = lambda / sum lambda.

    Follows WeightWatcher's ``matrix_entropy``: p gets +1e-10 and the rank (numerical rank,
    numpy rule with N = ``largest_dim``; the number of eigenvalues if not given) gets +1e-10.
    """
    eps = 1e-10
    n = largest_dim if largest_dim is not None else evals.shape[-1]
    rank = numerical_rank_from_eigenvalues(evals, n).to(evals.dtype) + eps
    p = evals / evals.sum(dim=-1, keepdim=True) + eps
    return -(p * p.log()).sum(dim=-1) / rank.log()


def effective_rank_from_eigenvalues(evals: torch.Tensor) -> torch.Tensor:
    """exp of the Shannon entropy of the normalised singular values (Roy & Vetterli 2007)."""
    s = evals.clamp_min(0).sqrt()
    q = s / s.sum(dim=-1, keepdim=True)
    ent = -(q * torch.where(q > 0, q.log(), torch.zeros_like(q))).sum(dim=-1)
    return ent.exp()


def stable_rank_from_gram(C: torch.Tensor) -> torch.Tensor:
    """st(A) from an accumulated Gram C = A^T A (d x d): trace(C) / lambda_max(C)."""
    top = torch.linalg.eigvalsh(C)[..., -1]
    tr = C.diagonal(dim1=-2, dim2=-1).sum(-1)
    return tr / torch.where(top > 0, top, torch.nan)


def stable_rank(M: torch.Tensor, *, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """st(M) = ||M||_F^2 / ||M||_op^2 for (N, M) or (B, N, M)."""
    return stable_rank_from_eigenvalues(eigenvalues(M, dtype=dtype))


def nuclear_rank(M: torch.Tensor, *, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """nr(M) = ||M||_*^2 / ||M||_F^2 for (N, M) or (B, N, M), from the smaller Gram's eigenvalues."""
    return nuclear_rank_from_eigenvalues(eigenvalues(M, dtype=dtype))


def spectral_entropy(M: torch.Tensor, *, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """Normalised spectral entropy of M (WeightWatcher's ``entropy``)."""
    return spectral_entropy_from_eigenvalues(eigenvalues(M, dtype=dtype), max(M.shape[-2:]))


def effective_rank(M: torch.Tensor, *, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """Roy & Vetterli effective rank of M."""
    return effective_rank_from_eigenvalues(eigenvalues(M, dtype=dtype))
