"""Where monitor records go. A sink has ``write(records)`` and ``close()``.

One *record* is a flat dict for one layer at one monitored step (schema: :data:`RECORD_FIELDS`):

============  ======================================================================
step          index of the monitored step (number of ``monitor.step()`` calls before it)
layer, kind   qualified module name; layer kind (``spectralens.monitor.kinds.KINDS``)
family        linear, hf_conv1d, conv, embedding or norm
nr_grad       nr(G) = ||G||_*^2/||G||_F^2 of the weight gradient (norm gains: ||g||_1^2/||g||_2^2)
st_act        st(A) = ||A||_F^2/||A||_op^2 of the incoming activation over the step's batch
ratio         nr_grad / st_act
cond, cond2   nr >= st, nr >= 2 st (null when either is NaN)
grad_fro      ||G||_F;  grad_op: ||G||_op;  st_grad: st(G)
weight_op     ||W||_op;  st_weight: st(W);  alpha: Hill alpha of W's ESD (every K steps, else NaN)
act_fro2      ||A||_F^2;  act_op2: ||A||_op^2;  rows: rows of A (tokens, patches); calls: hook calls
hook_ms       time in the forward hook(s);  metric_ms: time computing this record
status        "ok", or why the numbers are NaN
============  ======================================================================

Sinks are only written by rank 0 under torch.distributed. Files are opened lazily on the
first write, so a sink that never receives a record never creates its file. JSON has no NaN:
the JSONL sink writes ``null``; the CSV sink writes an empty field.
"""
from __future__ import annotations

import abc
import csv
import json
import math
import os
from typing import Iterable

__all__ = ["RECORD_FIELDS", "Sink", "MemorySink", "JSONLSink", "CSVSink", "TensorBoardSink", "WandbSink"]

RECORD_FIELDS = ("step", "layer", "kind", "family", "nr_grad", "st_act", "ratio", "cond", "cond2",
                 "grad_fro", "grad_op", "st_grad", "weight_op", "st_weight", "alpha",
                 "act_fro2", "act_op2", "rows", "calls", "hook_ms", "metric_ms", "status")


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


class Sink(abc.ABC):
    """Base class: override ``write``; ``close`` is optional."""

    @abc.abstractmethod
    def write(self, records: list[dict]) -> None:
        """Write one monitored step's records (one dict per layer)."""

    def close(self) -> None:
        pass


class MemorySink(Sink):
    """Keeps records as a list of small dicts of Python scalars (no tensors).

    ``max_records`` bounds the list (oldest dropped first) for very long runs.
    """

    def __init__(self, max_records: int | None = None):
        if max_records is not None and max_records <= 0:
            raise ValueError(f"max_records must be positive or None, got {max_records}")
        self.max_records = max_records
        self.records: list[dict] = []

    def write(self, records: list[dict]) -> None:
        self.records.extend(dict(r) for r in records)
        if self.max_records is not None and len(self.records) > self.max_records:
            del self.records[: len(self.records) - self.max_records]

    def dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.records, columns=list(RECORD_FIELDS) if not self.records else None)


class _FileSink(Sink):
    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._fh = None

    def _open(self, newline: str | None = None):
        if self._fh is None:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8", newline=newline)
        return self._fh

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class JSONLSink(_FileSink):
    """One JSON object per line per record (appends; NaN -> null). Flushed after each step."""

    def write(self, records: list[dict]) -> None:
        fh = self._open()
        for r in records:
            fh.write(json.dumps({k: _clean(v) for k, v in r.items()}) + "\n")
        fh.flush()


class CSVSink(_FileSink):
    """CSV with the :data:`RECORD_FIELDS` header (written when the file is new or empty)."""

    def __init__(self, path: str | os.PathLike, fields: Iterable[str] = RECORD_FIELDS):
        super().__init__(path)
        self.fields = tuple(fields)
        self._writer = None

    def write(self, records: list[dict]) -> None:
        if self._writer is None:
            new = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
            self._writer = csv.DictWriter(self._open(newline=""), fieldnames=self.fields, extrasaction="ignore")
            if new:
                self._writer.writeheader()
        for r in records:
            self._writer.writerow({k: ("" if _clean(r.get(k)) is None else r.get(k)) for k in self.fields})
        self._fh.flush()

    def close(self) -> None:
        super().close()
        self._writer = None


class TensorBoardSink(Sink):
    """Scalars ``spectral/<metric>/<layer>`` at global step ``record['step']``.

    Pass a ``log_dir`` or an existing ``SummaryWriter`` (``writer=``); needs ``tensorboard``
    (``pip install spectralens[tensorboard]``).
    """

    def __init__(self, log_dir: str | os.PathLike | None = None, *, writer=None,
                 metrics: Iterable[str] = ("nr_grad", "st_act", "ratio")):
        if writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError("TensorBoardSink needs tensorboard: pip install spectralens[tensorboard]") from exc
            writer = SummaryWriter(log_dir=None if log_dir is None else os.fspath(log_dir))
            self._owns = True
        else:
            self._owns = False
        self.writer, self.metrics = writer, tuple(metrics)

    def write(self, records: list[dict]) -> None:
        for r in records:
            for m in self.metrics:
                v = r.get(m)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.writer.add_scalar(f"spectral/{m}/{r['layer']}", v, r["step"])
        self.writer.flush()

    def close(self) -> None:
        if self._owns:
            self.writer.close()


class WandbSink(Sink):
    """Logs ``spectral/<metric>/<layer>`` to the active W&B run with ``commit=False`` (the
    values attach to the training loop's next ``wandb.log``). Needs ``wandb``."""

    def __init__(self, run=None, *, metrics: Iterable[str] = ("nr_grad", "st_act", "ratio")):
        if run is None:
            try:
                import wandb
            except ImportError as exc:
                raise ImportError("WandbSink needs wandb: pip install spectralens[wandb]") from exc
            run = wandb.run
            if run is None:
                raise RuntimeError("WandbSink: no active W&B run; call wandb.init() first or pass run=")
        self.run, self.metrics = run, tuple(metrics)

    def write(self, records: list[dict]) -> None:
        data = {}
        for r in records:
            for m in self.metrics:
                v = _clean(r.get(m))
                if v is not None:
                    data[f"spectral/{m}/{r['layer']}"] = v
        if data:
            data["spectral/step"] = records[0]["step"]
            self.run.log(data, commit=False)
