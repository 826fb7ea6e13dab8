"""Per-module Hill alpha and the linear alpha map shared by AlphaDecay and TempBalance.

Which modules are *tuned* (He et al., AlphaDecay, arXiv 2506.14562; Zhou et al.,
TempBalance, NeurIPS 2023): every ``nn.Linear`` and ``nn.Conv2d`` in ``model.named_modules()``
order, except

* the first such module ("first layer") and the last one ("last layer", the LM head),
* any module whose ESD has fewer than ``min_eigs`` (default 50) eigenvalues.

Embeddings, norm gains and every other parameter are never tuned (they keep the group's
base value).

ESD of one module (float32, as in the released code):

* Linear W (out, in): lambda = svdvals(W)^2, min(out, in) values.
* Conv2d W (out, in, kh, kw): the kh*kw slices W[:, :, i, j] scaled by sqrt(0.5)
  (WeightWatcher's ``conv2d_norm``), their squared singular values pooled into one ESD
  of kh*kw*min(out, in) values.

Alpha is the Hill / "median" estimator (``spectralens.fit.hill_alpha``): xmin = the
eigenvalue at index floor(N/2) of the ascending ESD, alpha = 1 + n / sum ln(lambda_j / xmin)
over the n = N - floor(N/2) largest.

Linear map over the tuned modules (alpha_min, alpha_max taken over them):

    f_i = s1 + (alpha_i - alpha_min) / (alpha_max - alpha_min) * (s2 - s1)

Higher alpha (lighter tail, "under-trained") gets the larger factor. When all alphas are
equal (or there is one tuned module) every factor is (s1 + s2) / 2. With
``preserve_mean=True`` the factors are divided by their mean so they average to 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..fit.hill import hill_alpha
from ..linalg.conv import WW_CONV2D_SCALE, conv_slices

__all__ = ["ModuleAlpha", "module_esd", "tuned_modules", "module_alphas", "alpha_factors", "module_param_groups"]

TUNABLE_TYPES = (nn.Linear, nn.Conv2d)


@dataclass(frozen=True)
class ModuleAlpha:
    """One row of the per-module table: ``status`` is "tuned" or the exclusion reason."""

    name: str
    num_evals: int
    alpha: float  # NaN when not computed (excluded before the fit) or undefined
    status: str


def module_esd(module: nn.Module) -> torch.Tensor:
    """Ascending float32 ESD of a Linear / Conv2d weight (see module docstring)."""
    W = module.weight.detach()
    if W.dim() == 2:
        s = torch.linalg.svdvals(W.to(torch.float32))
    elif W.dim() >= 3:
        s = torch.linalg.svdvals(conv_slices(W.to(torch.float32), WW_CONV2D_SCALE)).flatten()
    else:
        raise ValueError(f"module weight has shape {tuple(W.shape)}; expected a matrix or conv weight")
    return torch.sort(s.square()).values


def _num_evals(module: nn.Module) -> int:
    W = module.weight
    per = min(W.shape[0], W.shape[1])
    return per * (math.prod(W.shape[2:]) if W.dim() > 2 else 1)


def tuned_modules(
    model: nn.Module, *, exclude_first: bool = True, exclude_last: bool = True, min_eigs: int = 50,
    types: tuple[type, ...] = TUNABLE_TYPES,
) -> list[tuple[str, nn.Module, str]]:
    """All Linear/Conv2d modules as (name, module, status), status "tuned" or why excluded."""
    if min_eigs < 0:
        raise ValueError(f"min_eigs must be >= 0, got {min_eigs}")
    mods = [(n, m) for n, m in model.named_modules() if isinstance(m, types) and getattr(m, "weight", None) is not None]
    rows = []
    for i, (name, m) in enumerate(mods):
        if exclude_first and i == 0:
            status = "excluded: first layer"
        elif exclude_last and i == len(mods) - 1:
            status = "excluded: last layer"
        elif _num_evals(m) < min_eigs:
            status = f"excluded: {_num_evals(m)} < {min_eigs} eigenvalues"
        else:
            status = "tuned"
        rows.append((name, m, status))
    return rows


def module_alphas(model: nn.Module, **select) -> list[ModuleAlpha]:
    """Hill alpha of every tuned module (NaN for excluded ones); ``select`` as ``tuned_modules``."""
    out = []
    for name, m, status in tuned_modules(model, **select):
        alpha = float("nan")
        if status == "tuned":
            alpha = float(hill_alpha(module_esd(m)))
            if not math.isfinite(alpha):
                status = "excluded: alpha undefined (zero or degenerate spectrum)"
        out.append(ModuleAlpha(name, _num_evals(m), alpha, status))
    return out


def alpha_factors(alphas: list[float], s1: float, s2: float, *, preserve_mean: bool = False) -> list[float]:
    """Linear map of alphas onto [s1, s2] (see module docstring); optionally mean 1."""
    if not alphas:
        return []
    lo, hi = min(alphas), max(alphas)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        f = [0.5 * (s1 + s2)] * len(alphas)
    else:
        f = [s1 + (a - lo) / (hi - lo) * (s2 - s1) for a in alphas]
    if preserve_mean:
        mean = sum(f) / len(f)
        f = [x / mean for x in f]
    return f


def module_param_groups(
    model: nn.Module, base_weight_decay: float, *, exclude_first: bool = True, exclude_last: bool = True,
    min_eigs: int = 50, **group_options,
) -> list[dict]:
    """Param groups with one group per tuned module, ready for any torch optimizer.

    Each tuned module's parameters (weight and bias, as in the released AlphaDecay code) get
    their own group ``{"params": [...], "weight_decay": base_weight_decay, "name": module}``;
    every other parameter goes into one last group ``{"name": "untuned", ...}`` (embeddings,
    norms, first and last layers). ``group_options`` (e.g. ``lr=1e-3``) are copied into every
    group. Tied parameters appear once.
    """
    if not base_weight_decay >= 0.0:
        raise ValueError(f"base_weight_decay must be >= 0, got {base_weight_decay}")
    seen: set[int] = set()
    groups = []
    for name, m, status in tuned_modules(model, exclude_first=exclude_first, exclude_last=exclude_last, min_eigs=min_eigs):
        if status != "tuned":
            continue
        ps = [p for p in m.parameters(recurse=False) if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in ps)
        if ps:
            groups.append({"params": ps, "weight_decay": base_weight_decay, "name": name, **group_options})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        groups.append({"params": rest, "weight_decay": base_weight_decay, "name": "untuned", **group_options})
    return groups


def locate_groups(optimizer, modules: list[tuple[str, nn.Module]], *, split: bool = False) -> dict[str, int]:
    """Index of the param group that holds each module's weight, one module per group.

    A group may hold a module's weight and its bias, nothing else. If a weight shares its
    group with other parameters: with ``split=False`` a ValueError names the module and the
    group (build groups with ``module_param_groups``); with ``split=True`` the module's own
    parameters are moved out of that group into a new group (same options) appended with
    ``optimizer.add_param_group``. Splitting keeps optimizer state (it is keyed by parameter)
    but changes the group list: do the same split before ``load_state_dict`` on resume.
    """
    out: dict[str, int] = {}
    for name, m in modules:
        w = m.weight
        gi = next((i for i, g in enumerate(optimizer.param_groups) if any(p is w for p in g["params"])), None)
        if gi is None:
            raise ValueError(f"module {name!r}: its weight is not in any param group of the optimizer")
        own = {id(p) for p in m.parameters(recurse=False)}
        group = optimizer.param_groups[gi]
        others = [p for p in group["params"] if id(p) not in own]
        if others:
            if not split:
                raise ValueError(
                    f"module {name!r} shares param group {gi} ({group.get('name', 'unnamed')!r}) with "
                    f"{len(others)} other parameter(s); build one group per module with "
                    f"spectralens.optim.module_param_groups(model, weight_decay) or pass split_groups=True"
                )
            if not hasattr(optimizer, "add_param_group"):
                raise TypeError(f"cannot split groups of {type(optimizer).__name__}: it has no add_param_group")
            mine = [p for p in group["params"] if id(p) in own]
            group["params"] = others
            new = {k: v for k, v in group.items() if k != "params"}
            new.update(params=mine, name=name)
            optimizer.add_param_group(new)
            gi = len(optimizer.param_groups) - 1
        if gi in out.values():
            raise ValueError(f"module {name!r} shares param group {gi} with another tuned module")
        out[name] = gi
    return out
