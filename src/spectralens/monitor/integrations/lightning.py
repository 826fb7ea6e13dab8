"""Lightning callback running a :class:`SpectralMonitor`.

    from spectralens.monitor.integrations.lightning import SpectralMonitorCallback
    trainer = lightning.Trainer(callbacks=[SpectralMonitorCallback(every=100)])

The monitor is created at ``on_fit_start`` on the LightningModule; ``monitor.step()`` runs at
``on_before_optimizer_step``, i.e. after the backward of the last accumulated batch
(``accumulate_grad_batches`` is covered) and before the optimizer step and ``zero_grad``.
Lightning calls this hook before gradient clipping. With several optimizers (manual
optimisation, GANs) the hook fires once per optimizer step: pass ``optimizer_idx`` to monitor
only one of them. Under DDP the monitor all-reduces the Grams; only global rank 0 writes.
Default ``run_dir``: ``<trainer.default_root_dir>/spectral``.
"""
from __future__ import annotations

import os

try:
    import lightning.pytorch as pl
except ImportError:  # the standalone package
    try:
        import pytorch_lightning as pl
    except ImportError as exc:  # pragma: no cover - exercised by a test that hides lightning
        raise ImportError("spectralens.monitor.integrations.lightning needs lightning: "
                          "pip install spectralens[lightning]") from exc

from ..core import DEFAULT_EVERY, SpectralMonitor

__all__ = ["SpectralMonitorCallback"]


class SpectralMonitorCallback(pl.Callback):
    """Args: ``every``, ``run_dir`` (``False`` for none), ``optimizer_idx`` (monitor only the
    optimizer at this position in ``trainer.optimizers``; None: every call) and any other
    :class:`SpectralMonitor` keyword. After fitting, ``callback.monitor`` holds the monitor."""

    def __init__(self, every: int = DEFAULT_EVERY, run_dir: str | os.PathLike | None | bool = None,
                 optimizer_idx: int | None = None, **monitor_kwargs):
        self.every, self.run_dir, self.optimizer_idx = every, run_dir, optimizer_idx
        self.monitor_kwargs = monitor_kwargs
        self.monitor: SpectralMonitor | None = None

    def on_fit_start(self, trainer, pl_module):
        run_dir = self.run_dir
        if run_dir is None:
            run_dir = os.path.join(trainer.default_root_dir, "spectral")
        if self.monitor is not None:
            self.monitor.close()
        self.monitor = SpectralMonitor(pl_module, every=self.every, run_dir=run_dir or None, **self.monitor_kwargs)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.monitor is None:
            return
        if self.optimizer_idx is not None:
            target = list(trainer.optimizers)[self.optimizer_idx]
            if optimizer is not target and getattr(optimizer, "_optimizer", None) is not target:
                return
        self.monitor.step()

    def on_fit_end(self, trainer, pl_module):
        if self.monitor is not None:
            self.monitor.close()
