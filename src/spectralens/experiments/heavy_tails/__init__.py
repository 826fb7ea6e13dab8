"""Reproduction: heavy tails without gradient noise (Kothapalli et al., arXiv 2406.04657).

Two-layer teacher-student network (``setup``), GD and Adam over the paper's learning-rate
sweep {0.001 ... 3000}, 10 full-batch steps each; after steps 1, 5, 10 the ESD of W^T W, Hill and
KS alpha, kernel-target alignment, |<v1, beta*>|, ridge-refit test MSE (``metrics``, ``sweep``);
singular-vector overlaps of W_t and the update M_t for the featured runs; figures
(``figures``) and the paper's claims checked with fixed thresholds (``claims``).

Default run: the paper's sizes d = 1000, h = 1500, n = 2000 (scale 1), 5 repeats (as the paper),
on 2 threads (~4-5 min on an idle 2-core machine).
``quick``: d = 200, h = 300, n = 400 (scale 0.2), 1 repeat. Learning rates stay absolute, so
at the smaller scale the GD threshold moves (a GD step moves W by ~ lr / sqrt(d) in operator
norm against ||W_0|| ~ sqrt(h) + sqrt(d)).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..common import Claim, fmt, torch_threads, write_outputs
from .claims import ALIGN_MIN, HT_MIN_OUTLIERS, HT_RATIO, SPIKE_RATIO, aggregate, evaluate_claims
from .figures import plot_all
from .setup import PAPER_LRS, HeavyTailsConfig
from .sweep import run_sweep

__all__ = ["run", "config_for", "HeavyTailsConfig", "PAPER_LRS", "NAME", "TITLE", "PAPER"]

NAME = "heavy-tails"
TITLE = "Heavy tails in the weight spectrum without gradient noise"
PAPER = "Kothapalli, Pang, Deng, Liu, Yang, arXiv 2406.04657 (TMLR 2025)"


def config_for(quick: bool) -> HeavyTailsConfig:
    if quick:
        return HeavyTailsConfig(d=200, h=300, n=400, n_test=200, repeats=1)
    return HeavyTailsConfig()


def _means_table(cfg, sweep) -> list[str]:
    agg = aggregate(sweep)
    keys = ("hill_alpha", "ks_alpha", "spike_ratio", "n_above_init_edge", "beta_alignment", "kta", "test_mse")
    lines = []
    for step in (1, cfg.steps):
        lines += ["", f"## Means ± std over {cfg.repeats} repeat(s) after {step} step(s)", "",
                  "| opt | lr | Hill alpha | KS alpha | lambda1/lambda2 | # above init lambda_max | align(v1,beta*) | KTA | "
                  "test MSE |", "|---|---|---|---|---|---|---|---|---|"]
        for opt in cfg.optimizers:
            for lr in cfg.lrs:
                e = agg[(opt, float(lr), step)]
                lines.append(f"| {opt} | {lr:g} | " + " | ".join(f"{fmt(e[k][0])} ± {fmt(e[k][1], 2)}" for k in keys) + " |")
    e0 = agg[(cfg.optimizers[0], float(cfg.lrs[0]), 0)]
    lines += ["", "At initialisation: " + ", ".join(f"{k} {fmt(e0[k][0], 4)} ± {fmt(e0[k][1], 2)}" for k in keys), ""]
    return lines


def run(out_dir: Path, quick: bool = False, seed: int = 0, *, log=print, threads: int | None = None) -> dict:
    """Run the sweep, write figures, results.json and summary.md into ``out_dir``; return the results.

    ``threads``: torch threads for the sweep; default 1 for ``quick`` (what the tests run, beside
    other test workers) and up to 2 for the full run (its 2000 x 1000 x 1500 products and
    1000 x 1000 eigensolves use both cores: one repeat ~53 s on 2 threads).
    """
    if threads is None:
        threads = 1 if quick else max(1, min(2, os.cpu_count() or 1))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = config_for(quick)
    t0 = time.time()
    with torch_threads(threads):
        sweep = run_sweep(cfg, seed, log=log)
    claims = evaluate_claims(sweep, cfg)
    figures = plot_all(sweep, cfg, out_dir)
    settings = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    settings.update(seed=seed, quick=quick, threads=threads, dtype="float32")
    scale = (f"d={cfg.d}, h={cfg.h}, n={cfg.n}: scale {cfg.scale:g} of the paper's d=1000, h=1500, n=2000 "
             f"(all three scaled together; learning rates absolute as in the paper); {cfg.repeats} repeat(s) "
             "(paper: 5); full metrics after steps " + ", ".join(map(str, cfg.metric_steps)) + ".")
    notes = [f"Heavy-tail test: Hill alpha <= {HT_RATIO:g} x its initial value and >= {HT_MIN_OUTLIERS} eigenvalues "
             f"above the initial lambda_max; spike test: lambda1/lambda2 >= {SPIKE_RATIO:g} and align(v1,beta*) >= "
             f"{ALIGN_MIN:g}, where align(v1,beta*) = abs(<v1, beta*>) with v1 the top right singular vector of W "
             f"(a random direction gives ~1/sqrt(d) = {cfg.d ** -0.5:.3f}). Thresholds fixed before the runs "
             "(see heavy_tails/claims.py)."]
    if not sweep["ks_available"]:
        notes.append("KS alpha: spectralens.fit.fit_power_law is not available in this build; KS columns are empty.")
    payload = write_outputs(
        out_dir, title=f"{TITLE} ({PAPER})", claims=[Claim(c["claim"], c["measured"], c["held"]) for c in claims],
        results={"claim_ids": [c["id"] for c in claims], "runs": _public(sweep["runs"]),
                 "overlaps": _public(sweep["overlaps"]), "ks_available": sweep["ks_available"]},
        settings=settings, scale_note=scale, figures=figures, notes=notes, seconds=time.time() - t0)
    with open(out_dir / "summary.md", "a", encoding="utf-8") as f:
        f.write("\n".join(_means_table(cfg, sweep)))
    return payload


def _public(obj):
    """Drop the private ``_`` keys (tensors kept only for the figures)."""
    if isinstance(obj, dict):
        return {k: _public(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [_public(v) for v in obj]
    return obj
