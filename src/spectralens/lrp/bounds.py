r"""Bounds on LRP's modified-gradient matrices, on attribution values, and Hoeffding constants.

Binder, Takmil-Homayouni, Dogan (arXiv 2509.08963). Only the abstract is available; it *claims*
(2) upper bounds on the singular values of the modified gradient matrices, (3) component-wise
bounds on attribution values, (4) from (3), multiplicative constants governing how fast means of
attributions over T augmented copies (or SmoothGrad samples) converge, and (5) that LRP-beta's
constants do not depend on weight norms, unlike the gradient's and LRP-epsilon's. **Every formula
below is derived here** from the rule definitions (see ``docs/lrp-bounds.md``); none is quoted.

Per-layer bounds (``M``: (n_in, n_out), ``R_in = M R_out``; ``||M||_1`` = max column abs sum,
``||M||_inf`` = max row abs sum; ``fanout`` = max number of outputs one input feeds):

* R form, rules whose columns split each output's relevance into positive parts summing to at
  most ``alpha`` and negative parts summing to at least ``-beta`` (with ``z_jk`` of one sign per j):
  entries in ``[-beta, alpha]``, ``||M||_1 <= alpha + beta``, and
  ``sigma_max <= min(sqrt(n_out (alpha^2 + beta^2)), sqrt((alpha + beta) max(alpha, beta) fanout))``
  (Frobenius; ``sqrt(||M||_1 ||M||_inf)``). (alpha, beta) = LRP-alpha-beta (alpha, beta) (LRP-beta:
  (1 + beta, beta)); adaptive beta (1 + beta_max, beta_max); z+, flat, w^2, z^B (x in the box),
  max pooling, ReLU/identity (1, 0); avg pooling and Sum with inputs >= 0 (1, 0); gamma
  (1 + 1/gamma, 1/gamma) (derived: the numerator ``z_jk + gamma z+_jk`` over ``z_k + gamma(z+_k + b+_k)``,
  so positive parts sum to <= 1 + 1/gamma and negative ones to <= 1/gamma when z_k > 0; mirrored
  for z_k < 0). All independent of the weights.
* c form ("relevance per unit activation", gradient and epsilon): ``C = W diag(z / s(z))`` on a
  Linear/Conv, so ``sigma_max <= ||W||_2 max_k |z_k / s(z_k)| <= ||W||_2`` (gradient: ``= ||W||_2``);
  ReLU ``diag(relu(z)/z)`` and identities ``<= 1``; max pooling ``<= sqrt(fanout)``; avg pooling
  ``<= ||P||_2``; Sum of m terms ``<= sqrt(m)``.

Attribution values (chain of per-layer bounds; residual graphs: summed over paths):

* gradient: ``|R_i| <= ||c||_2 <= prod_l sigma_l`` (times 1);
* gradient x input and epsilon: ``R = x * c``, so ``|R_i| <= |x_i| prod_l sigma_l``; a-priori
  (any input) ``prod_l ||W_l||_2`` - grows like ``c^L`` when every weight is scaled by c;
* R-form rules: ``|R_i| <= ||R_in||_1 <= prod_l ||M_l||_1 |R_out| <= prod_l (alpha_l + beta_l) |f_t(x)|``;
  the constant ``prod (alpha_l + beta_l)`` (LRP-beta: ``(1 + 2 beta)^L``) does not involve the weights;
* epsilon with an R-form input rule: ``|R_i| <= ||M_1||_1 ||z_1||_2 prod_{l>1} sigma_l``.

Hoeffding (values in ``[-B, B]``, T i.i.d. samples): ``P(|mean - E| >= t) <= 2 exp(-T t^2 / (2 B^2))``,
so ``t = B sqrt(2 log(2 / delta) / T)`` at confidence ``1 - delta`` (``components`` = n: union bound).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from .matrices import GRADIENT_RULES, INPUT_RULE_NAMES, LayerMatrices, LayerMatrix, chain, layer_matrices

__all__ = ["layer_bounds", "attribution_bound", "method_constants", "hoeffding_deviation", "hoeffding_samples",
           "convergence_table", "singular_values", "rule_alpha_beta"]

_TOL = 1e-9
SOURCE_SIGMA = "derived here (abstract claim 2: singular values are bounded)"
SOURCE_VALUE = "derived here (abstract claims 3-5: component-wise bounds; constants; LRP-beta weight-free)"


def _forms(layers: LayerMatrices) -> list[str]:
    """'c' for layers of a gradient/epsilon chain (their C matrix), 'R' for the others and for
    every layer up to and including an input-rule layer (the R-form prefix)."""
    boundary = _boundary(layers)
    c_rule = layers.rule in GRADIENT_RULES + ("epsilon", "lrp0")
    return ["c" if c_rule and lm.C is not None and (boundary is None or k > boundary) else "R"
            for k, lm in enumerate(layers)]


def _boundary(layers: LayerMatrices) -> int | None:
    return max((k for k, lm in enumerate(layers) if lm.rule in INPUT_RULE_NAMES), default=None)


def singular_values(layer: LayerMatrix, form: str = "R") -> torch.Tensor:
    """All singular values (descending, float64) of ``layer.M`` (form "R") or ``layer.C`` ("c")."""
    mat = layer.M if form == "R" else layer.C
    if mat is None:
        raise ValueError(f"layer {layer.name!r} has no {form!r}-form matrix")
    return _svdvals(mat)


def _svdvals(mat: torch.Tensor) -> torch.Tensor:
    """Descending singular values of ``mat`` (n_in, n_out); O(n_in n_out) for the many matrices
    with at most one nonzero per column (ReLU diagonals, identities, max-pool routing), where
    M M^T is diagonal: s = sqrt(row sums of M^2), padded with zeros to min(n_in, n_out)."""
    if mat.numel() == 0 or int((mat != 0).sum(0).max()) <= 1:
        k = min(mat.shape)
        sv = torch.sort(mat.pow(2).sum(1).sqrt(), descending=True).values
        return torch.cat([sv, sv.new_zeros(max(0, k - sv.numel()))])[:k]
    return torch.linalg.svdvals(mat)


def rule_alpha_beta(layer: LayerMatrix) -> tuple[float, float] | None:
    """(alpha, beta) of the weight-free R-form bounds for ``layer``, or None if there is none
    (epsilon/gradient Linear/Conv; avg pooling/Sum with negative inputs; z^B with x outside the box)."""
    p, r = layer.params, layer.rule
    if layer.kind in ("relu", "identity", "maxpool") or r in ("zplus", "flat", "wsquare"):
        return 1.0, 0.0  # 0/1 routing or identity; column-stochastic rules
    if r == "alpha_beta":
        return p["alpha"], p["beta"]
    if r == "adaptive_beta":
        return 1.0 + p["beta_max"], p["beta_max"]
    if r == "gamma":
        return (1.0 + 1.0 / p["gamma"], 1.0 / p["gamma"]) if p["gamma"] > 0 else None
    if r == "zb":
        n = layer.a_in.numel()
        lo = torch.as_tensor(p["low"], dtype=torch.float64).broadcast_to(layer.in_shapes[0]).reshape(n)
        hi = torch.as_tensor(p["high"], dtype=torch.float64).broadcast_to(layer.in_shapes[0]).reshape(n)
        return (1.0, 0.0) if bool(((layer.a_in >= lo) & (layer.a_in <= hi)).all()) else None
    if r == "norm":
        return (1.0, 0.0) if bool((layer.a_in >= 0).all()) else None
    return None


def _assumption(layer: LayerMatrix) -> str:
    return {"zb": "low <= x <= high", "norm": "inputs >= 0", "gamma": "gamma > 0"}.get(layer.rule, "")


def _row(layer: LayerMatrix, form: str) -> dict:
    mat = layer.C if form == "c" else layer.M
    sv = _svdvals(mat)
    absm = mat.abs()
    norm1, norminf = float(absm.sum(0).max()), float(absm.sum(1).max())
    row = dict(index=layer.index, layer=layer.name, kind=layer.kind, rule=layer.rule, form=form,
               n_in=layer.n_in, n_out=layer.n_out, fanout=layer.fanout, sigma_max=float(sv[0]),
               sigma_min=float(sv[-1]), sigma_max_R=float(_svdvals(layer.M)[0]) if form == "c"
               else float(sv[0]), norm1=norm1, holder=math.sqrt(norm1 * norminf),
               entry_min=float(mat.min()), entry_max=float(mat.max()), assumption=_assumption(layer))
    nan = float("nan")
    row.update(norm1_bound=nan, entry_low=nan, entry_high=nan, weight_free=True, assumption_holds=True)
    if form == "c":
        shrink = _shrink(layer)
        if layer.kind in ("linear", "conv1d", "conv2d", "avgpool"):
            wn = float(torch.linalg.matrix_norm(layer.W, ord=2))
            name = "||W||_2" if layer.kind != "avgpool" else "||P||_2"
            uniform, bound = wn, wn * shrink
            text = name if layer.rule == "gradient" or layer.rule == "gradient_x_input" else f"{name} max|z/s(z)|"
            row["weight_free"] = layer.kind == "avgpool"
        elif layer.kind == "maxpool":
            uniform = bound = math.sqrt(layer.fanout)
            text = "sqrt(fanout)"
        elif layer.kind == "sum":
            m = len(layer.inputs)
            uniform, bound, text = math.sqrt(m), math.sqrt(m) * shrink, "sqrt(m) max|z/s(z)|"
        else:  # relu, identity
            uniform = bound = 1.0
            text = "1"
        row.update(sigma_bound=bound, sigma_bound_uniform=uniform, bound=text)
    else:
        ab = rule_alpha_beta(layer)
        if ab is None:
            row.update(sigma_bound=nan, sigma_bound_uniform=nan, bound="none (needs " + (_assumption(layer) or
                       "an R-form rule") + ")", assumption_holds=False, weight_free=False)
        else:
            a, b = ab
            frob = math.sqrt(layer.n_out * (a * a + b * b))
            hold = math.sqrt((a + b) * max(a, b) * layer.fanout)
            bound = min(frob, hold)
            text = (f"sqrt(n_out (a^2+b^2)), (a,b)=({a:g},{b:g})" if frob < hold
                    else f"sqrt((a+b) max(a,b) fanout), (a,b)=({a:g},{b:g})")
            row.update(sigma_bound=bound, sigma_bound_uniform=bound, bound=text, norm1_bound=a + b,
                       entry_low=-b, entry_high=a)
    ok = [row["sigma_max"] <= row["sigma_bound"] * (1 + _TOL) + 1e-12] if row["sigma_bound"] == row["sigma_bound"] \
        else []
    if row["norm1_bound"] == row["norm1_bound"]:
        ok += [norm1 <= row["norm1_bound"] * (1 + _TOL) + 1e-12,
               row["entry_min"] >= row["entry_low"] - 1e-12, row["entry_max"] <= row["entry_high"] + 1e-12]
    row["holds"] = all(ok) if ok else None
    row["tightness"] = row["sigma_max"] / row["sigma_bound"] if row["sigma_bound"] > 0 else nan
    row["source"] = SOURCE_SIGMA
    return row


def _shrink(layer: LayerMatrix) -> float:
    """max_k |z_k / s(z_k)| for epsilon-type layers (1 for the gradient rules)."""
    if layer.rule in GRADIENT_RULES or layer.rule in ("gradient", "pass"):
        return 1.0
    eps = layer.params.get("epsilon", layer.params.get("stabilizer", 0.0))
    z = layer.z
    s = z + eps * torch.where(z >= 0, 1.0, -1.0).to(z)
    r = torch.where(s == 0, torch.zeros_like(z), z / torch.where(s == 0, torch.ones_like(s), s))
    return float(r.abs().max()) if r.numel() else 0.0


_COLUMNS = ["index", "layer", "kind", "rule", "form", "n_in", "n_out", "fanout", "sigma_max", "sigma_min",
            "sigma_bound", "sigma_bound_uniform", "tightness", "holds", "bound", "weight_free", "norm1",
            "norm1_bound", "entry_min", "entry_max", "entry_low", "entry_high", "holder", "sigma_max_R",
            "assumption", "assumption_holds", "source"]


def layer_bounds(layers: LayerMatrices, rule: str | None = None) -> pd.DataFrame:
    """Per layer: actual singular values of the modified matrix next to their bound.

    ``layers``: :func:`~spectralens.lrp.layer_matrices` output; ``rule``: optional check that it
    was computed with this rule. Columns: ``sigma_max``/``sigma_min`` (of ``C`` for gradient/epsilon
    layers, form "c"; of ``M`` otherwise, form "R"; ``sigma_max_R`` always of ``M``),
    ``sigma_bound`` (at this input), ``sigma_bound_uniform`` (any input), ``tightness`` =
    sigma_max / sigma_bound, ``holds``, ``bound`` (formula), ``weight_free``, ``norm1`` =
    ``||.||_1`` vs ``norm1_bound`` (R form), entries vs ``[entry_low, entry_high]``, ``holder`` =
    ``sqrt(||.||_1 ||.||_inf)`` (a data-dependent bound on sigma_max), ``assumption`` (+ whether it
    holds). Formulas in the module docstring; all derived here (the paper's abstract claims only
    that such bounds exist).
    """
    if not isinstance(layers, LayerMatrices):
        raise TypeError("layer_bounds needs the LayerMatrices returned by layer_matrices")
    if rule is not None and rule != layers.rule:
        raise ValueError(f"these matrices were computed with rule {layers.rule!r}, not {rule!r}")
    return pd.DataFrame([_row(lm, f) for lm, f in zip(layers, _forms(layers))], columns=_COLUMNS)


def _block_norms(layer: LayerMatrix, form: str, which: str, row: dict) -> list[float]:
    """Per-input-block norm (1-norm in R form, 2-norm in c form) for path products."""
    if layer.kind != "sum":
        if which == "observed":
            return [row["norm1"] if form == "R" else row["sigma_max"]]
        if form == "R":
            return [row["norm1_bound"]]
        return [row["sigma_bound"] if which == "bound" else row["sigma_bound_uniform"]]
    n = layer.n_out
    blocks = [(layer.M if form == "R" else layer.C)[k * n:(k + 1) * n] for k in range(len(layer.inputs))]
    if which == "observed":
        return [float(b.abs().sum(0).max()) if form == "R" else float(torch.linalg.matrix_norm(b, ord=2))
                for b in blocks]
    if form == "R":
        return [row["norm1_bound"]] * len(blocks)
    return [_shrink(layer) if which == "bound" else 1.0] * len(blocks)


def _path_product(layers: LayerMatrices, values: dict, top: int, bottom: int) -> float:
    """Sum over paths from layer ``top``'s output to ``bottom``'s output (-1: the input) of the
    product of per-block values (``values[k]``: list per input of layer k)."""
    u = {top: 1.0}
    acc = 0.0
    for k in range(top, bottom, -1):
        w = u.pop(k, 0.0)
        if w == 0.0:
            continue
        for p, v in zip(layers[k].inputs, values[k]):
            if p == bottom:
                acc += v * w
            elif p > bottom:
                u[p] = u.get(p, 0.0) + v * w
            else:
                raise ValueError("a path from the input bypasses the input-rule layer; the mixed "
                                          "R/c bound needs the input rule on the only layer reading the input")
    return acc


def attribution_bound(model, x: torch.Tensor | None = None, rule: str = "epsilon", *, target: int | None = None,
                      x_bound: float | None = None, out_bound: float | None = None, **rule_options) -> pd.DataFrame:
    """Component-wise bound B on the attribution values next to the observed range (one row).

    ``model``: an ``nn.Module`` (then ``x``, ``rule``, ``target``, options as :func:`layer_matrices`)
    or a :class:`LayerMatrices`. ``|R_i| <= B = K * scale`` with ``K`` a product of per-layer
    bounds and ``scale`` = 1 (gradient), ``max|x|`` (gradient x input, epsilon; ``x_bound`` to
    cover all augmented inputs), ``|f_t(x)|`` (R-form rules; ``out_bound`` likewise) or
    ``||M_1||_1 ||z_1||_2`` (epsilon with an input rule). Columns: ``output_relevance`` (the start
    value: ``f_t(x)`` for LRP, 1 for the gradient rules), ``constant`` (= ``K``), ``K_observed`` (product of the
    actual per-layer norms at x), ``K`` (of the per-layer bounds at x), ``K_uniform`` (bounds valid
    for every input: the Hoeffding constant's factor), ``scale``, ``B``, ``B_uniform``,
    ``observed_min/max/absmax``, ``holds`` (absmax <= B and, for x-scaled rules, |R_i| <= K |x_i|),
    ``tightness`` = absmax / B, ``weight_free`` (K_uniform independent of the weights), ``formula``.
    """
    if isinstance(model, LayerMatrices):
        if x is not None or rule_options or target is not None:
            raise ValueError("pass either LayerMatrices, or a model with x, rule, target and options")
        layers = model
    elif isinstance(model, nn.Module):
        if x is None:
            raise ValueError("attribution_bound(model, x, ...) needs the input x")
        layers = layer_matrices(model, x, rule, target=target, **rule_options)
    else:
        raise TypeError(f"model must be an nn.Module or LayerMatrices, got {type(model).__name__}")
    rule = layers.rule
    if rule is None:
        raise ValueError("attribution_bound needs one rule for every layer (its formula chains per-layer bounds of "
                         "one kind); these matrices come from a composite or per-layer rules: use layer_bounds(...) "
                         "for the per-layer bounds")
    table = layer_bounds(layers)
    rows = table.to_dict("records")
    R = chain(layers).reshape(-1)
    out = layers.output_index
    boundary = _boundary(layers)
    xs = layers.x.reshape(-1).abs()
    ks = {}
    for which in ("observed", "bound", "uniform"):
        vals = {k: _block_norms(lm, rows[k]["form"], which, rows[k]) for k, lm in enumerate(layers)}
        if boundary is None or rule not in ("epsilon", "lrp0"):
            ks[which] = _path_product(layers, vals, out, -1)
        else:  # R-form input layer below a c-form chain: |R| <= ||M_1||_1 ||z_b||_2 ||c_b||_2
            ks[which] = _path_product(layers, vals, out, boundary) * _path_product(layers, vals, boundary, -1)
    if rule == "gradient":
        scale, scale_u, mult, formula = 1.0, 1.0, "1", "|R_i| <= prod_l sigma_l (c form)"
    elif rule in ("gradient_x_input",) or (rule in ("epsilon", "lrp0") and boundary is None):
        scale = float(xs.max())
        scale_u, mult = (scale if x_bound is None else float(x_bound)), "max|x_i|"
        formula = "|R_i| <= |x_i| prod_l sigma_l (c form)"
    elif rule in ("epsilon", "lrp0"):
        scale = float(layers[boundary].z.norm())
        scale_u, mult = scale, "||z_1||_2"
        formula = "|R_i| <= ||M_1||_1 ||z_1||_2 prod_{l>1} sigma_l"
    else:
        scale = abs(float(layers.logits[layers.target]))
        scale_u, mult = (scale if out_bound is None else float(out_bound)), "|f_t(x)|"
        formula = "|R_i| <= ||R_in||_1 <= prod_l ||M_l||_1 |f_t(x)|"
    absmax = float(R.abs().max())
    B, B_u = ks["bound"] * scale, ks["uniform"] * scale_u
    holds = absmax <= B * (1 + _TOL) + 1e-12
    if mult == "max|x_i|":
        holds = holds and bool((R.abs() <= ks["bound"] * xs * (1 + _TOL) + 1e-12).all())
    weight_free = all(bool(r["weight_free"]) for r in rows)
    return pd.DataFrame([dict(rule=rule, input_rule=layers.input_rule, target=layers.target, multiplies=mult,
                              output_relevance=float(layers.R_out[layers.target]), constant=ks["bound"],
                              K_observed=ks["observed"], K=ks["bound"], K_uniform=ks["uniform"], scale=scale,
                              B=B, B_uniform=B_u, observed_min=float(R.min()), observed_max=float(R.max()),
                              observed_absmax=absmax, holds=holds, tightness=absmax / B if B > 0 else float("nan"),
                              weight_free=weight_free, formula=formula, source=SOURCE_VALUE)])


DEFAULT_METHODS = {"gradient": ("gradient", {}), "epsilon": ("epsilon", {"epsilon": 1e-6}),
                   "lrp_beta": ("alpha_beta", {"beta": 1.0})}


def method_constants(model: nn.Module, x: torch.Tensor, methods: dict | None = None, *, target: int | None = None,
                     x_bound: float | None = None, out_bound: float | None = None) -> pd.DataFrame:
    """Each attribution method's constant for ``model`` at ``x`` (one row per method).

    ``methods``: ``{label: (rule, options)}``, default gradient, epsilon (1e-6) and LRP-beta
    (``alpha_beta`` with beta = 1). All use the same ``target`` (default: the arg-max logit).
    Columns as :func:`attribution_bound` plus ``method``. ``K_uniform`` is the constant: for
    LRP-beta ``(1 + 2 beta)^L`` whatever the weights; for the gradient and epsilon
    ``prod_l ||W_l||_2``, which scales as ``c^L`` when every weight is multiplied by c.
    """
    methods = DEFAULT_METHODS if methods is None else methods
    frames = []
    for label, (rule, opts) in methods.items():
        df = attribution_bound(model, x, rule, target=target, x_bound=x_bound, out_bound=out_bound, **opts)
        df.insert(0, "method", label)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _check_hoeffding(B, delta, components):
    B = np.asarray(B, dtype=float)
    if np.any(~np.isfinite(B)) or np.any(B < 0):
        raise ValueError(f"B must be finite and >= 0, got {B}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if not isinstance(components, int) or components < 1:
        raise ValueError(f"components must be a positive int, got {components!r}")
    return B


def hoeffding_deviation(B, T, delta: float = 0.05, components: int = 1):
    """``t = B sqrt(2 log(2 components / delta) / T)``: with probability >= 1 - delta the mean of T
    i.i.d. attributions with values in [-B, B] is within t of its expectation (in each of
    ``components`` entries at once, by the union bound). Hoeffding: ``P(|mean - E| >= t) <=
    2 exp(-T t^2 / (2 B^2))``. B, T: scalars or arrays (broadcast). The paper's claim 4 in form;
    the formula is Hoeffding's inequality with the bound B from :func:`attribution_bound`."""
    B = _check_hoeffding(B, delta, components)
    T = np.asarray(T, dtype=float)
    if np.any(T < 1):
        raise ValueError(f"T must be >= 1, got {T}")
    t = B * np.sqrt(2.0 * math.log(2.0 * components / delta) / T)
    return float(t) if np.ndim(t) == 0 else t


def hoeffding_samples(B, t, delta: float = 0.05, components: int = 1):
    """Smallest T with ``hoeffding_deviation(B, T, delta, components) <= t``:
    ``ceil(2 B^2 log(2 components / delta) / t^2)``."""
    B = _check_hoeffding(B, delta, components)
    t = np.asarray(t, dtype=float)
    if np.any(t <= 0):
        raise ValueError(f"t must be > 0, got {t}")
    T = np.maximum(1, np.ceil(2.0 * B ** 2 * math.log(2.0 * components / delta) / t ** 2))
    return int(T) if np.ndim(T) == 0 else T.astype(int)


def convergence_table(constants: pd.DataFrame, Ts=(1, 4, 16, 64, 256), delta: float = 0.05,
                      column: str = "B_uniform", components: int = 1) -> pd.DataFrame:
    """Long table (method, T, B, deviation) from :func:`method_constants` (or attribution_bound) rows."""
    if column not in constants:
        raise ValueError(f"column {column!r} not in the table; have {list(constants.columns)}")
    label = "method" if "method" in constants else "rule"
    rows = [dict(method=r[label], T=int(T), B=float(r[column]),
                 deviation=hoeffding_deviation(r[column], T, delta, components))
            for _, r in constants.iterrows() for T in Ts]
    return pd.DataFrame(rows)
