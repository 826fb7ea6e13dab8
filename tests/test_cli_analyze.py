"""`spectralens analyze` end to end on a small safetensors file."""
import json

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from spectralens.cli import build_parser, main


@pytest.fixture()
def ckpt(tmp_path):
    g = torch.Generator().manual_seed(0)
    sd = {"embed.weight": torch.randn(200, 16, generator=g), "h.0.fc.weight": torch.randn(64, 16, generator=g),
          "h.0.fc.bias": torch.randn(64, generator=g), "h.1.conv.weight": torch.randn(8, 4, 3, 3, generator=g),
          "h.1.bad.weight": torch.full((20, 10), float("nan"))}
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path))
    return path


def test_analyze_writes_all_outputs(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze", str(ckpt), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    report = out / "report.html"
    assert captured.out.strip().splitlines()[-1] == str(report.resolve())
    assert "h.0.fc" in captured.out  # the terminal table
    for name in ("layers.csv", "layers.json", "summary.json", "report.html", "plots/alpha_by_layer.png",
                 "plots/esd_h.0.fc.png", "plots/esd_embed.png", "plots/esd_h.1.conv.png"):
        assert (out / name).is_file(), name
    df = pd.read_csv(out / "layers.csv")
    assert list(df["name"]) == ["embed", "h.0.fc", "h.1.bad", "h.1.conv"]
    assert df.set_index("name").loc["h.1.bad", "status"].startswith("non-finite")
    records = json.loads((out / "layers.json").read_text())
    assert len(records) == 4 and records[2]["alpha"] is None  # NaN -> null, valid JSON
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_ok"] == 3 and summary["settings"]["fit"] == "ks"
    html = report.read_text()
    assert html.count("data:image/png;base64,") == 4  # alpha plot + 3 ESDs, embedded
    assert 'src="plots/' not in html


def test_analyze_options(ckpt, tmp_path):
    out = tmp_path / "o2"
    assert main(["analyze", str(ckpt), "--out", str(out), "--layers", "^h\\.0", "--fit", "hill", "--no-mp",
                 "--no-plots", "--quiet", "--dtype", "float32"]) == 0
    df = pd.read_csv(out / "layers.csv")
    assert list(df["name"]) == ["h.0.fc"] and df["mp_softrank"].isna().all()
    assert not (out / "plots").exists()
    assert main(["analyze", str(ckpt), "--out", str(tmp_path / "o3"), "--types", "conv2d", "--conv", "flatten",
                 "--quiet"]) == 0
    df = pd.read_csv(tmp_path / "o3" / "layers.csv")
    assert list(df["name"]) == ["h.1.conv"] and int(df["num_evals"][0]) == 8


def test_bad_regex_and_no_match_exit_2(ckpt, tmp_path, capsys):
    assert main(["analyze", str(ckpt), "--out", str(tmp_path / "x"), "--layers", "(", "--quiet"]) == 2
    assert main(["analyze", str(ckpt), "--out", str(tmp_path / "x"), "--layers", "nothing", "--quiet"]) == 2
    assert "no weight matrices" in capsys.readouterr().err


def test_help_explains_every_option():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["analyze"]
    for action in sub._actions:
        if action.dest != "help":
            assert action.help and len(action.help) > 20, action.dest
    text = sub.format_help()
    for opt in ("--out", "--layers", "--types", "--fit", "--fix-fingers", "--conv", "--no-mp", "--quiet", "--dtype"):
        assert opt in text
