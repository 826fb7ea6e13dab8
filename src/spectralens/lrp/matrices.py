r"""LRP as an explicit product of per-layer modified-gradient matrices.

Binder, Takmil-Homayouni, Dogan, "Value bounds and convergence analysis for averages of LRP
attributions" (arXiv 2509.08963) write LRP-type attributions, by analogy with the chain rule's
product of Jacobians, as a product of *modified gradient matrices* (the abstract's claim 1).
For one input ``x`` and a network of L layers (in forward order)

    R_in = M_1 @ M_2 @ ... @ M_L @ R_out,      M_l: (n_in_l, n_out_l),  R_in_l = M_l @ R_out_l,

with ``R_out = onehot(target) * logits`` (LRP) or ``onehot(target)`` (gradient rules). Each
``M_l`` is built here *from the rule's formula* (not by running the hooks), with Zennit's
conventions (as :mod:`spectralens.lrp.rules`): ``z = W^T a + b``, stabiliser
``s(z) = z + eps * sign(z)``, ``sign(0) := +1``, ``0/0 := 0``; ``a+ = max(a, 0)``, ``a- = min(a, 0)``:

=================  ========================================================================
epsilon / lrp0     ``M_jk = a_j w_jk / s(z_k)`` (bias kept in z)
gamma              ``z_k>0``: ``(a+_j (w+g w+)_jk + a-_j (w+g w-)_jk) / s(z^up_k)``, mirrored for ``z_k<0``
zplus              ``(a+_j w+_jk + a-_j w-_jk) / s(z+_k)``, ``z+ = a+ W+ + b+ + a- W-``
alpha_beta         ``alpha (a+ w+ + a- w-)_jk / s(z+_k) - beta (a+ w- + a- w+)_jk / s(z-_k)``
adaptive_beta      as alpha_beta with ``beta_k = min(-z-_k/z_k, beta_max)`` (z_k>0), else beta_max
zb / flat / wsquare  input layer: ``(a w - l w+ - h w-)_jk / s(.)``, ``1[j->k] / s(n_k)``, ``w_jk^2 / s(sum w^2 + b^2)``
ReLU               identity (Pass); gradient rules: ``diag(a > 0)``
max pooling        the gradient (winner takes all, a 0/1 routing matrix)
avg pooling, Sum   Norm: ``M = diag(a) P / s(z)`` (P the implicit weights); gradient: P
Flatten, Dropout   identity
BatchNorm          merged into the preceding Linear/Conv (``W' = W scale``, ``b' = (b - mu) scale + beta``)
gradient           ``M_l = J_l^T`` (Linear: W^T, conv: its dense matrix); gradient_x_input: first rows times x
=================  ========================================================================

Convolutions (and pooling) become dense unfolded matrices, so this is for small networks:
a layer with more than ``max_entries`` (n_in * n_out) entries raises ``ValueError``.

The "relevance per unit activation" form (reference note, derived): for the epsilon and
gradient rules every layer also has ``C_l = diag(1/a_in) M_l diag(a_out)``; the chain
``c_in = C_1 ... C_L onehot`` gives ``R = x * c_in``. For epsilon ``C = W diag(z / s(z))`` on a
Linear/Conv and ``diag(relu(z)/z)`` on a ReLU, so ``C_lin C_relu = W D`` with
``D = diag(a_k / s(z_k))`` in [0, 1): the gradient with shrunken ReLU derivatives.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ModuleReuseError, UnsupportedLayerError
from .layers import AFFINE, Sum
from ._trace import Call, merge_batchnorm_calls, trace
from .rules import stabilize

__all__ = ["LayerMatrix", "LayerMatrices", "layer_matrices", "chain", "RULE_NAMES", "INPUT_RULE_NAMES"]

RULE_NAMES = ("epsilon", "lrp0", "gamma", "zplus", "alpha_beta", "adaptive_beta", "gradient", "gradient_x_input")
INPUT_RULE_NAMES = ("zb", "flat", "wsquare")
GRADIENT_RULES = ("gradient", "gradient_x_input")
DEFAULT_MAX_ENTRIES = 1 << 22  # 4.2M float64 entries = 32 MiB per dense matrix

_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d)
_IDENTITY = (nn.Flatten, nn.Unflatten, nn.Dropout, nn.Identity)
_OPTIONS = {"epsilon": ("epsilon", "stabilizer"), "lrp0": ("stabilizer",), "gamma": ("gamma", "stabilizer"),
            "zplus": ("stabilizer",), "alpha_beta": ("alpha", "beta", "stabilizer"),
            "adaptive_beta": ("beta_max", "stabilizer"), "gradient": (), "gradient_x_input": ()}
_INPUT_OPTIONS = {"zb": ("low", "high", "stabilizer"), "flat": ("stabilizer",), "wsquare": ("stabilizer",)}


@dataclass(frozen=True)
class LayerMatrix:
    """One layer's modified-gradient matrix at one input (all tensors float64, flattened).

    index: position in the forward order; name: module path (``"fc1+bn1"`` when a BatchNorm was
    merged); kind: linear, conv1d, conv2d, relu, maxpool, avgpool, identity, sum; rule: the rule
    applied here (epsilon, gamma, ..., zb, flat, wsquare, pass, norm, gradient); params: its
    options (epsilon, stabilizer, gamma, alpha, beta, beta_max, low, high).
    M: (n_in, n_out), ``R_in = M @ R_out`` (Sum: the summands' rows stacked, n_in = sum of sizes).
    C: (n_in, n_out) the "relevance per unit activation" form for epsilon/gradient rules, else None.
    W: (n_in, n_out) the dense (merged) weight matrix of a Linear/Conv, or the implicit weights
    of average pooling; None otherwise.
    a_in: (n_in,) layer input; z: (n_out,) layer output (pre-activation for Linear/Conv);
    R_out / R_in: relevance at the output / input for the target of :func:`layer_matrices`.
    inputs: producer index per input (-1: the model input); in_shapes/out_shape: batch-1 shapes;
    fanout: max number of outputs one input feeds (structural, from the connectivity).
    """

    index: int
    name: str
    kind: str
    rule: str
    params: dict = field(repr=False)
    M: torch.Tensor = field(repr=False)
    C: torch.Tensor | None = field(repr=False)
    W: torch.Tensor | None = field(repr=False)
    a_in: torch.Tensor = field(repr=False)
    z: torch.Tensor = field(repr=False)
    R_out: torch.Tensor = field(repr=False)
    R_in: torch.Tensor = field(repr=False)
    inputs: tuple[int, ...]
    in_shapes: tuple[tuple[int, ...], ...]
    out_shape: tuple[int, ...]
    fanout: int

    @property
    def n_in(self) -> int:
        return self.M.shape[0]

    @property
    def n_out(self) -> int:
        return self.M.shape[1]


class LayerMatrices(list):
    """``list[LayerMatrix]`` in forward order, plus what :func:`chain` needs to start and reshape:
    ``rule``, ``input_rule``, ``options``, ``target``, ``logits`` (n_classes,), ``R_out`` (the start
    vector for ``target``), ``x`` (the input, its given shape), ``output_index`` (the layer whose
    output is the logits)."""

    def __init__(self, items, *, rule, input_rule, options, target, logits, R_out, x, output_index):
        super().__init__(items)
        self.rule, self.input_rule, self.options = rule, input_rule, options
        self.target, self.logits, self.R_out, self.x, self.output_index = target, logits, R_out, x, output_index

    def start(self, target: int) -> torch.Tensor:
        """Output relevance for ``target``: ``onehot * logits`` (LRP) or ``onehot`` (gradient rules)."""
        if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target < self.logits.numel():
            raise ValueError(f"target must be an int in [0, {self.logits.numel()}), got {target!r}")
        onehot = torch.zeros_like(self.logits)
        onehot[target] = 1.0
        return onehot if self.rule in GRADIENT_RULES else onehot * self.logits


def _div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` column-wise (den: (n_out,)), ``0/0 := 0`` (zero columns where den == 0)."""
    safe = torch.where(den == 0, torch.ones_like(den), den)
    return torch.where(den == 0, torch.zeros_like(num), num / safe)


# ----------------------------------------------------------------------------- options
def _parse_options(rule: str, input_rule: str | None, options: dict) -> dict:
    """Validate ``rule``/``input_rule``/options as :func:`spectralens.lrp.attribute` does; fill defaults."""
    if rule not in _OPTIONS:
        raise ValueError(f"unknown rule {rule!r}; choose from {list(RULE_NAMES)}")
    if input_rule is not None and input_rule not in _INPUT_OPTIONS:
        raise ValueError(f"unknown input_rule {input_rule!r}; choose from {list(INPUT_RULE_NAMES)}")
    if rule in GRADIENT_RULES and (input_rule or options):
        raise ValueError(f"rule={rule!r} takes no input_rule or options")
    allowed = set(_OPTIONS[rule]) | set(_INPUT_OPTIONS.get(input_rule, ()))
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"rule {rule!r} (input_rule {input_rule!r}) does not take option(s) {unknown}; "
                        f"it takes {sorted(allowed)}")
    for k, v in options.items():
        if k not in ("low", "high") and (not isinstance(v, (int, float)) or isinstance(v, bool)
                                        or not math.isfinite(v) or v < 0):
            raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")
    o = {"stabilizer": float(options.get("stabilizer", 1e-6)), "epsilon": float(options.get("epsilon", 1e-6)),
         "gamma": float(options.get("gamma", 0.25)), "beta_max": float(options.get("beta_max", 1.0))}
    if rule == "lrp0":
        o["epsilon"] = 0.0
    alpha, beta = options.get("alpha"), options.get("beta")
    beta = (1.0 if alpha is None else alpha - 1.0) if beta is None else beta
    alpha = 1.0 + beta if alpha is None else alpha
    if rule == "alpha_beta" and (beta < 0 or abs(alpha - beta - 1.0) > 1e-12):
        raise ValueError(f"alpha_beta needs alpha - beta = 1 and beta >= 0, got alpha={alpha}, beta={beta}")
    o["alpha"], o["beta"] = float(alpha), float(beta)
    if input_rule == "zb":
        if "low" not in options or "high" not in options:
            raise ValueError("input_rule='zb' needs low= and high= (the input's lowest and highest values)")
        o["low"], o["high"] = options["low"], options["high"]
    return o


# ----------------------------------------------------------------------------- per-layer matrices
def _affine(module, a, w, b):
    if isinstance(module, nn.Linear):
        return F.linear(a, w, b)
    return module._conv_forward(a, w, b)


def _check_size(name, module, n_in, n_out, max_entries):
    if n_in * n_out > max_entries:
        raise ValueError(f"layer {name!r} ({type(module).__name__}) needs a dense {n_in} x {n_out} matrix "
                         f"({n_in * n_out:,} entries > max_entries={max_entries:,}); layer_matrices is for small "
                         "networks: use a smaller model/input or raise max_entries")


def _affine_layer(c: Call, w, b, rule: str, o: dict, xflat):
    """(M, C, W, fanout) for a Linear/Conv call with (merged) kernel ``w`` and bias ``b``."""
    shape = c.inputs[0].shape
    n_in = c.inputs[0].numel()
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *shape[1:])
    zero_in = torch.zeros_like(c.inputs[0])

    def D(kernel):  # dense (n_in, n_out) matrix of the layer with this kernel, no bias
        return _affine(c.module, eye, kernel, None).reshape(n_in, -1)

    def Db(bias):  # the bias as a (n_out,) vector
        return _affine(c.module, zero_in, torch.zeros_like(w), bias).reshape(-1)

    a = c.inputs[0].reshape(-1)
    ap, an = a.clamp(min=0), a.clamp(max=0)
    col = lambda v: v[:, None]  # noqa: E731
    W = D(w)
    z = a @ W + Db(b)
    fanout = int((D(torch.ones_like(w)) != 0).sum(1).max())
    C = None
    if rule in GRADIENT_RULES:
        M, C = W, W
    elif rule == "epsilon":
        den = stabilize(z, o["epsilon"])
        M = _div(col(a) * W, den)
        C = _div(W * z, den)
    elif rule == "gamma":
        g = o["gamma"]
        Wu, Wd = D(w + g * w.clamp(min=0)), D(w + g * w.clamp(max=0))
        zu = ap @ Wu + an @ Wd + Db(b + g * b.clamp(min=0))
        zd = ap @ Wd + an @ Wu + Db(b + g * b.clamp(max=0))
        M = (_div(col(ap) * Wu + col(an) * Wd, stabilize(zu, o["stabilizer"])) * (z > 0)
             + _div(col(ap) * Wd + col(an) * Wu, stabilize(zd, o["stabilizer"])) * (z < 0))
    elif rule in ("zplus", "alpha_beta", "adaptive_beta"):
        Wp, Wn = D(w.clamp(min=0)), D(w.clamp(max=0))
        zp = ap @ Wp + an @ Wn + Db(b.clamp(min=0))
        zn = ap @ Wn + an @ Wp + Db(b.clamp(max=0))
        pos = _div(col(ap) * Wp + col(an) * Wn, stabilize(zp, o["stabilizer"]))
        neg = _div(col(ap) * Wn + col(an) * Wp, stabilize(zn, o["stabilizer"]))
        if rule == "zplus":
            M = pos
        else:
            beta = torch.tensor(o["beta"], dtype=torch.float64)
            if rule == "adaptive_beta":
                zz = zp + zn
                ratio = -zn / torch.where(zz > 0, zz, torch.ones_like(zz))
                beta = torch.where(zz > 0, ratio.clamp(max=o["beta_max"]), torch.full_like(zz, o["beta_max"]))
            M = (1.0 + beta) * pos - beta * neg
    elif rule == "zb":
        lo = torch.as_tensor(o["low"], dtype=torch.float64).broadcast_to(shape).reshape(-1)
        hi = torch.as_tensor(o["high"], dtype=torch.float64).broadcast_to(shape).reshape(-1)
        Wp, Wn = D(w.clamp(min=0)), D(w.clamp(max=0))
        den = z - (lo @ Wp + Db(b.clamp(min=0))) - (hi @ Wn + Db(b.clamp(max=0)))
        M = _div(col(a) * W - col(lo) * Wp - col(hi) * Wn, stabilize(den, o["stabilizer"]))
    elif rule == "flat":
        ones = D(torch.ones_like(w))
        M = _div(ones, stabilize(ones.sum(0), o["stabilizer"]))
    elif rule == "wsquare":
        W2 = D(w * w)
        M = _div(W2, stabilize(W2.sum(0) + Db(b * b), o["stabilizer"]))
    else:  # pragma: no cover - validated in _parse_options
        raise AssertionError(rule)
    if rule == "gradient_x_input" and xflat is not None:
        M = col(xflat) * M
    return M, C, W, fanout


def _other_layer(c: Call, gradient: bool, o: dict):
    """(kind, rule, M, C, fanout, W) for a parameter-free layer (W: average pooling's weights, else None)."""
    m = c.module
    a = c.inputs[0].reshape(-1)
    n_in, z = a.numel(), c.output.reshape(-1)
    eye = torch.eye(n_in, dtype=torch.float64)
    if isinstance(m, nn.ReLU):
        if gradient:
            return "relu", "gradient", torch.diag((a > 0).to(a)), torch.diag((a > 0).to(a)), 1, None
        return "relu", "pass", eye, torch.diag(_div(z, a)), 1, None
    if isinstance(m, _IDENTITY):
        if n_in != z.numel():
            raise ValueError(f"module {c.name!r} changes the number of elements; not an identity")
        return "identity", "gradient", eye, eye, 1, None
    if isinstance(m, _MAXPOOL + _AVGPOOL):
        basis = eye.reshape(n_in, *c.inputs[0].shape[1:])
        P = m(basis).reshape(n_in, -1)  # avg: implicit weights; max: window membership (0/1)
        fanout = int((P != 0).sum(1).max())
        if isinstance(m, _MAXPOOL):
            dims = 1 if isinstance(m, nn.MaxPool1d) else 2
            fn = F.max_pool1d if dims == 1 else F.max_pool2d
            _, idx = fn(c.inputs[0], m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True)
            ch = c.inputs[0].shape[1]
            per = n_in // ch
            idx = (idx.reshape(ch, -1) + per * torch.arange(ch)[:, None]).reshape(-1)
            G = torch.zeros(n_in, z.numel(), dtype=torch.float64)
            G[idx, torch.arange(z.numel())] = 1.0
            return "maxpool", "gradient", G, G, fanout, None
        if gradient:
            return "avgpool", "gradient", P, P, fanout, P
        den = stabilize(a @ P, o["stabilizer"])
        return "avgpool", "norm", _div(a[:, None] * P, den), _div(P * z, den), fanout, P
    if isinstance(m, Sum):
        parts = [t.reshape(-1) for t in c.inputs]
        n = z.numel()
        if gradient:
            G = torch.cat([torch.eye(n, dtype=torch.float64)] * len(parts))
            return "sum", "gradient", G, G, 1, None
        den = stabilize(sum(parts), o["stabilizer"])
        M = torch.cat([torch.diag(_div(p, den)) for p in parts])
        C = torch.cat([torch.diag(_div(z, den))] * len(parts))
        return "sum", "norm", M, C, 1, None
    raise UnsupportedLayerError(c.name, type(m).__name__, "layer_matrices supports Linear, Conv1d/2d (+ BatchNorm "
                                "merged), ReLU, MaxPool1d/2d, AvgPool1d/2d, AdaptiveAvgPool1d/2d, Flatten, "
                                "Unflatten, Dropout, Identity and spectralens.lrp.Sum.")


def layer_matrices(model: nn.Module, x: torch.Tensor, rule: str = "epsilon", *, input_rule: str | None = None,
                   target: int | None = None, max_entries: int = DEFAULT_MAX_ENTRIES,
                   **rule_options) -> LayerMatrices:
    """Per-layer modified-gradient matrices of ``model`` at one input ``x`` (forward order).

    ``x``: one sample, with a batch dimension of 1 or without one (``x`` is used as given if the
    model maps it to (1, classes), else ``x[None]``).
    ``rule``/``input_rule``/options exactly as :func:`spectralens.lrp.attribute` (``epsilon=``,
    ``stabilizer=`` (also avg pooling and Sum), ``gamma=``, ``alpha=``/``beta=``, ``beta_max=``,
    ``low=``/``high=``); the input rule goes on the first Linear/Conv in forward order.
    ``target``: class for ``R_out``/``R_in`` (default: the arg-max logit).
    Computed in float64 on an eval-mode float64 copy of ``model`` (the model is unchanged).
    Returns :class:`LayerMatrices`; ``chain(result)`` equals ``attribute(model, x, target, rule, ...)``.
    Limits: dense matrices (``max_entries`` per layer); every operation between layers must be a
    module (functional reshapes are recognised); a Linear/Conv may be called once.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
        raise ValueError(f"x must be a non-empty floating tensor, got {x!r:.80}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN/inf entries")
    o = _parse_options(rule, input_rule, rule_options)
    net = copy.deepcopy(model).to(torch.float64).eval()
    xb = _one_sample(net, x.detach().to(torch.float64))
    calls, logits, out_index = trace(net, xb)
    calls, merged, remap = merge_batchnorm_calls(calls)
    out_index = remap(out_index)
    if out_index < 0:
        raise ValueError("the model's output is its input: there are no layers")
    gradient = rule in GRADIENT_RULES
    first_affine = next((i for i, c in enumerate(calls) if isinstance(c.module, AFFINE)), None)
    seen: set = set()
    built = []
    for i, c in enumerate(calls):
        if isinstance(c.module, AFFINE):
            if c.module in seen:
                raise ModuleReuseError(c.name, type(c.module).__name__)
            seen.add(c.module)
            n_in, n_out = c.inputs[0].numel(), c.output.numel()
            _check_size(c.name, c.module, n_in, n_out, max_entries)
            w, b, name = merged.get(i, (c.module.weight.detach(), c.module.bias, c.name))
            b = torch.zeros(w.shape[0], dtype=torch.float64) if b is None else b.detach()
            r = input_rule if (i == first_affine and input_rule) else ("epsilon" if rule == "lrp0" else rule)
            xflat = xb.reshape(-1) if -1 in c.producers else None
            M, C, W, fanout = _affine_layer(c, w, b, r, o, xflat)
            kind = {nn.Linear: "linear", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d"}[type(c.module)]
        else:
            _check_size(c.name, c.module, sum(t.numel() for t in c.inputs), c.output.numel(), max_entries)
            kind, r, M, C, fanout, W = _other_layer(c, gradient, o)
            name = c.name
            if rule == "gradient_x_input" and -1 in c.producers:
                scale = torch.cat([xb.reshape(-1) if p < 0 else torch.ones(t.numel(), dtype=torch.float64)
                                   for p, t in zip(c.producers, c.inputs)])
                M = scale[:, None] * M
        if not gradient and rule != "epsilon" and rule != "lrp0":
            C = None  # the c-form is defined for the epsilon and gradient rules
        if r in INPUT_RULE_NAMES:
            C = None
        built.append(dict(index=i, name=name, kind=kind, rule=r, params=_layer_params(r, o), M=M, C=C, W=W,
                          a_in=torch.cat([t.reshape(-1) for t in c.inputs]), z=c.output.reshape(-1),
                          inputs=tuple(c.producers), in_shapes=tuple(tuple(t.shape) for t in c.inputs),
                          out_shape=tuple(c.output.shape), fanout=fanout))
    t = int(logits.argmax()) if target is None else target
    tmp = LayerMatrices([], rule=rule, input_rule=input_rule, options=dict(rule_options), target=t, logits=logits,
                        R_out=None, x=x.detach().to(torch.float64), output_index=out_index)
    tmp.R_out = tmp.start(t)
    r_out = _backward([(d["M"], d["inputs"], d["in_shapes"]) for d in built], out_index, tmp.R_out)
    for d, ro in zip(built, r_out):
        tmp.append(LayerMatrix(**d, R_out=ro, R_in=d["M"] @ ro))
    return tmp


def _one_sample(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` with a batch dimension of 1: ``x`` itself if it starts with 1 and the model maps it to
    (1, classes), else ``x[None]`` (so (1, 8, 8) works for a Conv2d(1, ...) model and for an MLP)."""
    tried = []
    for cand in ([x, x[None]] if x.ndim >= 2 and x.shape[0] == 1 else [x[None]]):
        try:
            with torch.no_grad():
                out = net(cand)
        except (RuntimeError, ValueError, TypeError) as e:
            tried.append(f"{tuple(cand.shape)}: {type(e).__name__}: {str(e)[:120]}")
            continue
        if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == 1:
            return cand
        tried.append(f"{tuple(cand.shape)}: output {tuple(out.shape) if isinstance(out, torch.Tensor) else out}")
    raise ValueError("layer_matrices needs one sample and a model returning logits of shape (1, classes); tried "
                     + "; ".join(tried))


def _layer_params(r: str, o: dict) -> dict:
    keys = {"epsilon": ("epsilon",), "gamma": ("gamma", "stabilizer"), "zplus": ("stabilizer",),
            "alpha_beta": ("alpha", "beta", "stabilizer"), "adaptive_beta": ("beta_max", "stabilizer"),
            "zb": ("low", "high", "stabilizer"), "flat": ("stabilizer",), "wsquare": ("stabilizer",),
            "norm": ("stabilizer",)}.get(r, ())
    return {k: o[k] for k in keys}


def _backward(layers, out_index: int, R_out: torch.Tensor):
    """Relevance at each layer's output, accumulated over consumers (reverse forward order)."""
    r_out = [None] * len(layers)
    r_out[out_index] = R_out
    for i in range(len(layers) - 1, -1, -1):
        M, producers, in_shapes = layers[i]
        if r_out[i] is None:
            r_out[i] = torch.zeros(M.shape[1], dtype=torch.float64)
        r_in = M @ r_out[i]
        start = 0
        for p, shape in zip(producers, in_shapes):
            n = math.prod(shape)
            if p >= 0:
                r_out[p] = r_in[start:start + n] if r_out[p] is None else r_out[p] + r_in[start:start + n]
            start += n
    return r_out


def chain(layers, R_out: torch.Tensor | int | None = None, *, form: str = "R") -> torch.Tensor:
    """``M_1 @ M_2 @ ... @ M_L @ R_out`` (residual graphs: summed over paths), shaped like ``x``.

    layers: the result of :func:`layer_matrices` (or a list of :class:`LayerMatrix`; producers
    outside the list count as the input). R_out: (n_out,) or (1, n_out) output relevance, an int
    target (``onehot * logits`` for LRP, ``onehot`` for gradient rules) or None (the target used
    in :func:`layer_matrices`). form: "R" (the M matrices: equals ``attribute``) or "c" (the C
    matrices: gradient/epsilon only; ``x * chain(layers, onehot, form="c")`` equals the epsilon
    attribution, ``chain(..., form="c")`` the gradient).
    """
    layers = list(layers) if not isinstance(layers, LayerMatrices) else layers
    if not layers:
        raise ValueError("chain needs at least one LayerMatrix")
    if form not in ("R", "c"):
        raise ValueError(f"form must be 'R' or 'c', got {form!r}")
    if isinstance(R_out, int) or R_out is None:
        if not isinstance(layers, LayerMatrices):
            raise ValueError("R_out as a target or None needs the LayerMatrices returned by layer_matrices")
        R_out = layers.R_out if R_out is None else layers.start(R_out)
    pos = {lm.index: k for k, lm in enumerate(layers)}
    out_k = pos.get(layers.output_index, len(layers) - 1) if isinstance(layers, LayerMatrices) else len(layers) - 1
    R_out = torch.as_tensor(R_out, dtype=torch.float64).reshape(-1)
    if R_out.numel() != layers[out_k].n_out:
        raise ValueError(f"R_out has {R_out.numel()} entries, the last layer has {layers[out_k].n_out} outputs")
    mats = []
    for lm in layers:
        mat = lm.M if form == "R" else lm.C
        if mat is None:
            raise ValueError(f"layer {lm.name!r} (rule {lm.rule}) has no c-form matrix; form='c' needs the "
                             "epsilon or gradient rules without an input rule")
        mats.append((mat, tuple(pos.get(p, -1) for p in lm.inputs), lm.in_shapes))
    r_out = _backward(mats, out_k, R_out)
    total = None
    for (mat, producers, in_shapes), ro in zip(mats, r_out):
        r_in, start = mat @ ro, 0
        for p, shape in zip(producers, in_shapes):
            n = math.prod(shape)
            if p < 0:
                piece = r_in[start:start + n]
                total = piece.clone() if total is None else total + piece
            start += n
    shape = tuple(layers.x.shape) if isinstance(layers, LayerMatrices) else layers[0].in_shapes[0]
    return total.reshape(shape)
