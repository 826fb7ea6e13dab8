r"""One layer call's dense LRP matrix, built from its rule's formula (for :mod:`spectralens.lrp.matrices`).

:func:`layer_parts` takes a traced call (:class:`~spectralens.lrp._trace.Call`: float64 batch-1
inputs and output) and the :class:`~spectralens.lrp.rules.Rule` object a composite assigns to it
(``None``: plain gradient) and returns ``M`` (n_in, n_out) with ``R_in = M @ R_out``, plus the
c form ``C = diag(1/a_in) M diag(a_out)`` where it has a closed form (epsilon, pass, norm, and
the gradient's routing layers), else ``None``. Conventions as :mod:`spectralens.lrp.rules`:
``s(z) = z + eps sign(z)``, ``sign(0) := +1``, ``0/0 := 0``, ``a+ = max(a, 0)``, ``a- = min(a, 0)``.

Linear/Conv matrices apply the layer to the identity basis (``D(kernel)``: the dense
(n_in, n_out) matrix of the layer with that kernel and no bias). Parameter-free layers use their
Jacobian ``J^T`` (closed forms for ReLU, identities, max/avg pooling and :class:`Sum`; autograd
for any other module a rule was assigned to by name). Rules are matched by exact class: a
subclass (or a user-written rule) has no known formula and raises ``ValueError``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ._trace import Call
from .layers import AFFINE, Sum, affine
from .rules import AdaptiveBeta, AlphaBeta, Epsilon, Flat, Gamma, Gradient, Norm, Pass, Rule, WSquare, ZBox, ZPlus
from .rules import stabilize

AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d)
IDENTITY = (nn.Flatten, nn.Unflatten, nn.Dropout, nn.Identity)
#: the module types a composite may assign rules to by type (others only by name)
SUPPORTED = AFFINE + (nn.ReLU,) + IDENTITY + MAXPOOL + AVGPOOL + (Sum,)
_AFFINE_RULES = (Epsilon, Gamma, ZPlus, AlphaBeta, AdaptiveBeta, ZBox, Flat, WSquare)
_KINDS = {nn.Linear: "linear", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d"}


class Parts(NamedTuple):
    """What one call contributes to a :class:`~spectralens.lrp.matrices.LayerMatrix`."""

    kind: str
    rule: str
    params: dict
    M: torch.Tensor
    C: torch.Tensor | None
    W: torch.Tensor | None
    fanout: int


def div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` column-wise (den: (n_out,)), ``0/0 := 0`` (zero columns where den == 0)."""
    safe = torch.where(den == 0, torch.ones_like(den), den)
    return torch.where(den == 0, torch.zeros_like(num), num / safe)


def rule_params(rule: Rule | None) -> dict:
    """The rule's options (epsilon, stabilizer, gamma, alpha, beta, beta_max, low, high)."""
    if rule is None:
        return {}
    return {k: v for k, v in vars(rule).items() if k != "zero_bias" or v}


def no_formula(c: Call, rule: Rule) -> ValueError:
    return ValueError(f"layer {c.name!r} ({type(c.module).__name__}) has rule {rule!r}, which layer_matrices cannot "
                      "write as a per-layer matrix: it knows the formulas of the rules in spectralens.lrp.rules "
                      "(Epsilon, Gamma, ZPlus, AlphaBeta, AdaptiveBeta, ZBox, Flat, WSquare on Linear/Conv; Pass, "
                      "Norm, Gradient), matched by exact class, not subclasses or user-written rules")


def layer_parts(c: Call, rule: Rule | None, w: torch.Tensor | None = None, b: torch.Tensor | None = None, *,
                lrp: bool = True) -> Parts:
    """``rule`` on call ``c`` as matrices. ``w``, ``b``: the (BatchNorm-merged) parameters of a
    Linear/Conv call. ``lrp=False``: the gradient rules (every layer its Jacobian, ``C = M``)."""
    if isinstance(rule, Gradient):  # no hook: the module's own gradient, whatever the subclass
        rule = None
    if rule is not None and type(rule) not in _AFFINE_RULES + (Pass, Norm):
        raise no_formula(c, rule)
    if isinstance(c.module, AFFINE):
        return _affine_parts(c, rule, w, b, lrp)
    return _other_parts(c, rule, lrp)


def _pass(c: Call, kind: str, rule: Rule, a: torch.Tensor, z: torch.Tensor, fanout: int = 1) -> Parts:
    """Pass: ``R_in = R_out`` (element-wise modules; the shapes must agree, as in ``Pass.relevance``)."""
    if tuple(c.inputs[0].shape) != tuple(c.output.shape):
        raise ValueError(f"Pass needs an element-wise module; {c.name!r} ({type(c.module).__name__}) maps "
                         f"{tuple(c.inputs[0].shape)} to {tuple(c.output.shape)}")
    return Parts(kind, rule.name, {}, torch.eye(a.numel(), dtype=torch.float64), torch.diag(div(z, a)), None, fanout)


def _affine_parts(c: Call, rule: Rule | None, w: torch.Tensor, b: torch.Tensor, lrp: bool) -> Parts:
    shape = c.inputs[0].shape
    n_in = c.inputs[0].numel()
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *shape[1:])
    zero_in = torch.zeros_like(c.inputs[0])

    def D(kernel):  # dense (n_in, n_out) matrix of the layer with this kernel, no bias
        return affine(c.module, eye, kernel, None).reshape(n_in, -1)

    def Db(bias):  # the bias as a (n_out,) vector
        return affine(c.module, zero_in, torch.zeros_like(w), bias).reshape(-1)

    a = c.inputs[0].reshape(-1)
    ap, an = a.clamp(min=0), a.clamp(max=0)
    col = lambda v: v[:, None]  # noqa: E731
    W = D(w)
    z = a @ W + Db(b)
    fanout = int((D(torch.ones_like(w)) != 0).sum(1).max())
    kind, t, C = _KINDS[type(c.module)], type(rule), None
    if rule is None:
        M, C = W, (None if lrp else W)
    elif t is Pass:
        return _pass(c, kind, rule, a, z, fanout)._replace(W=W)
    elif t is Epsilon:
        zd = a @ W if rule.zero_bias else z
        den = stabilize(zd, rule.epsilon)
        M = div(col(a) * W, den)
        C = None if rule.zero_bias else div(W * z, den)
    elif t is Gamma:
        g, eps = rule.gamma, rule.stabilizer
        Wu, Wd = D(w + g * w.clamp(min=0)), D(w + g * w.clamp(max=0))
        zu = ap @ Wu + an @ Wd + Db(b + g * b.clamp(min=0))
        zd = ap @ Wd + an @ Wu + Db(b + g * b.clamp(max=0))
        M = (div(col(ap) * Wu + col(an) * Wd, stabilize(zu, eps)) * (z > 0)
             + div(col(ap) * Wd + col(an) * Wu, stabilize(zd, eps)) * (z < 0))
    elif t in (ZPlus, AlphaBeta, AdaptiveBeta):
        Wp, Wn = D(w.clamp(min=0)), D(w.clamp(max=0))
        zp = ap @ Wp + an @ Wn + Db(b.clamp(min=0))
        zn = ap @ Wn + an @ Wp + Db(b.clamp(max=0))
        pos = div(col(ap) * Wp + col(an) * Wn, stabilize(zp, rule.stabilizer))
        neg = div(col(ap) * Wn + col(an) * Wp, stabilize(zn, rule.stabilizer))
        if t is ZPlus:
            M = pos
        else:
            beta = torch.tensor(rule.beta, dtype=torch.float64) if t is AlphaBeta else rule._betas(zp, zn)
            M = (1.0 + beta) * pos - beta * neg
    elif t is ZBox:
        try:
            lo = torch.as_tensor(rule.low, dtype=torch.float64).broadcast_to(shape).reshape(-1)
            hi = torch.as_tensor(rule.high, dtype=torch.float64).broadcast_to(shape).reshape(-1)
        except RuntimeError as e:
            raise ValueError(f"ZBox at {c.name!r}: low/high do not broadcast to its input shape "
                             f"{tuple(shape)}: {e}") from e
        Wp, Wn = D(w.clamp(min=0)), D(w.clamp(max=0))
        den = z - (lo @ Wp + Db(b.clamp(min=0))) - (hi @ Wn + Db(b.clamp(max=0)))
        M = div(col(a) * W - col(lo) * Wp - col(hi) * Wn, stabilize(den, rule.stabilizer))
    elif t is Flat:
        ones = D(torch.ones_like(w))
        M = div(ones, stabilize(ones.sum(0), rule.stabilizer))
    elif t is WSquare:
        W2 = D(w * w)
        M = div(W2, stabilize(W2.sum(0) + Db(b * b), rule.stabilizer))
    else:  # Norm: refused by Norm.check (a module with parameters)
        raise no_formula(c, rule)
    return Parts(kind, "gradient" if rule is None else rule.name, rule_params(rule), M, C, W, fanout)


def _jacobian_t(c: Call) -> tuple[str, torch.Tensor, int, torch.Tensor | None]:
    """(kind, J^T (n_in, n_out), fanout, implicit weights or None) of a parameter-free module call
    (several inputs: their rows stacked). Closed forms for the supported types, autograd otherwise."""
    m, x0 = c.module, c.inputs[0]
    n_in, n_out = sum(t.numel() for t in c.inputs), c.output.numel()
    eye = torch.eye(n_in, dtype=torch.float64)
    if isinstance(m, nn.ReLU):
        return "relu", torch.diag((x0.reshape(-1) > 0).to(torch.float64)), 1, None
    if isinstance(m, IDENTITY):
        if n_in != n_out:
            raise ValueError(f"module {c.name!r} changes the number of elements; not an identity")
        return "identity", eye, 1, None
    if isinstance(m, MAXPOOL + AVGPOOL):
        P = m(eye.reshape(n_in, *x0.shape[1:])).reshape(n_in, -1)  # avg: implicit weights; max: window membership
        fanout = int((P != 0).sum(1).max())
        if isinstance(m, AVGPOOL):
            return "avgpool", P, fanout, P
        fn = F.max_pool1d if isinstance(m, nn.MaxPool1d) else F.max_pool2d
        _, idx = fn(x0, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, return_indices=True)
        ch = x0.shape[1]
        idx = (idx.reshape(ch, -1) + (n_in // ch) * torch.arange(ch)[:, None]).reshape(-1)
        G = torch.zeros(n_in, n_out, dtype=torch.float64)
        G[idx, torch.arange(n_out)] = 1.0
        return "maxpool", G, fanout, None
    if isinstance(m, Sum):
        return "sum", torch.cat([torch.eye(n_out, dtype=torch.float64)] * len(c.inputs)), 1, None
    xs = [t.detach().clone().requires_grad_(True) for t in c.inputs]
    with torch.enable_grad():
        out = m.forward(*[t.clone() for t in xs]).reshape(-1)  # clone: in-place modules
        rows = []
        for k in range(n_out if out.requires_grad else 0):
            gs = torch.autograd.grad(out[k], xs, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(t) if g is None else g).reshape(-1) for g, t in zip(gs, xs)]))
    JT = torch.stack(rows, 1) if rows else torch.zeros(n_in, n_out, dtype=torch.float64)
    return "other", JT, int((JT != 0).sum(1).max()) if n_out else 0, None


def _other_parts(c: Call, rule: Rule | None, lrp: bool) -> Parts:
    """A parameter-free call: gradient (rule None or Gradient), Pass or Norm."""
    a = torch.cat([t.reshape(-1) for t in c.inputs])
    z = c.output.reshape(-1)
    kind, JT, fanout, W = _jacobian_t(c)
    if type(rule) is Pass:
        return _pass(c, kind, rule, a, z, fanout)
    if type(rule) is Norm:
        den = stabilize(z, rule.stabilizer)
        return Parts(kind, "norm", rule_params(rule), div(a[:, None] * JT, den), div(JT * z, den), W, fanout)
    if rule is not None:  # an affine rule on a parameter-free module (refused by its check() first)
        raise no_formula(c, rule)
    # the gradient: its c form is J^T itself for the gradient rules, and for 0/1 routing layers under LRP
    C = JT if not lrp or kind in ("relu", "maxpool", "identity") else None
    return Parts(kind, "gradient", {}, JT, C, W, fanout)
