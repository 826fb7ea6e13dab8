"""Distributed Muon on 2 CPU ranks (gloo), launched with torchrun from pytest.

The same file is the worker: ``python -m torch.distributed.run --nproc_per_node=2
tests/test_optim_distributed.py MODE OUTDIR`` trains a small model for a few steps and each
rank saves its full parameters. The tests check that the ranks agree exactly and that they
equal a single-process run on the whole batch within 1e-5.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

STEPS = 4
WORLD = 2


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                         nn.Linear(32, 24), nn.Tanh(), nn.Linear(24, 32), nn.Tanh(),
                         nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 3))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(STEPS, 16, 12, generator=g), torch.randn(STEPS, 16, 3, generator=g)


def _optimizer(model: nn.Module, kind: str):
    from spectralens.optim import Muon, hybrid
    if kind == "muon":  # every matrix, the first and last included, so buckets have several members
        return Muon([p for p in model.parameters() if p.dim() == 2], lr=0.05, weight_decay=0.1)
    return hybrid(model, lr=0.05, weight_decay=0.1, adamw_lr=1e-2, head_names=("5",))


def _train(model: nn.Module, opt, rank: int | None) -> None:
    X, Y = _data()
    for t in range(STEPS):
        x, y = X[t], Y[t]
        if rank is not None:  # each rank sees half of the batch; DDP/FSDP average the gradients
            x, y = x[rank::WORLD], y[rank::WORLD]
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def _worker(mode: str, out: str) -> None:
    import torch.distributed as dist
    dist.init_process_group("gloo")
    for kind in ("muon", "hybrid"):
        _run_kind(mode, kind, out, dist.get_rank())
    dist.destroy_process_group()
    # Results are on disk. Skip interpreter teardown: a backend thread still joinable at exit
    # intermittently aborted the process ("terminate called without an active exception").
    sys.stdout.flush()
    os._exit(0)


def _run_kind(mode: str, kind: str, out: str, rank: int) -> None:
    import spectralens.optim.muon as muon_mod
    counted = {"matrices": 0}
    real = muon_mod.orthogonalize

    def counting(X, *args, **kwargs):  # how many matrices this rank orthogonalised
        counted["matrices"] += X.shape[0]
        return real(X, *args, **kwargs)

    muon_mod.orthogonalize = counting
    model = _model()
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        ddp = DDP(model)
        opt = _optimizer(model, kind)
        _train(ddp, opt, rank)
        params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import Shard
        for layer in model:
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        fully_shard(model)
        opt = _optimizer(model, kind)
        _train(model, opt, rank)
        w = model[2].weight  # the layout the gather-to-owner path needs: 1-D mesh, Shard(0)
        layout_ok = w.device_mesh.ndim == 1 and tuple(w.placements) == (Shard(0),)
        params = {k: v.full_tensor().detach().clone() for k, v in model.state_dict().items()}
        params["__layout_ok__"] = torch.tensor(layout_ok)
    muon_mod.orthogonalize = real
    params["__matrices__"] = torch.tensor(counted["matrices"])
    torch.save(params, os.path.join(out, f"{kind}_rank{rank}.pt"))


_LAUNCHED: dict[str, Path] = {}


def _launch(mode: str, kind: str, tmp_path_factory) -> list[dict]:
    """One torchrun per mode (both optimizer kinds in it), cached for the session."""
    if mode not in _LAUNCHED:
        _LAUNCHED[mode] = _run_torchrun(mode, tmp_path_factory.mktemp(mode))
    return [torch.load(_LAUNCHED[mode] / f"{kind}_rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _run_torchrun(mode: str, tmp_path: Path) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}",
           "--standalone", __file__, mode, str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if res.returncode != 0:
        raise AssertionError(f"torchrun failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
    return tmp_path


def _check(ranks: list[dict], kind: str, mode: str) -> None:
    ref = _single(kind)
    counts = [int(r.pop("__matrices__")) for r in ranks]
    n_single = int(ref.pop("__matrices__"))
    assert sum(counts) == n_single and max(counts) < n_single, f"work not divided: {counts} of {n_single}"
    for k in ref:
        assert torch.equal(ranks[0][k], ranks[1][k]), f"{k} differs between ranks"
        assert torch.allclose(ranks[0][k], ref[k], atol=1e-5, rtol=0), \
            f"{mode}/{kind} {k}: max diff {(ranks[0][k] - ref[k]).abs().max():.2e} vs single process"
    assert not torch.equal(ref["2.weight"], _model().state_dict()["2.weight"])  # it did train


def _single(kind: str) -> dict:
    import spectralens.optim.muon as muon_mod
    real, n = muon_mod.orthogonalize, [0]

    def counting(X, *args, **kwargs):
        n[0] += X.shape[0]
        return real(X, *args, **kwargs)

    muon_mod.orthogonalize = counting
    try:
        model = _model()
        _train(model, _optimizer(model, kind), None)
    finally:
        muon_mod.orthogonalize = real
    return {**model.state_dict(), "__matrices__": torch.tensor(n[0])}


@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["muon", "hybrid"])
def test_ddp_ranks_identical_and_equal_single_process(tmp_path_factory, kind):
    """DDP: each rank orthogonalises part of every bucket; all_gather; identical params."""
    _check(_launch("ddp", kind, tmp_path_factory), kind, "ddp")


@pytest.mark.distributed
@pytest.mark.parametrize("kind", ["muon", "hybrid"])
def test_fsdp2_ranks_identical_and_equal_single_process(tmp_path_factory, kind):
    """FSDP2 (fully_shard, DTensor params): gather, orthogonalise on the owner, scatter shards."""
    ranks = _launch("fsdp", kind, tmp_path_factory)
    assert all(bool(r.pop("__layout_ok__")) for r in ranks)
    _check(ranks, kind, "fsdp")


def test_chunk_bounds_cover_everything_once():
    from spectralens.optim.distributed import chunk_bounds
    for total in range(0, 9):
        for world in range(1, 5):
            covered = [i for r in range(world) for i in range(*chunk_bounds(total, world, r))]
            assert covered == list(range(total))


def test_single_device_needs_no_process_group():
    from spectralens.optim import Muon
    from spectralens.optim.distributed import active
    assert not active()
    with pytest.raises(ValueError, match="distributed=True"):
        Muon([nn.Parameter(torch.zeros(3, 3))], distributed=True)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
