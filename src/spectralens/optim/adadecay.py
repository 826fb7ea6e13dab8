"""AdaDecay: weight decay per module from its standardised gradient norm within a block.

Nakamura & Hong, "Adaptive Weight Decay for Deep Neural Networks", IEEE Access 2019, in the
module-wise form used as a baseline by AlphaDecay (arXiv 2506.14562). Every step, for the
tuned modules (same selection as AlphaDecay, without the eigenvalue-count filter), grouped
into blocks (default: the name up to its first integer component, ``blocks.3.attn.q`` ->
``blocks.3``; names without one form one block):

    g_i = ||grad W_i||_F,   z_i = (g_i - mean_block(g)) / std_block(g)   (population std;
                                                                          z = 0 if std = 0)
    wd_i = wd0_i * 2 / (1 + exp(-4 z_i))

so a module whose gradient is large for its block gets up to 2x decay. ``AdaDecay.step()``
reads gradients: call it AFTER ``loss.backward()`` and BEFORE ``optimizer.step()``.
Each tuned module needs its own param group (see ``module_param_groups``).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from torch import nn

from ._module_alpha import locate_groups, tuned_modules

__all__ = ["AdaDecay", "default_block"]

_INT = re.compile(r"^\d+$")


def default_block(name: str) -> str:
    """'blocks.3.attn.q' -> 'blocks.3'; a name with no integer component -> ''."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if _INT.match(p):
            return ".".join(parts[: i + 1])
    return ""


class AdaDecay:
    """Module-wise adaptive weight decay (see module docstring).

    Args:
        optimizer: param groups with ``weight_decay``, one group per tuned module.
        model: the module whose Linear/Conv2d weights are tuned.
        slope: the sigmoid slope (4 in the paper).
        block_of: maps a module name to its block key.
        exclude_first, exclude_last: exclusions as in AlphaDecay.
        split_groups: split shared groups instead of raising.
    """

    def __init__(self, optimizer, model: nn.Module, slope: float = 4.0, *,
                 block_of: Callable[[str], str] = default_block, exclude_first: bool = True,
                 exclude_last: bool = True, split_groups: bool = False):
        if not (isinstance(slope, (int, float)) and math.isfinite(slope) and slope > 0):
            raise ValueError(f"slope must be a finite number > 0, got {slope!r}")
        if not callable(block_of):
            raise TypeError(f"block_of must be callable, got {type(block_of).__name__}")
        self.optimizer, self.model, self.slope, self.block_of = optimizer, model, float(slope), block_of
        rows = tuned_modules(model, exclude_first=exclude_first, exclude_last=exclude_last, min_eigs=0)
        self._modules = [(n, m) for n, m, s in rows if s == "tuned"]
        self._group_of = locate_groups(optimizer, self._modules, split=split_groups)
        self._base = {gi: float(optimizer.param_groups[gi]["weight_decay"]) for gi in self._group_of.values()}
        self._last: dict[str, tuple[float, float, float]] = {}
        self._step = 0

    @torch.no_grad()
    def step(self) -> None:
        """Recompute every tuned module's decay from the current gradients."""
        norms = {}
        for n, m in self._modules:
            if m.weight.grad is not None:
                norms[n] = float(m.weight.grad.detach().double().norm())
        if self._modules and not norms:
            raise RuntimeError("AdaDecay.step() found no gradients: call it after backward() and before optimizer.step()")
        blocks: dict[str, list[str]] = {}
        for n in norms:
            blocks.setdefault(self.block_of(n), []).append(n)
        for names in blocks.values():
            g = torch.tensor([norms[n] for n in names], dtype=torch.float64)
            std = float(g.std(unbiased=False)) if len(names) > 1 else 0.0
            z = (g - g.mean()) / std if std > 0 else torch.zeros_like(g)
            for n, zi in zip(names, z.tolist()):
                gi = self._group_of[n]
                wd = self._base[gi] * 2.0 / (1.0 + math.exp(-self.slope * zi))
                self.optimizer.param_groups[gi]["weight_decay"] = wd
                self._last[n] = (norms[n], zi, wd)
        self._step += 1

    def assignments(self, as_frame: bool = True):
        """Last per-module (name, block, grad_norm, z, weight_decay)."""
        recs = [dict(name=n, block=self.block_of(n), grad_norm=v[0], z=v[1], weight_decay=v[2])
                for n, v in self._last.items()]
        if not as_frame:
            return recs
        import pandas as pd

        return pd.DataFrame.from_records(recs, columns=["name", "block", "grad_norm", "z", "weight_decay"])

    def state_dict(self) -> dict:
        return {"step": self._step, "base": dict(self._base), "last": dict(self._last)}

    def load_state_dict(self, state: dict) -> None:
        self._step = int(state["step"])
        self._base = {int(k): float(v) for k, v in state["base"].items()}
        self._last = {k: tuple(v) for k, v in state["last"].items()}
        for n, (_, _, wd) in self._last.items():
            self.optimizer.param_groups[self._group_of[n]]["weight_decay"] = wd
