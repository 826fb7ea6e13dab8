"""Plots of layer spectra: ESD on log-log axes with the power-law fit, alpha by layer, and
ESDs / alpha across training checkpoints.

matplotlib is imported inside each function with the Agg backend, never at import time.
The fitted line is the continuous power-law density over the tail,
p(x) = (alpha - 1) / xmin * (x / xmin)^-alpha for x >= xmin, scaled by the fraction of
eigenvalues in the tail (num_pl_spikes / num_evals) so it overlays the density of the whole ESD.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["safe_name", "plot_esd", "plot_alpha_by_layer", "plot_esd_overlay", "plot_alpha_vs_step"]

ALPHA_BAND = (2.0, 6.0)  # WeightWatcher's acceptable range


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        try:
            matplotlib.use("Agg", force=True)
        except Exception:  # pragma: no cover - backend already fixed by the host application
            pass
    import matplotlib.pyplot as plt

    return plt


def _tidy(fig, bottom: float = 0.13) -> None:
    """Fixed margins (tight_layout costs ~0.3 s per figure)."""
    fig.subplots_adjust(left=0.13, right=0.97, bottom=bottom, top=0.9)


def _save(plt, fig, path: str | Path, bottom: float = 0.13) -> Path:
    """Fixed margins, write a PNG, close the figure (no leak across many layers)."""
    _tidy(fig, bottom)
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def safe_name(name: str) -> str:
    """A file-name-safe version of a layer name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "layer"


def _log_hist(evals: np.ndarray, bins: int | None = None):
    pos = evals[evals > 0]
    if bins is None:  # ~2 sqrt(n) log-spaced bins, 10..80
        bins = int(min(80, max(10, 2 * math.sqrt(pos.size))))
    if pos.size == 0:
        return None, None
    lo, hi = pos.min(), pos.max()
    if hi <= lo:
        hi = lo * 1.001 + 1e-300
    edges = np.logspace(math.log10(lo), math.log10(hi), bins + 1)
    counts, edges = np.histogram(pos, bins=edges)
    density = counts / (evals.size * np.diff(edges))
    return edges, density


def plot_esd(evals: np.ndarray, path: str | Path, *, name: str = "", alpha: float = math.nan,
             xmin: float = math.nan, xmax: float = math.nan, D: float = math.nan,
             num_pl_spikes: int | None = None) -> Path:
    """Log-log histogram density of the ESD, the fitted power law over [xmin, xmax] and xmin marked."""
    plt = _plt()
    evals = np.sort(np.asarray(evals, dtype=np.float64))
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    edges, dens = _log_hist(evals)
    if edges is not None:
        centers = np.sqrt(edges[1:] * edges[:-1])
        keep = dens > 0
        ax.loglog(centers[keep], dens[keep], "o", ms=3, color="#1f77b4", label="ESD (density)")
    if math.isfinite(alpha) and math.isfinite(xmin) and xmin > 0:
        top = xmax if math.isfinite(xmax) and xmax > xmin else evals[-1]
        x = np.logspace(math.log10(xmin), math.log10(max(top, xmin * 1.0001)), 50)
        n_tail = num_pl_spikes if num_pl_spikes and num_pl_spikes > 0 else int((evals >= xmin).sum())
        frac = n_tail / max(1, evals.size)
        ax.loglog(x, frac * (alpha - 1) / xmin * (x / xmin) ** (-alpha), "r--", lw=1.6,
                  label=f"power law, alpha={alpha:.2f}")
        ax.axvline(xmin, color="red", lw=1, alpha=0.7, label=f"xmin={xmin:.3g}")
    title = name
    if math.isfinite(D):
        title += f"  (D={D:.3f})"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("eigenvalue of W^T W")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="lower left")
    return _save(plt, fig, path)


def plot_alpha_by_layer(names: Sequence[str], alphas: Sequence[float], path: str | Path, *,
                        title: str = "alpha by layer") -> Path:
    """alpha of each layer in model order, with the 2-6 band shaded."""
    plt = _plt()
    a = np.asarray(alphas, dtype=np.float64)
    n = len(a)
    fig, ax = plt.subplots(figsize=(max(5.5, min(16, 0.25 * n + 3)), 4.0))
    ax.axhspan(*ALPHA_BAND, color="#2ca02c", alpha=0.12, label="2 <= alpha <= 6")
    idx = np.arange(n)
    colors = ["#d62728" if (math.isfinite(v) and (v < ALPHA_BAND[0] or v > ALPHA_BAND[1])) else "#1f77b4" for v in a]
    ax.scatter(idx, a, c=colors, s=18, zorder=3)
    ax.plot(idx, a, color="#1f77b4", lw=0.6, alpha=0.5)
    if n <= 40:
        ax.set_xticks(idx)
        ax.set_xticklabels([s if len(s) <= 28 else "..." + s[-25:] for s in names], rotation=70, ha="right",
                           fontsize=6)
    else:
        ax.set_xlabel("layer index (model order)")
    ax.set_ylabel("alpha")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    return _save(plt, fig, path, bottom=0.4 if n <= 40 else 0.13)


def plot_esd_overlay(esds: Mapping[str, np.ndarray], path: str | Path, *, title: str = "ESD over training") -> Path:
    """Log-log ESD densities of several checkpoints (label -> eigenvalues), early = light, late = dark."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.8, 4.0))
    cmap = plt.get_cmap("viridis")
    n = max(1, len(esds) - 1)
    for j, (label, ev) in enumerate(esds.items()):
        edges, dens = _log_hist(np.asarray(ev, dtype=np.float64))
        if edges is None:
            continue
        centers = np.sqrt(edges[1:] * edges[:-1])
        keep = dens > 0
        ax.loglog(centers[keep], dens[keep], "-", lw=1.4, color=cmap(0.9 * j / n), label=label)
    ax.set_xlabel("eigenvalue of W^T W")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_alpha_vs_step(steps: Sequence[int], series: Mapping[str, Sequence[float]], path: str | Path, *,
                       title: str = "alpha over training") -> Path:
    """alpha (one line per estimator/layer) against training step, with the 2-6 band shaded."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.8, 4.0))
    ax.axhspan(*ALPHA_BAND, color="#2ca02c", alpha=0.12, label="2 <= alpha <= 6")
    for label, vals in series.items():
        ax.plot(list(steps), list(vals), "o-", ms=4, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("alpha")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)
