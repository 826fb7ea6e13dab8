"""Turn convolution weights into matrices.

Two conventions:

* ``conv_slices`` (WeightWatcher-compatible): a Conv2d weight (out, in, kh, kw) becomes
  kh*kw matrices W[:, :, i, j] of shape (out, in), stacked as a batch (kh*kw, out, in),
  each scaled by ``scale`` (WeightWatcher's ``conv2d_norm`` uses sqrt(0.5) on the ESD
  scale of conv layers; AlphaDecay/TempBalance use the same factor). Their eigenvalues are
  pooled into one ESD. Conv1d (out, in, k) gives k slices.
* ``conv_flatten``: one matrix (out, in * kh * kw), the layout Muon and the monitor use
  (it is the matrix that multiplies unfolded input patches).
"""
from __future__ import annotations

import math

import torch

__all__ = ["conv_slices", "conv_flatten", "WW_CONV2D_SCALE"]

WW_CONV2D_SCALE = math.sqrt(0.5)


def conv_slices(weight: torch.Tensor, scale: float = WW_CONV2D_SCALE) -> torch.Tensor:
    """(out, in, *kernel) -> (prod(kernel), out, in), each slice multiplied by ``scale``."""
    if weight.dim() < 3:
        raise ValueError(f"conv_slices needs a conv weight (out, in, *kernel), got shape {tuple(weight.shape)}")
    out_ch, in_ch = weight.shape[:2]
    slices = weight.reshape(out_ch, in_ch, -1).permute(2, 0, 1)
    return slices * scale if scale != 1.0 else slices


def conv_flatten(weight: torch.Tensor) -> torch.Tensor:
    """(out, in, *kernel) -> (out, in * prod(kernel))."""
    if weight.dim() < 3:
        raise ValueError(f"conv_flatten needs a conv weight (out, in, *kernel), got shape {tuple(weight.shape)}")
    return weight.reshape(weight.shape[0], -1)
