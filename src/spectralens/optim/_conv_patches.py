"""st(A) of a convolution's im2col patch matrix, accumulated without ever holding the matrix.

A Conv1d/Conv2d with groups = 1 is a linear map on input patches: at every output position,
y[:, pos] = Wmat @ a_pos with Wmat = W.reshape(out, C * prod(kernel)) and a_pos the input patch
(C, *kernel) flattened C-major, as ``torch.nn.functional.unfold`` orders it (stride, dilation
and padding - zeros, "same"/"valid", or the module's ``padding_mode`` - as the module has them).
Stacking every patch of every sample as a row gives the incoming activation of the layer,
A (B * L, C * prod(kernel)), L = number of output positions, and (Davis & Drusvyatskiy,
"When do spectral gradient updates help in deep learning?", arXiv 2512.04299, section 4)

    st(A) = ||A||_F^2 / ||A||_op^2 = trace(A^T A) / lambda_max(A^T A).

A^T A is (C k) x (C k) and is summed over chunks of rows: a chunk is a run of whole samples
or, when one sample's patches exceed ``max_elements``, a band of output rows of one sample
(output positions for Conv1d). Every position of every sample is used: nothing is
subsampled. lambda_max comes from power iteration on the Gram.

Memory: at most about 2 * ``max_elements`` patch entries at a time (the unfolded chunk and its
row-major copy; more only when a single output row alone exceeds the budget), plus the padded
copy of the chunk's input and the Gram. Cost: 2 * rows * (C k)^2 FLOPs for the Gram, about
(C k) / out times the layer's own forward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..linalg.norms import power_iteration

__all__ = ["PatchGeometry", "patch_gram", "patch_stable_rank", "PATCH_CHUNK_ELEMENTS"]

PATCH_CHUNK_ELEMENTS = 1 << 24  # 16M entries (64 MB in float32) of patches per chunk

_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _pair(v, one_d: bool) -> tuple[int, int]:
    v = tuple(v) if isinstance(v, (tuple, list)) else (v,)
    return (1, v[0]) if one_d else (v[0], v[-1])


@dataclass(frozen=True)
class PatchGeometry:
    """How a Conv1d/Conv2d cuts its input into patches, in 2-D form (Conv1d: height 1)."""

    kernel: tuple[int, int]       # (kh, kw); Conv1d (1, k)
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int, int, int]  # F.pad order: (left, right, top, bottom)
    mode: str                     # F.pad mode: "constant", "reflect", "replicate", "circular"
    one_d: bool

    @classmethod
    def of(cls, module: nn.Module) -> PatchGeometry:
        """The geometry of an ``nn.Conv1d`` / ``nn.Conv2d`` (any groups; patches are per input)."""
        if not isinstance(module, (nn.Conv1d, nn.Conv2d)):
            raise TypeError(f"PatchGeometry needs an nn.Conv1d or nn.Conv2d, got {type(module).__name__}")
        one_d = isinstance(module, nn.Conv1d)
        k, s, d = (_pair(v, one_d) for v in (module.kernel_size, module.stride, module.dilation))
        if module.padding == "valid":
            pads = [(0, 0), (0, 0)]
        elif module.padding == "same":  # total d (k - 1), the odd one on the right/bottom (as torch)
            pads = [(di * (ki - 1) // 2, di * (ki - 1) - di * (ki - 1) // 2) for ki, di in zip(k, d)]
        else:
            p = tuple(module.padding)  # one int per spatial dim
            pads = [(0, 0), (p[0], p[0])] if one_d else [(p[0], p[0]), (p[1], p[1])]
        (t, b), (le, r) = pads
        return cls(k, s, d, (le, r, t, b), _PAD_MODES[module.padding_mode], one_d)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(Ho, Wo) for an unpadded input of spatial size (h, w)."""
        le, r, t, b = self.pad
        return tuple((n + p0 + p1 - di * (ki - 1) - 1) // si + 1 for n, p0, p1, ki, si, di in
                     ((h, t, b, self.kernel[0], self.stride[0], self.dilation[0]),
                      (w, le, r, self.kernel[1], self.stride[1], self.dilation[1])))


def _add_patches(gram: torch.Tensor, x: torch.Tensor, g: PatchGeometry) -> None:
    """gram += P^T P for the patches P of an already padded chunk x (n, C, h, w)."""
    cols = F.unfold(x.to(gram.dtype), kernel_size=g.kernel, dilation=g.dilation, stride=g.stride)
    ck = cols.shape[1]  # cols: (n, C k, positions)
    P = cols[0] if cols.shape[0] == 1 else cols.transpose(0, 1).reshape(ck, -1)  # (C k, rows)
    gram.addmm_(P, P.mT)


def patch_gram(geometry: PatchGeometry, x: torch.Tensor, max_elements: int = PATCH_CHUNK_ELEMENTS,
               dtype: torch.dtype | None = None) -> tuple[torch.Tensor, int]:
    """(A^T A, rows of A) for the patch matrix A of the conv input ``x``.

    ``x``: (B, C, L) or (C, L) for a Conv1d geometry, (B, C, H, W) or (C, H, W) for Conv2d.
    Returns the Gram (C k, C k) in ``dtype`` (default: float64 for a float64 input, else
    float32) and the number of rows B * positions. See the module docstring for chunking.
    """
    if not (isinstance(max_elements, int) and max_elements >= 1):
        raise ValueError(f"Invalid max_elements: {max_elements!r} (must be a positive int)")
    nd = 1 if geometry.one_d else 2
    if x.dim() == nd + 1:
        x = x.unsqueeze(0)
    if x.dim() != nd + 2:
        raise ValueError(f"expected a {nd}-D conv input (B, C, *spatial), got shape {tuple(x.shape)}")
    if geometry.one_d:
        x = x.unsqueeze(-2)  # (B, C, 1, L)
    dtype = dtype or (torch.float64 if x.dtype == torch.float64 else torch.float32)
    n_samples, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
    ho, wo = geometry.output_size(h, w)
    ck = c * kh * kw
    gram = torch.zeros(ck, ck, dtype=dtype, device=x.device)
    if ho <= 0 or wo <= 0 or n_samples == 0:
        return gram, 0

    def padded(chunk: torch.Tensor) -> torch.Tensor:
        return F.pad(chunk, geometry.pad, mode=geometry.mode) if any(geometry.pad) else chunk

    per_sample = ho * wo * ck
    if per_sample <= max_elements:
        step = max_elements // per_sample
        for i in range(0, n_samples, step):
            _add_patches(gram, padded(x[i:i + step]), geometry)
    else:  # one sample at a time, in bands of output rows (output positions for Conv1d)
        axis, n_out, s, span = (2, ho, sh, dh * (kh - 1) + 1) if ho > 1 else (3, wo, sw, dw * (kw - 1) + 1)
        per_line = (wo if axis == 2 else 1) * ck
        band = max(1, max_elements // per_line)
        for i in range(n_samples):
            xp = padded(x[i:i + 1])
            for o0 in range(0, n_out, band):
                o1 = min(o0 + band, n_out)
                _add_patches(gram, xp.narrow(axis, o0 * s, (o1 - o0 - 1) * s + span), geometry)
    return gram, n_samples * ho * wo


def patch_stable_rank(geometry: PatchGeometry, x: torch.Tensor, max_elements: int = PATCH_CHUNK_ELEMENTS,
                      iters: int = 100, tol: float = 1e-6) -> float:
    """st(A) = trace(A^T A) / lambda_max(A^T A) of the patch matrix of ``x``; NaN if A is 0 or not finite.

    lambda_max = ||A||_op^2 by power iteration on the Gram (``linalg.power_iteration``).
    """
    gram, _ = patch_gram(geometry, x, max_elements)
    fro2 = float(gram.diagonal().sum(dtype=torch.float64))
    if not (math.isfinite(fro2) and fro2 > 0):
        return float("nan")
    lam = float(power_iteration(gram, iters=iters, tol=tol, dtype=gram.dtype))
    return fro2 / lam if math.isfinite(lam) and lam > 0 else float("nan")
