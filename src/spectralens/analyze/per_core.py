"""In-memory CPU models: each layer's Gram *and* eigensolve on one core, largest layers first.

For a model already in memory, every layer is an independent task

    W (B, n, m) --syrk--> C = W_b^T W_b (B, k, k) --dsyevd--> ESD (B * k,)

costing about B (n m^2 + 4/3 m^3) flops. ``esds_per_core`` runs these tasks on a pool of one
thread per core with every BLAS limited to one thread (numpy's syrk and the ctypes ``dsyevd``
both release the GIL), so both cores stay busy from the first layer to the last: no phase in
which the Gram products wait for a batch of eigensolves or the reverse. Tasks start in
decreasing cost (longest-processing-time-first scheduling), so a 30k-row embedding does not
start last and leave one core idle at the end; results arrive in completion order and the
caller files them by layer index.

Files go through the same pool with a ``ByteBudget``: a layer is loaded only while the tensors
loaded and not yet reduced to their Gram total at most the largest selected tensor, so two
small layers load at once but the largest loads alone, and peak memory still follows the
largest tensor (the loaded tensor is released as soon as its Gram is formed; the eigensolve
works on the small Gram).
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import numpy as np
import torch

from . import lapack

__all__ = ["task_flops", "esds_per_core", "ByteBudget"]

# one layer's ESD: (ascending eigenvalues or None if the eigensolver failed, status or None)
EsdResult = tuple[np.ndarray | None, str | None]


def task_flops(dims: tuple[int, int, int]) -> float:
    """Cost of one layer with (N, M, rf) = ``matrix_dims``: rf (N M^2 + 4/3 M^3) flops
    (syrk Gram + tridiagonal reduction of the eigensolve)."""
    N, M, rf = dims
    return float(rf) * (float(N) * M * M + 4.0 / 3.0 * float(M) ** 3)


class ByteBudget:
    """At most ``capacity`` bytes held at once: ``with budget.hold(n): ...`` waits until n bytes
    are free (a request larger than the capacity waits for an empty budget, then runs alone)."""

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self.used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int):
        n = min(max(0, int(nbytes)), self.capacity)
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.capacity)
            self.used += n
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


def esds_per_core(
    jobs: Iterable[int],
    cost: Callable[[int], float],
    layer_esd: Callable[[int, torch.dtype], EsdResult],
    dtype: torch.dtype,
    workers: int,
) -> Iterator[tuple[int, torch.dtype, EsdResult, Callable[[int, torch.dtype], None]]]:
    """Run ``layer_esd(i, dtype)`` for every job on ``workers`` threads, largest ``cost`` first.

    Yields ``(i, dtype, (ev, status), resubmit)`` as tasks finish; ``resubmit(i, dtype)`` queues
    the layer again (the float32 path's float64 refinement) and its result is yielded later.
    Every BLAS runs single-threaded meanwhile; on an exception the queued tasks are cancelled.
    """
    order: Sequence[int] = sorted(jobs, key=cost, reverse=True)
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="spectralens-layer")
    pending: dict = {}

    def submit(i: int, dt: torch.dtype) -> None:
        pending[pool.submit(layer_esd, i, dt)] = (i, dt)

    try:
        with lapack.one_blas_thread():
            for i in order:
                submit(i, dtype)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i, dt = pending.pop(fut)
                    yield i, dt, fut.result(), submit
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
