"""Dividing Muon's orthogonalisation across ranks (torch.distributed), and the local path.

Each function takes one bucket: updates ``mats`` that share a matrix shape and orthogonaliser
settings, their (batch, rows, cols) views ``shapes``, ``fn`` mapping a (K, rows, cols)
batch to its orthogonalisation and ``dtype`` (fn's output dtype). It returns the
orthogonalised updates shaped like the inputs.

* :func:`orthogonalize_local` - one batched call over the whole bucket.
* :func:`orthogonalize_replicated` - DDP / replicated parameters (every rank holds the same
  update): the K stacked matrices are split into ``world`` contiguous chunks of ceil(K/world)
  (chunk c goes to rank (c + first_rank) mod world, first_rank rotating across buckets; the
  order is the parameter order, identical on every rank), each rank
  orthogonalises its chunk in one batched call, and ``all_gather`` assembles the result on
  every rank. Every rank then applies bit-identical updates. (Same work division as
  KellerJordan/Muon, done per same-shape bucket as in modded-nanogpt.)
* :func:`orthogonalize_dtensors` - FSDP2 (``fully_shard``) DTensor parameters: parameter i of
  the bucket is owned by rank (i + first_rank) mod world; its update shards are gathered to the
  owner only (``gather``; Moonlight's "distributed Muon"), the owner orthogonalises all it owns
  in one batched call, and ``distribute_tensor(..., src_data_rank=owner)`` scatters each rank
  its shard back. Communication per parameter: one gather and one scatter of its size.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["active", "is_dtensor", "orthogonalize_local", "orthogonalize_replicated",
           "orthogonalize_dtensors", "chunk_bounds"]


def active(group=None) -> bool:
    """True when torch.distributed is initialised and the group has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def is_dtensor(t: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - very old torch
        return False
    return isinstance(t, DTensor)


def chunk_bounds(total: int, world: int, rank: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share when ``total`` items split into ``world`` chunks."""
    per = -(-total // world)
    return min(rank * per, total), min((rank + 1) * per, total)


def _stack(mats, shapes) -> torch.Tensor:
    return torch.cat([m.reshape(b, r, c) for m, (b, r, c) in zip(mats, shapes)])


def _unstack(X: torch.Tensor, mats, shapes) -> list[torch.Tensor]:
    out, k = [], 0
    for m, (b, _, _) in zip(mats, shapes):
        out.append(X[k:k + b].reshape(m.shape))
        k += b
    return out


def orthogonalize_local(mats, shapes, fn) -> list[torch.Tensor]:
    """One batched call over the whole bucket."""
    return _unstack(fn(_stack(mats, shapes)), mats, shapes)


def orthogonalize_replicated(mats, shapes, fn, dtype: torch.dtype, group=None,
                             first_rank: int = 0) -> list[torch.Tensor]:
    """Each rank orthogonalises its chunk of the stacked bucket; all_gather reassembles it.

    Chunk c goes to rank (c + first_rank) mod world; rotating ``first_rank`` across buckets
    spreads small buckets (a single matrix of some shape) over the ranks.
    """
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    X = _stack(mats, shapes)
    total, (_, r, c) = X.shape[0], shapes[0]
    per = -(-total // world)
    chunk = (rank - first_rank) % world
    lo, hi = chunk_bounds(total, world, chunk)
    send = torch.zeros(per, r, c, dtype=dtype, device=X.device)  # ranks without work send zeros
    if hi > lo:
        send[: hi - lo] = fn(X[lo:hi])
    parts = [torch.empty_like(send) for _ in range(world)]
    dist.all_gather(parts, send, group=group)
    ordered = [parts[(ch + first_rank) % world] for ch in range(world)]
    return _unstack(torch.cat(ordered)[:total], mats, shapes)


def _gather_to_owner(m, owner: int) -> torch.Tensor | None:
    """The full tensor of a 1-D-mesh, Shard(0) DTensor on rank ``owner`` only (None elsewhere).

    Shards follow torch.chunk: rank r holds rows [r p, min((r+1) p, n)), p = ceil(n / world);
    each is zero-padded to p rows so one ``gather`` collects them. Other layouts: full_tensor.
    """
    from torch.distributed.tensor import Shard

    mesh = m.device_mesh
    if mesh.ndim != 1 or tuple(m.placements) != (Shard(0),):
        return m.full_tensor()
    pg, world = mesh.get_group(), mesh.size()
    n, per = m.shape[0], -(-m.shape[0] // mesh.size())
    local = m.to_local()
    padded = torch.zeros((per,) + tuple(m.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    me = mesh.get_local_rank()
    bufs = [torch.empty_like(padded) for _ in range(world)] if me == owner else None
    dist.gather(padded, bufs, dst=dist.get_global_rank(pg, owner), group=pg)
    return torch.cat(bufs)[:n] if me == owner else None


def orthogonalize_dtensors(mats, shapes, fn, dtype: torch.dtype, group=None,
                           first_rank: int = 0) -> list[torch.Tensor]:
    """FSDP2: gather each update on its owning rank, orthogonalise there, scatter the shards.

    Parameter i of the bucket is owned by rank (i + first_rank) mod world. Needs a 1-D device
    mesh (FSDP2's default); on a multi-dimensional mesh (HSDP, FSDP+TP) every rank gathers and
    orthogonalises every matrix itself and keeps its own shard (correct, no work division).
    """
    from torch.distributed.tensor import distribute_tensor

    mesh = mats[0].device_mesh
    if mesh.ndim != 1:
        fulls = [m.full_tensor() for m in mats]
        outs = orthogonalize_local(fulls, shapes, fn)
        return [distribute_tensor(o.contiguous(), m.device_mesh, m.placements, src_data_rank=None)
                for o, m in zip(outs, mats)]
    world, rank = mesh.size(), mesh.get_local_rank()
    owner = [(i + first_rank) % world for i in range(len(mats))]
    fulls = [_gather_to_owner(m, owner[i]) for i, m in enumerate(mats)]  # same order on all ranks
    owned = [i for i in range(len(mats)) if owner[i] == rank]
    results: dict[int, torch.Tensor] = {}
    if owned:
        outs = orthogonalize_local([fulls[i] for i in owned], [shapes[i] for i in owned], fn)
        results = dict(zip(owned, outs))
    shards = []
    for i, m in enumerate(mats):
        full = results[i] if i in results else torch.empty(m.shape, dtype=dtype, device=m.device)
        shards.append(distribute_tensor(full.contiguous(), mesh, m.placements, src_data_rank=owner[i]))
    return shards
