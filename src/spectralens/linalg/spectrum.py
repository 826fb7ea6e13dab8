"""Eigenvalues of W^T W (the empirical spectral density, ESD) for one matrix or a batch.

For W of shape (..., N, M) the ESD is the min(N, M) eigenvalues of the smaller Gram matrix,
i.e. the squared singular values of W:

    lambda_i(W) = sigma_i(W)^2,  i = 1..min(N, M)   (ascending order here).

Two algorithms, chosen by shape and dtype (``method="auto"``):

* ``"gram"``: form the smaller Gram matrix C = W^T W (M x M, after transposing so N >= M)
  by row chunks, then a symmetric eigensolver. Cost ~ 2 N M^2 + O(M^3) and the Gram is
  accumulated chunk by chunk, so peak extra memory is O(M^2 + chunk * M). In float64 the
  absolute error of each eigenvalue is ~1e-16 * lambda_max, which is what heavy-tail fits
  (which look at the largest eigenvalues) need.
* ``"svd"``: ``torch.linalg.svdvals`` then squares. Slower (~3x on CPU) but keeps the
  relative accuracy of small singular values; used in float32 for near-square matrices,
  where forming the Gram in single precision would lose the bottom of the spectrum.
"""
from __future__ import annotations

import torch

__all__ = ["eigenvalues", "gram", "as_matrix_dtype"]

_GRAM_CHUNK_ELEMENTS = 1 << 24  # rows per chunk chosen so a chunk holds ~16M elements


def as_matrix_dtype(W: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """The compute dtype: ``dtype`` if given, else float64 (accuracy first)."""
    if dtype is not None:
        return dtype
    return torch.float64


def gram(W: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Smaller Gram matrix of W (..., N, M): W^T W if N >= M else W W^T, in ``dtype``.

    Rows are converted and multiplied in chunks, so a float16/bfloat16 50k x 768 embedding is
    never copied whole to float64. Shapes: (..., N, M) -> (..., k, k), k = min(N, M).
    """
    if W.shape[-2] < W.shape[-1]:
        W = W.transpose(-2, -1)
    n, m = W.shape[-2], W.shape[-1]
    batch = int(torch.tensor(W.shape[:-2]).prod().item()) if W.dim() > 2 else 1
    chunk = max(1, _GRAM_CHUNK_ELEMENTS // max(1, m * batch))
    if chunk >= n:
        Wd = W.to(dtype)
        return Wd.transpose(-2, -1) @ Wd
    C = torch.zeros(*W.shape[:-2], m, m, dtype=dtype, device=W.device)
    for start in range(0, n, chunk):
        block = W[..., start:start + chunk, :].to(dtype)
        C += block.transpose(-2, -1) @ block
    return C


def eigenvalues(
    W: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
    method: str = "auto",
) -> torch.Tensor:
    """Ascending eigenvalues of W^T W for W of shape (N, M) or a batch (B, N, M).

    Args:
        W: real matrix or batch of same-shape matrices. Integer tensors are refused.
        dtype: compute dtype (default float64).
        method: ``"auto"``, ``"gram"`` or ``"svd"`` (see module docstring).

    Returns:
        Tensor of shape (min(N, M),) or (B, min(N, M)), ascending, clamped at 0,
        in ``dtype`` on W's device.
    """
    if W.dim() < 2:
        raise ValueError(f"eigenvalues needs a matrix or a batch of matrices, got shape {tuple(W.shape)}")
    if not (W.is_floating_point() or W.is_complex()):
        raise TypeError(f"eigenvalues needs a floating-point tensor, got dtype {W.dtype}")
    if method not in ("auto", "gram", "svd"):
        raise ValueError(f"unknown method {method!r}; expected 'auto', 'gram' or 'svd'")
    dtype = as_matrix_dtype(W, dtype)
    n, m = max(W.shape[-2:]), min(W.shape[-2:])
    if m == 0:
        return torch.zeros(*W.shape[:-2], 0, dtype=dtype, device=W.device)
    if method == "auto":
        near_square = n < 4 * m
        method = "svd" if (dtype in (torch.float32, torch.float16, torch.bfloat16) and near_square) else "gram"
    if method == "gram":
        evals = torch.linalg.eigvalsh(gram(W, dtype))
    else:
        evals = torch.linalg.svdvals(W.to(dtype)).flip(-1) ** 2
    return evals.clamp_min(0)
