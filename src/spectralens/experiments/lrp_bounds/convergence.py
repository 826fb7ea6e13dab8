"""Part (i): how fast the mean attribution over T augmented copies converges, against Hoeffding.

For one test image x, target t and an augmentation law A (non-geometric: SmoothGrad noise or
brightness/contrast jitter), let R(x') in R^D be the attribution of a random copy x' ~ A(x).
If every component satisfies |R_i(x')| <= B, Hoeffding's inequality for the mean of T
independent copies gives, per component,

    P(|mean_T R_i - E R_i| >= t) <= 2 exp(-T t^2 / (2 B^2)),  i.e.  t(T) = B sqrt(2 log(2/delta) / T)

holds with probability >= 1 - delta (``lrp.bounds.hoeffding_deviation``). Measured here:

* E R estimated from ``t_ref`` independent copies (its own error is ~ sqrt(T / t_ref) of the
  deviation at T, at most 1/4 for the largest T);
* ``repeats`` independent sequences of ``t_max`` copies; for T = 1, 2, 4, ..., t_max the
  deviation |mean_T R_i - E R_i| of every component;
* ``dev_q(T)``: the largest (over components) (1 - delta) quantile (over repeats) of the deviation,
  the number Hoeffding's t(T) bounds; ``exceed(T)``: the fraction of (repeat, component) pairs
  with deviation >= t(T) (Hoeffding: <= delta);
* ``rms(T)``: the root-mean-square deviation over repeats and components, and the least-squares
  slope of log rms vs log T (the rate: -1/2 for independent copies);
* B: ``attribution_bound``'s ``B_uniform`` = K_uniform (a constant valid for every input) times
  the scale it multiplies, taken over all copies drawn: 1 for the gradient, max |x'_i| for
  LRP-epsilon, max |f_t(x')| for LRP-beta. ``observed_sup`` = max |R_i| over all copies says
  whether B really covers them.

All three methods see the same augmented copies (common random numbers).
"""
from __future__ import annotations

import numpy as np
import torch

from .setup import METHODS, LRPBoundsConfig, attribute, bound_row

__all__ = ["AUGMENTATIONS", "augment", "deviation_curves", "run_convergence", "loglog_slope"]

AUGMENTATIONS = ("smoothgrad", "jitter")


def augment(x: torch.Tensor, n: int, kind: str, cfg: LRPBoundsConfig, gen: torch.Generator) -> torch.Tensor:
    """``n`` random copies (n, 1, 8, 8) of one image ``x`` (1, 1, 8, 8) under augmentation ``kind``.

    smoothgrad: ``x + sigma xi`` (xi ~ N(0, I), no clipping, as SmoothGrad);
    jitter: ``clip(a x + b + s xi, 0, 1)``, a ~ U[1 - contrast, 1 + contrast], b ~ U[-brightness, brightness].
    """
    noise = torch.randn(n, *x.shape[1:], generator=gen, dtype=x.dtype)
    if kind == "smoothgrad":
        return x + cfg.noise_sigma * noise
    if kind == "jitter":
        a = 1 + cfg.contrast * (2 * torch.rand(n, 1, 1, 1, generator=gen, dtype=x.dtype) - 1)
        b = cfg.brightness * (2 * torch.rand(n, 1, 1, 1, generator=gen, dtype=x.dtype) - 1)
        return (a * x + b + cfg.jitter_noise * noise).clamp(0.0, 1.0)
    raise ValueError(f"unknown augmentation {kind!r}; known: {AUGMENTATIONS}")


def _attributions(model, x, target, kind, n, cfg, gen) -> tuple[dict[str, torch.Tensor], float, float]:
    """({method: (n, D) float64}, max |x'_i|, max |f_t(x')|) on ``n`` fresh copies, chunk by chunk."""
    parts: dict[str, list] = {m: [] for m in METHODS}
    x_sup = out_sup = 0.0
    for start in range(0, n, cfg.chunk):
        xs = augment(x, min(cfg.chunk, n - start), kind, cfg, gen)
        with torch.no_grad():
            out_sup = max(out_sup, float(model(xs)[:, target].abs().max()))
        x_sup = max(x_sup, float(xs.abs().max()))
        for m in METHODS:
            parts[m].append(attribute(model, xs, target, m))
    return {m: torch.cat(v) for m, v in parts.items()}, x_sup, out_sup


def loglog_slope(ts, values) -> float:
    """Least-squares slope of log(values) against log(ts)."""
    lt, lv = np.log(np.asarray(ts, float)), np.log(np.asarray(values, float))
    return float(np.polyfit(lt, lv, 1)[0])


def deviation_curves(samples: torch.Tensor, expectation: torch.Tensor, ts: list[int], delta: float,
                     bound: float) -> dict:
    """Deviation statistics of prefix means.

    samples: (repeats, t_max, D) attributions; expectation: (D,). Returns lists over ``ts``:
    dev_q, rms, exceed (vs Hoeffding's t(T) for ``bound``), hoeffding t(T), and the slope.
    """
    from spectralens.lrp.bounds import hoeffding_deviation

    csum = samples.cumsum(1)
    idx = torch.tensor([t - 1 for t in ts])
    means = csum[:, idx, :] / torch.tensor(ts, dtype=samples.dtype)[None, :, None]  # (repeats, nT, D)
    dev = (means - expectation).abs()
    dev_q = torch.quantile(dev, 1 - delta, dim=0).amax(-1)  # (nT,)
    rms = dev.pow(2).mean((0, 2)).sqrt()
    hoeff = torch.tensor([float(hoeffding_deviation(bound, t, delta=delta)) for t in ts], dtype=samples.dtype)
    exceed = (dev >= hoeff[None, :, None]).double().mean((0, 2))
    return {"T": list(ts), "dev_q": dev_q.tolist(), "rms": rms.tolist(), "hoeffding": hoeff.tolist(),
            "exceed": exceed.tolist(), "slope_rms": loglog_slope(ts, rms.tolist()),
            "ratio_max": float((dev_q / hoeff).max())}


def _scale(multiplies: str, x_sup: float, out_sup: float) -> float:
    """What K_uniform multiplies in attribution_bound's B_uniform, over all copies drawn."""
    scales = {"1": 1.0, "max|x_i|": x_sup, "|f_t(x)|": out_sup}
    if multiplies not in scales:
        raise ValueError(f"unexpected bound form {multiplies!r}; expected one of {sorted(scales)}")
    return scales[multiplies]


def run_convergence(model, inputs: torch.Tensor, targets: list[int], cfg: LRPBoundsConfig, seed: int,
                    log=print) -> list[dict]:
    """One record per (input, augmentation, method) with the curves above, B and observed sups.

    ``hoeffding_observed`` / ``ratio_max_observed``: the same test with B replaced by the observed
    max |R_i| (the tightest range Hoeffding could use), to separate the rate from B's looseness.
    """
    from spectralens.lrp.bounds import hoeffding_deviation

    records, rows = [], {}
    for k, (x, target) in enumerate(zip(inputs, targets)):
        x = x[None]
        for a, kind in enumerate(AUGMENTATIONS):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + 1009 * k + a)
            ref, xs_ref, out_ref = _attributions(model, x, target, kind, cfg.t_ref, cfg, gen)
            rep, xs_rep, out_rep = _attributions(model, x, target, kind, cfg.repeats * cfg.t_max, cfg, gen)
            x_sup, out_sup = max(xs_ref, xs_rep), max(out_ref, out_rep)
            for m in METHODS:
                if (k, m) not in rows:  # K_uniform holds for every input: one call per image and method
                    rows[(k, m)] = bound_row(model, x, target, m)
                b = rows[(k, m)]
                B = b["K_uniform"] * _scale(b["multiplies"], x_sup, out_sup)  # = B_uniform at these sups
                E = ref[m].mean(0)
                curves = deviation_curves(rep[m].reshape(cfg.repeats, cfg.t_max, -1), E, cfg.ts, cfg.delta, B)
                observed = float(torch.cat([ref[m], rep[m]]).abs().max())
                t_obs = [float(hoeffding_deviation(observed, t, delta=cfg.delta)) for t in cfg.ts]
                records.append({
                    "input": k, "target": target, "augmentation": kind, "method": m, "B": B,
                    "K_uniform": b["K_uniform"], "multiplies": b["multiplies"], "B_clean": b["B"], "x_sup": x_sup,
                    "out_sup": out_sup,
                    "observed_sup": observed, "covered": observed <= B * (1 + 1e-9),
                    "E_abs_max": float(E.abs().max()), **curves, "hoeffding_observed": t_obs,
                    "ratio_max_observed": max(d / t for d, t in zip(curves["dev_q"], t_obs)),
                    "_E": E.reshape(x.shape[1:]).float(),
                })
                log(f"  input {k} (class {target}) {kind:>10} {m:>8}: B {B:.3g}, sup|R| {observed:.3g}, "
                    f"max dev_q/t {curves['ratio_max']:.3g}, slope {curves['slope_rms']:.3f}")
    return records


def summarise(records: list[dict], method: str) -> dict:
    """Worst cases over inputs and augmentations for one method."""
    rs = [r for r in records if r["method"] == method]
    slopes = [r["slope_rms"] for r in rs]
    return {"ratio_max": max(r["ratio_max"] for r in rs), "exceed_max": max(max(r["exceed"]) for r in rs),
            "slope_min": min(slopes), "slope_max": max(slopes), "slope_median": float(np.median(slopes)),
            "all_covered": all(r["covered"] for r in rs),
            "sup_over_B_max": max(r["observed_sup"] / r["B"] for r in rs if r["B"] > 0),
            "looseness_min": min(min(h / d for h, d in zip(r["hoeffding"], r["dev_q"]) if d > 0) for r in rs),
            "ratio_max_observed": max(r["ratio_max_observed"] for r in rs),
            "B_over_sup_min": min(r["B"] / r["observed_sup"] for r in rs if r["observed_sup"] > 0),
            "B_over_sup_max": max(r["B"] / r["observed_sup"] for r in rs if r["observed_sup"] > 0), "n": len(rs)}
