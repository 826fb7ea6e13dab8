r"""LRP rules: how the relevance ``R`` of a layer's output is redistributed onto its input.

Every rule follows Zennit's (v0.5.1) conventions so that attributions agree with Zennit's:
modify the inputs and/or parameters, recompute the forward ``z = f(x; W, b)``, divide the
output relevance by a stabilised ``z``, take the gradient (a vector-Jacobian product with the
modified weights) and multiply by the (modified) input. For a dense layer
``z_k = sum_j x_j w_jk + b_k`` the generic form is

    R_j = sum_k x_j w_jk / s(z_k) * R_k,      s(z) = z + eps * sign(z),  sign(0) := +1.

Shapes: ``x`` is the layer input (N, ...), ``R`` the relevance of the layer output (shape of
``z``); each rule returns one relevance tensor per input, of that input's shape. Positive and
negative parts: ``x+ = max(x, 0)``, ``x- = min(x, 0)``, likewise ``W+``, ``W-``, ``b+``, ``b-``.
Rules are stateless and may be shared by many layers. Rules never modify the module: they call
:func:`spectralens.lrp.layers.affine` with modified copies of its parameters.

References: Bach et al. 2015 (epsilon, alpha-beta), Montavon et al. 2017/2019 (z+, z^B, w^2,
gamma), Lapuschkin et al. 2019 (flat), Binder et al. arXiv 2509.08963 (LRP-beta, adaptive beta).
"""
from __future__ import annotations

import abc
import math

import torch
from torch import nn

from .errors import UnsupportedLayerError
from .layers import AFFINE, affine, params


def stabilize(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``s(z) = z + eps * sign(z)`` with ``sign(0) := +1`` (Zennit's ``Stabilizer``); |s(z)| >= eps."""
    return torch.where(z >= 0, z + eps, z - eps)


def _divide(r: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    """``r / denom`` with ``0 / 0 := 0`` (a zero denominator needs eps = 0; Zennit returns NaN there).

    One division and one reduction on the common path: the masked version (three more element-wise
    passes) runs only when some denominator is exactly zero.
    """
    out = r / denom
    if bool((denom == 0).any()):
        out = torch.where(denom == 0, torch.zeros_like(out), out)
    return out


def _check_nonneg(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _vjp(module: nn.Module, terms, grad_mapper):
    """For terms ``[(x_i, W_i, b_i)]`` compute ``z_i = f(x_i; W_i, b_i)``, the cotangents
    ``g = grad_mapper([z_i])`` and return ``[J_i^T g_i]`` (the gradient of ``z_i`` w.r.t. ``x_i``)."""
    with torch.enable_grad():
        xs = [x.detach().requires_grad_(True) for x, _, _ in terms]
        zs = [affine(module, x, w, b) for x, (_, w, b) in zip(xs, terms)]
        gs = grad_mapper([z.detach() for z in zs])
        return torch.autograd.grad(zs, xs, gs)


class Rule(abc.ABC):
    """Abstract base class. ``relevance(module, inputs, R)`` -> tuple of input relevances (one per input)."""

    #: module types the rule applies to (checked at forward time)
    applies_to: tuple[type, ...] = AFFINE
    name = "rule"

    def check(self, path: str, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        """Raise :class:`UnsupportedLayerError` if this rule cannot be applied to ``module``."""
        if not isinstance(module, self.applies_to):
            kinds = ", ".join(t.__name__ for t in self.applies_to)
            raise UnsupportedLayerError(path, type(module).__name__, f"Rule {self!r} applies to {kinds} only.")

    @abc.abstractmethod
    def relevance(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], r: torch.Tensor):
        """Input relevance of ``module`` given its output relevance ``r``: a tuple, one per input."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Epsilon(Rule):
    r"""LRP-epsilon (Bach et al. 2015); ``Epsilon(0)`` is LRP-0.

    ``R_j = x_j * sum_k w_jk R_k / s(z_k)``, ``z_k = sum_j x_j w_jk + b_k`` (bias kept, as in
    Zennit: relevance ``b_k / s(z_k) * R_k`` is absorbed by the bias). ``eps`` also shrinks the
    relevance of weakly activated units (it is not only a stabiliser). With eps = 0 and no bias,
    ``sum_j R_j = sum_k R_k`` exactly; ``0/0`` is taken as 0 (Zennit would give NaN).
    """

    name = "epsilon"

    def __init__(self, epsilon: float = 1e-6, zero_bias: bool = False):
        self.epsilon = _check_nonneg("epsilon", epsilon)
        self.zero_bias = bool(zero_bias)

    def relevance(self, module, inputs, r):
        (x,) = inputs
        w, b = params(module)
        b = torch.zeros_like(b) if self.zero_bias else b
        (g,) = _vjp(module, [(x, w, b)], lambda zs: [_divide(r, stabilize(zs[0], self.epsilon))])
        return (x * g,)


class Gamma(Rule):
    r"""Generalised LRP-gamma (Montavon et al. 2019; Andeol et al. 2021), Zennit's form.

    Weights ``W + gamma W+`` favour positive contributions. For units with ``z_k > 0``:
    ``R_j = [x+_j (w + g w+)_jk + x-_j (w + g w-)_jk] / s(z^up_k) * R_k`` with
    ``z^up = x+ (W + g W+) + (b + g b+) + x- (W + g W-)``; for ``z_k < 0`` the roles of ``W+`` and
    ``W-`` swap (bias ``b + g b-``); units with ``z_k = 0`` pass nothing. For x >= 0 this is the
    original gamma rule. Bias: kept in the same-sign term, zeroed in the cross term (as Zennit).
    """

    name = "gamma"

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6):
        self.gamma = _check_nonneg("gamma", gamma)
        self.stabilizer = _check_nonneg("stabilizer", stabilizer)

    def relevance(self, module, inputs, r):
        (x,) = inputs
        w, b = params(module)
        g = self.gamma
        wp, wn = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
        bp, bn, zero = b + g * b.clamp(min=0), b + g * b.clamp(max=0), torch.zeros_like(b)
        xp, xn = x.clamp(min=0), x.clamp(max=0)
        with torch.no_grad():
            z = affine(module, x, w, b)

        def mapper(zs):
            up = (z > 0).to(r) * _divide(r, stabilize(zs[0] + zs[1], self.stabilizer))
            down = (z < 0).to(r) * _divide(r, stabilize(zs[2] + zs[3], self.stabilizer))
            return [up, up, down, down]

        g0, g1, g2, g3 = _vjp(module, [(xp, wp, bp), (xn, wn, zero), (xp, wn, bn), (xn, wp, zero)], mapper)
        return (xp * (g0 + g2) + xn * (g1 + g3),)


def _split_terms(x, w, b):
    """The four alpha-beta terms: z+ = x+ W+ + b+ + x- W-,  z- = x+ W- + b- + x- W+ (Zennit's bias split)."""
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    zero = torch.zeros_like(b)
    return xp, xn, [(xp, wp, b.clamp(min=0)), (xn, wn, zero), (xp, wn, b.clamp(max=0)), (xn, wp, zero)]


class ZPlus(Rule):
    r"""z+ rule (Montavon et al. 2017) = alpha-beta with alpha = 1, beta = 0 (Zennit's form).

    ``R_j = (x+_j w+_jk + x-_j w-_jk) / s(z+_k) * R_k``, ``z+_k = sum_j (x+_j w+_jk + x-_j w-_jk) + b+_k``:
    only positive contributions (for x >= 0: ``x_j w+_jk``); bias: only its positive part.
    """

    name = "zplus"

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = _check_nonneg("stabilizer", stabilizer)

    def relevance(self, module, inputs, r):
        (x,) = inputs
        xp, xn, terms = _split_terms(x, *params(module))

        def mapper(zs):
            gp = _divide(r, stabilize(zs[0] + zs[1], self.stabilizer))
            return [gp, gp]

        g0, g1 = _vjp(module, terms[:2], mapper)
        return (xp * g0 + xn * g1,)


class AlphaBeta(Rule):
    r"""LRP-alpha-beta (Bach et al. 2015); ``alpha = 1 + beta`` is Binder et al.'s LRP-beta.

    ``R_j = sum_k [alpha * z+_jk / s(z+_k) - beta * z-_jk / s(z-_k)] R_k`` with positive
    contributions ``z+_jk = x+_j w+_jk + x-_j w-_jk`` (+ ``b+_k`` in ``z+_k``) and negative ones
    ``z-_jk = x+_j w-_jk + x-_j w+_jk`` (+ ``b-_k`` in ``z-_k``), as Zennit. ``alpha - beta = 1``
    is required (conservation). Without bias, the matrix entries ``M_jk`` lie in
    ``[-beta, 1 + beta]`` and each column sums to 1 (reference note, derived).
    """

    name = "alpha_beta"

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6):
        self.alpha = _check_nonneg("alpha", alpha)
        self.beta = _check_nonneg("beta", beta)
        if abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise ValueError(f"alpha - beta must equal 1 (conservation), got alpha={alpha}, beta={beta}")
        self.stabilizer = _check_nonneg("stabilizer", stabilizer)

    def _betas(self, zp, zn):
        """Per-unit beta; the fixed rule uses one scalar."""
        return self.beta

    def relevance(self, module, inputs, r):
        (x,) = inputs
        xp, xn, terms = _split_terms(x, *params(module))

        def mapper(zs):
            zp, zn = zs[0] + zs[1], zs[2] + zs[3]
            beta = self._betas(zp, zn)
            gp = (1.0 + beta) * _divide(r, stabilize(zp, self.stabilizer))
            gn = beta * _divide(r, stabilize(zn, self.stabilizer))
            return [gp, gp, gn, gn]

        g0, g1, g2, g3 = _vjp(module, terms, mapper)
        return (xp * g0 + xn * g1 - (xp * g2 + xn * g3),)


class AdaptiveBeta(AlphaBeta):
    r"""LRP-beta with a per-unit beta (Binder et al.'s code): ``beta_k = min(-z-_k / z_k, beta_max)``
    when ``z_k > 0``, and ``beta_k = beta_max`` when ``z_k <= 0`` (our choice: the reference only
    defines ``z_k > 0``; the cap keeps the entries bounded). ``alpha_k = 1 + beta_k``.

    ``z_k = z+_k + z-_k`` with the alpha-beta split above (bias in both parts). Uncapped, the rule
    equals LRP-0 on that unit (``(1+b) z+_jk/z+ - b z-_jk/z-`` with ``b = -z-/z`` gives
    ``z_jk / z``); the cap ``beta_max`` bounds the entries to ``[-beta_max, 1 + beta_max]``.
    """

    name = "adaptive_beta"

    def __init__(self, beta_max: float = 1.0, stabilizer: float = 1e-6):
        self.beta_max = _check_nonneg("beta_max", beta_max)
        self.stabilizer = _check_nonneg("stabilizer", stabilizer)

    def _betas(self, zp, zn):
        z = zp + zn
        ratio = -zn / torch.where(z > 0, z, torch.ones_like(z))
        return torch.where(z > 0, ratio.clamp(max=self.beta_max), torch.full_like(z, self.beta_max))


class ZBox(Rule):
    r"""z^B rule for box-bounded input layers (Montavon et al. 2017), ``low <= x <= high``.

    ``R_j = (x_j w_jk - l_j w+_jk - h_j w-_jk) / s(z_k - z^l_k - z^h_k) * R_k`` with
    ``z = x W + b``, ``z^l = l W+ + b+``, ``z^h = h W- + b-`` (the biases cancel in the
    denominator, as in Zennit). ``low``/``high``: floats or tensors broadcastable to the layer input.
    """

    name = "zb"

    def __init__(self, low: float | torch.Tensor = -1.0, high: float | torch.Tensor = 1.0, stabilizer: float = 1e-6):
        lo, hi = torch.as_tensor(low, dtype=torch.float64), torch.as_tensor(high, dtype=torch.float64)
        try:
            bad = bool((lo > hi).any()) or not bool(torch.isfinite(lo).all() and torch.isfinite(hi).all())
        except RuntimeError as e:
            raise ValueError(f"ZBox low and high must broadcast together: {e}") from e
        if bad:
            raise ValueError(f"ZBox needs finite low <= high, got low={low!r}, high={high!r}")
        self.low, self.high = low, high
        self.stabilizer = _check_nonneg("stabilizer", stabilizer)

    def _bounds(self, x):
        return (torch.as_tensor(self.low, dtype=x.dtype, device=x.device).broadcast_to(x.shape),
                torch.as_tensor(self.high, dtype=x.dtype, device=x.device).broadcast_to(x.shape))

    def check(self, path, module, inputs):
        super().check(path, module, inputs)
        x = inputs[0].detach()
        try:
            lo, hi = self._bounds(x)
        except RuntimeError as e:
            raise ValueError(f"ZBox at {path!r}: low/high do not broadcast to its input shape "
                             f"{tuple(x.shape)}: {e}") from e
        tol = 1e-6 * (1.0 + float(x.detach().abs().max())) if x.numel() else 0.0
        if bool((x < lo - tol).any() or (x > hi + tol).any()):
            raise ValueError(f"ZBox at {path!r}: the input lies outside [low, high] "
                             f"(min {float(x.min()):.4g}, max {float(x.max()):.4g}); pass the true input bounds")

    def relevance(self, module, inputs, r):
        (x,) = inputs
        w, b = params(module)
        lo, hi = self._bounds(x)
        terms = [(x, w, b), (lo, w.clamp(min=0), b.clamp(min=0)), (hi, w.clamp(max=0), b.clamp(max=0))]

        def mapper(zs):
            g = _divide(r, stabilize(zs[0] - zs[1] - zs[2], self.stabilizer))
            return [g, g, g]

        g0, g1, g2 = _vjp(module, terms, mapper)
        return (x * g0 - lo * g1 - hi * g2,)


class WSquare(Rule):
    r"""w^2 rule (Montavon et al. 2017) for unbounded inputs: ``R_j = w_jk^2 / s(z_k) * R_k``,
    ``z_k = sum_j w_jk^2 + b_k^2``. Zennit squares the bias too (kept here for parity); the
    relevance share ``b_k^2 / s(z_k)`` is absorbed. Independent of the input values.
    """

    name = "wsquare"

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = _check_nonneg("stabilizer", stabilizer)

    def relevance(self, module, inputs, r):
        (x,) = inputs
        w, b = params(module)
        (g,) = _vjp(module, [(torch.ones_like(x), w * w, b * b)],
                    lambda zs: [_divide(r, stabilize(zs[0], self.stabilizer))])
        return (g,)


class Flat(Rule):
    r"""Flat rule (Lapuschkin et al. 2019): every input in the receptive field gets an equal share,
    ``R_j = sum_k 1[j in field(k)] / s(n_k) * R_k`` with ``n_k`` the number of inputs feeding unit k
    (for convolutions with zero padding: fewer at the border). Bias ignored, as in Zennit.
    """

    name = "flat"

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = _check_nonneg("stabilizer", stabilizer)

    def relevance(self, module, inputs, r):
        (x,) = inputs
        w, _ = params(module)
        (g,) = _vjp(module, [(torch.ones_like(x), torch.ones_like(w), None)],
                    lambda zs: [_divide(r, stabilize(zs[0], self.stabilizer))])
        return (g,)


class Norm(Rule):
    r"""Proportional split for parameter-free linear maps (average pooling, :class:`~spectralens.lrp.Sum`):
    ``R_i = x_i * J^T (R / s(z))`` with ``z = f(x_1, ...)`` the module's own forward: the epsilon
    rule on the implicit weights, eps used only as a stabiliser (Zennit's ``Norm``).
    """

    name = "norm"

    def __init__(self, stabilizer: float = 1e-6):
        self.stabilizer = _check_nonneg("stabilizer", stabilizer)

    def check(self, path, module, inputs):
        if any(True for _ in module.parameters(recurse=False)):
            raise UnsupportedLayerError(path, type(module).__name__, "Norm applies to parameter-free linear "
                                        "modules (average pooling, lrp.Sum) only.")

    def relevance(self, module, inputs, r):
        with torch.enable_grad():
            xs = [x.detach().requires_grad_(True) for x in inputs]
            z = module.forward(*xs)  # forward(), not __call__: no hooks
            grads = torch.autograd.grad(z, xs, _divide(r, stabilize(z.detach(), self.stabilizer)))
        return tuple(x * g for x, g in zip(xs, grads))


class Pass(Rule):
    """Pass-through for element-wise activations: ``R_in = R_out`` (Zennit's ``Pass``).

    For ReLU this equals the gradient whenever the layer above multiplies by its input (every rule
    except Flat/WSquare), since dead units carry no relevance.
    """

    name = "pass"

    def check(self, path, module, inputs):
        if len(inputs) != 1:
            raise UnsupportedLayerError(path, type(module).__name__, "Pass applies to single-input modules only.")

    def relevance(self, module, inputs, r):
        if r.shape != inputs[0].shape:
            raise ValueError(f"Pass needs an element-wise module; {type(module).__name__} maps "
                             f"{tuple(inputs[0].shape)} to {tuple(r.shape)}")
        return (r,)


class Gradient(Rule):
    """No modification: relevance flows by the module's ordinary gradient (no hook). The default for
    Flatten, MaxPool, Dropout, Identity; assign it by name to a custom reshaping/selecting module."""

    name = "gradient"

    def check(self, path, module, inputs):
        pass

    def relevance(self, module, inputs, r):
        raise RuntimeError("the Gradient rule installs no hook")


#: names accepted by ``attribute(rule=...)`` / ``input_rule=...`` -> (class, option names)
RULES = {
    "epsilon": Epsilon, "gamma": Gamma, "zplus": ZPlus, "alpha_beta": AlphaBeta,
    "adaptive_beta": AdaptiveBeta, "zb": ZBox, "flat": Flat, "wsquare": WSquare,
}
