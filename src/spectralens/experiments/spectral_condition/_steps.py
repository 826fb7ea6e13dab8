"""The two steps the paper compares, and the two ranks of its condition, in float64.

For least squares ``L(W) = 1/(2n) ||W A - Y||_F^2`` with gradient G (Davis & Drusvyatskiy,
arXiv 2512.04299, section 2):

* GD:     ``W+ = W - (n / ||A||_op^2) G``
* SpecGD: ``W+ = W - (n ||G||_* / ||A||_F^2) polar(G)``,  polar(G) = U V^T for G = U S V^T

and the spectral step is promised more decrease when ``nr(G) >= st(A)`` with
``nr(G) = ||G||_*^2 / ||G||_F^2``, ``st(A) = ||A||_F^2 / ||A||_op^2``.
"""
from __future__ import annotations

import torch

from spectralens.linalg import nuclear_rank, stable_rank

__all__ = ["nr", "st", "polar_and_nuclear", "op_norm_sq", "fro_norm_sq"]


def nr(G: torch.Tensor) -> float:
    """Nuclear rank ||G||_*^2 / ||G||_F^2 (float64)."""
    return float(nuclear_rank(G.detach()))


def st(A: torch.Tensor) -> float:
    """Stable rank ||A||_F^2 / ||A||_op^2 (float64)."""
    return float(stable_rank(A.detach()))


def polar_and_nuclear(G: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(U V^T, ||G||_*) from a float64 SVD of G (m, n); the polar factor is in G's dtype."""
    U, S, Vh = torch.linalg.svd(G.detach().to(torch.float64), full_matrices=False)
    return (U @ Vh).to(G.dtype), float(S.sum())


def op_norm_sq(A: torch.Tensor) -> float:
    """||A||_op^2 = largest eigenvalue of the smaller Gram, float64."""
    A = A.detach().to(torch.float64)
    C = A.T @ A if A.shape[0] >= A.shape[1] else A @ A.T
    return float(torch.linalg.eigvalsh(C)[-1])


def fro_norm_sq(A: torch.Tensor) -> float:
    return float(A.detach().to(torch.float64).square().sum())
