"""`spectralens demo` with a few steps: checkpoints, per-checkpoint reports, the training report."""
import json

from spectralens.analyze.demo import checkpoint_steps
from spectralens.cli import main


def test_checkpoint_steps():
    assert checkpoint_steps(30) == [0, 1, 2, 5, 10, 20, 30]
    assert checkpoint_steps(3) == [0, 1, 2, 3]
    assert checkpoint_steps(1) == [0, 1]


def test_demo_runs_and_reports(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "3", "--quiet"]) == 0
    report = out / "report.html"
    assert capsys.readouterr().out.strip() == str(report.resolve())
    html = report.read_text()
    assert html.count("data:image/png;base64,") == 3  # ESD overlay, alpha vs step, loss
    for step in (0, 1, 2, 3):
        assert (out / "checkpoints" / f"step_{step:04d}.safetensors").is_file()
        assert (out / "checkpoints" / f"step_{step:04d}" / "report.html").is_file()
        assert f"checkpoints/step_{step:04d}/report.html" in html
    info = json.loads((out / "demo.json").read_text())
    steps = [r["step"] for r in info["checkpoints"]]
    assert steps == [0, 1, 2, 3]
    # the spectrum changes: lambda_max grows by orders of magnitude after one large Adam step
    lam = [r["lambda_max"] for r in info["checkpoints"]]
    assert lam[1] > 10 * lam[0]


def test_demo_bad_steps_exit_2(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--steps", "0"]) == 2
