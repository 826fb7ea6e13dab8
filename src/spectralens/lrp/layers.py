"""Layer helpers for LRP: the explicit residual :class:`Sum`, layer-type groups, and the affine
forward ``z = f(x; W, b)`` of Linear/Conv modules with substituted parameters.

Rules never modify a module's parameters: they call :func:`affine` with modified copies.
"""
from __future__ import annotations

import torch
from torch import nn


class Sum(nn.Module):
    """Residual addition ``forward(a, b, ...) -> a + b + ...`` that LRP can see.

    Inside :func:`~spectralens.lrp.lrp_context` the relevance ``R`` of the sum is split in
    proportion to each summand (the :class:`~spectralens.lrp.rules.Norm` rule):
    ``R_i = x_i / s(sum_j x_j) * R`` with ``s(z) = z + eps * sign(z)`` (sign(0) := +1), so
    ``sum_i R_i = R`` up to the stabiliser. Outside the context it is a plain addition.
    Summands must have equal shapes (no broadcasting: the split would be ambiguous).
    """

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) < 2:
            raise ValueError(f"Sum needs at least two tensors, got {len(inputs)}")
        shape = inputs[0].shape
        if any(x.shape != shape for x in inputs[1:]):
            raise ValueError(f"Sum summands must have equal shapes, got {[tuple(x.shape) for x in inputs]}")
        out = inputs[0]
        for x in inputs[1:]:
            out = out + x
        return out


# Layers with weights that take a relevance rule (Epsilon, Gamma, ZPlus, ...).
AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d)
CONV = (nn.Conv1d, nn.Conv2d)
# Average pooling: the Norm rule (epsilon rule on the implicit weights).
AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
# Element-wise activations: the Pass rule (relevance unchanged).
ACTIVATION = (nn.ReLU,)
# Relevance flows by the plain gradient: reshapes, identities, winner-takes-all max pooling.
GRADIENT = (nn.Flatten, nn.Unflatten, nn.Dropout, nn.Identity, nn.MaxPool1d, nn.MaxPool2d)
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

SUPPORTED_TEXT = (
    "Supported: Linear, Conv1d, Conv2d (Epsilon, Gamma, ZPlus, AlphaBeta, AdaptiveBeta; Flat, WSquare, ZBox "
    "as input-layer rules), ReLU (Pass), AvgPool1d/2d, AdaptiveAvgPool1d/2d and spectralens.lrp.Sum (Norm), "
    "MaxPool1d/2d, Flatten, Unflatten, Dropout, Identity (gradient), BatchNorm1d/2d after a Linear/Conv "
    "(merged by merge_batchnorm)."
)


def affine(module: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``z = f(x; W, b)``: the module's own affine map with ``weight``/``bias`` substituted.

    Linear: ``x @ W.T + b`` (x: (N, ..., in), W: (out, in)); Conv1d/2d: the module's convolution
    (stride, padding, padding mode, dilation, groups) with kernel W: (out, in/groups, *k).
    """
    if isinstance(module, nn.Linear):
        return nn.functional.linear(x, weight, bias)
    if isinstance(module, CONV):
        return module._conv_forward(x, weight, bias)
    raise TypeError(f"affine() needs a Linear/Conv1d/Conv2d module, got {type(module).__name__}")


def params(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached ``(W, b)`` of an affine module; ``b`` is zeros when the module has no bias."""
    w = module.weight.detach()
    b = module.bias.detach() if module.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    return w, b
