"""AlphaDecay: module-wise weight decay from the heavy-tail exponent of each weight matrix.

He et al., "AlphaDecay: Module-wise Weight Decay for Heavy-Tailed Balancing in LLMs",
arXiv 2506.14562 (code ``hed-ucas/AlphaDecay``). For every tuned module i (see
``spectralens.optim._module_alpha`` for the selection, the ESD and the Hill estimator):

    wd_i = wd0_g * (s1 + (alpha_i - alpha_min) / (alpha_max - alpha_min) * (s2 - s1))

where wd0_g is the ``weight_decay`` of module i's param group when ``AlphaDecay`` was
created. Lighter-tailed modules (higher alpha) get more decay. Defaults are the released
settings, s1 = 0.6666, s2 = 3 (Adam); the mean decay then ends up above wd0, as in the
paper. ``preserve_mean=True`` divides the factors by their mean (mean decay = wd0).

Usage::

    groups = AlphaDecay.param_groups_for(model, weight_decay=0.1, lr=1e-3)
    opt = torch.optim.AdamW(groups)
    ad = AlphaDecay(opt, model)          # assigns once now
    for batch in data:
        loss.backward(); opt.step(); opt.zero_grad()
        ad.step()                         # recomputes every ``every`` optimizer steps

It wraps any optimizer whose ``param_groups`` hold a ``weight_decay`` (Adam, AdamW, SGD,
Muon, the hybrid): it only rewrites ``param_group["weight_decay"]``. Each tuned module's
weight must sit in its own group (with at most its bias); otherwise a ValueError says so,
or ``split_groups=True`` splits the group. Untuned groups are never touched.

Cost: one float32 SVD per tuned matrix at each recompute (``overhead_s`` keeps the total).
"""
from __future__ import annotations

import logging
import math
import time

from torch import nn

from ._module_alpha import ModuleAlpha, alpha_factors, locate_groups, module_alphas, module_param_groups, tuned_modules

__all__ = ["AlphaDecay"]

log = logging.getLogger(__name__)


def _check_common(every, s1, s2, min_eigs):
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise ValueError(f"every must be a positive int, got {every!r}")
    for nm, v in (("s1", s1), ("s2", s2)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{nm} must be a finite number >= 0, got {v!r}")
    if s2 < s1:
        raise ValueError(f"s2 must be >= s1, got s1={s1}, s2={s2}")
    if not isinstance(min_eigs, int) or min_eigs < 0:
        raise ValueError(f"min_eigs must be an int >= 0, got {min_eigs!r}")


class _AlphaMapScheduler:
    """Shared machinery: writes base_g * f_i into ``param_groups[g][key]`` for tuned modules."""

    key = "weight_decay"

    def __init__(self, optimizer, model: nn.Module, *, every: int, s1: float, s2: float,
                 preserve_mean: bool, exclude_first: bool, exclude_last: bool, min_eigs: int,
                 split_groups: bool):
        _check_common(every, s1, s2, min_eigs)
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"optimizer must have param_groups, got {type(optimizer).__name__}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self.optimizer, self.model = optimizer, model
        self.every, self.s1, self.s2, self.preserve_mean = every, float(s1), float(s2), bool(preserve_mean)
        self._select = dict(exclude_first=exclude_first, exclude_last=exclude_last, min_eigs=min_eigs)
        rows = tuned_modules(model, **self._select)
        tuned = [(n, m) for n, m, s in rows if s == "tuned"]
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        in_opt = [(n, m) for n, m in tuned if id(m.weight) in held]  # frozen layers are skipped
        if tuned and not in_opt:
            raise ValueError(f"none of the {len(tuned)} tunable modules of the model has its weight in the optimizer")
        self._group_of = locate_groups(optimizer, in_opt, split=split_groups)
        for gi in self._group_of.values():
            if self.key not in optimizer.param_groups[gi]:
                raise ValueError(f"param group {gi} has no {self.key!r}; this optimizer cannot be driven")
        self._base = {gi: float(optimizer.param_groups[gi][self.key]) for gi in self._group_of.values()}
        self._step = 0
        self._rows: list[ModuleAlpha] = []
        self._factor: dict[str, float] = {}
        self.overhead_s = 0.0
        self.recompute()

    # -- the map -------------------------------------------------------------------------
    def recompute(self) -> None:
        """Refit alpha for every tuned module and rewrite the groups (also done at init)."""
        t0 = time.perf_counter()
        self._rows = [r if r.status != "tuned" or r.name in self._group_of
                      else ModuleAlpha(r.name, r.num_evals, r.alpha, "excluded: not in the optimizer")
                      for r in module_alphas(self.model, **self._select)]
        tuned = [r for r in self._rows if r.status == "tuned" and r.name in self._group_of]
        f = alpha_factors([r.alpha for r in tuned], self.s1, self.s2, preserve_mean=self.preserve_mean)
        self._factor = {r.name: fi for r, fi in zip(tuned, f)}
        self._apply()
        self.overhead_s += time.perf_counter() - t0
        if log.isEnabledFor(logging.INFO):
            parts = ", ".join(f"{n}: alpha={a.alpha:.2f} {self.key}={self._value(n):.3g}"
                              for n, a in ((r.name, r) for r in tuned))
            log.info("%s step %d: %s", type(self).__name__, self._step, parts)

    def _value(self, name: str) -> float:
        gi = self._group_of[name]
        return self._base[gi] * self._factor.get(name, 1.0)

    def _apply(self) -> None:
        for name, gi in self._group_of.items():
            self.optimizer.param_groups[gi][self.key] = self._value(name)

    def step(self) -> None:
        """Call once per optimizer step (after it); recomputes every ``every`` steps."""
        self._step += 1
        if self._step % self.every == 0:
            self.recompute()

    # -- reporting -----------------------------------------------------------------------
    def assignments(self, as_frame: bool = True):
        """Per-module table: name, num_evals, alpha, status, group, base, factor, value.

        A pandas DataFrame (``as_frame=True``, pandas imported lazily) or a list of dicts.
        Excluded modules show status = the reason, factor 1, and their group's current value.
        """
        recs = []
        weights = {n: m.weight for n, m in self.model.named_modules() if getattr(m, "weight", None) is not None}
        for r in self._rows:
            gi = self._group_of.get(r.name)
            if gi is not None:
                base = self._base[gi]
            else:  # excluded: report the value its weight's group holds now
                w = weights.get(r.name)
                gi = next((i for i, g in enumerate(self.optimizer.param_groups) if any(p is w for p in g["params"])), None)
                base = float(self.optimizer.param_groups[gi][self.key]) if gi is not None else float("nan")
            fac = self._factor.get(r.name, 1.0)
            recs.append(dict(name=r.name, num_evals=r.num_evals, alpha=r.alpha, status=r.status, group=gi,
                             base=base, factor=fac, **{self.key: base * fac}))
        if not as_frame:
            return recs
        import pandas as pd

        return pd.DataFrame.from_records(recs)

    # -- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self._step, "base": dict(self._base), "factor": dict(self._factor),
            "rows": [(r.name, r.num_evals, r.alpha, r.status) for r in self._rows],
            "group_of": dict(self._group_of), "overhead_s": self.overhead_s,
            "config": dict(every=self.every, s1=self.s1, s2=self.s2, preserve_mean=self.preserve_mean, **self._select),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the step counter, base values and last assignment, and rewrite the groups."""
        if set(state["group_of"]) != set(self._group_of):
            missing = sorted(set(state["group_of"]) ^ set(self._group_of))
            raise ValueError(f"state_dict was saved for different tuned modules (differ: {missing[:5]})")
        if dict(state["group_of"]) != self._group_of:
            raise ValueError("state_dict maps modules to different param groups; split groups the same way first")
        self._step = int(state["step"])
        self._base = {int(k): float(v) for k, v in state["base"].items()}
        self._factor = {k: float(v) for k, v in state["factor"].items()}
        self._rows = [ModuleAlpha(*r) for r in state["rows"]]
        self.overhead_s = float(state.get("overhead_s", 0.0))
        cfg = state.get("config", {})
        self.every = int(cfg.get("every", self.every))
        self._apply()


class AlphaDecay(_AlphaMapScheduler):
    """Module-wise weight decay from Hill alpha (He et al., arXiv 2506.14562).

    Args:
        optimizer: any optimizer with ``param_groups`` carrying ``weight_decay``.
        model: the module whose Linear/Conv2d weights are fitted.
        every: recompute every this many optimizer steps (paper: 500).
        s1, s2: factor range (released code: 0.6666 and 3 for Adam, 5 for others).
        preserve_mean: divide factors by their mean so the average decay is wd0.
        exclude_first, exclude_last, min_eigs: the paper's exclusions (first Linear, LM head,
            fewer than 50 eigenvalues); excluded modules keep their group's decay.
        split_groups: split a shared param group instead of raising.
    """

    key = "weight_decay"

    def __init__(self, optimizer, model: nn.Module, every: int = 500, s1: float = 0.6666, s2: float = 3.0, *,
                 preserve_mean: bool = False, exclude_first: bool = True, exclude_last: bool = True,
                 min_eigs: int = 50, split_groups: bool = False):
        super().__init__(optimizer, model, every=every, s1=s1, s2=s2, preserve_mean=preserve_mean,
                         exclude_first=exclude_first, exclude_last=exclude_last, min_eigs=min_eigs,
                         split_groups=split_groups)

    @staticmethod
    def param_groups_for(model: nn.Module, weight_decay: float, **options) -> list[dict]:
        """One param group per tuned module (see ``module_param_groups``)."""
        return module_param_groups(model, weight_decay, **options)
