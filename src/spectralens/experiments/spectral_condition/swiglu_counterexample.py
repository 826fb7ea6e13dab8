"""Experiment 3: the SwiGLU counterexample (paper fig. 11).

Same random-feature least squares as ``random_features`` (W 100 x 100, 50 input features,
n = 400, W0 = 0, float64) but with SwiGLU features A = silu(V1 X) * (V2 X). These are nearly
centred, so A has no mean spike and a large stable rank; the paper finds nr(G) < st(A) and
GD beating SpecGD over 400 iterations: the condition predicts the loser correctly.
"""
from __future__ import annotations

import time
from pathlib import Path

from spectralens.experiments.common import Claim, torch_threads, fmt, write_outputs

from .random_features import make_problem, plot_traces, train

__all__ = ["run"]


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict:
    with torch_threads(1):
        return _run(Path(out_dir), quick, seed)


def _run(out_dir: Path, quick: bool, seed: int) -> dict:
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    steps = 100 if quick else 400
    p = make_problem("swiglu", seed=seed)
    gd, spec = train(p, "gd", steps), train(p, "specgd", steps)
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
    settings = {"dim": 100, "feature_dim": 50, "n": 400, "steps": steps, "dtype": "float64", "seed": seed,
                "lr_gd": p.lr_gd, "lr_spec_times_nuclear": p.lr_spec}
    scale = f"paper scale (W 100x100, n = 400), {steps} iterations" + (" (quick; paper: 400)" if quick else "")
    results = {"st_A": p.st_A, "gd": {"loss": gd.loss, "nr": gd.nr}, "specgd": {"loss": spec.loss, "nr": spec.nr}}
    seconds = time.perf_counter() - t0
    write_outputs(out_dir, title="SwiGLU counterexample: nr(G) < st(A) and GD wins (fig. 11)", claims=claims,
                  results=results, settings=settings, scale_note=scale, figures=figs, seconds=seconds)
    return {"claims": [c.to_dict() for c in claims], "results": results, "seconds": seconds}
