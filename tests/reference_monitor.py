"""Slow, obviously-correct references for the training monitor.

Everything is materialised explicitly and measured with a float64 full SVD:

* A of a Linear: every input the module received in the step, rows stacked (N, d_in);
* A of a Conv: patches cut out of the zero-padded input by explicit slicing, one row per
  (sample, output position), columns ordered like ``weight.reshape(out, -1)``;
* A of an Embedding: the one-hot token-indicator matrix (N, vocab);
* A of a norm gain: x_hat written out from the definition ((x - mean)/sqrt(var + eps) or
  x/sqrt(mean x^2 + eps));
* G: the weight's ``.grad`` as a matrix (out, in) - conv flattened (out, in*k*k).

st(M) = sum s^2 / s_max^2, nr(M) = (sum s)^2 / sum s^2 (Davis & Drusvyatskiy, arXiv 2512.04299).
"""
from __future__ import annotations

import torch
from torch import nn


def svals(M: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(M.detach().to(torch.float64))


def st_ref(M: torch.Tensor) -> float:
    s = svals(M)
    return float((s ** 2).sum() / s.max() ** 2)


def nr_ref(M: torch.Tensor) -> float:
    s = svals(M)
    return float(s.sum() ** 2 / (s ** 2).sum())


def grad_ref(G: torch.Tensor) -> dict:
    s = svals(G)
    return {"nr_grad": float(s.sum() ** 2 / (s ** 2).sum()), "grad_fro": float((s ** 2).sum().sqrt()),
            "grad_op": float(s.max()), "st_grad": float((s ** 2).sum() / s.max() ** 2)}


def weight_ref(W: torch.Tensor) -> dict:
    s = svals(W)
    return {"weight_op": float(s.max()), "st_weight": float((s ** 2).sum() / s.max() ** 2)}


def conv2d_patches_explicit(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B * Ho * Wo, C * kh * kw) by slicing, for groups = 1, zero padding."""
    assert conv.groups == 1 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
    (kh, kw), (sh, sw), (dh, dw), (ph, pw) = conv.kernel_size, conv.stride, conv.dilation, conv.padding
    xp = torch.nn.functional.pad(x.to(torch.float64), (pw, pw, ph, ph))
    H, W = xp.shape[-2:]
    ho = (H - dh * (kh - 1) - 1) // sh + 1
    wo = (W - dw * (kw - 1) - 1) // sw + 1
    rows = []
    for b in range(x.shape[0]):
        for i in range(ho):
            for j in range(wo):
                patch = xp[b, :, i * sh: i * sh + dh * (kh - 1) + 1: dh, j * sw: j * sw + dw * (kw - 1) + 1: dw]
                rows.append(patch.reshape(-1))
    return torch.stack(rows)


def normalised_explicit(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    d = module.weight.numel()
    x = x.to(torch.float64).reshape(-1, d)
    eps = getattr(module, "eps", None)
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    if "rms" in type(module).__name__.lower():
        return x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps)
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps)


class InputRecorder:
    """Keeps a copy of every input of the given modules (training forwards only)."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.inputs: dict[str, list[torch.Tensor]] = {n: [] for n in modules}
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name):
        def hook(module, args, output):
            if module.training and torch.is_grad_enabled():
                self.inputs[name].append(args[0].detach().clone())
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def activation_matrix(module: nn.Module, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The explicit A (rows = samples) a module saw over ``inputs``."""
    if isinstance(module, nn.Embedding):
        ids = torch.cat([x.reshape(-1) for x in inputs])
        return torch.nn.functional.one_hot(ids, module.num_embeddings).to(torch.float64)
    if isinstance(module, nn.Conv2d):
        return torch.cat([conv2d_patches_explicit(module, x) for x in inputs])
    if isinstance(module, nn.Linear):
        return torch.cat([x.reshape(-1, module.in_features).to(torch.float64) for x in inputs])
    return torch.cat([normalised_explicit(module, x) for x in inputs])


def grad_matrix(module: nn.Module) -> torch.Tensor:
    g = module.weight.grad
    return g.reshape(g.shape[0], -1) if g.dim() > 2 else g


def reference_layer(module: nn.Module, inputs: list[torch.Tensor]) -> dict:
    """Every monitor number for one layer, from explicit matrices and float64 SVDs."""
    A = activation_matrix(module, inputs)
    out = {"st_act": st_ref(A), "rows": A.shape[0]}
    g = module.weight.grad
    if g.dim() == 1:  # norm gain: diag(g)
        g64 = g.to(torch.float64)
        out.update(nr_grad=float(g64.abs().sum() ** 2 / (g64 ** 2).sum()), grad_fro=float(g64.norm()),
                   grad_op=float(g64.abs().max()))
    else:
        out.update(grad_ref(grad_matrix(module)))
        W = module.weight
        out.update(weight_ref(W.reshape(W.shape[0], -1)))
    out["ratio"] = out["nr_grad"] / out["st_act"]
    return out
