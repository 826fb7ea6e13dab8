"""Training-time probes for the spectral-update condition nr(G) >= st(A).

Davis & Drusvyatskiy, "When do spectral gradient updates help in deep learning?"
(arXiv 2512.04299). See ``docs/monitor.md``.

* :class:`SpectralMonitor` - forward hooks + ``step()``; records per layer per monitored step.
* sinks: :class:`MemorySink`, :class:`JSONLSink`, :class:`CSVSink`, :class:`TensorBoardSink`,
  :class:`WandbSink`.
* :func:`summarize` - per-layer / per-kind verdicts; :func:`layer_kind` - name -> kind.
* torch.distributed: DDP and FSDP2 (``fully_shard``; sharded gradients are measured as the
  full matrices through summed shard Grams) - see :mod:`spectralens.monitor.distributed`.
* integrations (optional extras, imported lazily): ``spectralens.monitor.integrations.hf``
  (``SpectralMonitorCallback`` for transformers' Trainer) and
  ``spectralens.monitor.integrations.lightning`` (``SpectralMonitorCallback`` for Lightning).
"""
from .core import DEFAULT_EVERY, SpectralMonitor
from .kinds import KINDS, layer_kind, select_layers
from .sinks import RECORD_FIELDS, CSVSink, JSONLSink, MemorySink, Sink, TensorBoardSink, WandbSink
from .summary import recommend, summarize

__all__ = ["SpectralMonitor", "DEFAULT_EVERY", "KINDS", "layer_kind", "select_layers", "RECORD_FIELDS",
           "Sink", "MemorySink", "JSONLSink", "CSVSink", "TensorBoardSink", "WandbSink", "summarize", "recommend"]
