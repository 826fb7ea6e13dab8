"""Faults never reach the training loop; memory stays flat over 1,000 monitored steps."""
from __future__ import annotations

import gc
import math
import tracemalloc
import warnings

import pytest
import torch
from torch import nn

from spectralens.monitor import MemorySink, SpectralMonitor
from spectralens.monitor import core as monitor_core


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))


def _train_step(model, mon, x=None):
    x = torch.randn(5, 6) if x is None else x
    model(x).pow(2).mean().backward()
    recs = mon.step()
    model.zero_grad()
    return recs


def test_non_finite_input_gives_nan_and_one_warning_per_layer():
    model = _tiny()
    mon = SpectralMonitor(model, every=1)
    bad = torch.full((5, 6), float("nan"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            recs = _train_step(model, mon, bad)
    assert all(math.isnan(r["nr_grad"]) or math.isnan(r["st_act"]) for r in recs)
    assert all(r["status"] != "ok" and r["cond"] is None for r in recs)
    msgs = [str(w.message) for w in caught if "spectralens monitor" in str(w.message)]
    assert len(msgs) == 2 and {"'0'" in m for m in msgs} == {True, False}
    recs = _train_step(model, mon)  # recovers on good data
    assert all(r["status"] == "ok" for r in recs)
    mon.close()


def test_missing_gradient_is_reported_not_raised():
    model = _tiny()
    mon = SpectralMonitor(model, every=1)
    model(torch.randn(5, 6)).sum().backward()
    model.zero_grad(set_to_none=True)  # the documented mistake
    with pytest.warns(RuntimeWarning, match="zero_grad"):
        recs = mon.step()
    assert all(math.isnan(r["nr_grad"]) and math.isfinite(r["st_act"]) for r in recs)
    mon.close()


def test_exceptions_inside_metrics_and_sinks_never_raise(monkeypatch):
    class Broken(MemorySink):
        def write(self, records):
            raise OSError("disk full")

    def boom(G, method="gram"):
        raise RuntimeError("eigensolver failed")

    monkeypatch.setattr(monitor_core, "gradient_stats", boom)
    model = _tiny()
    mon = SpectralMonitor(model, every=1, sinks=[Broken()])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = _train_step(model, mon)
        _train_step(model, mon)
    assert all("eigensolver failed" in r["status"] for r in recs)
    assert sum("disk full" in str(w.message) for w in caught) == 1
    mon.close()


def test_hook_failure_is_caught(monkeypatch):
    model = _tiny()
    mon = SpectralMonitor(model, every=1)
    monkeypatch.setattr(mon.probes[0], "_accumulate", lambda x: 1 / 0)
    with pytest.warns(RuntimeWarning, match="ZeroDivisionError"):
        recs = _train_step(model, mon)
    assert math.isnan(recs[0]["st_act"]) and recs[1]["status"] == "ok"
    mon.close()


def test_step_after_close_is_ignored():
    model = _tiny()
    mon = SpectralMonitor(model, every=1)
    mon.close()
    with pytest.warns(RuntimeWarning, match="after close"):
        assert _train_step(model, mon) == []


def test_memory_flat_over_1000_monitored_steps():
    model = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    mon = SpectralMonitor(model, every=1, keep_records=False, alpha_every=5)
    x = torch.randn(5, 6)

    def steps(k):
        for _ in range(k):
            model(x).pow(2).mean().backward()
            mon.step()
            opt.step()
            opt.zero_grad()

    def n_tensors():
        return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))

    steps(50)
    gc.collect()
    tracemalloc.start()
    base_tensors = n_tensors()
    snap0 = tracemalloc.take_snapshot()
    steps(1000)
    gc.collect()
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    growth = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
    assert mon.step_count == 1050
    assert growth < 64 * 1024, f"python heap grew by {growth} bytes over 1000 monitored steps"
    assert n_tensors() <= base_tensors
    # between steps a probe holds no tensor; the records are plain Python scalars
    assert all(p.gram is None and p.fro2 is None and p.counts is None for p in mon.probes)
    assert all(not isinstance(v, torch.Tensor) for v in mon.last_records[0].values())
    mon.close()
