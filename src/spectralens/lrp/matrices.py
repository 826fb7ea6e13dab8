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

Which rule goes on which layer is decided exactly as in :func:`spectralens.lrp.attribute`: a
``rule=``/``input_rule=`` pair becomes the same uniform :class:`~spectralens.lrp.Composite`
(``attribute``'s own builder), or a ``composite=`` is given, and ``rules=`` adds per-name
overrides; each traced call then gets ``composite.rule_for(path, module, first)`` (the input
layer: the first Linear/Conv called). A rule given by name to another parameter-free module
(``Pass``, ``Norm``, ``Gradient``) uses that module's Jacobian. Not expressible, so refused with
a ``ValueError`` naming the module: a rule other than ``Gradient`` on a module with submodules
(the hooks apply it to the container's whole forward) and a rule class without a known formula
(a user-written :class:`~spectralens.lrp.rules.Rule` or a subclass). The per-rule construction
lives in :mod:`spectralens.lrp._matrix_rules`.

Convolutions (and pooling) become dense unfolded matrices, so this is for small networks:
a layer with more than ``max_entries`` (n_in * n_out) entries raises ``ValueError``.

The "relevance per unit activation" form (reference note, derived): for the epsilon and
gradient rules every layer also has ``C_l = diag(1/a_in) M_l diag(a_out)``; the chain
``c_in = C_1 ... C_L onehot`` gives ``R = x * c_in`` (``LayerMatrix.C`` is set per layer where
its rule has this form, so with a composite ``chain(..., form="c")`` works when every layer has
one, e.g. ``epsilon_plus`` on an MLP). For epsilon ``C = W diag(z / s(z))`` on a
Linear/Conv and ``diag(relu(z)/z)`` on a ReLU, so ``C_lin C_relu = W D`` with
``D = diag(a_k / s(z_k))`` in [0, 1): the gradient with shrunken ReLU derivatives.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ._matrix_rules import SUPPORTED, layer_parts
from ._trace import merge_batchnorm_calls, trace
from .attribute import _INPUT_OPTIONS, _OPTIONS, _build_composite
from .composites import PRESETS, Composite
from .errors import ModuleReuseError, UnsupportedLayerError
from .layers import AFFINE
from .rules import Gradient, Pass, Rule, ZBox

__all__ = ["LayerMatrix", "LayerMatrices", "layer_matrices", "chain", "RULE_NAMES", "INPUT_RULE_NAMES"]

RULE_NAMES = ("epsilon", "lrp0", "gamma", "zplus", "alpha_beta", "adaptive_beta", "gradient", "gradient_x_input")
INPUT_RULE_NAMES = ("zb", "flat", "wsquare")
GRADIENT_RULES = ("gradient", "gradient_x_input")
DEFAULT_MAX_ENTRIES = 1 << 22  # 4.2M float64 entries = 32 MiB per dense matrix


@dataclass(frozen=True)
class LayerMatrix:
    """One layer's modified-gradient matrix at one input (all tensors float64, flattened).

    index: position in the forward order; name: module path (``"fc1+bn1"`` when a BatchNorm was
    merged); kind: linear, conv1d, conv2d, relu, maxpool, avgpool, identity, sum (other: a module
    given a rule by name); rule: the rule applied here (epsilon, gamma, ..., zb, flat, wsquare,
    pass, norm, gradient; gradient_x_input on Linear/Conv under that rule); params: its options
    (epsilon, stabilizer, gamma, alpha, beta, beta_max, low, high; ``zero_bias`` if set).
    M: (n_in, n_out), ``R_in = M @ R_out`` (Sum: the summands' rows stacked, n_in = sum of sizes).
    C: (n_in, n_out) the "relevance per unit activation" form ``diag(1/a_in) M diag(a_out)`` where
    the layer's rule has one (epsilon, pass, norm; the gradient rules), else None.
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
    ``rule`` (the rule name when one rule, optionally with ``input_rule``, went on every layer;
    None for a ``composite=`` or ``rules=`` overrides), ``input_rule``, ``options``, ``composite``
    (the :class:`~spectralens.lrp.Composite` that assigned the rules; None for the gradient rules),
    ``target``, ``logits`` (n_classes,), ``R_out`` (the start vector for ``target``), ``x`` (the
    input, its given shape), ``output_index`` (the layer whose output is the logits)."""

    def __init__(self, items, *, rule, input_rule, options, target, logits, R_out, x, output_index,
                 composite=None):
        super().__init__(items)
        self.rule, self.input_rule, self.options, self.composite = rule, input_rule, options, composite
        self.target, self.logits, self.R_out, self.x, self.output_index = target, logits, R_out, x, output_index

    def start(self, target: int) -> torch.Tensor:
        """Output relevance for ``target``: ``onehot * logits`` (LRP) or ``onehot`` (gradient rules)."""
        if not isinstance(target, int) or isinstance(target, bool) or not 0 <= target < self.logits.numel():
            raise ValueError(f"target must be an int in [0, {self.logits.numel()}), got {target!r}")
        onehot = torch.zeros_like(self.logits)
        onehot[target] = 1.0
        return onehot if self.rule in GRADIENT_RULES else onehot * self.logits


# ----------------------------------------------------------------------------- which rule goes where
def _check_options(rule: str, input_rule: str | None, options: dict) -> None:
    """Validate ``rule``/``input_rule``/options (the names and option sets of :func:`~spectralens.lrp.attribute`)."""
    if rule not in _OPTIONS:
        raise ValueError(f"unknown rule {rule!r}; choose from {list(RULE_NAMES)} or pass composite=")
    if input_rule is not None and input_rule not in _INPUT_OPTIONS:
        raise ValueError(f"unknown input_rule {input_rule!r}; choose from {list(INPUT_RULE_NAMES)}")
    allowed = set(_OPTIONS[rule]) | set(_INPUT_OPTIONS.get(input_rule, ()))
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"rule {rule!r} (input_rule {input_rule!r}) does not take option(s) {unknown}; "
                        f"it takes {sorted(allowed)}")
    for k, v in options.items():
        if k not in ("low", "high") and (not isinstance(v, (int, float)) or isinstance(v, bool)
                                        or not math.isfinite(v) or v < 0):
            raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")
    alpha, beta = options.get("alpha"), options.get("beta")
    beta = (1.0 if alpha is None else alpha - 1.0) if beta is None else beta
    alpha = 1.0 + beta if alpha is None else alpha
    if rule == "alpha_beta" and (beta < 0 or abs(alpha - beta - 1.0) > 1e-12):
        raise ValueError(f"alpha_beta needs alpha - beta = 1 and beta >= 0, got alpha={alpha}, beta={beta}")


def _resolve(rule, composite, input_rule, rules, options) -> tuple[str | None, Composite | None]:
    """(rule name or None, composite or None: the gradient rules), as ``explain`` resolves its arguments."""
    if composite is not None:
        if not isinstance(composite, Composite):
            hint = (f"; for the preset write composite=lrp.composites.{composite}()"
                    if isinstance(composite, str) and composite in PRESETS else
                    f" (presets: {', '.join(f'lrp.composites.{p}()' for p in PRESETS)})")
            raise TypeError(f"composite must be a spectralens.lrp.Composite, got {composite!r:.60}{hint}")
        if rule is not None or input_rule is not None or options:
            raise ValueError("give either composite= or rule=/input_rule=/options (options go into the composite)")
        rule = None
    else:
        rule = "epsilon" if rule is None else rule
        if rule in GRADIENT_RULES and (input_rule or options or rules):
            raise ValueError(f"rule={rule!r} takes no input_rule, rules or options")
        _check_options(rule, input_rule, options)
        if rule in GRADIENT_RULES:
            return rule, None
        composite = _build_composite(rule, input_rule, options)
    if rules:
        composite, rule = composite.with_overrides(rules), None
    return rule, composite


def _check_names(composite: Composite, net: nn.Module) -> None:
    """Rules by name: known paths (as ``lrp_context``); none on a module with submodules except Gradient."""
    modules = dict(net.named_modules())
    unknown = sorted(set(composite.name_map) - set(modules))
    if unknown:
        raise ValueError(f"rules given for module paths not in the model: {unknown}; known paths: {sorted(modules)[:20]}")
    for path, r in composite.name_map.items():
        if next(modules[path].children(), None) is not None and not isinstance(r, Gradient):
            raise ValueError(f"rule {r!r} is given by name to {path or '<root>'!r} ({type(modules[path]).__name__}), "
                             "a module with submodules: attribute applies it to that module's whole forward, which "
                             "layer_matrices cannot write as per-layer matrices; assign rules to its leaf modules")


def _check_size(name, module, n_in, n_out, max_entries):
    if n_in * n_out > max_entries:
        raise ValueError(f"layer {name!r} ({type(module).__name__}) needs a dense {n_in} x {n_out} matrix "
                         f"({n_in * n_out:,} entries > max_entries={max_entries:,}); layer_matrices is for small "
                         "networks: use a smaller model/input or raise max_entries")


# ----------------------------------------------------------------------------- the matrices

def layer_matrices(model: nn.Module, x: torch.Tensor, rule: str | None = None, *,
                   composite: Composite | None = None, input_rule: str | None = None,
                   rules: dict[str, Rule] | None = None, target: int | None = None,
                   max_entries: int = DEFAULT_MAX_ENTRIES, **rule_options) -> LayerMatrices:
    """Per-layer modified-gradient matrices of ``model`` at one input ``x`` (forward order).

    ``x``: one sample, with a batch dimension of 1 or without one (``x`` is used as given if the
    model maps it to (1, classes), else ``x[None]``).
    ``rule``/``input_rule``/options, ``composite=`` and ``rules=`` exactly as
    :func:`spectralens.lrp.attribute`: ``rule`` (default "epsilon") with ``epsilon=``,
    ``stabilizer=`` (also avg pooling and Sum), ``gamma=``, ``alpha=``/``beta=``, ``beta_max=``,
    ``low=``/``high=``, the input rule on the first Linear/Conv in forward order; or
    ``composite`` (e.g. ``lrp.composites.epsilon_gamma_box(low=0, high=1)``) instead of them;
    ``rules``: ``{module path: Rule}`` overrides on top of either (not with the gradient rules).
    ``target``: class for ``R_out``/``R_in`` (default: the arg-max logit).
    Computed in float64 on an eval-mode float64 copy of ``model`` (the model is unchanged).
    Returns :class:`LayerMatrices`; ``chain(result)`` equals
    ``attribute(model, x, target, rule, ...)`` (or ``..., composite=..., rules=...``).

    Raises like ``attribute``: ``ValueError`` for bad options, unknown override paths, z^B bounds
    that do not broadcast to the input layer's input; ``TypeError`` for a ``composite`` that is
    not a Composite;
    :class:`UnsupportedLayerError` for a module without a rule (or a rule that does not fit it);
    :class:`ModuleReuseError` for a rule-bearing module called twice. Beyond ``attribute``:
    ``ValueError`` for a rule that has no per-layer matrix (see the module docstring), a layer
    above ``max_entries`` entries, or a functional operation between layers.
    Unlike ``attribute``, an input outside the z^B box is not refused: the matrix is still defined
    (:mod:`spectralens.lrp.bounds` reports that the rule's assumption fails).
    Limits: dense matrices (``max_entries`` per layer); every operation between layers must be a
    module (functional reshapes are recognised); BatchNorm is always merged (``merge_bn=True``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
        raise ValueError(f"x must be a non-empty floating tensor, got {x!r:.80}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN/inf entries")
    name, comp = _resolve(rule, composite, input_rule, rules, rule_options)
    net = copy.deepcopy(model).to(torch.float64).eval()
    if comp is not None:
        _check_names(comp, net)
    xb = _one_sample(net, x.detach().to(torch.float64))
    calls, logits, out_index = trace(net, xb)
    calls, merged, remap = merge_batchnorm_calls(calls)
    out_index = remap(out_index)
    if out_index < 0:
        raise ValueError("the model's output is its input: there are no layers")
    first_affine = next((i for i, c in enumerate(calls) if isinstance(c.module, AFFINE)), None)
    hooked: dict[str, int] = {}
    built = []
    for i, c in enumerate(calls):
        path = "" if c.name == "<root>" else c.name
        if not isinstance(c.module, SUPPORTED) and (comp is None or path not in comp.name_map):
            raise UnsupportedLayerError(c.name, type(c.module).__name__, _UNSUPPORTED)
        r = None if comp is None else comp.rule_for(path, c.module, first=(i == first_affine))
        if r is not None and not isinstance(r, Gradient):  # as lrp_context's hook
            hooked[path] = hooked.get(path, 0) + 1
            if hooked[path] > 1 and not isinstance(r, Pass):
                raise ModuleReuseError(c.name, type(c.module).__name__)
            if type(r) is ZBox:  # the type only: outside the box M is still defined (lrp.bounds says so)
                Rule.check(r, c.name, c.module, tuple(c.inputs))
            else:
                r.check(c.name, c.module, tuple(c.inputs))
        _check_size(c.name, c.module, sum(t.numel() for t in c.inputs), c.output.numel(), max_entries)
        w = b = None
        lname = c.name
        if isinstance(c.module, AFFINE):
            w, b, lname = merged.get(i, (c.module.weight.detach(), c.module.bias, c.name))
            b = torch.zeros(w.shape[0], dtype=torch.float64) if b is None else b.detach()
        kind, rname, params, M, C, W, fanout = layer_parts(c, r, w, b, lrp=comp is not None)
        if name in GRADIENT_RULES and isinstance(c.module, AFFINE):
            rname = name
        if name == "gradient_x_input" and -1 in c.producers:  # the rows fed by x, times x
            scale = torch.cat([xb.reshape(-1) if p < 0 else torch.ones(t.numel(), dtype=torch.float64)
                               for p, t in zip(c.producers, c.inputs)])
            M = scale[:, None] * M
        built.append(dict(index=i, name=lname, kind=kind, rule=rname, params=params, M=M, C=C, W=W,
                          a_in=torch.cat([t.reshape(-1) for t in c.inputs]), z=c.output.reshape(-1),
                          inputs=tuple(c.producers), in_shapes=tuple(tuple(t.shape) for t in c.inputs),
                          out_shape=tuple(c.output.shape), fanout=fanout))
    t = int(logits.argmax()) if target is None else target
    tmp = LayerMatrices([], rule=name, input_rule=input_rule, options=dict(rule_options), target=t, logits=logits,
                        R_out=None, x=x.detach().to(torch.float64), output_index=out_index, composite=comp)
    tmp.R_out = tmp.start(t)
    r_out = _backward([(d["M"], d["inputs"], d["in_shapes"]) for d in built], out_index, tmp.R_out)
    for d, ro in zip(built, r_out):
        tmp.append(LayerMatrix(**d, R_out=ro, R_in=d["M"] @ ro))
    return tmp


_UNSUPPORTED = ("layer_matrices supports Linear, Conv1d/2d (+ BatchNorm merged), ReLU, MaxPool1d/2d, AvgPool1d/2d, "
                "AdaptiveAvgPool1d/2d, Flatten, Unflatten, Dropout, Identity and spectralens.lrp.Sum; assign a "
                "rule by name (rules={path: lrp.rules.Pass()}, Norm() or Gradient()) if one truly fits.")


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
