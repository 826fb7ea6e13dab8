"""Model -> per-layer table of spectral metrics: the one place that joins ``models``, ``linalg`` and ``fit``.

    df = spectralens.analyze(model_or_path)            # pandas DataFrame, one row per matrix
    res = run_analysis(path, keep_esd=True)            # Analysis(layers, esd, summary, ...)
    summarize(df)                                      # like WeightWatcher's get_summary()

For every weight matrix W (N x M after transposing so N >= M; conv weights as rf = prod(kernel)
slices scaled by sqrt(0.5), WeightWatcher's convention) the ESD is the eigenvalues of W^T W,
pooled over slices (Martin & Mahoney, "Implicit self-regularization in deep neural networks",
JMLR 2021). The tail is fitted with ``spectralens.fit.fit_power_law`` (KS-scan MLE by default,
as WeightWatcher 0.7.7 ``analyze()``), the bulk with the Marchenko-Pastur fit, and the columns
use WeightWatcher's names (see ``metrics``). Differences from WeightWatcher, on purpose: no
size cap (50k-row embeddings and LM heads are analysed), layers too small or not analysable
get a row with a ``status`` instead of vanishing, tied weights are computed once.
"""
from __future__ import annotations

import contextlib
import math
import re
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..fit import fit_marchenko_pastur, fit_power_law
from ..models import LAYER_TYPES, SourceError, SourceNotFound, TensorRef, as_matrices, dtype_skip_reason, matrix_dims, open_source
from .metrics import COLUMNS, SUMMARY_METRICS, empty_row, fit_columns, norm_metrics
from . import lapack
from .per_core import ByteBudget, esds_per_core, task_flops
from .spectra import GramBatch, gram_batch, is_finite

__all__ = ["Analysis", "run_analysis", "analyze", "summarize", "select_refs", "SourceError", "SourceNotFound",
           "COLUMNS", "SUMMARY_METRICS"]

DEFAULT_MIN_EVALS = 8  # WeightWatcher 0.7.7 DEFAULT_MIN_EVALS: fewer pooled eigenvalues -> no fit
_BATCH_BYTES = 16 << 20  # Grams queued for one batched eigensolve: at most this many bytes,
_BATCH_MAX = 32          # this many matrices, and half the largest tensor (so memory follows it),
_MIN_BATCH = 2           # but at least 2 (the CPU eigensolves of a batch run on 2 cores at once)


@dataclass(frozen=True)
class Analysis:
    """Result of ``run_analysis``.

    layers:   one row per selected matrix (columns: ``metrics.COLUMNS``), in model order.
    esd:      {name: ascending eigenvalues (numpy float64)} when ``keep_esd=True``, else empty.
    summary:  ``summarize(layers)``.
    source:   a description of what was analysed.
    settings: the options used (fit, fix_fingers, conv, dtype, ...).
    """

    layers: Any  # pandas.DataFrame
    esd: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    source: str = ""
    settings: dict = field(default_factory=dict)


def select_refs(refs: Sequence[TensorRef], layers: Sequence[str] | str | None = None,
                types: Sequence[str] | str | None = None) -> list[TensorRef]:
    """Refs whose name matches any regex in ``layers`` (re.search) and whose type is in ``types``."""
    if isinstance(layers, str):
        layers = [layers]
    if isinstance(types, str):
        types = [types]
    pats = [re.compile(p) for p in layers] if layers else None
    wanted = {t.lower() for t in types} if types else None
    if wanted and not wanted <= set(LAYER_TYPES):
        raise ValueError(f"unknown layer type(s) {sorted(wanted - set(LAYER_TYPES))}; expected some of {LAYER_TYPES}")
    return [r for r in refs
            if (pats is None or any(p.search(r.name) for p in pats))
            and (wanted is None or r.layer_type in wanted)]


def _as_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        out = getattr(torch, str(dtype).replace("torch.", ""), None)
    if out not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return out


def run_analysis(
    source: Any,
    *,
    layers: Sequence[str] | str | None = None,
    types: Sequence[str] | str | None = None,
    fit: str = "ks",
    fix_fingers: str | None = None,
    mp_fit: bool = True,
    conv: str = "slices",
    dtype: torch.dtype | str = torch.float64,
    min_evals: int = DEFAULT_MIN_EVALS,
    keep_esd: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> Analysis:
    """Analyse every weight matrix of ``source``.

    Args:
        source: ``nn.Module``, state dict, ``.safetensors`` file, folder of (sharded) safetensors
            or Hugging Face model folder, or ``.pt``/``.bin`` checkpoint (``weights_only=True``).
        layers: regexes; keep matrices whose name matches any (``re.search``). None = all.
        types: layer types to keep (``linear``, ``embedding``, ``conv1d``, ``conv2d``, ``conv3d``,
            ``matrix``). None = all.
        fit: ``"ks"`` (WeightWatcher's KS-scan MLE) or ``"hill"`` (median xmin).
        fix_fingers: None, ``"xmin_peak"`` or ``"clip_xmax"`` (WeightWatcher's options).
        mp_fit: also fit the Marchenko-Pastur bulk (``mp_softrank``, ``num_spikes``).
        conv: ``"slices"`` (WeightWatcher: kh*kw slices scaled by sqrt(0.5), ESDs pooled) or
            ``"flatten"`` (one out x in*kh*kw matrix).
        dtype: compute dtype of the Gram matrices and eigensolves. float64 (default): every column
            as WeightWatcher computes it. float32: single-precision Gram (syrk, ~2x faster on
            CPU, no converted copy), float64 eigensolve; eigenvalues then err by < eps32
            lambda_max, so a layer whose alpha could move by more than ``FLOAT32_ALPHA_TOL``
            (relative), or that looks zero/rank-1, is recomputed in float64 (its ``dtype``
            column says so); ``matrix_rank`` (and the entropy's normaliser) count what float32
            resolves.
        min_evals: layers with fewer pooled eigenvalues get a status and no fit.
        keep_esd: keep each layer's eigenvalues in ``Analysis.esd`` (for plots).
        progress: called as ``progress(done, total, name)`` after each layer.

    Raises:
        SourceError / SourceNotFound: the source cannot be opened or read (message names the file).
        ValueError: an invalid option.
    """
    import pandas as pd

    if fit not in ("ks", "hill"):
        raise ValueError(f"fit must be 'ks' or 'hill', got {fit!r}")
    if fix_fingers not in (None, "xmin_peak", "clip_xmax"):
        raise ValueError(f"fix_fingers must be None, 'xmin_peak' or 'clip_xmax', got {fix_fingers!r}")
    if conv not in ("slices", "flatten"):
        raise ValueError(f"conv must be 'slices' or 'flatten', got {conv!r}")
    cdtype = _as_dtype(dtype)
    eps = float(np.finfo(np.float32).eps) if cdtype == torch.float32 else None
    settings = dict(fit=fit, fix_fingers=fix_fingers, mp_fit=mp_fit, conv=conv,
                    dtype=str(cdtype).replace("torch.", ""), min_evals=int(min_evals), layers=layers, types=types)

    src = open_source(source)
    try:
        refs = select_refs(src.refs, layers, types)
        total = len(refs)
        rows: list[dict | None] = [None] * total
        esd: dict[str, np.ndarray] = {}
        dims = [matrix_dims(r.shape, r.layer_type, conv) for r in refs]
        first_of_tie: dict[Any, int] = {}
        tied: dict[int, int] = {}
        pending: dict[int, GramBatch] = {}
        done = 0
        batch_bytes = min(_BATCH_BYTES, max((r.numel * 4 for r in refs), default=0) // 2)

        def emit(i: int) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total, refs[i].name)

        def record(i: int, ev: np.ndarray | None, row_eps: float | None) -> dict:
            rows[i] = _layer_row(refs[i], dims[i], ev, fit, fix_fingers, mp_fit, min_evals, row_eps)
            if keep_esd and ev is not None:
                esd[refs[i].name] = ev
            return rows[i]

        def mark_refined(i: int) -> None:
            rows[i]["dtype"] = f"{rows[i]['dtype']} (refined in float64)"

        def finish(results: dict) -> None:
            for i, ev in results.items():
                row = record(i, ev, eps)
                if cdtype == torch.float32 and _needs_float64(row):
                    record(i, _float64_esd(refs[i], conv), None)
                    mark_refined(i)
                emit(i)

        def no_spectrum(i: int, status: str) -> None:
            N, M, rf = dims[i]
            rows[i] = empty_row(refs[i].name, refs[i].layer_type, refs[i].shape, N, M, rf, refs[i].dtype, status)
            emit(i)

        def take(i: int, C: torch.Tensor | None, scale: float, status: str | None) -> None:
            """Queue layer i's Gram for a batched eigensolve (or record why it has none)."""
            if C is None:
                no_spectrum(i, status)
                return
            k = int(C.shape[-1])
            batch = pending.setdefault(k, GramBatch(k))
            batch.add(i, C, scale)
            if batch.count >= _BATCH_MAX or (batch.count >= _MIN_BATCH and batch.count * k * k * C.element_size() >= batch_bytes):
                finish(batch.solve())

        jobs: list[int] = []
        for i, ref in enumerate(refs):
            N, M, rf = dims[i]
            reason = dtype_skip_reason(ref.dtype)
            if reason is None and M * rf == 0:
                reason = "empty matrix"
            if reason is None and M * rf < min_evals:
                reason = f"too few eigenvalues ({M * rf} < min_evals={min_evals})"
            if reason is not None:
                no_spectrum(i, reason)
                continue
            if ref.tie is not None:
                if ref.tie in first_of_tie:
                    tied[i] = first_of_tie[ref.tie]
                    continue
                first_of_tie[ref.tie] = i
            jobs.append(i)

        workers = lapack.cpu_count()
        if workers >= 2 and not _on_accelerator(source):
            # CPU: whole layers (Gram + eigensolve) one per core, largest first (see per_core).
            # Files: layers load only within a byte budget of the largest selected tensor, so
            # memory follows it; in-memory models are already loaded.
            budget = None if _in_memory_cpu(source) else ByteBudget(max((_nbytes(refs[i]) for i in jobs), default=1))

            def layer_esd(i: int, dt: torch.dtype):
                hold = contextlib.nullcontext() if budget is None else budget.hold(_nbytes(refs[i]))
                return _layer_esd(refs[i], conv, dt, hold=hold)

            for i, dt, (ev, status), resubmit in esds_per_core(jobs, lambda i: task_flops(dims[i]), layer_esd,
                                                                 cdtype, workers):
                if status is not None:
                    no_spectrum(i, status)
                elif dt == torch.float64 and cdtype == torch.float32:  # a refinement came back
                    record(i, ev, None)
                    mark_refined(i)
                    emit(i)
                elif cdtype == torch.float32 and _needs_float64(record(i, ev, eps)):
                    resubmit(i, torch.float64)
                else:
                    if cdtype == torch.float64:
                        record(i, ev, eps)
                    emit(i)
        else:
            for i in jobs:
                take(i, *_layer_gram(refs[i], conv, cdtype, False))
            for batch in pending.values():
                finish(batch.solve())
        for i, j in tied.items():
            rows[i] = dict(rows[j], name=refs[i].name, layer_type=refs[i].layer_type)
            if keep_esd and refs[j].name in esd:
                esd[refs[i].name] = esd[refs[j].name]
            emit(i)
    finally:
        if src is not source:
            src.close()

    df = pd.DataFrame([r for r in rows if r is not None], columns=COLUMNS)
    return Analysis(layers=df, esd=esd, summary=summarize(df), source=src.description, settings=settings)


# float32 mode: a layer is recomputed in float64 when the float32 eigenvalue error could move
# its alpha by more than this (relative; 10x under the 1e-3 parity bound with WeightWatcher).
FLOAT32_ALPHA_TOL = 1e-4


def _needs_float64(row: dict) -> bool:
    """Whether a float32 row must be recomputed in float64.

    With absolute eigenvalue errors E (``lapack.float32_gram_error``), each log(lambda_i/xmin)
    in the MLE moves by at most ~2E/xmin, so alpha - 1 = n / sum log(lambda_i/xmin) moves by a
    relative ~(alpha - 1) 2E/xmin: refined above ``FLOAT32_ALPHA_TOL``. Zero / rank-1 verdicts
    and failed fits are also redone in float64.
    """
    if row["status"] != "ok":
        return row["status"] in ("zero matrix", "rank-1 matrix (no spectrum to fit)") or \
            str(row["status"]).startswith("fit failed")
    xmin, lam_max, alpha = float(row["xmin"]), float(row["lambda_max"]), float(row["alpha"])
    if not (xmin > 0 and math.isfinite(alpha)):
        return True
    err = lapack.float32_gram_error(lam_max)
    return (alpha - 1.0) * 2.0 * err / xmin > FLOAT32_ALPHA_TOL


def _layer_gram(ref: TensorRef, conv: str, cdtype: torch.dtype, use_numpy: bool):
    """Load one layer and form its Gram stack: (C, scale, None), or (None, scale, status) when
    the weights or the Gram are not finite. A float32 Gram that overflows is redone in float64."""
    W = ref.load()
    mats, scale = as_matrices(W, conv)
    C = gram_batch(mats, cdtype, use_numpy)
    if not is_finite(C) and cdtype != torch.float64:  # float32 overflow: retry in float64
        C = gram_batch(mats, torch.float64, use_numpy)
    if not is_finite(C):
        bad = int((~torch.isfinite(W)).sum()) if W.is_floating_point() else 0
        return None, scale, (f"non-finite weights: {bad} NaN/Inf entries" if bad
                             else "non-finite Gram matrix (overflow)")
    return C, scale, None


def _in_memory_tensors(source: Any) -> list[torch.Tensor] | None:
    """The tensors of an nn.Module (parameters and buffers) or of a mapping; None for a path."""
    if isinstance(source, torch.nn.Module):
        return list(source.parameters()) + list(source.buffers())
    if isinstance(source, Mapping):
        return [v for v in source.values() if isinstance(v, torch.Tensor)]
    return None


def _on_accelerator(source: Any) -> bool:
    """An in-memory source with a tensor off the CPU (its Grams are solved batched there)."""
    tensors = _in_memory_tensors(source)
    return tensors is not None and any(t.device.type != "cpu" for t in tensors)


def _nbytes(ref: TensorRef) -> int:
    """Bytes of the loaded tensor (4 per element when its dtype is not a torch dtype)."""
    size = ref.dtype.itemsize if isinstance(ref.dtype, torch.dtype) else 4
    return ref.numel * size


def _in_memory_cpu(source: Any) -> bool:
    """An nn.Module or a mapping of tensors, all on the CPU (its tensors are already loaded)."""
    tensors = _in_memory_tensors(source)
    return tensors is not None and all(t.device.type == "cpu" for t in tensors)


def _float64_esd(ref: TensorRef, conv: str) -> np.ndarray | None:
    """One layer's ESD recomputed with a float64 Gram and eigensolve."""
    return _layer_esd(ref, conv, torch.float64, in_pool=False)[0]


def _layer_esd(ref: TensorRef, conv: str, cdtype: torch.dtype, in_pool: bool = True,
               hold: contextlib.AbstractContextManager | None = None):
    """One layer's (ESD, None), or (None, status) when it has no finite Gram. The ESD is None
    when the eigensolver failed. ``in_pool``: called from the per-core pool, so numpy's syrk
    (it releases the GIL) and the slices' eigensolves in this thread (no nested pool). ``hold``:
    entered around loading the weights and forming the Gram (a memory budget)."""
    with hold if hold is not None else contextlib.nullcontext():
        C, scale, status = _layer_gram(ref, conv, cdtype, in_pool)
    if C is None:
        return None, status
    batch = GramBatch(int(C.shape[-1]))
    batch.add(0, C, scale)
    return batch.solve(parallel=not in_pool)[0], None


def _layer_row(ref: TensorRef, dims, ev: np.ndarray | None, fit: str, fix_fingers, mp_fit: bool,
               min_evals: int, eps: float | None = None) -> dict:
    N, M, rf = dims
    row = empty_row(ref.name, ref.layer_type, ref.shape, N, M, rf, ref.dtype, "ok")
    if ev is None:
        row["status"] = "eigensolver failed to converge"
        return row
    row.update(norm_metrics(ev, N, eps))
    if not row["lambda_max"] > 0:
        row["status"] = "zero matrix"
        return row
    if row["matrix_rank"] <= 1:
        row["status"] = "rank-1 matrix (no spectrum to fit)"
        return row
    pl = fit_power_law(ev, method=fit, fix_fingers=fix_fingers)
    row.update(fit_columns(pl, ev, row["lambda_max"]))
    if pl.status != "ok":
        row["status"] = f"fit failed: {pl.status}"
    if mp_fit:
        mp = fit_marchenko_pastur(ev, N, M)
        if mp.status == "ok":
            row["mp_softrank"] = float(mp.mp_softrank)
            row["num_spikes"] = int(mp.num_spikes)
    return row


def analyze(source: Any, **kwargs) -> "pd.DataFrame":  # noqa: F821
    """``run_analysis(source, **kwargs).layers``: one row per weight matrix (see ``run_analysis``)."""
    return run_analysis(source, **kwargs).layers


def summarize(df) -> dict:
    """Means over the layers with status "ok" of WeightWatcher's ``get_summary()`` metrics
    (log_norm, alpha, alpha_weighted, log_alpha_norm, log_spectral_norm, stable_rank,
    mp_softrank), plus ``num_layers`` and ``num_ok``."""
    ok = df[df["status"] == "ok"] if len(df) else df
    out: dict[str, float | int] = {}
    for m in SUMMARY_METRICS:
        vals = ok[m].astype(float) if m in ok else []
        vals = [v for v in vals if math.isfinite(v)]
        out[m] = float(np.mean(vals)) if vals else math.nan
    out["num_layers"] = int(len(df))
    out["num_ok"] = int(len(ok))
    return out


class _CallableModule(types.ModuleType):
    """``spectralens.analyze`` is both this module and, called, ``analyze()``: once the submodule is
    imported, Python binds the package attribute to the module, so calls forward here."""

    def __call__(self, source: Any, **kwargs):
        return analyze(source, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
