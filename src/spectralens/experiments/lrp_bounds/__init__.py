"""Reproduction: bounds for LRP as products of modified gradient matrices (Binder et al., arXiv 2509.08963).

A small ReLU CNN (``spectralens.nets.digits_cnn``) trained on scikit-learn's 8 x 8 digits
(``setup``), explained with the plain gradient, LRP-epsilon and LRP-beta (``spectralens.lrp``):

(i) ``convergence``: the deviation of the mean attribution over T augmented copies (SmoothGrad
    noise; brightness/contrast jitter) from its expectation, against Hoeffding's rate
    ``B sqrt(2 log(2/delta) / T)`` with B from ``spectralens.lrp.bounds``;
(ii) ``scaling``: every weight times c in {0.5, 1, 2, 4} (layer l's bias times c^l, so the
    network computes c^L f): LRP-beta's bound constant stays, the gradient's and LRP-epsilon's grow.

Default: 5 test images, E[R] from 8192 copies, 100 repeats of T = 1 .. 256. ``quick``: 2 images
(part (ii) on the first), 2048 copies, 48 repeats of T = 1 .. 64 (< 60 s on 2 cores).
Thresholds are fixed in ``CLAIMS_RULES``; results and limits in ``docs/repro/lrp-bounds.md``.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..common import Claim, fmt, torch_threads, write_outputs
from .convergence import AUGMENTATIONS, run_convergence, summarise
from .figures import plot_all
from .scaling import run_scaling
from .setup import BETA, EPSILON, METHODS, LRPBoundsConfig, pick_inputs, trained_model

__all__ = ["run", "config_for", "LRPBoundsConfig", "NAME", "TITLE", "PAPER", "CLAIMS_RULES"]

NAME = "lrp-bounds"
TITLE = "LRP as products of modified gradient matrices: convergence constants"
PAPER = "Binder, Takmil-Homayouni, Dogan, arXiv 2509.08963"
SLOPE_BAND = (-0.6, -0.4)  # the rms deviation's log-log slope must fall here (rate T^-1/2)
BETA_TOL = 1e-3  # LRP-beta's constant may move by at most this relative amount over c
GROWTH_MIN = 10.0  # gradient/epsilon constants must grow at least this much from the smallest to the largest c
CLAIMS_RULES = {"slope_band": SLOPE_BAND, "beta_tolerance": BETA_TOL, "growth_min": GROWTH_MIN}
_LABEL = {"gradient": "gradient", "epsilon": f"LRP-epsilon (eps={EPSILON:g})",
          "beta": f"LRP-beta (alpha={1 + BETA:g}, beta={BETA:g})"}


def config_for(quick: bool) -> LRPBoundsConfig:
    if quick:
        return LRPBoundsConfig(n_inputs=2, t_ref=2048, repeats=48, t_max=64, scaling_inputs=1)
    return LRPBoundsConfig()


def _convergence_claims(records, cfg) -> list[Claim]:
    claims = []
    for m in METHODS:
        s = summarise(records, m)
        claims.append(Claim(
            f"{_LABEL[m]}: the mean attribution over T augmented copies ({' and '.join(AUGMENTATIONS)}) deviates "
            f"from its expectation by less than Hoeffding's t(T) = B sqrt(2 log(2/delta)/T) (delta = {cfg.delta:g}, "
            "B = the component-wise attribution bound), with B covering every observed |R_i|",
            f"max over {s['n']} (input, augmentation) pairs and T = 1..{cfg.t_max} of [max_i (1-delta)-quantile of "
            f"|mean_T R_i - E R_i|] / t(T) = {fmt(s['ratio_max'])} (t(T) >= {fmt(s['looseness_min'])}x the observed "
            f"quantile); fraction beyond t(T) {fmt(s['exceed_max'])}; max |R_i| / B = {fmt(s['sup_over_B_max'])}; "
            f"with B replaced by the observed max |R_i| the ratio is {fmt(s['ratio_max_observed'])}",
            bool(s["ratio_max"] < 1 and s["exceed_max"] <= cfg.delta and s["all_covered"])))
        claims.append(Claim(
            f"{_LABEL[m]}: the deviation of the mean shrinks at Hoeffding's rate T^-1/2 (log-log slope of the rms "
            f"deviation in [{SLOPE_BAND[0]:g}, {SLOPE_BAND[1]:g}])",
            f"slopes over T = 1..{cfg.t_max}: min {s['slope_min']:.3f}, median {s['slope_median']:.3f}, "
            f"max {s['slope_max']:.3f}",
            bool(SLOPE_BAND[0] <= s["slope_min"] and s["slope_max"] <= SLOPE_BAND[1])))
    return claims


def _scaling_claims(scaling, cfg) -> list[Claim]:
    summ, L = scaling["summary"], scaling["L"]
    cs = sorted(cfg.scales)
    ratio = (cs[-1] / cs[0]) ** L
    per_c = lambda m, key: ", ".join(f"{fmt(summ[m]['per_c'][c][key], 4)} (c={c:g})" for c in cs)
    setting = f"every weight x c, layer l's bias x c^l (f_c = c^L f, L = {L})"
    beta = summ["beta"]
    claims = [Claim(
        f"{_LABEL['beta']}: its bound constant does not depend on the weight norms ({setting})",
        f"K = B / |f_t(x)| = {per_c('beta', 'constant')} (median over inputs; (1+2 beta)^L = {(1 + 2 * BETA) ** L:g}); "
        f"max relative change over c and inputs {beta['max_rel_change']:.1e}; product of the actual ||M_l||_1 "
        f"{per_c('beta', 'K_observed')}; B itself = {per_c('beta', 'B')} (it carries |f_t(x)|, which scales as c^L)",
        bool(beta["max_rel_change"] <= BETA_TOL and beta["all_hold"]))]
    for m, unit in (("gradient", "K = B"), ("epsilon", "K = B / max|x_i|")):
        s = summ[m]
        monotone = all(summ[m]["per_c"][a]["constant"] < summ[m]["per_c"][b]["constant"] for a, b in zip(cs, cs[1:]))
        claims.append(Claim(
            f"{_LABEL[m]}: its bound constant grows with the weight norms ({setting})",
            f"{unit} = {per_c(m, 'constant')} (prod_l sigma_l); growth c={cs[0]:g} -> {cs[-1]:g}: "
            f"{fmt(s['growth_min'])}..{fmt(s['growth_max'])}x over inputs (c^L = {fmt(ratio)}); the product of the "
            f"actual per-layer norms at x grows {fmt(min(s['observed_growth']))}..{fmt(max(s['observed_growth']))}x",
            bool(monotone and s["growth_min"] >= GROWTH_MIN and s["all_hold"])))
    return claims


def run(out_dir: Path, quick: bool = False, seed: int = 0, *, log=print, threads: int = 1,
        config: LRPBoundsConfig | None = None) -> dict:
    """Train, run parts (i) and (ii), write figures, results.json and summary.md into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = config or config_for(quick)
    t0 = time.time()
    with torch_threads(1):  # small training batches: more threads only cost on a shared machine
        model, data, train = trained_model(cfg, seed)
    with torch_threads(threads):
        log(f"digits CNN: test accuracy {train.test_accuracy:.3f} ({train.seconds:.1f} s)")
        inputs, targets = pick_inputs(model, data, cfg.n_inputs)
        t1 = time.time()
        records = run_convergence(model, inputs, targets, cfg, seed, log=log)
        t2 = time.time()
        n_sc = cfg.n_inputs if cfg.scaling_inputs is None else cfg.scaling_inputs
        scaling = run_scaling(model, inputs[:n_sc], targets[:n_sc], cfg, log=log)
        t3 = time.time()
    claims = _convergence_claims(records, cfg) + _scaling_claims(scaling, cfg)
    figures = plot_all(inputs, records, scaling, out_dir)
    settings = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    settings.update(seed=seed, quick=quick, threads=threads, epsilon=EPSILON, beta=BETA, methods=METHODS,
                    targets=targets)
    scale = ("The paper states bounds, not experiments; this is a CPU-sized check: a 4-layer ReLU CNN on 8 x 8 "
             f"digits (test accuracy {train.test_accuracy:.3f}), {cfg.n_inputs} test images, "
             f"T up to {cfg.t_max}, expectation from {cfg.t_ref} copies, {cfg.repeats} repeats.")
    summ = scaling["summary"]
    notes = [
        f"Seconds: training {t1 - t0:.1f}, part (i) {t2 - t1:.1f}, part (ii) {t3 - t2:.1f}.",
        "Part (i)'s B is attribution_bound's B_uniform: K_uniform (valid for every input) times the scale it "
        "multiplies, maximised over all copies drawn (1 for the gradient, max|x'_i| for LRP-epsilon, |f_t(x')| for "
        "LRP-beta); 'max |R_i| / B' checks it covers every copy.",
        "Observed max|R_i| / |R_out| per c (median over inputs): " + "; ".join(
            f"{m}: " + ", ".join(fmt(summ[m]['per_c'][c]['observed_over_rout'], 4) for c in sorted(cfg.scales))
            for m in METHODS) + ". The gradient's and LRP-beta's attributions scale exactly like the output (the "
        "network is positively homogeneous), LRP-epsilon's up to its fixed stabiliser; so only the constants' form "
        "separates the methods: beta's multiplies the output relevance and is weight-free, the gradient's and "
        "epsilon's multiply a unit seed (times max|x_i|) and carry the weight norms.",
        "Weight-free is not smaller: at c = 1 the median B over inputs is " + ", ".join(
            f"{m} {fmt(summ[m]['per_c'][1.0]['B'], 4)}" for m in METHODS if 1.0 in summ[m]['per_c'])
        + "; every B is far above the observed max |R_i| (see 'max |R_i| / B' in part (i)).",
        "Homogeneity of the scaled networks, max |f_c - c^L f| / |c^L f|: " + ", ".join(
            f"{v:.1e} (c={c:g})" for c, v in scaling["homogeneity"].items()) + ".",
        f"Thresholds fixed before running: slope band {SLOPE_BAND}, beta tolerance {BETA_TOL:g}, "
        f"growth >= {GROWTH_MIN:g}x and monotone for gradient/epsilon.",
    ]
    results = {"train": {"test_accuracy": train.test_accuracy, "train_accuracy": train.train_accuracy,
                         "seconds": train.seconds},
               "convergence": [{k: v for k, v in r.items() if not k.startswith("_")} for r in records],
               "scaling": {"L": scaling["L"], "homogeneity": scaling["homogeneity"], "summary": summ,
                           "rows": scaling["rows"]},
               "seconds": {"train": t1 - t0, "convergence": t2 - t1, "scaling": t3 - t2}}
    return write_outputs(out_dir, title=f"{TITLE} ({PAPER})", claims=claims, results=results, settings=settings,
                         scale_note=scale, figures=figures, notes=notes, seconds=time.time() - t0)
