"""The built-in demo: watch a weight spectrum grow a heavy tail during training, with no download.

Trains the two-layer teacher-student network of Kothapalli et al. ("Crafting heavy tails in
weight matrix spectrum without gradient noise", arXiv 2406.04657; ``spectralens.nets``):
x ~ N(0, I_d), y = softplus(beta^T x) + 0.3 xi, student f(x) = a^T tanh(W x / sqrt(d)) / sqrt(h),
only W (h x d) trained, full-batch Adam with a large learning rate. Scaled down from the paper's
d = 1000, h = 1500, n = 2000 to d = 500, h = 750, n = 1000 so the whole demo takes seconds.

At a few steps (0, 1, 2, 5, 10, ... up to ``steps``) the model is saved as
``checkpoints/step_NNNN.safetensors``; each file is analysed with ``run_analysis`` (the same
code path as ``spectralens analyze FILE``) and its outputs written to ``checkpoints/step_NNNN/``.
``report.html`` shows the ESD of W at every checkpoint on one log-log plot, alpha (KS and Hill)
against the step, the training loss, and links to the per-checkpoint reports.
"""
from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["DemoConfig", "checkpoint_steps", "run_demo"]


@dataclass
class DemoConfig:
    d: int = 500          # input dimension (paper: 1000)
    h: int = 750          # hidden width (paper: 1500)
    n: int = 1000         # training samples, full batch (paper: 2000)
    steps: int = 30       # Adam steps
    lr: float = 1.0       # Adam learning rate (paper's default single run: Adam, lr = 1)
    label_noise: float = 0.3
    seed: int = 0


def checkpoint_steps(steps: int) -> list[int]:
    """0, 1, 2, 5, 10, 20, 50, ... below ``steps``, and ``steps`` itself."""
    out, k = [0], 0
    while True:
        for m in (1, 2, 5):
            s = m * 10 ** k
            if s >= steps:
                return sorted(set(out + [steps]))
            out.append(s)
        k += 1


def run_demo(out_dir: str | Path, *, config: DemoConfig | None = None,
             log: Callable[[str], None] | None = None) -> Path:
    """Train, checkpoint, analyse and write ``out_dir/report.html``; returns its path."""
    from safetensors.torch import save_file

    from ..fit import hill_alpha
    from ..nets import TeacherStudentConfig, TwoLayerStudent, make_teacher_student_data
    from ..report.analyze_report import write_analysis
    from . import run_analysis

    cfg = config or DemoConfig()
    if cfg.steps < 1:
        raise ValueError(f"steps must be >= 1, got {cfg.steps}")
    say = log or (lambda s: None)
    out = Path(out_dir)
    ck_dir = out / "checkpoints"
    ck_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    ts = TeacherStudentConfig(d=cfg.d, h=cfg.h, n=cfg.n, label_noise=cfg.label_noise, seed=cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    X, y, _ = make_teacher_student_data(ts, generator=gen)
    net = TwoLayerStudent(cfg.d, cfg.h, generator=gen)
    opt = torch.optim.Adam([net.first.weight], lr=cfg.lr)
    save_at = checkpoint_steps(cfg.steps)
    losses: list[float] = []
    files: dict[int, Path] = {}
    for step in range(cfg.steps + 1):
        if step in save_at:
            path = ck_dir / f"step_{step:04d}.safetensors"
            save_file({"first.weight": net.first.weight.detach().clone().contiguous()}, str(path),
                      metadata={"step": str(step), "lr": str(cfg.lr)})
            files[step] = path
        if step == cfg.steps:
            break
        loss = torch.mean((net(X) - y) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    say(f"trained {cfg.steps} Adam steps (lr={cfg.lr}) on d={cfg.d}, h={cfg.h}, n={cfg.n} "
        f"in {time.perf_counter() - t0:.1f}s; final loss {losses[-1]:.4f}")

    records, esds, links = [], {}, {}
    for step, path in files.items():
        res = run_analysis(path, keep_esd=True)
        sub = ck_dir / f"step_{step:04d}"
        report = write_analysis(res, sub, title=f"demo checkpoint: step {step}")
        links[step] = report.relative_to(out).as_posix()
        row = res.layers.iloc[0]
        ev = res.esd[row["name"]]
        esds[f"step {step}"] = ev
        records.append({"step": step, "alpha_ks": float(row["alpha"]), "alpha_hill": float(hill_alpha(torch.from_numpy(ev))),
                        "xmin": float(row["xmin"]), "D": float(row["D"]), "lambda_max": float(row["lambda_max"]),
                        "stable_rank": float(row["stable_rank"]), "num_spikes": int(row["num_spikes"]),
                        "loss": losses[step] if step < len(losses) else losses[-1]})
        say(f"step {step:4d}: alpha(KS)={records[-1]['alpha_ks']:.2f} alpha(Hill)={records[-1]['alpha_hill']:.2f} "
            f"lambda_max={records[-1]['lambda_max']:.3g}")
    report = _write_demo_report(out, cfg, records, esds, links, losses)
    (out / "demo.json").write_text(json.dumps({"config": asdict(cfg), "checkpoints": records,
                                               "seconds": time.perf_counter() - t0}, indent=1))
    say(f"done in {time.perf_counter() - t0:.1f}s")
    return report


def _write_demo_report(out: Path, cfg: DemoConfig, records: list[dict], esds: dict, links: dict,
                       losses: list[float]) -> Path:
    from ..report.analyze_report import html_page, img_tag
    from ..report.esd_plots import plot_alpha_vs_step, plot_esd_overlay

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    steps = [r["step"] for r in records]
    overlay = plot_esd_overlay(esds, plots / "esd_over_training.png", title="ESD of W^T W over training")
    alpha = plot_alpha_vs_step(steps, {"alpha (KS scan, WeightWatcher)": [r["alpha_ks"] for r in records],
                                       "alpha (Hill / median xmin)": [r["alpha_hill"] for r in records]},
                               plots / "alpha_vs_step.png")
    loss_png = _plot_loss(losses, plots / "loss.png")
    rows = "".join(
        f"<tr><td><a href='{html.escape(links[r['step']])}'>step {r['step']}</a></td>"
        + "".join(f"<td>{r[k]:.4g}</td>" for k in ("alpha_ks", "alpha_hill", "xmin", "D", "lambda_max", "stable_rank"))
        + f"<td>{r['num_spikes']}</td><td>{r['loss']:.4g}</td></tr>" for r in records)
    body = (
        f"<p>Two-layer teacher-student network (Kothapalli et al., arXiv 2406.04657): only the first "
        f"layer W ({cfg.h} x {cfg.d}) is trained, full-batch Adam, lr = {cfg.lr}, {cfg.steps} steps, "
        f"n = {cfg.n}. Large steps first create a spike above the Marchenko-Pastur bulk, then the bulk "
        f"itself turns heavy-tailed: the ESD spreads to the right and alpha falls.</p>"
        f"<h2>ESD over training</h2>{img_tag(overlay, 'ESD over training')}"
        f"<h2>alpha over training</h2>{img_tag(alpha, 'alpha vs step')} {img_tag(loss_png, 'loss')}"
        f"<h2>Checkpoints</h2><p>Each link opens that checkpoint's own <code>spectralens analyze</code> "
        f"report (files in <code>checkpoints/</code>).</p><table><tr><th>checkpoint</th><th>alpha (KS)</th>"
        f"<th>alpha (Hill)</th><th>xmin</th><th>D</th><th>lambda_max</th><th>stable rank</th>"
        f"<th>MP spikes</th><th>train loss</th></tr>{rows}</table>")
    report = out / "report.html"
    report.write_text(html_page("spectralens demo: a heavy tail grows during training", body))
    return report


def _plot_loss(losses: list[float], path: Path) -> Path:
    from ..report.esd_plots import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.8, 4.0))
    ax.semilogy(range(len(losses)), losses, "-", color="#444")
    ax.set_xlabel("training step")
    ax.set_ylabel("train MSE")
    ax.set_title("training loss", fontsize=10)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.13, top=0.9)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
