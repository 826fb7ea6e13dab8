"""FSDP2 (``fully_shard``) with 2 processes on gloo/CPU: the records are the full model's.

Weights and gradients are DTensors sharded on dim 0; the monitor sums the shards' Grams of
the smaller side, or gathers the shards to rank 0 when the sharded side is the smaller one
(see ``spectralens.monitor.distributed.resolve_sharded``). Every number must equal the
single-process run on the global batch. Models and activation Grams are float64, so that
what is left is the order of floating-point sums (measured: 3e-9 relative at most, from the
smallest Gram eigenvalues of low-rank gradients; float32 would leave ~1e-7).
"""
from __future__ import annotations

import datetime
import json
import math
import os

import pytest
import torch
from torch import nn

from spectralens.nets.gpt import GPT, GPTConfig

pytestmark = pytest.mark.distributed

GPT_CFG = dict(n_layer=1, n_embd=16, n_head=2, block_size=8)
FIELDS = ("nr_grad", "st_act", "ratio", "grad_fro", "grad_op", "st_grad", "weight_op", "st_weight", "alpha",
          "act_fro2", "act_op2")


class Conv1D(nn.Module):
    """transformers' GPT-2 Conv1D layout: weight stored (in, out)."""

    def __init__(self, nx: int, nf: int):
        super().__init__()
        self.weight = nn.Parameter(0.3 * torch.randn(nx, nf))

    def forward(self, x):
        return x @ self.weight


class Net(nn.Module):
    """Shapes chosen so that every sharding path runs, with uneven shards on 2 ranks:
    conv (5, 27) and c_a (12, 7) gather (sharded side smaller), conv2 (7, 5) rows and
    c_b (4, 12) columns sum Grams, norm (7,) is gathered."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.conv2 = nn.Conv2d(5, 7, 1)
        self.norm = nn.LayerNorm(7)
        self.c_a = Conv1D(7, 12)
        self.c_b = Conv1D(12, 4)

    def forward(self, x):
        h = self.conv2(torch.relu(self.conv(x))).permute(0, 2, 3, 1)
        return self.c_b(torch.tanh(self.c_a(self.norm(h))))


def _data():
    g = torch.Generator().manual_seed(11)
    idx = torch.randint(0, 96, (4, 8), generator=g)
    x = torch.randn(4, 3, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randn(4, 4, 4, 4, generator=g, dtype=torch.float64)
    return idx, x, y


def _models():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(**GPT_CFG)).double()
    net = Net().double()
    return gpt, net


def _train(gpt, net, idx, x, y, monitors):
    """Two monitored steps with an SGD step between; returns each monitor's records."""
    from spectralens.monitor import SpectralMonitor

    opt = torch.optim.SGD(list(gpt.parameters()) + list(net.parameters()), lr=0.5)
    mons = [SpectralMonitor(m, every=1, weight_every=1, grad_method=meth, run_dir=rd,
                            gram_dtype=torch.float64) for m, meth, rd in monitors]
    out = [[] for _ in mons]
    for _ in range(2):
        gpt(idx, idx)[1].backward()
        nn.functional.mse_loss(net(x), y).backward()
        for k, mon in enumerate(mons):
            out[k] += mon.step()
        opt.step()
        opt.zero_grad()
    for mon in mons:
        mon.close()
    return out


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        gpt, net = _models()
        for block in gpt.blocks:
            fully_shard(block)
        fully_shard(gpt)
        fully_shard(net)
        # gathering uneven shards to rank 0 (5 = 3 + 2 conv rows, 7 = 4 + 3 gains) is exact
        from spectralens.monitor.distributed import resolve_sharded

        gathered = [resolve_sharded(net.conv.weight.detach(), "conv"),
                    resolve_sharded(net.norm.weight.detach(), "norm")]
        if rank == 0:
            torch.save(gathered, os.path.join(out_dir, "gathered.pt"))
        from torch.distributed.fsdp import FullyShardedDataParallel

        from spectralens.monitor import SpectralMonitor

        fsdp1 = FullyShardedDataParallel(nn.Linear(4, 6), use_orig_params=True, device_id=torch.device("cpu"))
        with pytest.raises(TypeError, match="FSDP1"):  # flat parameters: refused, not measured wrongly
            SpectralMonitor(fsdp1)
        idx, x, y = _data()
        sl = slice(rank, None, world)  # each rank sees half of the global batch
        rd = os.path.join(out_dir, f"rank{rank}")
        recs = _train(gpt, net, idx[sl], x[sl], y[sl],
                      [(gpt, "gram", rd), (net, "gram", None), (net, "svd", None)])
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump(recs, fh)
    finally:
        dist.destroy_process_group()
    # Results are on disk; skip interpreter teardown as tests/test_monitor_distributed.py does.
    os._exit(0)


def _close(a, b, rel=1e-6):
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return a is b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))
    return a == pytest.approx(b, rel=rel, abs=1e-12)


def test_fsdp2_two_processes_gloo(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        pytest.skip("this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)")
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    got = json.loads((tmp_path / "rank0.json").read_text())
    assert json.loads((tmp_path / "rank1.json").read_text()) == [[], [], []]
    assert (tmp_path / "rank0" / "monitor.jsonl").exists()
    assert not (tmp_path / "rank1" / "monitor.jsonl").exists() and not (tmp_path / "rank1" / "meta.json").exists()

    gpt, net = _models()
    conv_w, norm_w = torch.load(tmp_path / "gathered.pt")
    assert torch.equal(conv_w, net.conv.weight.detach()) and torch.equal(norm_w, net.norm.weight.detach())
    idx, x, y = _data()
    want = _train(gpt, net, idx, x, y, [(gpt, "gram", None), (net, "gram", None), (net, "svd", None)])
    for g_recs, w_recs in zip(got, want):
        assert len(g_recs) == len(w_recs) > 0
        for g, w in zip(g_recs, w_recs):
            assert (g["step"], g["layer"]) == (w["step"], w["layer"])
            assert g["status"] == w["status"] == "ok", (g["layer"], g["status"])
            assert g["cond"] == w["cond"] and g["cond2"] == w["cond2"]
            # positions arange(T) are looked up once per forward, i.e. once per rank
            fields = FIELDS if g["layer"] != "pos_emb" else ("nr_grad", "st_act", "ratio", "grad_fro", "grad_op",
                                                             "st_grad", "weight_op", "st_weight", "alpha")
            for f in fields:
                assert _close(g[f], w[f]), (g["step"], g["layer"], f, g[f], w[f])
            if g["layer"] != "pos_emb":
                assert g["rows"] == w["rows"]
    # every layer of the net was measured (which path each takes: see Net)
    assert {r["layer"] for r in got[1]} == {"conv", "conv2", "norm", "c_a", "c_b"}
