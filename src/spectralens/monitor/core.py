"""``SpectralMonitor``: the spectral-update condition nr(G) >= st(A), live, per layer.

Two lines in a training loop (Davis & Drusvyatskiy, arXiv 2512.04299)::

    with SpectralMonitor(model, every=100, run_dir="runs/x") as monitor:
        for batch in loader:
            loss = model(batch).loss
            loss.backward()
            monitor.step()          # after backward(), before zero_grad()
            optimizer.step()
            optimizer.zero_grad()
    print(monitor.summary())

**Where to call ``step()``.** After the last ``backward()`` of the optimizer step and before
``zero_grad()``: nr(G) is read from ``weight.grad``, which must still hold the full
(accumulated) gradient, and st(A) from the Grams the forward hooks accumulated during this
step's forwards. Calling it before ``optimizer.step()`` is the recommended place (the weight
statistics then describe the weights that produced G); after ``optimizer.step()`` but before
``zero_grad()`` gives the same nr and st, only ||W||_op, st(W) and alpha see the updated
weights. With gradient accumulation call it once per optimizer step, not per micro-batch.

**Cadence and arming protocol.** Steps are numbered 0, 1, 2, ... by the calls to ``step()``;
step s is monitored when ``s % every == 0`` (so step 0 is). Hooks are registered only for
monitored steps: the constructor arms them for step 0; ``step()`` closes step s (computing
and emitting records if s was monitored, then removing the hooks and freeing the Grams),
advances the counter to s + 1, and arms the hooks again only if s + 1 is monitored.
Unmonitored steps run with no hook in the model. Every ``alpha_every``-th monitored step
also computes the Hill alpha of each weight, every ``weight_every``-th its ||W||_op and st(W).

**Faults.** Nothing raised inside the monitor reaches the training loop: a failing or
non-finite metric is recorded as NaN with a ``status`` string and warns once per layer; a
failing sink warns once. ``close()`` (or leaving the ``with`` block) removes every hook.

**Limits.** Tied weights (``lm_head.weight is tok_emb.weight``) have one gradient, the sum
of both uses, which both layers report. Conv layers with ``groups > 1`` stack the groups'
patches as rows (approximate). Under torch.distributed (DDP, or FSDP2 ``fully_shard`` whose
sharded gradients are measured as the full matrices, see ``monitor.distributed``) every rank
must call ``step()``; FSDP1 (``FullyShardedDataParallel``) is refused.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings

import torch
from torch import nn

from . import distributed as _dist
from .accumulators import InputGramCache, LayerProbe
from .kinds import LayerSelector, layer_kind, select_layers
from .metrics import (activation_stats, condition, gain_gradient_stats, gradient_stats,
                      gradient_stats_from_eigenvalues, gram_eigenvalues, token_stats, weight_matrix, weight_stats,
                      weight_stats_from_eigenvalues)
from .sinks import RECORD_FIELDS, CSVSink, JSONLSink, MemorySink, Sink

__all__ = ["SpectralMonitor", "DEFAULT_EVERY"]

DEFAULT_EVERY = 100  # one monitored step in 100 keeps the overhead under ~1-3% (benchmarks/monitor_overhead.py)
_NAN = float("nan")


class SpectralMonitor:
    """Per-layer nr(G), st(A), their ratio and the condition flags on every ``every``-th step.

    Args:
        model: the network (a DDP/DataParallel wrapper is unwrapped, names have no ``module.``;
            FSDP2 ``fully_shard`` modules are measured as the full matrices; FSDP1
            ``FullyShardedDataParallel`` raises ``TypeError``).
        every: monitor step s when ``s % every == 0`` (default :data:`DEFAULT_EVERY`).
        layers: None (every Linear, HF Conv1D, Conv1d/2d, Embedding and norm gain), a regex on
            module names, a list of exact names, or ``f(name, module) -> bool``.
        sinks: extra :class:`~spectralens.monitor.sinks.Sink` objects (JSONL, CSV, TensorBoard, W&B).
        alpha_every: compute the Hill alpha every this many monitored steps (0: never).
        run_dir: if given, write ``monitor.jsonl``, ``monitor.csv`` and ``meta.json`` there
            (what ``spectralens report RUN_DIR`` reads).
        gram_dtype: dtype of the accumulated activation Grams, float32 (default) or float64.
        weight_stats: also compute ||W||_op and st(W) (one eigendecomposition per weight) ...
        weight_every: ... every this many monitored steps (default 10: weights move slowly and this
            is a third of the metric cost; 1 = every monitored step). Shares the eigenvalues with
            alpha when both are due.
        grad_method: ``"gram"`` (default: eigenvalues of the smaller Gram of G) or ``"svd"``
            (a float64 SVD of G: slower, exact for numerically low-rank gradients).
        keep_records: keep records in memory for :meth:`records` / :meth:`summary`
            (small dicts, ~22 scalars each); ``max_records`` bounds how many.
    """

    def __init__(self, model: nn.Module, *, every: int = DEFAULT_EVERY, layers: LayerSelector = None,
                 sinks: list[Sink] | tuple = (), alpha_every: int = 10, run_dir: str | os.PathLike | None = None,
                 gram_dtype: torch.dtype = torch.float32, weight_stats: bool = True, weight_every: int = 10,
                 grad_method: str = "gram", keep_records: bool = True, max_records: int | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if not isinstance(alpha_every, int) or alpha_every < 0:
            raise ValueError(f"alpha_every must be a non-negative integer, got {alpha_every!r}")
        if not isinstance(weight_every, int) or weight_every < 1:
            raise ValueError(f"weight_every must be a positive integer, got {weight_every!r}")
        if grad_method not in ("gram", "svd"):
            raise ValueError(f"grad_method must be 'gram' or 'svd', got {grad_method!r}")
        if gram_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"gram_dtype must be torch.float32 or torch.float64, got {gram_dtype}")
        for s in sinks:
            if not hasattr(s, "write"):
                raise TypeError(f"sink {s!r} has no write(records) method")
        self.model = _dist.unwrap(model)
        _dist.reject_fsdp1(self.model)
        selected = select_layers(self.model, layers)
        if not selected:
            raise ValueError("SpectralMonitor: no layer selected (the model has no trainable Linear, Conv1d/2d, "
                             f"Embedding or norm gain matching layers={layers!r})")
        self._cache = InputGramCache()  # q/k/v (and up/gate) share one input: one Gram per input tensor
        self.probes = [LayerProbe(n, m, f, layer_kind(n, m), gram_dtype, self._cache) for n, m, f in selected]
        self.every, self.alpha_every, self.weight_stats = every, alpha_every, weight_stats
        self.weight_every, self.grad_method = weight_every, grad_method
        self.run_dir = None if run_dir is None else os.fspath(run_dir)
        self.sinks: list[Sink] = list(sinks)
        self._memory = MemorySink(max_records) if keep_records else None
        self._rank0 = _dist.rank() == 0
        if self.run_dir is not None:
            self.sinks += [JSONLSink(os.path.join(self.run_dir, "monitor.jsonl")),
                           CSVSink(os.path.join(self.run_dir, "monitor.csv"))]
            if self._rank0:
                self._write_meta()
        self._step = 0
        self._n_monitored = 0
        self._warned: set[str] = set()
        self._closed = False
        self.last_records: list[dict] = []
        if self.is_monitored(0):
            self._arm()

    # -- protocol ----------------------------------------------------------------------------
    @property
    def step_count(self) -> int:
        """Index of the step in progress (number of ``step()`` calls so far)."""
        return self._step

    def is_monitored(self, step: int | None = None) -> bool:
        """Whether step ``step`` (default: the one in progress) is monitored."""
        return (self._step if step is None else step) % self.every == 0

    @property
    def armed(self) -> bool:
        return any(p.armed for p in self.probes)

    def step(self) -> list[dict]:
        """Close the current step (see the module docstring); returns its records ([] if
        unmonitored or not rank 0). Never raises into the training loop."""
        if self._closed:
            self._warn_once("__closed__", "step() called after close(); ignored")
            return []
        records: list[dict] = []
        if self.is_monitored():
            try:
                records = self._collect()
            except Exception as exc:  # e.g. a failed collective; keep training
                self._warn_once("__collect__", f"monitored step {self._step} failed: {type(exc).__name__}: {exc}")
            finally:
                for p in self.probes:
                    p.disarm()
                    p.reset()
                self._cache.clear()
            self._n_monitored += 1
            if records and self._rank0:
                self._emit(records)
        self._step += 1
        if self.is_monitored():
            self._arm()
        self.last_records = records
        return records

    def close(self) -> None:
        """Remove every hook, free every buffer and close the sinks. Idempotent."""
        for p in self.probes:
            p.disarm()
            p.reset()
        self._cache.clear()
        if not self._closed:
            for s in self.sinks:
                try:
                    s.close()
                except Exception as exc:
                    self._warn_once(f"sink:{id(s)}", f"closing sink {s!r} failed: {exc}")
        self._closed = True

    def __enter__(self) -> "SpectralMonitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- results -----------------------------------------------------------------------------
    def records(self):
        """pandas DataFrame of the in-memory records (columns :data:`RECORD_FIELDS`)."""
        if self._memory is None:
            raise RuntimeError("records(): the monitor was created with keep_records=False; read its sinks instead")
        return self._memory.dataframe()

    def summary(self, **thresholds) -> dict:
        """Per-layer and per-kind verdicts: ``{"layers": DataFrame, "kinds": DataFrame}``
        (see :func:`spectralens.monitor.summary.summarize`)."""
        from .summary import summarize

        return summarize(self.records(), **thresholds)

    # -- internals ---------------------------------------------------------------------------
    def _arm(self) -> None:
        for p in self.probes:
            p.reset()
            p.arm()

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f"spectralens monitor: {msg} (warned once)", RuntimeWarning, stacklevel=3)

    def _write_meta(self) -> None:
        from spectralens import __version__

        os.makedirs(self.run_dir, exist_ok=True)
        meta = {"spectralens": __version__, "every": self.every, "alpha_every": self.alpha_every,
                "weight_every": self.weight_every if self.weight_stats else 0,
                "fields": list(RECORD_FIELDS),
                "layers": [{"layer": p.name, "kind": p.kind, "family": p.family} for p in self.probes]}
        with open(os.path.join(self.run_dir, "meta.json"), "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1)

    def _collect(self) -> list[dict]:
        with_alpha = self.alpha_every > 0 and self._n_monitored % self.alpha_every == 0
        with_weight = self.weight_stats and self._n_monitored % self.weight_every == 0
        self._sharded: dict = {}
        if _dist.is_distributed():
            _dist.all_reduce_probes(self.probes)
            # FSDP2: sharded weights/grads -> summed Grams or gathered tensors on rank 0
            self._sharded = _dist.resolve_probes(self.probes, weights=with_weight or with_alpha,
                                                 exact_grad=self.grad_method == "svd")
            if not self._rank0:
                self._sharded = {}
                return []
        self._act_memo: list[tuple[torch.Tensor, dict]] = []
        try:
            return [self._layer_record(i, p, with_alpha, with_weight) for i, p in enumerate(self.probes)]
        finally:
            self._act_memo = []
            self._sharded = {}

    def _resolved(self, i: int, what: str, t):
        """The tensor to measure: rank 0's gathered tensor or summed Gram for a sharded one
        (see ``distributed.resolve_probes``), else ``t`` (a DTensor only on a one-rank mesh)."""
        if (i, what) in self._sharded:
            value = self._sharded[(i, what)]
            if value is None:
                raise RuntimeError(f"weight.{what} is None on at least one rank: call monitor.step() after backward() "
                                   "and before zero_grad() on every rank" if what == "grad" else "not gathered")
            return value
        return None if t is None else _dist.local_if_single(t)

    def _activation_stats(self, gram: torch.Tensor, fro2: torch.Tensor) -> dict:
        """activation_stats, reusing the result of an identical Gram this step (Q, K, V share A)."""
        for g, stats in self._act_memo:
            if g.shape == gram.shape and torch.equal(g, gram):
                return stats
        stats = activation_stats(gram, fro2)
        self._act_memo.append((gram, stats))
        return stats

    def _layer_record(self, i: int, p: LayerProbe, with_alpha: bool, with_weight: bool) -> dict:
        t0 = time.perf_counter()
        rec = {"step": self._step, "layer": p.name, "kind": p.kind, "family": p.family}
        rec.update({k: _NAN for k in ("nr_grad", "st_act", "grad_fro", "grad_op", "st_grad", "weight_op",
                                      "st_weight", "alpha", "act_fro2", "act_op2")})
        problems = []
        with torch.no_grad():
            try:  # the incoming activation
                if p.error:
                    raise RuntimeError(f"forward hook failed: {p.error}")
                if p.family == "embedding":
                    if p.counts is None:
                        raise RuntimeError("no training forward captured this step (eval mode or no_grad?)")
                    rec.update(token_stats(p.counts))
                else:
                    if p.gram is None:
                        raise RuntimeError("no training forward captured this step (eval mode or no_grad?)")
                    rec.update(self._activation_stats(p.gram, p.fro2))
            except Exception as exc:
                problems.append(f"activation: {exc}")
            try:  # the weight gradient
                grad = self._resolved(i, "grad", p.module.weight.grad)
                if grad is None:
                    raise RuntimeError("weight.grad is None: call monitor.step() after backward() and before zero_grad()")
                if isinstance(grad, _dist.SummedGram):  # sharded G: its Gram summed over the shards
                    rec.update(gradient_stats_from_eigenvalues(gram_eigenvalues(grad.gram)))
                else:
                    if grad.is_sparse:
                        grad = grad.to_dense()
                    if p.family == "norm":
                        rec.update(gain_gradient_stats(grad))
                    else:
                        rec.update(gradient_stats(weight_matrix(grad, p.family), self.grad_method))
            except Exception as exc:
                problems.append(f"gradient: {exc}")
            if with_weight or with_alpha:
                try:
                    w = self._resolved(i, "weight", p.module.weight)
                    if isinstance(w, _dist.SummedGram):
                        ws = weight_stats_from_eigenvalues(gram_eigenvalues(w.gram), alpha=with_alpha)
                    else:
                        ws = weight_stats(weight_matrix(w, p.family), alpha=with_alpha)
                    if not with_weight:
                        ws = {"alpha": ws["alpha"]}
                    rec.update(ws)
                except Exception as exc:
                    problems.append(f"weight: {exc}")
        rec.update(condition(rec["nr_grad"], rec["st_act"]))
        bad = [k for k in ("nr_grad", "st_act") if not math.isfinite(rec[k])]
        if bad and not problems:
            problems.append("non-finite " + ", ".join(bad))
        for k in ("nr_grad", "st_act", "grad_fro", "grad_op", "st_grad", "weight_op", "st_weight", "act_fro2", "act_op2"):
            if not math.isfinite(rec[k]):
                rec[k] = _NAN
        rec.update(rows=int(p.rows), calls=int(p.calls), hook_ms=p.hook_s * 1e3)
        rec["status"] = "ok" if not problems else "; ".join(problems)
        if problems:
            self._warn_once(f"layer:{p.name}", f"layer {p.name!r} at step {self._step}: {rec['status']}; recording NaN")
        rec["metric_ms"] = (time.perf_counter() - t0) * 1e3
        return {k: rec.get(k) for k in RECORD_FIELDS}

    def _emit(self, records: list[dict]) -> None:
        if self._memory is not None:
            self._memory.write(records)
        for s in self.sinks:
            try:
                s.write(records)
            except Exception as exc:
                self._warn_once(f"sink:{id(s)}", f"sink {type(s).__name__} failed: {type(exc).__name__}: {exc}")
