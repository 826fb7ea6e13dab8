"""The paper's claims, each checked against the sweep with a threshold fixed before running.

Kothapalli et al. (arXiv 2406.04657). All numbers are means over repeats of the 10-step (or
1-step) state. Thresholds (stated here, not tuned afterwards):

* spike: lambda_1 / lambda_2 >= 3 and |<v1, beta*>| >= 0.5 (a random direction gives ~1/sqrt(d)).
* heavy tail: Hill alpha <= 0.8 x its value at initialisation AND at least 10 eigenvalues above
  the initial lambda_max (many eigenvalues left the bulk, not one spike). The median-Hill
  estimator already gives ~2.4 on a Marchenko-Pastur bulk of this aspect ratio, so an absolute
  threshold would be meaningless; the ratio is the honest test.
* "far smaller" learning rate: at least 100x.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["aggregate", "evaluate_claims", "HT_RATIO", "SPIKE_RATIO", "ALIGN_MIN", "HT_MIN_OUTLIERS"]

SPIKE_RATIO = 3.0
ALIGN_MIN = 0.5
HT_RATIO = 0.8
HT_MIN_OUTLIERS = 10
FAR_SMALLER = 100.0
_KEYS = ("hill_alpha", "ks_alpha", "spike_ratio", "n_above_init_edge", "beta_alignment", "kta", "test_mse")


def aggregate(sweep: dict) -> dict:
    """{(opt, lr, step): {key: (mean, std)}} over repeats."""
    table: dict = {}
    for r in sweep["runs"]:
        for s in r["steps"]:
            table.setdefault((r["optimizer"], r["lr"], s["step"]), []).append(s)
    return {k: {key: _mean_std([float(s[key]) for s in v]) for key in _KEYS} for k, v in table.items()}


def _mean_std(vals: list[float]) -> tuple[float, float]:
    a = np.asarray(vals, dtype=float)
    if not np.isfinite(a).any():
        return float("nan"), float("nan")
    return float(np.nanmean(a)), float(np.nanstd(a))


def _m(agg, opt, lr, step, key) -> float:
    entry = agg.get((opt, float(lr), step))
    return float("nan") if entry is None else entry[key][0]


def _spike(agg, opt, lr, step=1) -> tuple[bool, str]:
    ratio, align = _m(agg, opt, lr, step, "spike_ratio"), _m(agg, opt, lr, step, "beta_alignment")
    held = ratio >= SPIKE_RATIO and align >= ALIGN_MIN
    return held, f"lambda1/lambda2 = {ratio:.2f}, align(v1,beta*) = {align:.3f} ({opt}, lr {lr:g}, step {step})"


def _heavy(agg, opt, lr, steps) -> bool:
    a0, a = _m(agg, opt, lr, 0, "hill_alpha"), _m(agg, opt, lr, steps, "hill_alpha")
    return a <= HT_RATIO * a0 and _m(agg, opt, lr, steps, "n_above_init_edge") >= HT_MIN_OUTLIERS


def _lr_or_none(lr: float, lrs) -> str:
    """An lr, or "none up to <largest lr of the sweep>" when no lr of the sweep reached the tail."""
    return f"{lr:g}" if math.isfinite(lr) else f"none up to {max(lrs):g}"


def _first_ht_lr(agg, opt, lrs, steps) -> float:
    for lr in sorted(lrs):
        if _heavy(agg, opt, lr, steps):
            return float(lr)
    return math.inf


def evaluate_claims(sweep: dict, cfg) -> list[dict]:
    """List of {"id", "claim", "measured", "held"} (held: True / False / None = not testable here)."""
    agg = aggregate(sweep)
    T, lrs, claims = cfg.steps, cfg.lrs, []
    big_gd = max(lrs)

    def add(cid, text, measured, held):
        claims.append({"id": cid, "claim": text, "measured": measured, "held": held})

    for opt, lr in (("adam", 1.0), ("gd", big_gd)):
        if opt in cfg.optimizers and lr in lrs:
            held, msg = _spike(agg, opt, lr)
            add(f"spike_{opt}", f"One large {opt.upper()} step (lr {lr:g}) gives a bulk + spike ESD whose outlier is "
                f"aligned with beta* (lambda1/lambda2 >= {SPIKE_RATIO:g}, align(v1,beta*) >= {ALIGN_MIN:g})", msg, held)
    for opt, lr in (("adam", 1.0), ("gd", big_gd)):
        if opt in cfg.optimizers and lr in lrs:
            a0, a = _m(agg, opt, lr, 0, "hill_alpha"), _m(agg, opt, lr, T, "hill_alpha")
            a1 = _m(agg, opt, lr, 1, "hill_alpha")
            ks0, ks = _m(agg, opt, lr, 0, "ks_alpha"), _m(agg, opt, lr, T, "ks_alpha")
            nout = _m(agg, opt, lr, T, "n_above_init_edge")
            add(f"heavy_tail_{opt}", f"Repeated large {opt.upper()} steps (lr {lr:g}, {T} steps) turn the bulk "
                f"heavy-tailed (Hill alpha <= {HT_RATIO:g} x init and >= {HT_MIN_OUTLIERS} eigenvalues above the "
                "initial lambda_max)",
                f"Hill alpha {a0:.2f} (init) -> {a1:.2f} (step 1) -> {a:.2f} (step {T}); KS alpha {ks0:.2f} -> {ks:.2f}; "
                f"{nout:.0f} eigenvalues above the initial lambda_max", _heavy(agg, opt, lr, T))
    if {"gd", "adam"} <= set(cfg.optimizers):
        la, lg = _first_ht_lr(agg, "adam", lrs, T), _first_ht_lr(agg, "gd", lrs, T)
        held = math.isfinite(la) and (la * FAR_SMALLER <= lg)
        add("adam_smaller_lr", f"Adam reaches the heavy tail at a far smaller learning rate than GD (>= {FAR_SMALLER:g}x)",
            f"smallest lr with a heavy tail after {T} steps: Adam {_lr_or_none(la, lrs)}, GD {_lr_or_none(lg, lrs)}",
            held)
        small = [lr for lr in lrs if lr <= 0.1]
        if small:
            changes = [abs(_m(agg, "gd", lr, T, "hill_alpha") / _m(agg, "gd", lr, 0, "hill_alpha") - 1) for lr in small]
            ratios = [_m(agg, "gd", lr, T, "spike_ratio") for lr in small]
            add("small_lr_slow", f"Small GD learning rates (<= 0.1) leave the ESD unchanged within {T} steps "
                "(abs(Hill change) < 5%, lambda1/lambda2 < 1.5); the paper needs ~1e4 steps at lr 0.1",
                f"max abs(Hill alpha change) {max(changes):.3%}, max lambda1/lambda2 {max(ratios):.2f}",
                max(changes) < 0.05 and max(ratios) < 1.5)
    for opt, lr in (("adam", 1.0), ("gd", big_gd)):
        if opt in cfg.optimizers and lr in lrs:
            mse0, mse1, mse = (_m(agg, opt, lr, s, "test_mse") for s in (0, 1, T))
            add(f"spike_generalises_{opt}", f"The bulk + spike after one large {opt.upper()} step (lr {lr:g}) lowers the "
                "ridge-refit test MSE below the initial (random-feature) one",
                f"test MSE {mse0:.4f} (init) -> {mse1:.4f} (step 1) -> {mse:.4f} (step {T})", bool(mse1 < mse0))
    ht = [(opt, lr) for opt in cfg.optimizers for lr in lrs if _heavy(agg, opt, lr, T)]
    if ht:
        mse0 = _m(agg, cfg.optimizers[0], lrs[0], 0, "test_mse")
        best = min(ht, key=lambda k: _m(agg, k[0], k[1], T, "test_mse"))
        mse = _m(agg, best[0], best[1], T, "test_mse")
        add("heavy_tail_generalises", "The heavy-tailed ESDs (runs passing the heavy-tail test) come with a lower "
            "ridge-refit test MSE than the initial random features (the abstract: HT 'can facilitate generalization')",
            f"best heavy-tailed run {best[0]} lr {best[1]:g}: test MSE {mse:.4f} vs init {mse0:.4f} "
            f"({len(ht)} heavy-tailed runs)", bool(mse < mse0))
    for opt in cfg.optimizers:
        mse0 = _m(agg, opt, lrs[0], 0, "test_mse")
        kta0 = _m(agg, opt, lrs[0], 0, "kta")
        best = min(lrs, key=lambda lr: _m(agg, opt, lr, T, "test_mse"))
        mse, kta = _m(agg, opt, best, T, "test_mse"), _m(agg, opt, best, T, "kta")
        add(f"generalisation_{opt}", f"Training W with {opt.upper()} ({T} steps, the sweep's best lr) lowers the "
            "ridge-refit test MSE below the random-feature (initial) one and raises the kernel-target alignment",
            f"init: test MSE {mse0:.4f}, KTA {kta0:.3f}; best lr {best:g} after {T} steps: test MSE {mse:.4f}, "
            f"KTA {kta:.3f} (there lambda1/lambda2 = {_m(agg, opt, best, T, 'spike_ratio'):.2f}, "
            f"align(v1,beta*) = {_m(agg, opt, best, T, 'beta_alignment'):.2f})", bool(mse < mse0 and kta > kta0))
        hill, hill0 = _m(agg, opt, best, T, "hill_alpha"), _m(agg, opt, best, 0, "hill_alpha")
        # The median-Hill alpha of the untrained Marchenko-Pastur bulk can itself lie in [2, 2.5];
        # then "best at alpha 2-2.5" says nothing about heavy tails and is reported as not testable.
        testable = not (2.0 <= hill0 <= 2.5)
        add(f"best_alpha_{opt}", "The best generalisation comes with Hill alpha ~ 2-2.5 (secondary source, unverified)",
            f"{opt}: Hill alpha {hill:.2f} at the best-test-MSE lr {best:g} (init {hill0:.2f}"
            f"{'' if testable else ', already inside the band, so the band is uninformative here'})",
            bool(2.0 <= hill <= 2.5) if testable else None)
    for name, ov in sweep.get("overlaps", {}).items():
        if ov:
            f = ov[0]
            add(f"overlap_{name}", f"({name}) The first update M_0 is nearly rank one and its top right singular vector "
                "becomes W_1's top one, while it is spread over W_0's top singular vectors (our reading of the "
                "paper's singular-vector analysis: (v1(W_1).v1(M_0))^2 >= 0.8 and max_i<=k (v_i(W_0).v1(M_0))^2 <= 0.1)",
                f"stable rank of M_0 {f['m_stable_rank']:.2f}; (v1(W_1).v1(M_0))^2 = {f['overlap_v1W_next_v1M']:.3f}; "
                f"max over W_0's top-{cfg.overlap_k} = {f['max_overlap_topk_W_prev_v1M']:.3f}; "
                f"last update: (v1(W_{ov[-1]['step'] + 1}).v1(M_{ov[-1]['step']}))^2 = {ov[-1]['overlap_v1W_next_v1M']:.3f}",
                bool(f["overlap_v1W_next_v1M"] >= 0.8 and f["max_overlap_topk_W_prev_v1M"] <= 0.1))
    return claims
