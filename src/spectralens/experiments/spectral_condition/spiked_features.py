"""Experiment 4: spiked random features, nr(G) after one GD step grows with dimension (figs. 14-15).

Davis & Drusvyatskiy (arXiv 2512.04299, section 3.2): least squares
``L(W) = 1/(2n) ||W A - Y||_F^2``, Y = W# A, with ReLU features A = relu(V X) (k x n),
V (k x d) with N(0, 1/d) entries, X (d x n) Gaussian, W# (k x k) N(0, 1/k). The feature
covariance B = (1/n) A A^T = u u^T + Sigma has a spike ||u||^2 ~ k, so at W0 = 0 the
gradient G0 = -W# B is dominated by it: nr(G0) = O(1). One GD step with
eta = n / ||A||_op^2 removes the spike direction and nr(G1) ~ nr(W#) = Theta(k), while
st(A) stays bounded: the predicted advantage nr / st grows linearly with dimension.

Setting (the paper's figs. 14-15, the authors' ``rf_nuclear_rank_plots.py``): n = 2k,
d = k/2, k in {64, 128, 256, 512}, averaged over 3 seeds (1 in quick mode), float64.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from spectralens.experiments.common import Claim, figure, fmt, save_figure, torch_threads, write_outputs

from ._steps import op_norm_sq, st

__all__ = ["run", "gd_nuclear_ranks"]


def gd_nuclear_ranks(k: int, steps: int, seed: int) -> tuple[list[float], float]:
    """nr(grad L(W_t)) for t = 0..steps-1 along GD from W0 = 0, and st(A); sizes n = 2k, d = k/2."""
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    d, n = max(1, k // 2), 2 * k
    X = torch.randn(d, n, generator=gen, dtype=f64)
    V = torch.randn(k, d, generator=gen, dtype=f64) / math.sqrt(d)
    A = F.relu(V @ X)
    W_sharp = torch.randn(k, k, generator=gen, dtype=f64) / math.sqrt(k)
    Y = W_sharp @ A
    lr = n / op_norm_sq(A)
    W = torch.zeros(k, k, dtype=f64)
    out = []
    for _ in range(steps):
        G = (W @ A - Y) @ A.T / n
        s = torch.linalg.svdvals(G)
        out.append(float(s.sum() ** 2 / s.square().sum()))
        W = W - lr * G
    return out, st(A)


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict:
    with torch_threads(1):
        return _run(Path(out_dir), quick, seed)


def _run(out_dir: Path, quick: bool, seed: int) -> dict:
    t0 = time.perf_counter()
    ks = [64, 128, 256, 512]
    seeds = [seed] if quick else [seed, seed + 1, seed + 2]
    curve_steps = 0 if quick else 50
    nr0, nr1, sts, curves = {}, {}, {}, {}
    for k in ks:
        r0, r1, s_, c_ = [], [], [], None
        for s in seeds:
            steps = curve_steps if (s == seed and curve_steps) else 2
            nrs, st_a = gd_nuclear_ranks(k, steps, seed=1000 * s + k)
            r0.append(nrs[0])
            r1.append(nrs[1])
            s_.append(st_a)
            if steps > 2:
                c_ = nrs
        nr0[k], nr1[k], sts[k] = sum(r0) / len(r0), sum(r1) / len(r1), sum(s_) / len(s_)
        if c_ is not None:
            curves[k] = c_
    # Least-squares line nr1 = a + b k, and its R^2.
    x = torch.tensor(ks, dtype=torch.float64)
    y = torch.tensor([nr1[k] for k in ks], dtype=torch.float64)
    Xd = torch.stack([torch.ones_like(x), x], 1)
    coef = torch.linalg.lstsq(Xd, y[:, None]).solution.squeeze(1)
    resid = y - Xd @ coef
    r2 = float(1 - resid.square().sum() / (y - y.mean()).square().sum())
    slope, intercept = float(coef[1]), float(coef[0])
    growth1, growth0 = nr1[ks[-1]] / nr1[ks[0]], nr0[ks[-1]] / nr0[ks[0]]

    claims = [
        Claim("nr(G) at initialisation is flat in k (nr at k=512 <= 2 x nr at k=64)",
              f"nr(G0): {', '.join(f'k={k}: {fmt(nr0[k])}' for k in ks)} (x{growth0:.2f})", growth0 <= 2),
        Claim("nr(G) after one GD step grows about linearly in k (R^2 of a line >= 0.9 and x8 in k gives >= x4 in nr)",
              f"nr(G1): {', '.join(f'k={k}: {fmt(nr1[k])}' for k in ks)}; fitted slope {slope:.3f} per unit k "
              f"(intercept {intercept:.2f}, R^2 {r2:.3f}, x{growth1:.2f})", r2 >= 0.9 and growth1 >= 4),
        Claim("st(A) stays bounded in k (ReLU features: <= pi)",
              f"st(A): {', '.join(f'k={k}: {fmt(sts[k])}' for k in ks)}", max(sts.values()) <= math.pi),
        Claim("after one step nr(G) >= st(A) at every k (spectral step predicted to win)",
              f"min over k of nr(G1) / st(A) = {fmt(min(nr1[k] / sts[k] for k in ks))}", all(nr1[k] >= sts[k] for k in ks)),
    ]

    fig, axes = figure(1, 2 if curves else 1)
    ax = axes[0][0]
    ax.plot(ks, [nr0[k] for k in ks], "o-", label="initialisation")
    ax.plot(ks, [nr1[k] for k in ks], "s-", label="after one step")
    ax.plot(ks, [intercept + slope * k for k in ks], "k:", lw=0.8, label=f"fit: slope {slope:.3f}")
    ax.plot(ks, [sts[k] for k in ks], "^--", label="st(A)")
    ax.set_xlabel("feature dimension k")
    ax.set_ylabel("nr(G)")
    ax.set_title("first-step scaling (fig. 15)")
    ax.legend(fontsize=8)
    if curves:
        ax = axes[0][1]
        for k, c in curves.items():
            ax.plot(c, label=f"k={k}")
        ax.set_xlabel("GD iteration")
        ax.set_ylabel("nr(G)")
        ax.set_title("nr along GD (fig. 14)")
        ax.legend(fontsize=8)
    figs = [save_figure(fig, out_dir / "spiked_features.png")]

    settings = {"k": ks, "n": "2k", "d": "k/2", "seeds": seeds, "curve_steps": curve_steps, "dtype": "float64",
                "lr": "n / ||A||_op^2"}
    scale = ("paper scale (k in 64..512, n = 2k, d = k/2), 1 seed, no per-step curves (quick)" if quick else
             "paper scale (k in 64..512, n = 2k, d = k/2), 3 seeds; per-step curves for 50 GD steps, seed 0")
    results = {"nr_init": nr0, "nr_one_step": nr1, "st_A": sts, "slope": slope, "intercept": intercept, "r2": r2,
               "curves": curves}
    seconds = time.perf_counter() - t0
    write_outputs(out_dir, title="Spiked random features: nr(G) after one step grows with k (figs. 14-15)",
                  claims=claims, results=results, settings=settings, scale_note=scale, figures=figs, seconds=seconds)
    return {"claims": [c.to_dict() for c in claims], "results": results, "seconds": seconds}
