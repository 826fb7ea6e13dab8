"""torch.distributed support: global-batch st(A), full-gradient nr(G) under FSDP2, rank-0 writing.

Under data parallelism every rank sees a shard of the batch. The activation Gram, ||A||_F^2
and the token counts are sums over rows, so a SUM all-reduce of each gives exactly the
quantities of the global batch: st(A) is then the global batch's stable rank. This holds for
DDP and FSDP alike (activations are never sharded, only the batch is).

Gradients. DDP has already all-reduced (averaged) ``weight.grad`` before ``monitor.step()``,
and nr(G) is invariant to the scale: nothing to do. FSDP2 (``torch.distributed.fsdp.fully_shard``)
leaves weights and grads as DTensors split along dim 0 (``Shard(0)``), each rank holding a
block of rows of the averaged gradient. The records must be the full matrix's, and
:func:`resolve_probes` gets them to rank 0 without an all-gather on every rank: with M the
(out, in) matrix of ``metrics.weight_matrix`` (m x n) split into row blocks M_r,

    M^T M = sum_r M_r^T M_r     (n x n; column blocks alike: M M^T = sum_r M_r M_r^T),

so when the unsplit side is the smaller one (n <= m for a row split) each rank forms its
block's float64 Gram and one ``dist.reduce`` to rank 0 of a k x k matrix, k = min(m, n),
gives exactly the Gram that ``linalg.eigenvalues(M, method="gram")`` would: nr(G), ||G||_F,
||G||_op, st(G), and for weights ||W||_op, st(W) and the Hill alpha all follow from its
eigenvalues. When the split side is the smaller one (e.g. a (d, 4d) down projection split on
d) that Gram would be the larger one; the shards are then gathered to rank 0 only
(``dist.gather``, m*n numbers, fewer than the larger Gram's). 1-D gains and
``grad_method="svd"`` (an exact SVD needs the matrix) are gathered too. A conv weight split
on dim 0 splits the flattened rows; HF Conv1D, stored (in, out), splits the columns.
FSDP1 (``FullyShardedDataParallel``, flat parameters) is refused by :func:`reject_fsdp1`.

Contract: every rank must call ``monitor.step()`` on the same steps (it is collective on
monitored steps: all-reduces of the activation statistics, one MIN all-reduce of which
gradients exist, then the reduce/gather of each sharded weight, in probe order). Only rank 0
computes the metrics and writes sinks.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["is_distributed", "rank", "unwrap", "all_reduce_probes", "SummedGram", "is_dtensor", "local_if_single",
           "reject_fsdp1", "resolve_sharded", "resolve_probes"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel / DataParallel, so names have no 'module.'."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


def all_reduce_probes(probes) -> None:
    """SUM-all-reduce gram, fro2, counts and the row count of each probe, in a fixed order.

    Every rank has the same probes (same model, same selection). A probe that saw no forward
    on some rank contributes zeros; its buffer shape is agreed with one small all-reduce.
    """
    for p in probes:
        device = p.module.weight.device  # NCCL reduces only device tensors; gloo takes CPU ones
        meta = torch.tensor([p.rows, 0 if p.gram is None else p.gram.shape[0]], dtype=torch.float64, device=device)
        meta_max = meta.clone()
        dist.all_reduce(meta, op=dist.ReduceOp.SUM)
        dist.all_reduce(meta_max, op=dist.ReduceOp.MAX)
        p.rows = int(meta[0])
        if p.family == "embedding":
            if p.counts is None:
                p.counts = torch.zeros(p.module.num_embeddings, dtype=torch.int64, device=device)
            dist.all_reduce(p.counts, op=dist.ReduceOp.SUM)
            continue
        d = int(meta_max[1])
        if d == 0:
            continue
        if p.gram is None:
            p.gram = torch.zeros(d, d, dtype=p.gram_dtype, device=device)
            p.fro2 = torch.zeros((), dtype=torch.float64, device=device)
        dist.all_reduce(p.gram, op=dist.ReduceOp.SUM)
        dist.all_reduce(p.fro2, op=dist.ReduceOp.SUM)


# -- sharded parameters (FSDP2 ``fully_shard``: weights and grads are DTensors) -------------------

@dataclass(frozen=True)
class SummedGram:
    """The smaller Gram of a sharded matrix M (m x n), summed over its shards on rank 0.

    ``gram`` is M^T M (n x n) when M's rows are sharded and n <= m, or M M^T (m x m) when its
    columns are sharded and m <= n, in float64: its eigenvalues are the squared singular values
    of the full M, exactly those ``linalg.eigenvalues(M, method="gram")`` gives.
    """

    gram: torch.Tensor
    shape: tuple[int, int]  # (m, n) of the full matrix


def _dtensor_cls():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without DTensor
        return None
    return DTensor


def is_dtensor(t) -> bool:
    cls = _dtensor_cls()
    return cls is not None and isinstance(t, cls)


def local_if_single(t: torch.Tensor) -> torch.Tensor:
    """A DTensor on a one-rank mesh as its (full) local tensor; anything else unchanged.

    A DTensor on a larger mesh must go through :func:`resolve_sharded` (collective) first."""
    if not is_dtensor(t):
        return t
    if t.device_mesh.size() == 1:
        return t.to_local()
    raise RuntimeError("sharded (DTensor) tensor on a mesh of size > 1 was not gathered; "
                       "call monitor.step() on every rank")


def reject_fsdp1(model: nn.Module) -> None:
    """Raise for the FSDP1 wrapper (``FullyShardedDataParallel``): its flat parameters hold
    slices of several weights, so no per-layer gradient matrix exists to measure."""
    fsdp = sys.modules.get("torch.distributed.fsdp")  # a model wrapped in FSDP1 has imported it
    FullyShardedDataParallel = getattr(fsdp, "FullyShardedDataParallel", None)
    if FullyShardedDataParallel is not None and any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        raise TypeError("SpectralMonitor does not support FullyShardedDataParallel (FSDP1, flat parameters); "
                        "use FSDP2 (torch.distributed.fsdp.fully_shard) or DDP")


def _matrix_shard(family: str, tensor_dim: int) -> int:
    """Which dim of the (out, in) matrix ``metrics.weight_matrix`` builds is split when the
    stored tensor is split along ``tensor_dim``: 0 rows, 1 columns (a partition either way;
    a conv weight split on in-channels or a kernel dim splits the flattened columns)."""
    if family == "hf_conv1d":
        return 1 - tensor_dim
    if family == "conv":
        return 0 if tensor_dim == 0 else 1
    return tensor_dim


def _layout(t):
    """(local tensor, tensor dim, process group, plain ``Shard``) for a DTensor sharded on one
    mesh dim and replicated on the others; None for any other layout (Partial, several
    Shards, a strided shard where it does not count as a shard, ...)."""
    from torch.distributed.tensor import Shard

    shards = [(i, pl) for i, pl in enumerate(t.placements) if pl.is_shard()]
    if len(shards) != 1 or any(not (pl.is_shard() or pl.is_replicate()) for pl in t.placements):
        return None
    mesh_dim, pl = shards[0]
    return t.to_local(), pl.dim % t.dim(), t.device_mesh.get_group(mesh_dim), type(pl) is Shard


def _summed_gram(local: torch.Tensor, family: str, shape: tuple[int, int], msd: int, group):
    from .metrics import weight_matrix

    L = weight_matrix(local, family).to(torch.float64)
    K = L.T @ L if msd == 0 else L @ L.T  # the shards' Grams of the unsharded side add up
    dist.reduce(K, dst=0, group=group)
    return SummedGram(K, shape) if dist.get_rank() == 0 else None


def _gather(local: torch.Tensor, tensor_dim: int, full_size: int, group):
    """The full tensor on rank 0 from equal-size (padded) shards, torch.chunk semantics."""
    w = dist.get_world_size(group)
    c = -(-full_size // w)
    pad = c - local.shape[tensor_dim]
    if pad:
        shape = list(local.shape)
        shape[tensor_dim] = pad
        local = torch.cat([local, local.new_zeros(shape)], dim=tensor_dim)
    local = local.contiguous()
    parts = [torch.empty_like(local) for _ in range(w)] if dist.get_rank() == 0 else None
    dist.gather(local, parts, dst=0, group=group)
    if parts is None:
        return None
    sizes = [max(0, min(c, full_size - r * c)) for r in range(w)]
    return torch.cat([p.narrow(tensor_dim, 0, s) for p, s in zip(parts, sizes)], dim=tensor_dim)


def resolve_sharded(t, family: str, *, gram_ok: bool = True):
    """Collective over ``t``'s mesh: what rank 0 needs to measure the full tensor ``t``.

    On rank 0 returns a :class:`SummedGram` or the full tensor; on other ranks None. For a
    matrix whose sharded side is the larger one (or equal) the shards' Grams of the unsharded,
    smaller side are summed (``dist.reduce`` of a k x k float64 matrix, k = min(m, n)): the
    Gram of a row-split M is the sum of its blocks' Grams, M^T M = sum_r M_r^T M_r (columns
    alike with M M^T). Otherwise - the sharded side is the smaller one, whose Gram the shards
    cannot form alone, a 1-D gain, or ``gram_ok=False`` (an exact SVD was asked) - the shards
    are gathered to rank 0 only (``dist.gather``, torch.chunk shard sizes, uneven ones
    trimmed), which moves m*n numbers, fewer than a Gram of the larger side. A layout other
    than one plain Shard plus Replicates (Partial, FSDP + tensor parallel's strided shards)
    falls back to ``DTensor.full_tensor()`` (an all-gather on every rank).
    Groups of a multi-dim mesh (HSDP) that do not contain rank 0 skip the communication.
    """
    lay = _layout(t)
    if lay is None:
        full = t.full_tensor()
        return full if dist.get_rank() == 0 else None
    local, tdim, group, plain_shard = lay
    msd = None
    if t.dim() >= 2 and gram_ok:
        from .metrics import weight_matrix

        m, n = weight_matrix(torch.empty(t.shape, device="meta"), family).shape
        msd = _matrix_shard(family, tdim)
        if not ((n <= m) if msd == 0 else (m <= n)):
            msd = None  # the sharded side is the smaller one: gather
    if msd is None and not plain_shard:  # _StridedShard: the shard order is not the rank order
        full = t.full_tensor()
        return full if dist.get_rank() == 0 else None
    if 0 not in dist.get_process_group_ranks(group):  # HSDP: another replica group reports
        return None
    if msd is not None:
        return _summed_gram(local, family, (m, n), msd, group)
    return _gather(local, tdim, t.shape[tdim], group)


def resolve_probes(probes, *, weights: bool, exact_grad: bool) -> dict:
    """Collective on every rank: rank 0's :func:`resolve_sharded` of each sharded weight
    gradient (and weight, when ``weights``), keyed ``(index, "grad" | "weight")``.

    One MIN all-reduce first agrees which gradients exist on every rank, so every rank runs
    the same collectives in the same order even if a gradient is missing on one of them.
    """
    if not any(is_dtensor(p.module.weight) for p in probes):
        return {}
    device = probes[0].module.weight.device
    has = torch.tensor([p.module.weight.grad is not None for p in probes], dtype=torch.int32, device=device)
    dist.all_reduce(has, op=dist.ReduceOp.MIN)
    has = has.tolist()
    out = {}
    for i, p in enumerate(probes):
        w = p.module.weight
        if not is_dtensor(w):
            continue
        if has[i]:
            g = w.grad
            if g.is_sparse:  # pragma: no cover - FSDP2 does not shard sparse grads
                g = g.to_dense()
            out[(i, "grad")] = resolve_sharded(g, p.family, gram_ok=not exact_grad)
        else:
            out[(i, "grad")] = None
        if weights:
            out[(i, "weight")] = resolve_sharded(w.detach(), p.family)
    return out
