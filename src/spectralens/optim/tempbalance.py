"""TempBalance: per-module learning-rate factors from the heavy-tail exponent.

Zhou et al., "Temperature Balancing, Layer-wise Weight Analysis, and Neural Network
Training", NeurIPS 2023 (code ``YefanZhou/TempBalance``). Same module selection, ESD and
Hill alpha as AlphaDecay (``spectralens.optim._module_alpha``), mapped onto the LEARNING RATE:

    lr_i(t) = lr_sched(t) * (s1 + (alpha_i - alpha_min) / (alpha_max - alpha_min) * (s2 - s1))

with s1 = 0.5, s2 = 1.5: higher alpha (under-trained) gets a larger rate. Recomputed every
``every`` optimizer steps (paper: once per epoch for vision, 200 steps for language).

How it composes with LR schedulers: the factor is applied ONLY for the duration of
``optimizer.step()``. A step pre-hook saves each scaled group's ``lr`` (the value the
scheduler wrote) and multiplies it by the factor; a step post-hook restores the saved
value. Schedulers (closed-form or chainable, e.g. ``CosineAnnealingLR``, ``LambdaLR``,
``OneCycleLR``) therefore only ever read and write the unscaled rate, and the effective
rate of module i is exactly ``scheduler_lr * f_i``. ``param_group["lr"]`` outside a step is
the scheduler's value; ``assignments()`` shows the factor and the effective rate.
This needs ``register_step_pre_hook``/``register_step_post_hook`` (any
``torch.optim.Optimizer``); call ``remove()`` to detach. Untuned groups get factor 1.

Norm layers (``norm_follows=True``). The released code gives each BatchNorm2d the rate of
"its" conv: by name (``bn1`` -> ``conv1``, the default) or by order (the conv registered just
before it); a BatchNorm whose conv is not tuned (the first layer) keeps the base rate. Here
the order rule, for every norm type: a norm layer follows the nearest *weight layer*
(any non-norm module with a >= 2-D ``weight``: Linear, ConvNd, Embedding, ...) registered
before it in ``model.named_modules()``, i.e. the layer whose output it normalises; a norm
registered before any weight layer follows the first one after it. It takes that layer's
factor when the layer is tuned and factor 1 otherwise (first/last layer, too few
eigenvalues, an Embedding, not in the optimizer, alpha undefined), exactly as the layer does.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from ._module_alpha import module_param_groups
from .alphadecay import _AlphaMapScheduler

__all__ = ["TempBalance"]

NORM_TYPES = tuple(getattr(nn, n) for n in ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm",
                                             "LayerNorm", "GroupNorm", "RMSNorm") if hasattr(nn, n))


def is_norm(module: nn.Module) -> bool:
    """A torch norm layer (``NORM_TYPES``) or a class named ``*Norm`` with a 1-D ``weight``."""
    if isinstance(module, NORM_TYPES):
        return True
    w = getattr(module, "weight", None)
    return type(module).__name__.endswith("Norm") and isinstance(w, nn.Parameter) and w.dim() == 1


def norm_links(model: nn.Module) -> list[tuple[str, nn.Module, str | None]]:
    """(norm name, norm, name of the weight layer it follows) for every norm with parameters.

    Registration order: the nearest weight layer (non-norm module with a >= 2-D ``weight``)
    before the norm, or the first one after it when there is none before; None when the
    model has no weight layer.
    """
    links: list[list] = []
    last = None
    pending: list[list] = []  # norms seen before the first weight layer
    for name, m in model.named_modules():
        if is_norm(m):
            if any(True for _ in m.parameters(recurse=False)):
                link = [name, m, last]
                links.append(link)
                if last is None:
                    pending.append(link)
        elif isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() >= 2:
            last = name
            for link in pending:
                link[2] = name
            pending = []
    return [tuple(link) for link in links]


class TempBalance(_AlphaMapScheduler):
    """Per-module learning-rate factors from Hill alpha (Zhou et al., NeurIPS 2023).

    Args as ``AlphaDecay`` (defaults s1 = 0.5, s2 = 1.5, every = 200), plus

        norm_follows: norm layers (BatchNorm1d/2d/3d, SyncBatchNorm, LayerNorm, GroupNorm,
            RMSNorm, and any class named ``*Norm`` with a 1-D ``weight``) take the factor of
            the weight layer they follow (module docstring); False gives them factor 1.

    ``.step()`` is called once per optimizer step, after it.

    Groups. Each tuned module's weight needs a group of its own (as AlphaDecay). A norm that
    follows a tuned layer needs its parameters in groups holding nothing else (its weight and
    bias may share one group or sit in one each); otherwise the norm keeps factor 1, its
    ``assignments()`` status says why and the constructor warns once naming a norm and its
    group; with ``split_groups=True`` the constructor instead moves the norm's
    parameters into a new group (same options, appended with ``add_param_group``; split the
    same way before ``optimizer.load_state_dict`` on resume). ``TempBalance.param_groups_for``
    builds groups that need no split. Norms that follow an untuned layer are never required to
    have a group of their own.

    Limits: the pairing is by registration order, not by the forward graph. In pre-norm
    blocks (pre-LN transformers, pre-activation ResNets such as the paper's WideResNet) a
    norm is registered before the layer it feeds, so it follows the previous layer (the last
    writer to the residual stream), where the released code's name rule would pair a
    pre-activation ``bn1`` with ``conv1``. Norm classes outside the list above (InstanceNorm,
    custom classes with other names) keep factor 1. The bias of a tuned module that sits in a
    group of its own, apart from its weight, keeps factor 1.
    """

    key = "lr"

    def __init__(self, optimizer, model: nn.Module, every: int = 200, s1: float = 0.5, s2: float = 1.5, *,
                 preserve_mean: bool = False, exclude_first: bool = True, exclude_last: bool = True,
                 min_eigs: int = 50, split_groups: bool = False, norm_follows: bool = True):
        if not isinstance(norm_follows, bool):
            raise ValueError(f"norm_follows must be a bool, got {norm_follows!r}")
        if not (hasattr(optimizer, "register_step_pre_hook") and hasattr(optimizer, "register_step_post_hook")):
            raise TypeError(f"TempBalance needs a torch.optim.Optimizer with step hooks, got {type(optimizer).__name__}")
        self._saved: dict[int, float] = {}
        self.norm_follows = norm_follows
        super().__init__(optimizer, model, every=every, s1=s1, s2=s2, preserve_mean=preserve_mean,
                         exclude_first=exclude_first, exclude_last=exclude_last, min_eigs=min_eigs,
                         split_groups=split_groups)
        self._link_norms(split_groups)
        self._handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    # -- norm layers -----------------------------------------------------------------------
    def _link_norms(self, split: bool) -> None:
        """Fill ``_follows`` / ``_norm_status`` for every norm and ``_norm_groups`` for the scaled ones."""
        self._follows: dict[str, str | None] = {}
        self._norm_status: dict[str, str] = {}
        self._norm_groups: dict[str, list[int]] = {}
        self._shared: dict[str, str] = {}
        for name, m, leader in norm_links(self.model):
            self._follows[name] = leader
            if not self.norm_follows:
                self._norm_status[name] = "excluded: norm_follows=False"
            elif leader is None:
                self._norm_status[name] = "excluded: no weight layer to follow"
            elif leader not in self._group_of:
                self._norm_status[name] = f"excluded: follows {leader!r}, which is not tuned"
            else:
                groups = self._locate_norm(name, m, split)
                if groups:
                    self._norm_status[name] = "follows"
                    self._norm_groups[name] = groups
                elif name in self._shared:
                    self._norm_status[name] = "excluded: shares a param group with other parameters"
                else:
                    self._norm_status[name] = "excluded: not in the optimizer"
        if self._shared:
            first = next(iter(self._shared.values()))
            warnings.warn(
                f"TempBalance: {len(self._shared)} norm layer(s) keep factor 1 because their parameters share a "
                f"param group with other parameters (e.g. {first}); build groups with "
                f"TempBalance.param_groups_for(model, weight_decay) or pass split_groups=True to let them follow "
                f"their layer, or norm_follows=False to silence this", stacklevel=3)
        clash = {gi for gs in self._norm_groups.values() for gi in gs} & set(self._group_of.values())
        if clash:  # cannot happen with groups located as above; guards the hooks against double scaling
            raise ValueError(f"param group(s) {sorted(clash)} hold both a tuned module and a norm layer")

    def _locate_norm(self, name: str, module: nn.Module, split: bool) -> list[int]:
        """Indices of the groups holding the norm's parameters, each holding nothing else."""
        pg = self.optimizer.param_groups
        own = {id(p) for p in module.parameters(recurse=False)}
        out = []
        for gi in [i for i, g in enumerate(pg) if any(id(p) in own for p in g["params"])]:
            group = pg[gi]
            others = [p for p in group["params"] if id(p) not in own]
            if others:
                if not split:
                    self._shared[name] = (f"norm layer {name!r} (follows {self._follows[name]!r}) shares param "
                                          f"group {gi} ({group.get('name', 'unnamed')!r}) with {len(others)} "
                                          f"other parameter(s)")
                    return []
                if not hasattr(self.optimizer, "add_param_group"):
                    raise TypeError(
                        f"cannot split groups of {type(self.optimizer).__name__}: it has no add_param_group")
                keep = [id(p) not in own for p in group["params"]]
                new = {k: v for k, v in group.items() if k != "params"}
                new.update(params=[p for p, k in zip(group["params"], keep) if not k], name=name)
                if "param_names" in group:  # torch >= 2.6 checks that every group or none carries names
                    new["param_names"] = [n for n, k in zip(group["param_names"], keep) if not k]
                    group["param_names"] = [n for n, k in zip(group["param_names"], keep) if k]
                group["params"] = others
                self.optimizer.add_param_group(new)
                gi = len(pg) - 1
            out.append(gi)
        return out

    def _norm_factor(self, name: str) -> float:
        return self._factor.get(self._follows[name], 1.0) if name in self._norm_groups else 1.0

    def norm_factors(self) -> dict[str, float]:
        """Current learning-rate factor of each norm layer (1 for those that follow no tuned layer)."""
        return {n: self._norm_factor(n) for n in self._follows}

    @staticmethod
    def param_groups_for(model: nn.Module, weight_decay: float, **options) -> list[dict]:
        """``module_param_groups`` with, in addition, one group per norm layer (before "untuned").

        Every group gets ``weight_decay`` and ``options`` (e.g. ``lr=0.1``), norm groups too;
        ``exclude_first``, ``exclude_last``, ``min_eigs`` are passed on to the selection.
        """
        groups = module_param_groups(model, weight_decay, **options)
        rest = groups.pop() if groups and groups[-1]["name"] == "untuned" else None
        if rest is not None:
            opts = {k: v for k, v in rest.items() if k not in ("params", "name")}
            left = {id(p) for p in rest["params"]}
            for name, m, _ in norm_links(model):
                ps = [p for p in m.parameters(recurse=False) if id(p) in left]
                left -= {id(p) for p in ps}
                if ps:
                    groups.append({"params": ps, "name": name, **opts})
            rest["params"] = [p for p in rest["params"] if id(p) in left]
            if rest["params"]:
                groups.append(rest)
        return groups

    # -- the hooks ---------------------------------------------------------------------------
    # The scheduler owns param_group["lr"]; the factor lives here and is applied in the hooks.
    def _apply(self) -> None:
        return None

    def _value(self, name: str) -> float:
        gi = self._group_of[name]
        return float(self.optimizer.param_groups[gi]["lr"]) * self._factor.get(name, 1.0)

    def _scaled_groups(self):
        """(group index, factor) for every group the hooks scale."""
        for name, gi in self._group_of.items():
            yield gi, self._factor.get(name, 1.0)
        for name, gis in self._norm_groups.items():
            f = self._norm_factor(name)
            for gi in gis:
                yield gi, f

    def _pre(self, optimizer, args, kwargs) -> None:
        self._post(optimizer, args, kwargs)  # a previous step that raised left its rates scaled
        for gi, f in self._scaled_groups():
            g = optimizer.param_groups[gi]
            self._saved[gi] = g["lr"]
            g["lr"] = g["lr"] * f

    def _post(self, optimizer, args, kwargs) -> None:
        for gi, lr in self._saved.items():
            optimizer.param_groups[gi]["lr"] = lr
        self._saved = {}

    # -- reporting and checkpointing -----------------------------------------------------------
    def factors(self) -> dict[str, float]:
        """Current learning-rate factor of each tuned module (norm layers: ``norm_factors``)."""
        return dict(self._factor)

    def assignments(self, as_frame: bool = True):
        """Table of ``AlphaDecay.assignments`` plus the norm layers, in registration order.

        Columns: name, num_evals, alpha, status, group, base (the group's lr now, i.e. the
        scheduler's), factor, lr (= base * factor during the step), follows (for a norm layer
        the weight layer it follows, else None). Norm rows have num_evals 0, alpha NaN and
        status "follows" (scaled) or "excluded: <reason>" (factor 1).
        """
        pg = self.optimizer.param_groups
        recs = super().assignments(as_frame=False)
        for r in recs:
            gi = r["group"]
            r["base"] = float(pg[gi]["lr"]) if gi is not None else float("nan")
            r["lr"] = r["base"] * r["factor"]
            r["follows"] = None
        modules = dict(self.model.named_modules())
        for name, leader in self._follows.items():
            gis = self._norm_groups.get(name)
            if gis is None:
                own = {id(p) for p in modules[name].parameters(recurse=False)}
                gis = [i for i, g in enumerate(pg) if any(id(p) in own for p in g["params"])]
            gi = gis[0] if gis else None
            base = float(pg[gi]["lr"]) if gi is not None else float("nan")
            fac = self._norm_factor(name)
            recs.append(dict(name=name, num_evals=0, alpha=float("nan"), status=self._norm_status[name], group=gi,
                             base=base, factor=fac, lr=base * fac, follows=leader))
        order = {n: i for i, n in enumerate(modules)}
        recs.sort(key=lambda r: order.get(r["name"], len(order)))
        if not as_frame:
            return recs
        import pandas as pd

        return pd.DataFrame.from_records(recs)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["norm_groups"] = {n: list(g) for n, g in self._norm_groups.items()}
        state["config"]["norm_follows"] = self.norm_follows
        return state

    def load_state_dict(self, state: dict) -> None:
        """As ``AlphaDecay.load_state_dict``; the norm layers must map to the same groups."""
        saved = state.get("norm_groups")
        if saved is not None and {n: list(g) for n, g in saved.items()} != self._norm_groups:
            raise ValueError("state_dict maps norm layers to different param groups; build this TempBalance "
                             "with the same norm_follows and split groups the same way first")
        super().load_state_dict(state)

    def remove(self) -> None:
        """Detach the step hooks (the groups keep the scheduler's unscaled rate)."""
        for h in self._handles:
            h.remove()
        self._handles = []
