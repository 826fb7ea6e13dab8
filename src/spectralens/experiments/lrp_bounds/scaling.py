"""Part (ii): multiply every weight by c and watch each method's bound constant.

Scaling: the l-th Conv/Linear layer in forward order (l = 1..L; L = 4 for the digits CNN)
gets ``W -> c W`` and ``b -> c^l b``. ReLU, max and average pooling and flattening are
positively homogeneous, so by induction every pre-activation of layer l scales by c^l and the
network computes ``f_c(x) = c^L f(x)``: the same classifier (same argmax, same attribution
maps up to the factor c^L and LRP-epsilon's fixed stabiliser), with every weight norm times c.
(Scaling the biases by c alone would change the function, not only its scale.)

What the paper says (abstract, claim 5): the constants of LRP-beta do not depend on weight
norms, those of the gradient and LRP-epsilon do. Measured per c, at each explained input:

* ``constant`` = ``attribution_bound``'s ``K_uniform``, the factor of B valid for every input:
  LRP-beta ``(1 + 2 beta)^L`` (R form, B = K |f_t(x)|), the gradient ``prod_l sigma_l`` (c form,
  B = K), LRP-epsilon the same product (c form, B = K max|x_i|), with sigma_l = ||W_l||_2 on
  Conv/Linear layers and the pooling matrices' norms;
* ``K_observed``: the product of the actual per-layer norms at x (||M_l||_1 for LRP-beta, the
  c-form matrices' largest singular values for the others);
* ``B`` at x, the output relevance |R_out| = |f_t(x)| and the observed max |R_i|, with the ratio
  max |R_i| / |R_out| (scale-free for every method because the whole network is homogeneous).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from .setup import METHODS, LRPBoundsConfig, attribute, bound_row

__all__ = ["scale_weights", "parametrised_layers", "run_scaling"]


def parametrised_layers(model: nn.Module) -> list[nn.Module]:
    """Conv/Linear modules in registration order (= forward order for the Sequential digits CNN)."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


def scale_weights(model: nn.Module, c: float) -> nn.Module:
    """A copy of ``model`` with layer l's weight times c and bias times c^l (so f_c = c^L f)."""
    if not c > 0:
        raise ValueError(f"scale c must be > 0 (ReLU is only positively homogeneous), got {c!r}")
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ValueError("scale_weights assumes no BatchNorm (merge it into the preceding layer first)")
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        for depth, layer in enumerate(parametrised_layers(scaled), start=1):
            layer.weight.mul_(c)
            if layer.bias is not None:
                layer.bias.mul_(c ** depth)
    return scaled


def run_scaling(model, inputs: torch.Tensor, targets: list[int], cfg: LRPBoundsConfig, log=print) -> dict:
    """Per c and method: constants, B, |R_out|, observed max |R_i| at every input; homogeneity check."""
    L = len(parametrised_layers(model))
    with torch.no_grad():
        base = model(inputs)
    rows, homogeneity = [], {}
    for c in cfg.scales:
        net = scale_weights(model, c)
        with torch.no_grad():
            out = net(inputs)
        homogeneity[c] = float(((out - c ** L * base).abs().max() / (c ** L * base).abs().max()))
        for m in METHODS:
            for k, (x, t) in enumerate(zip(inputs, targets)):
                b = bound_row(net, x, t, m)
                R = attribute(net, x[None], t, m)
                r_out = abs(float(out[k, t]))
                rows.append({"c": c, "method": m, "input": k, "B": b["B"], "constant": b["K_uniform"],
                             "K_observed": b["K_observed"], "holds": bool(b["holds"]), "output_relevance": r_out,
                             "observed_max": float(R.abs().max()), "observed_over_rout": float(R.abs().max()) / r_out})
        log(f"  c = {c:g}: " + ", ".join(
            f"{m} constant {np.median([r['constant'] for r in rows if r['c'] == c and r['method'] == m]):.4g}"
            for m in METHODS) + f"; |f_c - c^L f| / |c^L f| = {homogeneity[c]:.1e}")
    return {"L": L, "rows": rows, "homogeneity": homogeneity, "summary": _summary(rows, cfg.scales)}


def _summary(rows: list[dict], scales) -> dict:
    """Per method: median over inputs of constant, B, observed ratios at each c; growth ratios."""
    out = {}
    for m in METHODS:
        per_c = {}
        for c in scales:
            rs = [r for r in rows if r["c"] == c and r["method"] == m]
            per_c[c] = {k: float(np.median([r[k] for r in rs]))
                        for k in ("constant", "K_observed", "B", "output_relevance", "observed_max",
                                  "observed_over_rout")}
        # per input: the constant's largest relative change from c = 1, and its growth from the smallest to largest c
        rel_change, growth = [], []
        for k in {r["input"] for r in rows}:
            by_c = {r["c"]: r["constant"] for r in rows if r["method"] == m and r["input"] == k}
            ref = by_c.get(1.0, by_c[scales[0]])
            rel_change.append(max(abs(v / ref - 1) for v in by_c.values()))
            growth.append(by_c[max(scales)] / by_c[min(scales)])
        obs = {k: {r["c"]: r["K_observed"] for r in rows if r["method"] == m and r["input"] == k}
               for k in {r["input"] for r in rows}}
        out[m] = {"per_c": per_c, "max_rel_change": max(rel_change), "growth_min": min(growth),
                  "growth_max": max(growth), "all_hold": all(r["holds"] for r in rows if r["method"] == m),
                  "observed_growth": [v[max(scales)] / v[min(scales)] for v in obs.values()]}
    return out
