"""Figures of the lrp-bounds reproduction (matplotlib lazily, Agg backend, via common.figure)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..common import figure, save_figure
from .convergence import AUGMENTATIONS
from .setup import BETA, METHODS

__all__ = ["plot_all"]

_LABEL = {"gradient": "gradient", "epsilon": "LRP-epsilon", "beta": f"LRP-beta (beta={BETA:g})"}
_COLOR = {"gradient": "tab:blue", "epsilon": "tab:orange", "beta": "tab:green"}


def plot_convergence(records: list[dict], path: Path) -> str:
    """Rows: augmentations; columns: methods. Deviation quantile and rms vs T, Hoeffding's t(T), log-log."""
    fig, axes = figure(len(AUGMENTATIONS), len(METHODS), size=(4.2, 3.3))
    for i, aug in enumerate(AUGMENTATIONS):
        for j, m in enumerate(METHODS):
            ax = axes[i][j]
            rs = [r for r in records if r["augmentation"] == aug and r["method"] == m]
            for n, r in enumerate(rs):
                lab = (lambda s: s if n == 0 else None)
                ax.loglog(r["T"], r["hoeffding"], "--", color="k", alpha=0.5, lw=1, label=lab("Hoeffding t(T), B"))
                ax.loglog(r["T"], r["hoeffding_observed"], "-.", color="k", alpha=0.35, lw=1,
                          label=lab("Hoeffding with observed max|R_i|"))
                ax.loglog(r["T"], r["dev_q"], "-o", ms=2.5, color=_COLOR[m], alpha=0.8,
                          label=lab("max_i (1-delta)-quantile |mean-E|"))
                ax.loglog(r["T"], r["rms"], ":", color=_COLOR[m], alpha=0.8, label=lab("rms |mean-E|"))
            if rs:
                T = np.asarray(rs[0]["T"], float)
                ref = np.median([r["rms"][0] for r in rs]) / np.sqrt(T)
                ax.loglog(T, ref, "-", color="grey", lw=0.8, alpha=0.6, label="T^-1/2")
                slopes = ", ".join(f"{r['slope_rms']:.2f}" for r in rs)
                ax.set_title(f"{_LABEL[m]}, {aug}\nrms slopes {slopes}", fontsize=9)
            ax.set_xlabel("T (augmented copies averaged)")
            if j == 0:
                ax.set_ylabel("deviation from E[R] (per input)")
            if i == 0 and j == 0:
                ax.legend(fontsize=6.5)
    return save_figure(fig, path)


def plot_scaling(scaling: dict, path: Path) -> str:
    """Left: each method's bound constant vs c (log-log) with c^L; right: observed max|R_i| / |R_out|."""
    fig, axes = figure(1, 2, size=(4.8, 3.6))
    summ, L = scaling["summary"], scaling["L"]
    for m in METHODS:
        cs = sorted(summ[m]["per_c"], key=float)
        const = [summ[m]["per_c"][c]["constant"] for c in cs]
        axes[0][0].loglog([float(c) for c in cs], const, "-o", color=_COLOR[m], label=_LABEL[m])
        obs = [summ[m]["per_c"][c]["observed_over_rout"] for c in cs]
        axes[0][1].semilogx([float(c) for c in cs], obs, "-o", color=_COLOR[m], label=_LABEL[m])
    cs = np.asarray(sorted(float(c) for c in summ["gradient"]["per_c"]))
    g1 = summ["gradient"]["per_c"]
    one = g1.get(1.0, next(iter(g1.values())))["constant"]
    axes[0][0].loglog(cs, one * cs ** L, "--", color="grey", lw=0.8, label=f"c^L (L={L}), through gradient at c=1")
    axes[0][0].set_xlabel("weight scale c")
    axes[0][0].set_ylabel("bound constant (median over inputs)")
    axes[0][0].set_title("constant of B: beta flat, gradient/epsilon ~ c^L", fontsize=9)
    axes[0][0].legend(fontsize=7)
    axes[0][1].set_xlabel("weight scale c")
    axes[0][1].set_ylabel("observed max|R_i| / |R_out|")
    axes[0][1].set_title("observed attributions per unit output (scale-free)", fontsize=9)
    for ax in axes[0]:
        ax.set_xticks(cs)
        ax.set_xticklabels([f"{c:g}" for c in cs])
        ax.minorticks_off()
    return save_figure(fig, path)


def plot_maps(inputs, records: list[dict], path: Path, k: int = 0) -> str:
    """The clean image and E[R] of each method under each augmentation for input ``k``."""
    fig, axes = figure(len(AUGMENTATIONS), 1 + len(METHODS), size=(2.3, 2.3))
    for i, aug in enumerate(AUGMENTATIONS):
        axes[i][0].imshow(inputs[k, 0].numpy(), cmap="gray_r", vmin=0, vmax=1)
        axes[i][0].set_title(f"input {k} ({aug})", fontsize=8)
        for j, m in enumerate(METHODS, start=1):
            r = next(r for r in records if r["input"] == k and r["augmentation"] == aug and r["method"] == m)
            E = r["_E"].reshape(inputs.shape[-2:]).numpy()
            lim = float(np.abs(E).max()) or 1.0
            axes[i][j].imshow(E, cmap="bwr", vmin=-lim, vmax=lim)
            axes[i][j].set_title(f"E[R] {_LABEL[m]}", fontsize=8)
    for row in axes:
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    return save_figure(fig, path)


def plot_all(inputs, records, scaling, out_dir: Path) -> list[str]:
    out_dir = Path(out_dir)
    return [plot_convergence(records, out_dir / "lrp_bounds_convergence.png"),
            plot_scaling(scaling, out_dir / "lrp_bounds_scaling.png"),
            plot_maps(inputs, records, out_dir / "lrp_bounds_maps.png")]
