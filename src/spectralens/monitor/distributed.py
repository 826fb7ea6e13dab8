"""torch.distributed support: global-batch st(A) and rank-0-only writing.

Under data parallelism every rank sees a shard of the batch. The activation Gram, ||A||_F^2
and the token counts are sums over rows, so a SUM all-reduce of each gives exactly the
quantities of the global batch: st(A) is then the global batch's stable rank. The weight
gradient needs nothing: DDP has already all-reduced (averaged) it before ``monitor.step()``,
and nr(G) is invariant to the scale. Every rank must call ``monitor.step()`` on the same
steps (it is collective on monitored steps). Only rank 0 writes sinks.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "rank", "unwrap", "all_reduce_probes"]


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
