"""Hugging Face ``transformers.Trainer`` callback running a :class:`SpectralMonitor`.

    from spectralens.monitor.integrations.hf import SpectralMonitorCallback
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[SpectralMonitorCallback(every=100)])
    trainer.train()   # writes <output_dir>/spectral/monitor.jsonl; then `spectralens report <output_dir>/spectral`

The monitor is created at ``on_train_begin`` on the Trainer's model, ``monitor.step()`` runs at
``on_pre_optimizer_step``: after the last micro-batch's backward (gradient accumulation is
covered: the hooks accumulate every micro-batch of the step) and before ``optimizer.step()`` and
``model.zero_grad()``. Gradient clipping has already run there; nr, st and the ratio are
scale-invariant, only ``grad_fro``/``grad_op`` are the clipped values. Needs transformers >= 4.44
(the ``on_pre_optimizer_step`` event).
"""
from __future__ import annotations

import os

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised by a test that hides transformers
    raise ImportError("spectralens.monitor.integrations.hf needs transformers: "
                      "pip install spectralens[transformers]") from exc

from ..core import DEFAULT_EVERY, SpectralMonitor

if not hasattr(TrainerCallback, "on_pre_optimizer_step"):  # pragma: no cover
    raise ImportError("spectralens.monitor.integrations.hf needs transformers>=4.44 (on_pre_optimizer_step): "
                      "pip install -U spectralens[transformers]")

__all__ = ["SpectralMonitorCallback"]


class SpectralMonitorCallback(TrainerCallback):
    """Args: ``every``, ``run_dir`` (default ``<args.output_dir>/spectral``; ``False`` for none)
    and any other :class:`SpectralMonitor` keyword (``layers``, ``sinks``, ``alpha_every``...).
    After training, ``callback.monitor`` holds the (closed) monitor: ``records()``, ``summary()``."""

    def __init__(self, every: int = DEFAULT_EVERY, run_dir: str | os.PathLike | None | bool = None, **monitor_kwargs):
        self.every, self.run_dir, self.monitor_kwargs = every, run_dir, monitor_kwargs
        self.monitor: SpectralMonitor | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("SpectralMonitorCallback: the Trainer passed no model to on_train_begin")
        run_dir = self.run_dir
        if run_dir is None:
            run_dir = os.path.join(args.output_dir, "spectral")
        if self.monitor is not None:
            self.monitor.close()
        self.monitor = SpectralMonitor(model, every=self.every, run_dir=run_dir or None, **self.monitor_kwargs)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.step()

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.close()
