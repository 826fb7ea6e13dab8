"""One optimizer for a whole model: Muon for hidden matrices, AdamW for everything else.

``hybrid(model)`` routes each parameter (first matching rule wins):

1. ``adamw_patterns`` / ``muon_patterns``: glob patterns on the parameter name
   (``fnmatch``, e.g. ``"blocks.*.attn.*"``); AdamW patterns are checked first.
2. < 2-D (biases, norm gains, scalars) -> AdamW.
3. embeddings (``nn.Embedding``/``nn.EmbeddingBag``) and any parameter tied to one (a tied
   LM head) -> AdamW.
4. output heads: a module whose name is, or ends in, one of ``head_names``
   (default ``lm_head``, ``head``, ``classifier``, ``fc_out``) -> AdamW.
5. the first convolution of the model (it sees raw pixels/tokens) -> AdamW.
6. every other >= 2-D parameter -> Muon (convs flattened to (out, in*k...), other 3-D tensors
   batched as stacks of matrices).

This follows Jordan's recommendation (Muon for hidden layers only) and Moonlight/dion's
practice. The result is ONE :class:`HybridOptimizer`: a ``torch.optim.Optimizer`` whose param
groups carry ``use_muon`` and are dispatched per group to :func:`muon_step` or an AdamW update
(Loshchilov & Hutter 2019: decoupled decay, bias-corrected moments, same as torch.optim.AdamW).
LR schedulers, gradient clipping, ``state_dict``/``load_state_dict`` and closures work as for
any torch optimizer. ``.assignment`` lists (name, shape, optimizer, reason) per parameter;
``.assignment_table()`` renders it, and it is logged at INFO on the ``spectralens.optim.hybrid``
logger.

Limits: routing is by module type and name; a head with an unusual name needs a pattern. HF
GPT-2's ``Conv1D`` stores weights as (in, out), so the "original"/"spectral" scale rules see
the transpose there (orthogonalisation itself is unaffected).
"""
from __future__ import annotations

import fnmatch
import logging
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer

from .muon import NS_COEFFICIENTS, _check_params, _validate, muon_step

__all__ = ["hybrid", "HybridOptimizer", "Assignment"]

log = logging.getLogger(__name__)

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_EMB = (nn.Embedding, nn.EmbeddingBag)


@dataclass(frozen=True)
class Assignment:
    name: str  # parameter name as in model.named_parameters()
    shape: tuple
    optimizer: str  # "muon" or "adamw"
    reason: str  # which rule decided


def _adamw_validate(g: dict) -> None:
    if not g["lr"] >= 0.0:
        raise ValueError(f"hybrid: invalid AdamW learning rate lr={g['lr']!r}; expected >= 0")
    b1, b2 = g["betas"]
    if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
        raise ValueError(f"hybrid: invalid AdamW betas={g['betas']!r}; expected each in [0, 1)")
    if not g["eps"] >= 0.0:
        raise ValueError(f"hybrid: invalid AdamW eps={g['eps']!r}; expected >= 0")
    if not g["weight_decay"] >= 0.0:
        raise ValueError(f"hybrid: invalid AdamW weight_decay={g['weight_decay']!r}; expected >= 0")


class HybridOptimizer(Optimizer):
    """Param groups flagged ``use_muon=True`` get Muon, the others AdamW.

    Muon groups take Muon's keys (lr, momentum, nesterov, weight_decay, ns_steps, adjust_lr,
    compute_dtype, orthogonalizer, momentum_type, ns_coefficients, eps, flatten); AdamW groups
    take (lr, betas, eps, weight_decay). Missing keys come from ``muon_defaults`` /
    ``adamw_defaults``. Usable directly with hand-made groups, like KellerJordan's
    ``MuonWithAuxAdam``; :func:`hybrid` builds the groups from a model.
    """

    def __init__(self, param_groups, muon_defaults: dict | None = None,
                 adamw_defaults: dict | None = None, distributed: bool | None = None,
                 process_group=None):
        self.muon_defaults = dict(lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0,
                                  ns_steps=5, adjust_lr="original", compute_dtype=None,
                                  orthogonalizer="newton_schulz", momentum_type="ema",
                                  ns_coefficients=NS_COEFFICIENTS, eps=1e-7, flatten=None)
        self.muon_defaults.update(muon_defaults or {})
        self.adamw_defaults = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
        self.adamw_defaults.update(adamw_defaults or {})
        self.distributed, self.process_group = distributed, process_group
        self.assignment: list[Assignment] = []
        super().__init__(param_groups, {})

    def add_param_group(self, param_group: dict) -> None:
        if "use_muon" not in param_group:
            raise ValueError("HybridOptimizer: every param group needs a 'use_muon' flag")
        defaults = self.muon_defaults if param_group["use_muon"] else self.adamw_defaults
        for k, v in defaults.items():
            param_group.setdefault(k, v)
        if param_group["use_muon"]:
            _validate(param_group, "hybrid Muon group")
        else:
            _adamw_validate(param_group)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["use_muon"]:
            _check_params(group)

    @torch.no_grad()
    def step(self, closure=None):
        """Muon on the ``use_muon`` groups (one batched pass over all of them), AdamW on the rest."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        muon_step(self, [g for g in self.param_groups if g["use_muon"]], self.distributed,
                  self.process_group)
        for group in self.param_groups:
            if not group["use_muon"]:
                self._adamw(group)
        return loss

    def _adamw(self, group: dict) -> None:
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = p.grad
            if g.is_sparse:
                raise RuntimeError("hybrid AdamW does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] += 1
            t = state["step"].item()
            if wd != 0.0:
                p.mul_(1.0 - lr * wd)
            state["exp_avg"].lerp_(g, 1.0 - b1)
            state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1.0 - b2**t)).add_(eps)
            p.addcdiv_(state["exp_avg"], denom, value=-lr / (1.0 - b1**t))

    def assignment_table(self) -> str:
        """A fixed-width table: parameter, shape, optimizer, reason."""
        rows = [("parameter", "shape", "optimizer", "reason")]
        rows += [(a.name, "x".join(map(str, a.shape)), a.optimizer, a.reason) for a in self.assignment]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _route(model: nn.Module, muon_patterns, adamw_patterns, head_names, first_conv_to_adamw):
    owners: dict[int, list[tuple[str, nn.Module]]] = {}
    first_conv = None
    for mname, mod in model.named_modules():
        if first_conv is None and isinstance(mod, _CONV):
            first_conv = mod
        for _, p in mod.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((mname, mod))
    routes = []  # (name, param, optimizer, reason, is_conv)
    for name, p in model.named_parameters():
        mods = owners.get(id(p), [])
        is_conv = any(isinstance(m, _CONV) for _, m in mods)
        adam_hit = next((pat for pat in adamw_patterns if fnmatch.fnmatchcase(name, pat)), None)
        muon_hit = next((pat for pat in muon_patterns if fnmatch.fnmatchcase(name, pat)), None)
        emb = next((mn for mn, m in mods if isinstance(m, _EMB)), None)
        head = next((mn for mn, _ in mods if mn.split(".")[-1] in head_names), None)
        if adam_hit:
            routes.append((name, p, "adamw", f"pattern {adam_hit!r}", is_conv))
        elif muon_hit:
            if p.dim() < 2:
                raise ValueError(f"hybrid: muon_patterns entry {muon_hit!r} matches the {p.dim()}-D "
                                 f"parameter {name!r} of shape {tuple(p.shape)}; Muon needs >= 2-D")
            routes.append((name, p, "muon", f"pattern {muon_hit!r}", is_conv))
        elif p.dim() < 2:
            kind = "bias" if name.endswith("bias") else "norm gain / 1-D"
            routes.append((name, p, "adamw", kind, is_conv))
        elif emb is not None:
            reason = "embedding" if mods[0][0] == emb else f"tied to embedding {emb!r}"
            routes.append((name, p, "adamw", reason, is_conv))
        elif head is not None:
            routes.append((name, p, "adamw", f"output head {head!r}", is_conv))
        elif first_conv_to_adamw and first_conv is not None and any(m is first_conv for _, m in mods):
            routes.append((name, p, "adamw", "first conv", is_conv))
        else:
            reason = ("hidden conv, flattened" if is_conv else
                      "stack of matrices, batched" if p.dim() == 3 else
                      "hidden matrix" if p.dim() == 2 else "hidden tensor, flattened")
            routes.append((name, p, "muon", reason, is_conv))
    return routes


def hybrid(model: nn.Module, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
           weight_decay: float = 0.0, ns_steps: int = 5, adjust_lr: str | None = "original",
           compute_dtype=None, *, orthogonalizer: str = "newton_schulz", momentum_type: str = "ema",
           adamw_lr: float = 3e-4, adamw_betas=(0.9, 0.95), adamw_eps: float = 1e-8,
           adamw_weight_decay: float = 0.0, no_decay_1d: bool = True,
           muon_patterns=(), adamw_patterns=(),
           head_names=("lm_head", "head", "classifier", "fc_out"), first_conv_to_adamw: bool = True,
           per_param_groups: bool = False, distributed: bool | None = None, process_group=None,
           verbose: bool = False) -> HybridOptimizer:
    """Build one :class:`HybridOptimizer` for ``model`` (routing rules in the module docstring).

    Muon options (``lr`` .. ``momentum_type``) as :class:`~spectralens.optim.Muon`; AdamW ones
    prefixed ``adamw_``. ``no_decay_1d``: biases and norm gains get weight decay 0.
    Groups: by default "muon", "muon_conv" (flatten=True, so Conv1d works), "adamw" and
    "adamw_no_decay" (empty ones dropped); with ``per_param_groups`` one group per parameter
    (what AlphaDecay/TempBalance need to give each module its own decay or lr). Every group
    carries ``group_name``, ``param_names`` and ``use_muon``. ``verbose`` prints the table.
    """
    routes = _route(model, tuple(muon_patterns), tuple(adamw_patterns), set(head_names),
                    first_conv_to_adamw)
    muon_opts = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                     ns_steps=ns_steps, adjust_lr=adjust_lr, compute_dtype=compute_dtype,
                     orthogonalizer=orthogonalizer, momentum_type=momentum_type)
    _validate(muon_opts, "hybrid")
    adamw_opts = dict(lr=adamw_lr, betas=tuple(adamw_betas), eps=adamw_eps, weight_decay=adamw_weight_decay)
    _adamw_validate(adamw_opts)
    groups: dict[str, dict] = {}
    order = []
    for name, p, which, _, is_conv in routes:
        if which == "muon":
            gname, opts = ("muon_conv", {**muon_opts, "flatten": True}) if is_conv else ("muon", muon_opts)
            extra = {"use_muon": True}
        else:
            no_decay = no_decay_1d and p.dim() < 2
            gname = "adamw_no_decay" if no_decay else "adamw"
            opts = {**adamw_opts, "weight_decay": 0.0} if no_decay else adamw_opts
            extra = {"use_muon": False}
        key = name if per_param_groups else gname
        if key not in groups:
            groups[key] = {"params": [], "param_names": [], "group_name": gname, **opts, **extra}
            order.append(key)
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    opt = HybridOptimizer([groups[k] for k in order], muon_opts, adamw_opts, distributed, process_group)
    opt.assignment = [Assignment(n, tuple(p.shape), w, r) for n, p, w, r, _ in routes]
    table = opt.assignment_table()
    log.info("hybrid optimizer assignment:\n%s", table)
    if verbose:
        print(table)
    return opt
