"""Tracing one forward pass for :mod:`spectralens.lrp.matrices`: which leaf module ran, in which
order, on which inputs (float64 clones), and which earlier call produced each input; BatchNorm
folded into the Linear/Conv call that feeds it."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import UnsupportedLayerError
from .layers import AFFINE, BATCHNORM, Sum

__all__ = ["Call", "trace", "merge_batchnorm_calls"]


@dataclass
class Call:
    name: str
    module: nn.Module
    inputs: list          # float64 clones, batch-1 shapes
    output: torch.Tensor  # float64 clone
    producers: list       # producer call index per input (-1: model input)


def trace(model: nn.Module, x: torch.Tensor) -> tuple[list[Call], torch.Tensor, int]:
    """Run ``model(x)`` once with hooks on every leaf module; return the calls in forward order,
    the logits and the index of the call that produced them. Each call's inputs are matched to
    the producing call by tensor identity, or else by value as a reshape (``x.view(1, -1)``)."""
    calls: list[Call] = []
    by_id: dict[int, int] = {id(x): -1}
    keep = [x]  # keep traced tensors alive so that id() stays unique
    pending: dict[int, tuple] = {}

    def find(t: torch.Tensor, consumer: str) -> int:
        if id(t) in by_id:
            return by_id[id(t)]
        flat = t.detach().reshape(-1)
        for i in range(len(calls) - 1, -2, -1):  # a reshape of a recent output (or of x)
            out = calls[i].output if i >= 0 else x.detach()
            if out.numel() == flat.numel() and torch.equal(out.reshape(-1), flat):
                return i
        raise ValueError(f"the input of module {consumer!r} is not the output of a module (nor a reshape of one): "
                         "layer_matrices needs every operation between layers as a module "
                         "(nn.ReLU, nn.Flatten, spectralens.lrp.Sum, ...), not a functional call in forward()")

    def pre(module, args):
        if any(not isinstance(a, torch.Tensor) for a in args):
            raise ValueError(f"module {names[module]!r} got non-tensor inputs; layer_matrices needs tensor inputs")
        pending[id(module)] = ([find(a, names[module]) for a in args], [a.detach().clone() for a in args])
        keep.extend(args)

    def post(module, args, output):
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"module {names[module]!r} returned {type(output).__name__}, not a tensor")
        producers, inputs = pending.pop(id(module))
        calls.append(Call(names[module], module, inputs, output.detach().clone(), producers))
        by_id[id(output)] = len(calls) - 1
        keep.append(output)

    names = {}
    for path, m in model.named_modules():
        if next(m.children(), None) is None or isinstance(m, Sum):
            names[m] = path or "<root>"
    handles = [h for m in names for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        raise ValueError(f"the model must return logits of shape (1, classes) for one sample, got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return calls, out.detach().reshape(-1), find(out, "<output>")


def merge_batchnorm_calls(calls: list[Call]):
    """Fold each BatchNorm call into the Linear/Conv call feeding it (Zennit's formula). Returns the
    remaining calls (producer indices remapped), ``{new index: (W', b', name)}`` for the merged ones
    and the old -> new index map."""
    consumers: dict[int, int] = {}
    for c in calls:
        for p in c.producers:
            consumers[p] = consumers.get(p, 0) + 1
    merged, drop = {}, {}
    for i, c in enumerate(calls):
        if not isinstance(c.module, BATCHNORM):
            continue
        p = c.producers[0]
        bn = c.module
        if p < 0 or not isinstance(calls[p].module, AFFINE) or consumers.get(p) != 1 or bn.running_var is None:
            raise UnsupportedLayerError(c.name, type(bn).__name__, "layer_matrices merges a BatchNorm only into "
                                        "the Linear/Conv directly before it (whose output feeds nothing else).")
        aff = calls[p].module
        w = aff.weight.detach()
        b = aff.bias.detach() if aff.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
        scale = (bn.running_var + bn.eps).rsqrt()
        scale = scale * bn.weight.detach() if bn.weight is not None else scale
        shift = bn.bias.detach() if bn.bias is not None else torch.zeros_like(scale)
        merged[p] = (w * scale.reshape(-1, *([1] * (w.ndim - 1))), (b - bn.running_mean) * scale + shift,
                     f"{calls[p].name}+{c.name}")
        calls[p].output = c.output
        drop[i] = p
    keep = [i for i in range(len(calls)) if i not in drop]
    new_index = {old: new for new, old in enumerate(keep)}

    def remap(p):
        p = drop.get(p, p)
        return -1 if p < 0 else new_index[p]

    out = []
    for i in keep:
        c = calls[i]
        out.append(Call(c.name, c.module, c.inputs, c.output, [remap(p) for p in c.producers]))
    return out, {new_index[p]: v for p, v in merged.items()}, remap
