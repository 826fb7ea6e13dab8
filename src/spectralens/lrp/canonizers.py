r"""Reversible model canonisation for LRP: merge BatchNorm into the preceding Linear/Conv.

In eval mode ``BN(z) = gamma (z - mu) / sqrt(var + eps) + beta``. Following a Linear/Conv
``z = W x + b`` it merges into ``W' = W * scale``, ``b' = (b - mu) * scale + beta`` with
``scale = gamma / sqrt(var + eps)`` per output channel (Zennit's formula), and the BatchNorm
becomes the exact identity (its ``forward`` is replaced for the duration; Zennit instead resets
its statistics, which leaves a factor ``1/sqrt(1 + eps)``). On exit the original parameter
tensors are put back (bitwise), a bias added to a bias-free layer is removed, and the BatchNorm's
own forward returns. The running statistics are used whatever the training flag.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager

import torch
from torch import nn

from .layers import AFFINE, BATCHNORM

_MERGED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()


def is_merged(module: nn.Module) -> bool:
    """True while ``module`` is a BatchNorm merged by :func:`merge_batchnorm` (now the identity)."""
    return module in _MERGED


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def _fits(affine: nn.Module, bn: nn.Module) -> bool:
    if _out_channels(affine) != bn.num_features or bn.running_mean is None or bn.running_var is None:
        return False
    # Linear output has features last: BatchNorm1d on (N, C) only; convolutions feed BN of their dimension.
    expected = {nn.Linear: nn.BatchNorm1d, nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d}
    return expected.get(type(affine)) is type(bn)


def _sequential_pairs(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(affine, bn) pairs that are neighbours inside an ``nn.Sequential`` (adjacent in forward)."""
    pairs = []
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            children = list(seq.children())
            pairs += [(a, b) for a, b in zip(children, children[1:])
                      if isinstance(a, AFFINE) and isinstance(b, BATCHNORM)]
    return pairs


def _traced_pairs(model: nn.Module, example_input: torch.Tensor) -> list[tuple[nn.Module, nn.Module]]:
    """(affine, bn) pairs where the BN's input tensor *is* the affine's output, seen in one forward
    (eval mode, no grad). Pairs are dropped if either module runs twice or the affine output also
    feeds another module (merging would change that other use)."""
    outputs, consumers, calls, feeds = {}, {}, {}, []
    keep = []  # keep traced tensors alive so that id() stays unique

    def pre(module, inputs):
        for x in inputs:
            if isinstance(x, torch.Tensor):
                consumers[id(x)] = consumers.get(id(x), 0) + 1
                keep.append(x)
        if isinstance(module, BATCHNORM) and inputs and isinstance(inputs[0], torch.Tensor):
            feeds.append((id(inputs[0]), module))

    def post(module, inputs, output):
        calls[module] = calls.get(module, 0) + 1
        if isinstance(module, AFFINE) and isinstance(output, torch.Tensor):
            outputs[id(output)] = module
            keep.append(output)

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [h for m in leaves for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
        for m, flag in training.items():
            m.training = flag
    pairs = []
    for tensor_id, bn in feeds:
        affine = outputs.get(tensor_id)
        if affine is not None and calls.get(affine) == 1 and calls.get(bn) == 1 and consumers.get(tensor_id) == 1:
            pairs.append((affine, bn))
    return pairs


@contextmanager
def merge_batchnorm(model: nn.Module, example_input: torch.Tensor | None = None):
    """Merge every BatchNorm1d/2d into the Linear/Conv feeding it; restore exactly on exit.

    Adjacency: with ``example_input`` (a batch, e.g. one sample ``x[:1]``) one traced forward
    finds each BatchNorm whose input tensor is a Linear/Conv output used nowhere else (robust to
    custom ``forward`` methods); without it, only neighbours inside an ``nn.Sequential``.
    BatchNorms that cannot be merged are left alone (``lrp_context`` then refuses them by name).
    Shapes/types: Linear -> BatchNorm1d on (N, C); Conv1d -> BatchNorm1d; Conv2d -> BatchNorm2d.
    Yields the list of merged ``(affine, batchnorm)`` pairs.
    """
    pairs = _sequential_pairs(model) if example_input is None else _traced_pairs(model, example_input)
    pairs = [(a, b) for a, b in pairs if _fits(a, b) and not is_merged(b)]
    saved = []
    try:
        for affine, bn in pairs:
            w = affine.weight
            had_bias = affine.bias is not None
            saved.append((affine, bn, w.data, affine.bias.data if had_bias else None))
            with torch.no_grad():
                scale = bn.running_var.to(w.dtype).add(bn.eps).rsqrt()
                if bn.weight is not None:
                    scale = bn.weight.detach().to(w.dtype) * scale
                shift = bn.bias.detach().to(w.dtype) if bn.bias is not None else torch.zeros_like(scale)
                b = affine.bias.detach() if had_bias else torch.zeros_like(scale)
                new_w = w.detach() * scale.reshape(-1, *([1] * (w.ndim - 1)))
                new_b = (b - bn.running_mean.to(w.dtype)) * scale + shift
            w.data = new_w
            if had_bias:
                affine.bias.data = new_b
            else:
                affine.bias = nn.Parameter(new_b, requires_grad=w.requires_grad)
            bn.forward = _identity
            _MERGED.add(bn)
        yield [(a, b) for a, b, _, _ in saved]
    finally:
        for affine, bn, w_data, b_data in reversed(saved):
            affine.weight.data = w_data
            if b_data is None:
                affine.bias = None
            else:
                affine.bias.data = b_data
            del bn.forward
            _MERGED.discard(bn)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x
