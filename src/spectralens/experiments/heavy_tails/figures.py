"""Figures of the heavy-tails reproduction (matplotlib imported lazily, Agg backend)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_all"]

ESD_LRS = {"gd": (1.0, 100.0, 1000.0, 3000.0), "adam": (0.001, 0.01, 0.1, 1.0)}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _runs(sweep, opt, rep=0):
    return {r["lr"]: r for r in sweep["runs"] if r["optimizer"] == opt and r["repeat"] == rep}


def plot_esd(sweep, cfg, path: Path) -> None:
    """log10-lambda histograms (100 bins, log density) at the kept steps, repeat 0."""
    plt = _plt()
    opts = [o for o in cfg.optimizers if o in ESD_LRS]
    fig, axes = plt.subplots(len(opts), 4, figsize=(16, 3.6 * len(opts)), squeeze=False)
    for i, opt in enumerate(opts):
        runs = _runs(sweep, opt)
        for j, lr in enumerate(ESD_LRS[opt]):
            ax = axes[i][j]
            if lr not in runs:
                ax.set_visible(False)
                continue
            by_step = {rec["step"]: rec for rec in runs[lr]["steps"]}
            for s in cfg.hist_steps:
                if s in by_step and "_evals" in by_step[s]:
                    ev = by_step[s]["_evals"].numpy()
                    ev = ev[ev > 0]
                    ax.hist(np.log10(ev), bins=100, density=True, log=True, histtype="step", label=f"step {s}")
            ax.set_title(f"{opt.upper()} lr={lr:g}")
            ax.set_xlabel(r"$\log_{10}\lambda$")
            if j == 0:
                ax.set_ylabel("density (log)")
            ax.legend(fontsize=8)
    fig.suptitle(f"ESD of W^T W (d={cfg.d}, h={cfg.h}, n={cfg.n})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mean_std(sweep, opt, lr, step, key):
    vals = [s[key] for r in sweep["runs"] if r["optimizer"] == opt and r["lr"] == lr
            for s in r["steps"] if s["step"] == step]
    vals = np.asarray(vals, dtype=float)
    if not np.isfinite(vals).any():
        return np.nan, np.nan
    return np.nanmean(vals), np.nanstd(vals)


def plot_vs_lr(sweep, cfg, path: Path) -> None:
    """Hill alpha, KS alpha, KTA, |<v1, beta*>|, test MSE against lr after 1 and ``steps`` steps."""
    plt = _plt()
    keys = [("hill_alpha", "Hill alpha"), ("ks_alpha", "KS alpha"), ("kta", "KTA (probe)"),
            ("beta_alignment", r"$|\langle v_1,\beta^*\rangle|$"), ("test_mse", "test MSE (ridge refit)")]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6))
    lrs = np.asarray(cfg.lrs, dtype=float)
    for ax, (key, label) in zip(axes, keys):
        ax.set_title(label)
        if not np.isfinite([_mean_std(sweep, o, lr, cfg.steps, key)[0] for o in cfg.optimizers for lr in lrs]).any():
            ax.text(0.5, 0.5, "not available", ha="center", transform=ax.transAxes)
            continue
        for opt, color in zip(cfg.optimizers, ("C0", "C1", "C2")):
            for step, ls in ((1, ":"), (cfg.steps, "-")):
                ms = np.array([_mean_std(sweep, opt, lr, step, key) for lr in lrs])
                ax.errorbar(lrs, ms[:, 0], yerr=ms[:, 1], color=color, ls=ls, marker="o", ms=3,
                            label=f"{opt} step {step}")
        m0, _ = _mean_std(sweep, cfg.optimizers[0], lrs[0], 0, key)
        ax.axhline(m0, color="gray", ls="--", lw=1, label="init")
        ax.set_xscale("log")
        if key == "test_mse" and np.nanmin(ms[:, 0]) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("learning rate")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_overlaps(sweep, cfg, path: Path) -> None:
    """(V_W^T V_M)^2 heatmaps (top-k) at the first and last update, and M_t's singular values."""
    plt = _plt()
    names = list(sweep["overlaps"])
    if not names:
        return
    fig, axes = plt.subplots(len(names), 5, figsize=(20, 3.8 * len(names)), squeeze=False)
    for i, name in enumerate(names):
        ov = sweep["overlaps"][name]
        first, last = ov[0], ov[-1]
        panels = [(first["_right_prev"], f"W_{first['step']} vs M_{first['step']}"),
                  (first["_right_next"], f"W_{first['step'] + 1} vs M_{first['step']}"),
                  (last["_right_prev"], f"W_{last['step']} vs M_{last['step']}"),
                  (last["_right_next"], f"W_{last['step'] + 1} vs M_{last['step']}")]
        for ax, (mat, title) in zip(axes[i][:4], panels):
            im = ax.imshow(mat.numpy(), vmin=0, vmax=1, cmap="viridis")
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.set_xlabel("right sing. vec. of M")
            ax.set_ylabel("right sing. vec. of W")
        fig.colorbar(im, ax=axes[i][3])
        ax = axes[i][4]
        for rec in ov:
            ax.semilogy(rec["m_top_singular_values"], label=f"M_{rec['step']}", lw=1)
        ax.set_title(f"{name}: top singular values of M_t", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_all(sweep, cfg, out_dir: Path) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [("heavy_tails_esd.png", plot_esd), ("heavy_tails_vs_lr.png", plot_vs_lr),
             ("heavy_tails_overlaps.png", plot_overlaps)]
    written = []
    for fname, fn in files:
        fn(sweep, cfg, out_dir / fname)
        if (out_dir / fname).exists():
            written.append(fname)
    return written
