"""Sinks (JSONL, CSV, TensorBoard, memory), the summary verdict, the report and its CLI."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

from spectralens.monitor import (RECORD_FIELDS, CSVSink, JSONLSink, MemorySink, SpectralMonitor, recommend,
                                 summarize)


def _run(tmp_path, steps=6, every=2, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, 8), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 20))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with SpectralMonitor(model, every=every, run_dir=tmp_path, **kw) as mon:
        for _ in range(steps):
            idx = torch.randint(0, 20, (4, 6))
            nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
            mon.step()
            opt.step()
            opt.zero_grad()
    return mon


def test_jsonl_csv_and_memory_agree(tmp_path):
    mon = _run(tmp_path)
    mem = mon.records()
    assert list(mem.columns) == list(RECORD_FIELDS)
    assert len(mem) == 3 * 3 and sorted(mem["step"].unique()) == [0, 2, 4]
    lines = (tmp_path / "monitor.jsonl").read_text().splitlines()
    js = pd.DataFrame([json.loads(x) for x in lines])
    csv = pd.read_csv(tmp_path / "monitor.csv")
    for df in (js, csv):
        assert len(df) == len(mem)
        for col in ("step", "nr_grad", "st_act", "ratio"):
            assert df[col].tolist() == pytest.approx(mem[col].tolist())
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["every"] == 2 and [m["kind"] for m in meta["layers"]] == ["embedding", "other", "other"]
    assert mem["alpha"].notna().tolist() == [True] * 3 + [False] * 6  # alpha_every=10: first monitored step only
    emb = mem[mem["layer"] == "0"]
    assert (emb["act_fro2"] == 24).all()  # 4 x 6 tokens


def test_nan_written_as_null_and_empty(tmp_path):
    recs = [{"step": 0, "layer": "a", "kind": "other", "nr_grad": float("nan"), "st_act": 1.0, "cond": None}]
    JSONLSink(tmp_path / "x.jsonl").write(recs)
    s = CSVSink(tmp_path / "x.csv")
    s.write(recs)
    s.close()
    assert json.loads((tmp_path / "x.jsonl").read_text())["nr_grad"] is None
    assert math.isnan(pd.read_csv(tmp_path / "x.csv")["nr_grad"][0])


def test_memory_sink_bound():
    s = MemorySink(max_records=3)
    s.write([{"step": i} for i in range(5)])
    assert [r["step"] for r in s.records] == [2, 3, 4]
    with pytest.raises(ValueError):
        MemorySink(max_records=0)


def test_tensorboard_sink(tmp_path):
    pytest.importorskip("tensorboard")
    from spectralens.monitor import TensorBoardSink

    sink = TensorBoardSink(tmp_path / "tb")
    _run(tmp_path / "run", sinks=[sink])
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_recommendation_rule_and_summary():
    assert recommend(0.9, 3.0) == "spectral"
    assert recommend(0.9, 1.1) == "borderline"
    assert recommend(0.1, 0.5) == "euclidean"
    assert recommend(0.5, 1.0) == "borderline"
    assert recommend(float("nan"), float("nan")) == "n/a"
    rows = []
    for step in range(10):
        rows += [{"step": step, "layer": "a.q", "kind": "q", "nr_grad": 30.0, "st_act": 3.0},
                 {"step": step, "layer": "a.v", "kind": "v", "nr_grad": 2.0, "st_act": 10.0},
                 {"step": step, "layer": "b.v", "kind": "v", "nr_grad": 20.0 if step % 2 else 2.0, "st_act": 10.0}]
    s = summarize(rows)
    layers = s["layers"].set_index("layer")
    assert layers.loc["a.q", "recommendation"] == "spectral" and layers.loc["a.q", "held"] == 1.0
    assert layers.loc["a.v", "recommendation"] == "euclidean"
    assert layers.loc["b.v", "recommendation"] == "borderline" and layers.loc["b.v", "held"] == 0.5
    kinds = s["kinds"].set_index("kind")
    assert list(s["kinds"]["kind"]) == ["q", "v"]
    assert kinds.loc["v", "layers"] == 2 and kinds.loc["v", "held"] == 0.25
    assert kinds.loc["q", "ratio"] == pytest.approx(10.0)


def test_report_cli_writes_everything(tmp_path, capsys):
    from spectralens.cli import main

    _run(tmp_path / "run")
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "recommendation" in out and "report.html" in out
    for name in ("summary_layers.csv", "summary_kinds.csv", "summary.json", "nr_st_by_kind.png",
                 "ratio_by_layer.png", "report.html"):
        assert (tmp_path / "rep" / name).stat().st_size > 0, name
    html = (tmp_path / "rep" / "report.html").read_text()
    assert "<table" in html and "nr_st_by_kind.png" in html
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert {k["kind"] for k in summary["kinds"]} == {"embedding", "other"}


def test_report_cli_bad_input(tmp_path, capsys):
    from spectralens.cli import main

    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "monitor.jsonl").write_text("{not json\n")
    assert main(["report", str(tmp_path / "bad"), "--no-plots"]) == 2
    assert "not a JSON record" in capsys.readouterr().err


def test_wandb_sink_with_a_run_object(tmp_path):
    from spectralens.monitor import WandbSink

    class FakeRun:
        def __init__(self):
            self.logged = []

        def log(self, data, commit=True):
            self.logged.append((data, commit))

    run = FakeRun()
    _run(tmp_path, sinks=[WandbSink(run)])
    assert len(run.logged) == 3 and all(commit is False for _, commit in run.logged)
    data = run.logged[0][0]
    assert data["spectral/step"] == 0 and "spectral/ratio/1" in data and "spectral/nr_grad/0" in data


def test_torch_rmsnorm_is_monitored(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.RMSNorm(8), nn.Linear(8, 2))
    with SpectralMonitor(model, every=1) as mon:
        model(torch.randn(16, 4)).pow(2).sum().backward()
        recs = {r["layer"]: r for r in mon.step()}
    assert recs["1"]["kind"] == "norm" and recs["1"]["status"] == "ok"
    assert recs["1"]["act_fro2"] == pytest.approx(16 * 8, rel=1e-4)  # x_hat = x / rms(x): each row has norm^2 = d
