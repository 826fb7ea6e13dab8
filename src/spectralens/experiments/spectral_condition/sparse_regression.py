"""Experiment 5: sparse regression y = x1 x2 x3 with a 4-layer squared-ReLU net (paper figs. 1, 4).

Davis & Drusvyatskiy (arXiv 2512.04299, section 5; the authors' ``weighted_spectral_vs_gd.py``):
x ~ N(0, I_d) with d = 128, n = 512 samples (full batch), y = x1 x2 x3; a bias-free net
d -> 4d -> 4d -> 4d -> 1 with squared-ReLU activations, PyTorch's default init, float64,
loss = mean squared error. Per-layer steps, with A_{l-1} the input of layer l (A_0 = X):

* GD on layer l:      W_l <- W_l - lr (n / ||A_{l-1}||_op^2) G_l,                 lr = 0.081
* spectral on layer l: W_l <- W_l - lr (n ||G_l||_* / ||A_{l-1}||_F^2) polar(G_l), lr = 0.1

"SpecGD" uses the spectral step on layers 2-3 and GD on layers 1 and 4 (as the paper).
The paper reports post-activation st <= ~6 and gradient nr up to ~64, with SpecGD ahead.

||A||_op for the GD scales is computed each step by power iteration on A^T A, warm-started
from the previous step's top vector (relative tolerance 1e-6); st(A) and nr(G) of the GD
layers are logged every ``log_every`` steps (exact, float64).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spectralens.experiments.common import Claim, figure, fmt, save_figure, torch_threads, write_outputs

from ._steps import nr, polar_and_nuclear, st

__all__ = ["run", "train", "make_net"]

LR_GD, LR_SPEC = 0.081, 0.1


def make_net(d: int, seed: int) -> nn.Sequential:
    """Bias-free Linear(d,4d), Linear(4d,4d), Linear(4d,4d), Linear(4d,1) with default init, float64."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, 4 * d, bias=False),
                  nn.Linear(4 * d, 4 * d, bias=False), nn.Linear(4 * d, 1, bias=False)]
    return nn.Sequential(*layers).double()


def _forward(net: nn.Sequential, X: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Output (n, 1) and the inputs A_0 = X, A_1, A_2, A_3 of the four layers."""
    acts, a = [X], X
    for i, layer in enumerate(net):
        a = layer(a)
        if i < 3:
            a = F.relu(a).square()
            acts.append(a)
    return a, acts


def _op_norm_sq(A: torch.Tensor, v: torch.Tensor | None) -> tuple[float, torch.Tensor]:
    """||A||_op^2 by power iteration on A^T A (A: (n, m)), warm-started from v; returns (value, v)."""
    A = A.detach()
    if v is None:
        v = torch.ones(A.shape[1], dtype=A.dtype) / A.shape[1] ** 0.5
    lam = 0.0
    for _ in range(200):
        w = A.T @ (A @ v)
        new = float(w.norm())
        v = w / max(new, 1e-300)
        if abs(new - lam) <= 1e-6 * new:
            return new, v
        lam = new
    return lam, v


def train(X: torch.Tensor, y: torch.Tensor, spectral: tuple[int, ...], lr: float, steps: int, seed: int,
          log_every: int) -> dict:
    """Full-batch training; ``spectral`` lists the 0-based layers given the spectral step."""
    net = make_net(X.shape[1], seed)
    n = X.shape[0]
    vs: list[torch.Tensor | None] = [None] * 4
    out = {"loss": [], "log_steps": [], "st": {f"A{i}": [] for i in (1, 2, 3)}, "nr": {f"W{i}": [] for i in (1, 2, 3)}}
    for t in range(steps):
        pred, acts = _forward(net, X)
        loss = F.mse_loss(pred, y)
        out["loss"].append(float(loss.detach()))
        net.zero_grad(set_to_none=True)
        loss.backward()
        log = t % log_every == 0 or t == steps - 1
        if log:
            out["log_steps"].append(t)
            for i in (1, 2, 3):
                out["st"][f"A{i}"].append(st(acts[i]))
        with torch.no_grad():
            for l, layer in enumerate(net):
                G, A = layer.weight.grad, acts[l]
                if l in spectral:
                    polar, nuc = polar_and_nuclear(G)
                    if log:
                        out["nr"][f"W{l + 1}"].append(nuc**2 / float(G.square().sum()))
                    layer.weight.sub_(lr * n * nuc / float(A.square().sum()) * polar)
                else:
                    if log and l < 3:
                        out["nr"][f"W{l + 1}"].append(nr(G))
                    op2, vs[l] = _op_norm_sq(A, vs[l])
                    layer.weight.sub_(lr * n / op2 * G)
    return out


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict:
    with torch_threads(1):
        return _run(Path(out_dir), quick, seed)


def _run(out_dir: Path, quick: bool, seed: int) -> dict:
    t0 = time.perf_counter()
    d, n, steps, log_every = (32, 512, 120, 10) if quick else (128, 512, 400, 10)
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = (X[:, 0] * X[:, 1] * X[:, 2])[:, None]
    gd = train(X, y, (), LR_GD, steps, seed, log_every)
    spec = train(X, y, (1, 2), LR_SPEC, steps, seed, log_every)

    max_st = max(max(v) for v in gd["st"].values())
    max_st_spec = max(max(v) for v in spec["st"].values())

    def frac_cond(run_: dict) -> tuple[float, int]:
        ok = total = 0
        for l in (2, 3):  # layer l's incoming activation is A_{l-1}
            for g, a in zip(run_["nr"][f"W{l}"], run_["st"][f"A{l - 1}"]):
                ok += g >= a
                total += 1
        return ok / total, total

    fgd, tot = frac_cond(gd)
    fsp, _ = frac_cond(spec)
    max_nr = max(max(v) for r in (gd, spec) for v in r["nr"].values())
    claims = [
        Claim("SpecGD (spectral on layers 2-3) reaches a lower training loss than GD",
              f"final MSE GD {fmt(gd['loss'][-1])}, SpecGD {fmt(spec['loss'][-1])} after {steps} its "
              f"(initial {fmt(gd['loss'][0])})", spec["loss"][-1] < gd["loss"][-1]),
        Claim("post-activation st(A_l) stays small (<= ~6, the squared-ReLU bound) during training",
              f"max st over A1..A3 and logged steps: GD {fmt(max_st)}, SpecGD {fmt(max_st_spec)} of a possible {4 * d}",
              max(max_st, max_st_spec) <= 6.0),
        Claim("nr(G_l) >= st(A_{l-1}) for the spectral layers 2-3 (the condition holds)",
              f"at {100 * fgd:.0f}% (GD run) and {100 * fsp:.0f}% (SpecGD run) of {tot} logged (layer, step) pairs",
              fgd >= 0.9 and fsp >= 0.9),
        Claim("gradient nr reaches tens (paper: up to ~64)", f"max nr(G) over layers 1-3 and both runs {fmt(max_nr)}", None),
    ]

    fig, axes = figure(1, 3)
    ax = axes[0][0]
    ax.semilogy(gd["loss"], label=f"GD (lr {LR_GD})")
    ax.semilogy(spec["loss"], label=f"SpecGD layers 2-3 (lr {LR_SPEC})")
    ax.set_xlabel("iteration")
    ax.set_ylabel("train MSE")
    ax.set_title("y = x1 x2 x3")
    ax.legend(fontsize=8)
    for ax, key, what in ((axes[0][1], "st", "st(A_l)"), (axes[0][2], "nr", "nr(G_l)")):
        for name, series in gd[key].items():
            ax.plot(gd["log_steps"], series, label=f"{name}, GD")
        for name, series in spec[key].items():
            ax.plot(spec["log_steps"], series, "--", label=f"{name}, SpecGD")
        ax.set_xlabel("iteration")
        ax.set_ylabel(what)
        ax.legend(fontsize=6)
    figs = [save_figure(fig, out_dir / "sparse_regression.png")]

    settings = {"d": d, "width": 4 * d, "n": n, "steps": steps, "lr_gd": LR_GD, "lr_spec": LR_SPEC,
                "spectral_layers": [2, 3], "log_every": log_every, "dtype": "float64", "seed": seed}
    scale = (f"quick: d = {d} (paper 128, width {4 * d} vs 512), {steps} iterations (paper 400-2000)" if quick else
             f"paper scale d = 128, width 512, n = 512, {steps} iterations (the paper runs 400-2000)")
    results = {"gd": gd, "specgd": spec}
    seconds = time.perf_counter() - t0
    write_outputs(out_dir, title="Sparse regression x1 x2 x3: SpecGD on layers 2-3 vs GD (figs. 1, 4)", claims=claims,
                  results=results, settings=settings, scale_note=scale, figures=figs, seconds=seconds)
    return {"claims": [c.to_dict() for c in claims], "results": results, "seconds": seconds}
