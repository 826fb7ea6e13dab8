"""Experiment 2: ReLU random-feature regression, GD vs SpecGD (paper fig. 3).

Davis & Drusvyatskiy (arXiv 2512.04299, section 5; the authors' ``random_feature_specgd.py``):
X (50 x n) Gaussian, V (100 x 50) with N(0, 1/50) entries, features A = relu(V X)
(100 x n), target Y = W# A with W# (100 x 100) N(0, 1/100), n = 400, loss
``L(W) = 1/(2n) ||W A - Y||_F^2`` from W0 = 0, 1000 iterations, float64.

* GD:     W <- W - (n / ||A||_op^2) G
* SpecGD: W <- W - (n ||G||_* / ||A||_F^2) polar(G)

Both steps minimise a quadratic upper bound that is tight for some direction, so each is
the "safe" step of its geometry. The paper's claim: nr(G) stays above st(A), and SpecGD
drives the loss down much faster. ``compare``, ``plot_traces`` and ``write_comparison`` (with
``make_problem`` and ``train`` under them) are shared with the SwiGLU counterexample.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from spectralens.experiments.common import Claim, torch_threads, figure, fmt, save_figure, write_outputs

from ._steps import fro_norm_sq, nr, op_norm_sq, polar_and_nuclear, st

__all__ = ["run", "make_problem", "train", "compare", "plot_traces", "write_comparison", "Problem", "Trace"]


@dataclass(frozen=True)
class Problem:
    A: torch.Tensor  # (dim, n) features
    Y: torch.Tensor  # (dim, n) targets W# A
    st_A: float
    lr_gd: float  # n / ||A||_op^2
    lr_spec: float  # n / ||A||_F^2 (times ||G||_* at each step)


@dataclass
class Trace:
    loss: list[float]
    nr: list[float]


def make_problem(activation: str, *, dim: int = 100, feature_dim: int = 50, n: int = 400, seed: int = 0) -> Problem:
    """Random-feature least squares; activation 'relu' or 'swiglu' (silu(V1 X) * (V2 X))."""
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    X = torch.randn(feature_dim, n, generator=gen, dtype=f64)
    V = torch.randn(dim, feature_dim, generator=gen, dtype=f64) / math.sqrt(feature_dim)
    if activation == "relu":
        A = F.relu(V @ X)
    elif activation == "swiglu":
        V2 = torch.randn(dim, feature_dim, generator=gen, dtype=f64) / math.sqrt(feature_dim)
        A = F.silu(V @ X) * (V2 @ X)
    else:
        raise ValueError(f"unknown activation {activation!r}; expected 'relu' or 'swiglu'")
    W_sharp = torch.randn(dim, dim, generator=gen, dtype=f64) / math.sqrt(dim)
    return Problem(A, W_sharp @ A, st(A), n / op_norm_sq(A), n / fro_norm_sq(A))


def train(p: Problem, method: str, steps: int) -> Trace:
    """Run GD or SpecGD from W0 = 0; record L(W_t) and nr(grad L(W_t)) for t = 0..steps-1."""
    if method not in ("gd", "specgd"):
        raise ValueError(f"unknown method {method!r}; expected 'gd' or 'specgd'")
    n = p.A.shape[1]
    W = torch.zeros(p.Y.shape[0], p.A.shape[0], dtype=torch.float64)
    trace = Trace([], [])
    for _ in range(steps):
        R = W @ p.A - p.Y
        trace.loss.append(float(R.square().sum() / (2 * n)))
        G = R @ p.A.T / n
        fro2 = float(G.square().sum())
        if method == "gd":
            nuc = float(torch.linalg.svdvals(G).sum())
            W = W - p.lr_gd * G
        else:
            polar, nuc = polar_and_nuclear(G)
            if nuc > 0:
                W = W - p.lr_spec * nuc * polar
        trace.nr.append(nuc**2 / fro2 if fro2 > 0 else float("nan"))
    return trace


def compare(activation: str, steps: int, seed: int) -> tuple[Problem, Trace, Trace]:
    """The problem for ``activation`` (see ``make_problem``) and its GD and SpecGD traces."""
    p = make_problem(activation, seed=seed)
    return p, train(p, "gd", steps), train(p, "specgd", steps)


def write_comparison(out_dir: Path, *, title: str, claims: list[Claim], figures: list[str], p: Problem,
                     gd: Trace, spec: Trace, steps: int, paper_steps: int, quick: bool, seed: int,
                     t0: float, notes: tuple[str, ...] | list[str] = ()) -> dict:
    """Write ``results.json`` / ``summary.md`` of a GD-vs-SpecGD run started at ``t0``
    (``time.perf_counter()``); return the part's dict (claims, results, seconds)."""
    settings = {"dim": 100, "feature_dim": 50, "n": 400, "steps": steps, "dtype": "float64", "seed": seed,
                "lr_gd": p.lr_gd, "lr_spec_times_nuclear": p.lr_spec}
    scale = f"paper scale (W 100x100, n = 400), {steps} iterations" + (f" (quick; paper: {paper_steps})" if quick else "")
    results = {"st_A": p.st_A, "gd": {"loss": gd.loss, "nr": gd.nr}, "specgd": {"loss": spec.loss, "nr": spec.nr}}
    seconds = time.perf_counter() - t0
    write_outputs(out_dir, title=title, claims=claims, results=results, settings=settings, scale_note=scale,
                  figures=figures, seconds=seconds, notes=notes)
    return {"claims": [c.to_dict() for c in claims], "results": results, "seconds": seconds}


def plot_traces(out_dir: Path, name: str, title: str, p: Problem, gd: Trace, spec: Trace) -> str:
    fig, axes = figure(1, 2)
    ax = axes[0][0]
    ax.semilogy(gd.loss, label="GD")
    ax.semilogy(spec.loss, label="SpecGD")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax = axes[0][1]
    ax.plot(gd.nr, label="nr(G), GD")
    ax.plot(spec.nr, label="nr(G), SpecGD")
    ax.axhline(p.st_A, color="k", ls="--", label=f"st(A) = {p.st_A:.2f}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("rank")
    ax.legend(fontsize=8)
    return save_figure(fig, out_dir / name)


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict:
    with torch_threads(1):
        return _run(Path(out_dir), quick, seed)


def _run(out_dir: Path, quick: bool, seed: int) -> dict:
    t0 = time.perf_counter()
    steps = 200 if quick else 1000
    p, gd, spec = compare("relu", steps, seed)
    frac_gd = sum(v >= p.st_A for v in gd.nr) / steps
    frac_spec = sum(v >= p.st_A for v in spec.nr) / steps
    speedup = gd.loss[-1] / max(spec.loss[-1], 1e-300)
    # Iterations SpecGD needs to reach GD's final loss.
    reach = next((i for i, v in enumerate(spec.loss) if v <= gd.loss[-1]), None)
    claims = [
        Claim("SpecGD reaches a lower loss than GD (fig. 3: much faster)",
              f"final loss GD {fmt(gd.loss[-1])}, SpecGD {fmt(spec.loss[-1])} after {steps} its (ratio {fmt(speedup)}); "
              f"SpecGD reaches GD's final loss at it {reach}", spec.loss[-1] < gd.loss[-1]),
        Claim("nr(G) stays above st(A) along the GD run",
              f"st(A) = {fmt(p.st_A)}; nr(G) >= st(A) at {100 * frac_gd:.0f}% of GD its, max nr {fmt(max(gd.nr))}",
              frac_gd >= 0.9),
        Claim("nr(G) stays above st(A) along the SpecGD run",
              f"nr(G) >= st(A) at {100 * frac_spec:.0f}% of SpecGD its, max nr {fmt(max(spec.nr))}",
              frac_spec >= 0.9),
        Claim("nr(G) reaches large values (paper: up to ~60 of 100)",
              f"max nr over both runs {fmt(max(max(gd.nr), max(spec.nr)))}", None),
    ]
    figs = [plot_traces(out_dir, "random_features.png", "ReLU random features", p, gd, spec)]
    return write_comparison(
        out_dir, title="ReLU random-feature regression: GD vs SpecGD (fig. 3)", claims=claims, figures=figs,
        p=p, gd=gd, spec=spec, steps=steps, paper_steps=1000, quick=quick, seed=seed, t0=t0,
        notes=["'Stays above' is decided as >= 90% of iterations; the per-iteration series are in results.json."])
