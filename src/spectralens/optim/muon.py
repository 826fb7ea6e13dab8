"""Muon: momentum, then orthogonalise each weight matrix's update (K. Jordan et al., 2024).

For every parameter W (viewed as a matrix m x n, or a batch of them) with gradient G:

    EMA momentum (default):  B <- beta B + (1 - beta) G;  U = lerp(G, B, beta) if nesterov else B
    classic momentum:        B <- mu B + G;               U = G + mu B        if nesterov else B
    O = orth(U)              (Newton-Schulz, Polar Express or exact polar; see linalg.orthogonalize)
    W <- W (1 - lr wd)       (decoupled weight decay with the unscaled lr)
    W <- W - lr s(m, n) O

with the scale rule s: "original" sqrt(max(1, m/n)) (Jordan), "match_rms_adamw"
0.2 sqrt(max(m, n)) (Liu et al. 2025, "Muon is Scalable for LLM Training", arXiv:2502.16982;
AdamW learning rates and decay carry over), "spectral" sqrt(m/n) = sqrt(fan_out/fan_in)
(Bernstein's spectral-norm rule, as in microsoft/dion), or "none".

Shapes: 2-D (out, in) as is; >= 4-D conv weights (out, in, kh, kw) flattened to
(out, in*kh*kw) with the scale computed on that shape; 3-D tensors (E, m, n) treated as a
batch of E matrices (MoE expert stacks). A 3-D Conv1d weight must be flagged ``flatten=True``
(in its param group) since its shape alone does not say it is a conv; ``hybrid`` does this.
Same-shape matrices of all param groups are orthogonalised together in one batched call.

Distributed: with torch.distributed initialised (world size > 1) and plain (replicated, e.g.
DDP) parameters, each rank orthogonalises a contiguous share of every same-shape bucket and the
results are all-gathered, so parameters stay identical on every rank; with FSDP2 (DTensor)
parameters the full update is gathered, orthogonalised by one owning rank and its shards are
scattered back (see optim.distributed). Without a process group it is a single-device optimizer.

Limits: complex and sparse gradients are rejected; NS in bfloat16 (the CUDA default) has ~1e-2
relative error; the update of a zero gradient is zero (NS normalises by max(||U||_F, eps)).
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch.optim import Optimizer

from ..linalg.orthogonalize import NS_COEFFICIENTS, ORTHOGONALIZERS, orthogonalize
from . import distributed as _dist

__all__ = ["Muon", "SCALE_RULES", "lr_scale", "matrix_shape", "muon_step"]

SCALE_RULES = ("original", "match_rms_adamw", "spectral", "none")
MOMENTUM_TYPES = ("ema", "classic")


def lr_scale(rule: str | None, rows: int, cols: int) -> float:
    """The factor s(m, n) multiplying lr for an (rows x cols) matrix under ``rule``."""
    if rule is None or rule == "original":
        return math.sqrt(max(1.0, rows / cols))
    if rule == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if rule == "spectral":
        return math.sqrt(rows / cols)
    if rule == "none":
        return 1.0
    raise ValueError(f"unknown scale rule adjust_lr={rule!r}; expected one of {SCALE_RULES}")


def matrix_shape(shape: torch.Size | tuple, flatten: bool | None = None) -> tuple[int, int, int]:
    """(batch, rows, cols) in which Muon sees a tensor of ``shape``.

    2-D: (1, m, n). >= 4-D, or any >= 3-D with ``flatten=True``: (1, shape[0], prod(rest)).
    3-D with ``flatten`` None/False: (E, m, n), a stack of matrices.
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"Muon needs a >= 2-D parameter, got shape {shape}")
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    if flatten or (flatten is None and len(shape) >= 4):
        return 1, shape[0], math.prod(shape[1:])
    return math.prod(shape[:-2]), shape[-2], shape[-1]


def _resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def _validate(opts: dict, where: str = "Muon") -> None:
    """Raise ValueError naming the bad value for any invalid Muon hyper-parameter."""
    lr = opts.get("lr")
    if lr is not None and not (isinstance(lr, (int, float)) and lr >= 0.0):
        raise ValueError(f"{where}: invalid learning rate lr={lr!r}; expected a number >= 0")
    if "momentum" in opts and not 0.0 <= opts["momentum"] < 1.0:
        raise ValueError(f"{where}: invalid momentum={opts['momentum']!r}; expected 0 <= momentum < 1")
    if "weight_decay" in opts and not opts["weight_decay"] >= 0.0:
        raise ValueError(f"{where}: invalid weight_decay={opts['weight_decay']!r}; expected >= 0")
    if "ns_steps" in opts and not (isinstance(opts["ns_steps"], int) and 0 <= opts["ns_steps"] < 100):
        raise ValueError(f"{where}: invalid ns_steps={opts['ns_steps']!r}; expected an int in [0, 100)")
    if "adjust_lr" in opts and opts["adjust_lr"] not in SCALE_RULES + (None,):
        raise ValueError(f"{where}: unknown scale rule adjust_lr={opts['adjust_lr']!r}; "
                         f"expected one of {SCALE_RULES}")
    if "orthogonalizer" in opts and opts["orthogonalizer"] not in ORTHOGONALIZERS:
        raise ValueError(f"{where}: unknown orthogonalizer={opts['orthogonalizer']!r}; "
                         f"expected one of {ORTHOGONALIZERS}")
    if "momentum_type" in opts and opts["momentum_type"] not in MOMENTUM_TYPES:
        raise ValueError(f"{where}: unknown momentum_type={opts['momentum_type']!r}; "
                         f"expected one of {MOMENTUM_TYPES}")
    if "eps" in opts and not opts["eps"] > 0.0:
        raise ValueError(f"{where}: invalid eps={opts['eps']!r}; expected > 0")
    dt = opts.get("compute_dtype")
    if dt is not None and not isinstance(_resolve_dtype(dt, torch.device("cpu")), torch.dtype):
        raise ValueError(f"{where}: invalid compute_dtype={dt!r}; expected None or a torch float dtype")


def _check_param(p: torch.Tensor, name: str | None) -> None:
    if p.dim() < 2:
        label = f" {name!r}" if name else ""
        raise ValueError(
            f"Muon got a {p.dim()}-D parameter{label} of shape {tuple(p.shape)}; Muon updates "
            "matrices (>= 2-D). Give biases, norm gains and other 1-D parameters to AdamW, "
            "e.g. with spectralens.optim.hybrid(model)")


def _check_params(group: dict) -> None:
    """``_check_param`` on every parameter of a Muon param group (named by ``param_names``)."""
    names = group.get("param_names") or [None] * len(group["params"])
    for p, name in zip(group["params"], names):
        _check_param(p, name)


class Muon(Optimizer):
    """Muon optimizer (see the module docstring for the update, shapes and limits).

    Args:
        params: parameters or param groups (>= 2-D tensors only).
        lr: learning rate (0.02, Jordan's default for the "original" scale).
        momentum: beta of the momentum buffer (0.95).
        nesterov: use the Nesterov look-ahead (True).
        weight_decay: decoupled decay, W <- W (1 - lr wd) (0).
        ns_steps: orthogonaliser iterations (5).
        adjust_lr: scale rule, one of ``SCALE_RULES`` ("original"; None means "original" as in
            torch.optim.Muon's ``adjust_lr_fn``).
        compute_dtype: orthogonaliser dtype; None = float32 on CPU, bfloat16 on CUDA.
        orthogonalizer: "newton_schulz" (default), "polar_express", or "svd" (exact polar).
        momentum_type: "ema" (Jordan, torch.optim.Muon) or "classic" (Moonlight, dion).
        ns_coefficients: (a, b, c) or a per-step list, for "newton_schulz".
        eps: floor of the Frobenius norm in the NS normalisation (1e-7, as torch.optim.Muon).
        flatten: None (auto: >= 4-D flattened, 3-D batched), True (flatten every >= 3-D tensor
            to (shape[0], -1), e.g. Conv1d), False (treat leading dims as a batch).
        distributed: None = divide the orthogonalisation across ranks when torch.distributed is
            initialised with world size > 1; False = never; True = require it.
        process_group: the group to divide work over (default: the global group).
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = 5, adjust_lr: str | None = "original",
                 compute_dtype: torch.dtype | str | None = None, *, orthogonalizer: str = "newton_schulz",
                 momentum_type: str = "ema", ns_coefficients=NS_COEFFICIENTS, eps: float = 1e-7,
                 flatten: bool | None = None, distributed: bool | None = None, process_group=None):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                        ns_steps=ns_steps, adjust_lr=adjust_lr, compute_dtype=compute_dtype,
                        orthogonalizer=orthogonalizer, momentum_type=momentum_type,
                        ns_coefficients=ns_coefficients, eps=eps, flatten=flatten)
        _validate(defaults)
        if distributed is True and not _dist.active(process_group):
            raise ValueError("Muon: distributed=True but torch.distributed is not initialised "
                             "with world size > 1")
        self.distributed, self.process_group = distributed, process_group
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        _validate(param_group, "Muon param group")
        super().add_param_group(param_group)
        _check_params(self.param_groups[-1])

    @torch.no_grad()
    def step(self, closure=None):
        """One Muon step over all groups; returns the closure's loss if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        muon_step(self, self.param_groups, self.distributed, self.process_group)
        return loss


def _momentum_update(p: torch.Tensor, group: dict, state: dict) -> torch.Tensor:
    g = p.grad
    if g.is_sparse:
        raise RuntimeError("Muon does not support sparse gradients")
    if torch.is_complex(g):
        raise RuntimeError("Muon does not support complex parameters")
    beta = group["momentum"]
    if beta == 0.0:
        return g
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = torch.zeros_like(g, memory_format=torch.preserve_format)
    buf = state["momentum_buffer"]
    if group["momentum_type"] == "ema":
        return _ema_momentum(buf, g, beta, group["nesterov"])
    buf.mul_(beta).add_(g)
    return g.add(buf, alpha=beta) if group["nesterov"] else buf


def _ema_momentum(buf: torch.Tensor, g: torch.Tensor, beta: float, nesterov: bool) -> torch.Tensor:
    """EMA momentum: B <- beta B + (1 - beta) G in place; return lerp(G, B, beta) if nesterov else B.

    Shared with ``GatedSpectral``'s spectral step. ``buf`` and ``g`` have the parameter's shape.
    """
    buf.lerp_(g, 1.0 - beta)
    return g.lerp(buf, beta) if nesterov else buf


def _apply_update(p: torch.Tensor, o: torch.Tensor, lr: float, weight_decay: float, scale: float) -> None:
    """W <- W (1 - lr wd) (decoupled decay, unscaled lr), then W <- W - lr s O, in place.

    ``o`` is the orthogonalised update with ``p``'s shape (any dtype; cast to ``p.dtype``);
    ``scale`` is s(m, n) from :func:`lr_scale`. Shared with ``GatedSpectral``'s spectral step.
    """
    if weight_decay != 0.0:
        p.mul_(1.0 - lr * weight_decay)
    p.add_(o.to(p.dtype), alpha=-lr * scale)


def _orth_key(group: dict, mshape: tuple, device: torch.device) -> tuple:
    coeffs = group["ns_coefficients"]
    coeffs = tuple(map(tuple, coeffs)) if not isinstance(coeffs[0], (int, float)) else tuple(coeffs)
    return (mshape[1], mshape[2], str(device), _resolve_dtype(group["compute_dtype"], device),
            group["orthogonalizer"], group["ns_steps"], coeffs, group["eps"])


def _orth_fn(key: tuple):
    _, _, _, dtype, method, steps, coeffs, eps = key[:8]
    return lambda X: orthogonalize(X, method, steps, coeffs, dtype, eps)


def muon_step(optimizer: Optimizer, groups: list[dict], distributed: bool | None = None,
              process_group=None) -> None:
    """The Muon update for ``groups`` of ``optimizer`` (state in ``optimizer.state``).

    The one implementation function: momentum per parameter, then all updates bucketed by
    (matrix shape, device, orthogonaliser settings) across groups and orthogonalised in one
    batched call per bucket (divided across ranks when distributed), then decay and apply.
    """
    entries = []  # (param, group, update, (batch, rows, cols))
    for group in groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            u = _momentum_update(p, group, optimizer.state[p])
            entries.append((p, group, u, matrix_shape(p.shape, group["flatten"])))
    if not entries:
        return
    use_dist = _dist.active(process_group) if distributed is None else distributed
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, (p, group, u, ms) in enumerate(entries):  # DTensor and plain never share a bucket
        buckets[_orth_key(group, ms, p.device) + (_dist.is_dtensor(u),)].append(i)
    results: list[torch.Tensor | None] = [None] * len(entries)
    first_rank = 0  # rotates across buckets so single-matrix buckets do not all land on rank 0
    for key, idx in buckets.items():
        fn = _orth_fn(key)
        mats = [entries[i][2] for i in idx]
        shapes = [entries[i][3] for i in idx]
        if _dist.is_dtensor(mats[0]):
            outs = _dist.orthogonalize_dtensors(mats, shapes, fn, key[3], process_group, first_rank)
            first_rank += len(mats)
        elif use_dist:
            outs = _dist.orthogonalize_replicated(mats, shapes, fn, key[3], process_group, first_rank)
            first_rank += sum(s[0] for s in shapes)
        else:
            outs = _dist.orthogonalize_local(mats, shapes, fn)
        for i, o in zip(idx, outs):
            results[i] = o
    for (p, group, _, (_, rows, cols)), o in zip(entries, results):
        _apply_update(p, o, group["lr"], group["weight_decay"], lr_scale(group["adjust_lr"], rows, cols))
