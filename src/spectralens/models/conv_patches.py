"""The im2col patch matrix of a Conv1d/Conv2d input, and its Gram A^T A in bounded memory.

A Conv1d/Conv2d is a linear map on input patches: at every output position,
y[:, pos] = Wmat @ a_pos with Wmat = W.reshape(out, C/groups * prod(kernel)) and a_pos the input
patch (C/groups, *kernel) flattened C-major, as ``torch.nn.functional.unfold`` orders it (the
column order of ``weight.reshape(out, -1)``, ``linalg.conv_flatten``). The patches are cut with
the module's kernel_size, stride, dilation and padding - an int/tuple, "same" (total
dilation * (k - 1), the odd one on the right/bottom, as torch) or "valid" - padded with the
module's ``padding_mode`` (zeros, reflect, replicate, circular). A Conv1d is treated as a
Conv2d of height 1 (kernel (1, k)).

Stacking every patch of every sample as a row gives the incoming activation of the layer,

    A  (B * L * groups, C/groups * prod(kernel)),   L = number of output positions,

and (Davis & Drusvyatskiy, "When do spectral gradient updates help in deep learning?",
arXiv 2512.04299, section 4)

    st(A) = ||A||_F^2 / ||A||_op^2 = trace(A^T A) / lambda_max(A^T A).

Rows are ordered (sample, group, position). For groups = 1 this is exactly the layer's input
as the weight gradient sees it; for groups > 1 the patches of all groups are stacked as rows
(each group's filters see only their own C/groups channels), so A^T A sums the per-group Grams.

* :class:`PatchGeometry` - how a module cuts its input (built once with ``PatchGeometry.of``);
* :func:`conv_patches` - A itself, materialised (for tests and small inputs);
* :func:`patch_gram` - (A^T A, rows of A) without ever holding A;
* :func:`patch_stable_rank` - st(A) from that Gram, lambda_max by power iteration.

Chunking of :func:`patch_gram`: A^T A is (C/groups k) x (C/groups k) and is summed over chunks
of rows. A chunk is a run of whole samples or, when one sample's patches exceed
``max_elements``, a band of output rows of one sample (output positions for Conv1d). Every
position of every sample is used: nothing is subsampled.

Memory: at most about 2 * ``max_elements`` patch entries at a time (the unfolded chunk and its
row-major copy; more only when a single output row alone exceeds the budget), plus the padded
copy of the chunk's input and the Gram. Cost: 2 * rows * (C/groups k)^2 FLOPs for the Gram,
about (C k) / out times the layer's own forward for groups = 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..linalg.norms import power_iteration

__all__ = ["PatchGeometry", "conv_patches", "patch_gram", "patch_stable_rank", "PATCH_CHUNK_ELEMENTS"]

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
    groups: int = 1               # patches of the groups are stacked as rows, C/groups channels each

    @classmethod
    def of(cls, module: nn.Module) -> PatchGeometry:
        """The geometry of an ``nn.Conv1d`` / ``nn.Conv2d`` (any groups)."""
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
        return cls(k, s, d, (le, r, t, b), _PAD_MODES[module.padding_mode], one_d, module.groups)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(Ho, Wo) for an unpadded input of spatial size (h, w)."""
        le, r, t, b = self.pad
        return tuple((n + p0 + p1 - di * (ki - 1) - 1) // si + 1 for n, p0, p1, ki, si, di in
                     ((h, t, b, self.kernel[0], self.stride[0], self.dilation[0]),
                      (w, le, r, self.kernel[1], self.stride[1], self.dilation[1])))

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        """x (n, C, h, w) padded as the module pads it (x itself when there is no padding)."""
        return F.pad(x, self.pad, mode=self.mode) if any(self.pad) else x

    def batched(self, x: torch.Tensor) -> torch.Tensor:
        """A conv input in 2-D batched form (B, C, h, w): Conv1d (B, C, L) or (C, L) -> (B, C, 1, L);
        Conv2d (C, H, W) -> (1, C, H, W)."""
        nd = 1 if self.one_d else 2
        if x.dim() == nd + 1:
            x = x.unsqueeze(0)
        if x.dim() != nd + 2:
            raise ValueError(f"expected a {nd}-D conv input (B, C, *spatial), got shape {tuple(x.shape)}")
        if x.shape[1] % self.groups:
            raise ValueError(f"input channels {x.shape[1]} are not divisible by groups={self.groups}")
        return x.unsqueeze(-2) if self.one_d else x


def _unfold(x: torch.Tensor, g: PatchGeometry) -> torch.Tensor:
    """(n * groups, C/groups k, positions): the patches of an already padded chunk x (n, C, h, w)."""
    cols = F.unfold(x, kernel_size=g.kernel, dilation=g.dilation, stride=g.stride)  # (n, C k, positions)
    n, ck, positions = cols.shape
    return cols.reshape(n * g.groups, ck // g.groups, positions)


def conv_patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The patch matrix A of a Conv1d/Conv2d input: (B, C, *spatial) -> (B * L * groups, C/groups * k).

    Rows are ordered (sample, group, position); the column order matches
    ``weight.reshape(out, -1)`` (``linalg.conv_flatten``), so ``conv(x)`` at every output
    position equals ``A @ conv_flatten(W).T`` for groups = 1. An unbatched input counts as B = 1.
    The whole matrix is materialised: use :func:`patch_gram` for A^T A in bounded memory.
    """
    g = PatchGeometry.of(module)
    cols = _unfold(g.padded(g.batched(x)), g)  # (B * groups, C/groups k, L)
    return cols.mT.reshape(-1, cols.shape[1])


def _add_patches(gram: torch.Tensor, x: torch.Tensor, g: PatchGeometry) -> None:
    """gram += P^T P for the patches P of an already padded chunk x (n, C, h, w)."""
    cols = _unfold(x.to(gram.dtype), g)  # (n * groups, C/groups k, positions)
    P = cols[0] if cols.shape[0] == 1 else cols.transpose(0, 1).reshape(cols.shape[1], -1)  # (C/groups k, rows)
    gram.addmm_(P, P.mT)


def patch_gram(geometry: PatchGeometry, x: torch.Tensor, max_elements: int = PATCH_CHUNK_ELEMENTS,
               dtype: torch.dtype | None = None) -> tuple[torch.Tensor, int]:
    """(A^T A, rows of A) for the patch matrix A of the conv input ``x``, A never held whole.

    ``x``: (B, C, L) or (C, L) for a Conv1d geometry, (B, C, H, W) or (C, H, W) for Conv2d.
    Returns the Gram (C/groups k, C/groups k) in ``dtype`` (default: float64 for a float64
    input, else float32) and the number of rows B * positions * groups. ``max_elements``
    bounds the patch entries per chunk (see the module docstring for chunking and memory).
    """
    if not (isinstance(max_elements, int) and max_elements >= 1):
        raise ValueError(f"Invalid max_elements: {max_elements!r} (must be a positive int)")
    x = geometry.batched(x)
    dtype = dtype or (torch.float64 if x.dtype == torch.float64 else torch.float32)
    n_samples, c, h, w = x.shape
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.stride, geometry.dilation
    ho, wo = geometry.output_size(h, w)
    ck = c * kh * kw  # patch entries per position, all groups together
    gram = torch.zeros(ck // geometry.groups, ck // geometry.groups, dtype=dtype, device=x.device)
    if ho <= 0 or wo <= 0 or n_samples == 0:
        return gram, 0

    per_sample = ho * wo * ck
    if per_sample <= max_elements:
        step = max_elements // per_sample
        for i in range(0, n_samples, step):
            _add_patches(gram, geometry.padded(x[i:i + step]), geometry)
    else:  # one sample at a time, in bands of output rows (output positions for Conv1d)
        axis, n_out, s, span = (2, ho, sh, dh * (kh - 1) + 1) if ho > 1 else (3, wo, sw, dw * (kw - 1) + 1)
        per_line = (wo if axis == 2 else 1) * ck
        band = max(1, max_elements // per_line)
        for i in range(n_samples):
            xp = geometry.padded(x[i:i + 1])
            for o0 in range(0, n_out, band):
                o1 = min(o0 + band, n_out)
                _add_patches(gram, xp.narrow(axis, o0 * s, (o1 - o0 - 1) * s + span), geometry)
    return gram, n_samples * ho * wo * geometry.groups


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
