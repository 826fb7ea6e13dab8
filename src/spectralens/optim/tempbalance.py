"""TempBalance: per-module learning-rate factors from the heavy-tail exponent.

Zhou et al., "Temperature Balancing, Layer-wise Weight Analysis, and Neural Network
Training", NeurIPS 2023 (code ``YefanZhou/TempBalance``). Same module selection, ESD and
Hill alpha as AlphaDecay (``spectralens.optim._module_alpha``), mapped onto the LEARNING RATE:

    lr_i(t) = lr_sched(t) * (s1 + (alpha_i - alpha_min) / (alpha_max - alpha_min) * (s2 - s1))

with s1 = 0.5, s2 = 1.5: higher alpha (under-trained) gets a larger rate. Recomputed every
``every`` optimizer steps (paper: once per epoch for vision, 200 steps for language).

How it composes with LR schedulers: the factor is applied ONLY for the duration of
``optimizer.step()``. A step pre-hook saves each tuned group's ``lr`` (the value the
scheduler wrote) and multiplies it by the factor; a step post-hook restores the saved
value. Schedulers (closed-form or chainable, e.g. ``CosineAnnealingLR``, ``LambdaLR``,
``OneCycleLR``) therefore only ever read and write the unscaled rate, and the effective
rate of module i is exactly ``scheduler_lr * f_i``. ``param_group["lr"]`` outside a step is
the scheduler's value; ``assignments()`` shows the factor and the effective rate.
This needs ``register_step_pre_hook``/``register_step_post_hook`` (any
``torch.optim.Optimizer``); call ``remove()`` to detach. Untuned groups get factor 1.
"""
from __future__ import annotations

from torch import nn

from .alphadecay import _AlphaMapScheduler

__all__ = ["TempBalance"]


class TempBalance(_AlphaMapScheduler):
    """Per-module learning-rate factors from Hill alpha (Zhou et al., NeurIPS 2023).

    Args as ``AlphaDecay``; defaults s1 = 0.5, s2 = 1.5, every = 200. ``.step()`` is called
    once per optimizer step, after it.
    """

    key = "lr"

    def __init__(self, optimizer, model: nn.Module, every: int = 200, s1: float = 0.5, s2: float = 1.5, *,
                 preserve_mean: bool = False, exclude_first: bool = True, exclude_last: bool = True,
                 min_eigs: int = 50, split_groups: bool = False):
        if not (hasattr(optimizer, "register_step_pre_hook") and hasattr(optimizer, "register_step_post_hook")):
            raise TypeError(f"TempBalance needs a torch.optim.Optimizer with step hooks, got {type(optimizer).__name__}")
        self._saved: dict[int, float] = {}
        super().__init__(optimizer, model, every=every, s1=s1, s2=s2, preserve_mean=preserve_mean,
                         exclude_first=exclude_first, exclude_last=exclude_last, min_eigs=min_eigs,
                         split_groups=split_groups)
        self._handles = [optimizer.register_step_pre_hook(self._pre), optimizer.register_step_post_hook(self._post)]

    # The scheduler owns param_group["lr"]; the factor lives here and is applied in the hooks.
    def _apply(self) -> None:
        return None

    def _value(self, name: str) -> float:
        gi = self._group_of[name]
        return float(self.optimizer.param_groups[gi]["lr"]) * self._factor.get(name, 1.0)

    def _pre(self, optimizer, args, kwargs) -> None:
        self._post(optimizer, args, kwargs)  # a previous step that raised left its rates scaled
        for name, gi in self._group_of.items():
            g = optimizer.param_groups[gi]
            self._saved[gi] = g["lr"]
            g["lr"] = g["lr"] * self._factor.get(name, 1.0)

    def _post(self, optimizer, args, kwargs) -> None:
        for gi, lr in self._saved.items():
            optimizer.param_groups[gi]["lr"] = lr
        self._saved = {}

    def factors(self) -> dict[str, float]:
        """Current learning-rate factor of each tuned module."""
        return dict(self._factor)

    def assignments(self, as_frame: bool = True):
        recs = super().assignments(as_frame=False)
        for r in recs:
            gi = r["group"]
            r["base"] = float(self.optimizer.param_groups[gi]["lr"]) if gi is not None else float("nan")
            r["lr"] = r["base"] * r["factor"]
        if not as_frame:
            return recs
        import pandas as pd

        return pd.DataFrame.from_records(recs)

    def remove(self) -> None:
        """Detach the step hooks (the groups keep the scheduler's unscaled rate)."""
        for h in self._handles:
            h.remove()
        self._handles = []
