"""AWD: adaptive weight decay from the global gradient-to-weight norm ratio.

Ghiasi et al., "Improving Robustness with Adaptive Weight Decay", NeurIPS 2023 (the
baseline in AlphaDecay, arXiv 2506.14562). At every step, over ALL parameters of the
optimizer that have a gradient:

    lambda_t   = lambda_awd * ||grad||_2 / (||w||_2 + 1e-8)        (global norms)
    lambda_bar = 0.1 * lambda_bar + 0.9 * lambda_t                 (lambda_bar starts at 0)

and ``weight_decay`` of EVERY param group is set to lambda_bar. Because it reads the
gradients, ``AWD.step()`` goes AFTER ``loss.backward()`` and BEFORE ``optimizer.step()``.
"""
from __future__ import annotations

import math

import torch

__all__ = ["AWD"]


class AWD:
    """Adaptive weight decay (Ghiasi et al. 2023); one global decay for every group.

    Args:
        optimizer: any optimizer whose param groups have ``weight_decay``.
        lambda_awd: the AWD hyper-parameter (paper's LLaMA runs: 0.1... tune per task).
        momentum: EMA weight of the previous value (0.1 in the released code).
    """

    def __init__(self, optimizer, lambda_awd: float = 0.1, momentum: float = 0.1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"optimizer must have param_groups, got {type(optimizer).__name__}")
        if not (isinstance(lambda_awd, (int, float)) and math.isfinite(lambda_awd) and lambda_awd >= 0):
            raise ValueError(f"lambda_awd must be a finite number >= 0, got {lambda_awd!r}")
        if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        for i, g in enumerate(optimizer.param_groups):
            if "weight_decay" not in g:
                raise ValueError(f"param group {i} has no 'weight_decay'")
        self.optimizer, self.lambda_awd, self.momentum = optimizer, float(lambda_awd), float(momentum)
        self.lambda_bar = 0.0
        self._step = 0
        self._history: list[tuple[int, float, float]] = []

    @torch.no_grad()
    def step(self) -> float:
        """Update lambda_bar from the current gradients and write it into every group."""
        gsq = wsq = torch.zeros((), dtype=torch.float64)
        found = False
        for g in self.optimizer.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                found = True
                gsq = gsq + p.grad.detach().double().square().sum().cpu()
                wsq = wsq + p.detach().double().square().sum().cpu()
        if not found:
            raise RuntimeError("AWD.step() found no gradients: call it after loss.backward() and before optimizer.step()")
        lam_t = self.lambda_awd * float(gsq.sqrt()) / (float(wsq.sqrt()) + 1e-8)
        self.lambda_bar = self.momentum * self.lambda_bar + (1.0 - self.momentum) * lam_t
        for g in self.optimizer.param_groups:
            g["weight_decay"] = self.lambda_bar
        self._step += 1
        self._history.append((self._step, lam_t, self.lambda_bar))
        return self.lambda_bar

    def assignments(self, as_frame: bool = True):
        """History of (step, lambda_t, lambda_bar)."""
        recs = [dict(step=s, lambda_t=a, weight_decay=b) for s, a, b in self._history]
        if not as_frame:
            return recs
        import pandas as pd

        return pd.DataFrame.from_records(recs, columns=["step", "lambda_t", "weight_decay"])

    def state_dict(self) -> dict:
        return {"lambda_bar": self.lambda_bar, "step": self._step, "lambda_awd": self.lambda_awd,
                "momentum": self.momentum}

    def load_state_dict(self, state: dict) -> None:
        self.lambda_bar, self._step = float(state["lambda_bar"]), int(state["step"])
        for g in self.optimizer.param_groups:
            g["weight_decay"] = self.lambda_bar
