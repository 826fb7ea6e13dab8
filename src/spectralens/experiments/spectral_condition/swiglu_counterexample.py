"""Experiment 3: the SwiGLU counterexample (paper fig. 11).

Same random-feature least squares as ``random_features`` (W 100 x 100, 50 input features,
n = 400, W0 = 0, float64) but with SwiGLU features A = silu(V1 X) * (V2 X). These are nearly
centred, so A has no mean spike and a large stable rank; the paper finds nr(G) < st(A) and
GD beating SpecGD over 400 iterations: the condition predicts the loser correctly.
"""
from __future__ import annotations

import time
from pathlib import Path

from spectralens.experiments.common import Claim, torch_threads, fmt

from .random_features import compare, plot_traces, write_comparison

__all__ = ["run"]


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict:
    with torch_threads(1):
        return _run(Path(out_dir), quick, seed)


def _run(out_dir: Path, quick: bool, seed: int) -> dict:
    t0 = time.perf_counter()
    steps = 100 if quick else 400
    p, gd, spec = compare("swiglu", steps, seed)
    frac_gd = sum(v < p.st_A for v in gd.nr) / steps
    frac_spec = sum(v < p.st_A for v in spec.nr) / steps
    claims = [
        Claim("nr(G) < st(A) along the GD run (the condition fails)",
              f"st(A) = {fmt(p.st_A)}; nr(G) < st(A) at {100 * frac_gd:.0f}% of GD its (nr range {fmt(min(gd.nr))}..{fmt(max(gd.nr))})",
              frac_gd >= 0.9),
        Claim("nr(G) < st(A) along the SpecGD run",
              f"nr(G) < st(A) at {100 * frac_spec:.0f}% of SpecGD its (nr range {fmt(min(spec.nr))}..{fmt(max(spec.nr))})",
              frac_spec >= 0.9),
        Claim("GD reaches a lower loss than SpecGD",
              f"final loss GD {fmt(gd.loss[-1])}, SpecGD {fmt(spec.loss[-1])} after {steps} its", gd.loss[-1] < spec.loss[-1]),
    ]
    figs = [plot_traces(out_dir, "swiglu_counterexample.png", "SwiGLU random features", p, gd, spec)]
    return write_comparison(
        out_dir, title="SwiGLU counterexample: nr(G) < st(A) and GD wins (fig. 11)", claims=claims, figures=figs,
        p=p, gd=gd, spec=spec, steps=steps, paper_steps=400, quick=quick, seed=seed, t0=t0)
