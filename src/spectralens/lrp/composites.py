"""Composites: which rule goes on which layer (by name, by position, by type).

A :class:`Composite` resolves a rule for each module call in this order:

1. ``name_map``: an explicit rule for a module path (``"features.0"``), always wins;
2. ``first_map``: for the *input layer*, the first Linear/Conv called in the forward pass
   (forward order, not registration order), the first entry whose types match;
3. ``layer_map``: the first entry whose types match;
4. no match: the module is left to the plain gradient (reshapes, max pooling, dropout...).

Every preset maps ReLU -> :class:`~.rules.Pass` and average pooling / :class:`~.layers.Sum`
-> :class:`~.rules.Norm`, like Zennit's ``layer_map_base``. Rules are stateless: one instance
may serve many layers.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .layers import ACTIVATION, AFFINE, AVGPOOL, CONV, Sum
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, Rule, ZBox, ZPlus

TypeMap = Sequence[tuple["type | tuple[type, ...]", Rule]]


class Composite:
    """Rules by module path, input-layer position and module type (see the module docstring).

    Parameters
    ----------
    layer_map: ``[(types, rule), ...]`` matched in order by ``isinstance``.
    first_map: like ``layer_map``, only for the input layer (first Linear/Conv called).
    name_map: ``{module_path: rule}`` overrides (paths as in ``model.named_modules()``).
    name: a short description, used in :class:`~spectralens.lrp.Explanation` ``.rule``.
    """

    def __init__(self, layer_map: TypeMap = (), first_map: TypeMap = (),
                 name_map: Mapping[str, Rule] | None = None, name: str = "custom"):
        for what, mapping in (("layer_map", layer_map), ("first_map", first_map)):
            for entry in mapping:
                if len(entry) != 2 or not isinstance(entry[1], Rule):
                    raise TypeError(f"{what} entries must be (types, Rule) pairs, got {entry!r}")
        name_map = dict(name_map or {})
        for path, rule in name_map.items():
            if not isinstance(rule, Rule):
                raise TypeError(f"name_map[{path!r}] must be a spectralens.lrp.rules.Rule, got {rule!r}")
        self.layer_map, self.first_map, self.name_map, self.name = list(layer_map), list(first_map), name_map, name

    def rule_for(self, path: str, module: nn.Module, first: bool = False) -> Rule | None:
        """The rule for one call of ``module`` at ``path``; ``first``: it is the input layer."""
        if path in self.name_map:
            return self.name_map[path]
        if first:
            for types, rule in self.first_map:
                if isinstance(module, types):
                    return rule
        for types, rule in self.layer_map:
            if isinstance(module, types):
                return rule
        return None

    def with_overrides(self, name_map: Mapping[str, Rule]) -> "Composite":
        """A new composite with extra per-name rules (the new ones win)."""
        merged = {**self.name_map, **dict(name_map)}
        return Composite(self.layer_map, self.first_map, merged, self.name)

    def describe(self) -> str:
        """One line: ``name: type -> rule, ...; first: ...; names: ...``."""
        def fmt(mapping):
            return ", ".join(f"{_types_name(t)} -> {r!r}" for t, r in mapping)
        text = f"{self.name}: {fmt(self.layer_map)}"
        if self.first_map:
            text += f"; input layer: {fmt(self.first_map)}"
        if self.name_map:
            text += "; by name: " + ", ".join(f"{p} -> {r!r}" for p, r in self.name_map.items())
        return text

    def __repr__(self) -> str:
        return f"Composite({self.describe()})"


def _types_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return "/".join(t.__name__ for t in types)


def _base(stabilizer: float) -> list:
    """ReLU -> Pass, average pooling and Sum -> Norm (Zennit's ``layer_map_base``)."""
    return [(ACTIVATION, Pass()), (AVGPOOL + (Sum,), Norm(stabilizer))]


def uniform(rule: Rule, input_rule: Rule | None = None, stabilizer: float = 1e-6) -> Composite:
    """One rule on every Linear/Conv; optionally another on the input layer."""
    first = [(AFFINE, input_rule)] if input_rule is not None else []
    name = repr(rule) + (f", input layer {input_rule!r}" if input_rule is not None else "")
    return Composite(_base(stabilizer) + [(AFFINE, rule)], first, name=name)


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """z+ on convolutions, epsilon on dense layers (Zennit's ``EpsilonPlus``)."""
    return Composite(_base(stabilizer) + [(CONV, ZPlus(stabilizer)), (nn.Linear, Epsilon(epsilon))],
                     name="epsilon_plus")


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """alpha=2, beta=1 on convolutions, epsilon on dense layers (Zennit's ``EpsilonAlpha2Beta1``)."""
    return Composite(_base(stabilizer) + [(CONV, AlphaBeta(2.0, 1.0, stabilizer)), (nn.Linear, Epsilon(epsilon))],
                     name="epsilon_alpha2_beta1")


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """``epsilon_plus`` with the flat rule on the input layer (Zennit's ``EpsilonPlusFlat``)."""
    comp = epsilon_plus(epsilon, stabilizer)
    return Composite(comp.layer_map, [(AFFINE, Flat(stabilizer))], name="epsilon_plus_flat")


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """``epsilon_alpha2_beta1`` with the flat rule on the input layer (Zennit's ``EpsilonAlpha2Beta1Flat``)."""
    comp = epsilon_alpha2_beta1(epsilon, stabilizer)
    return Composite(comp.layer_map, [(AFFINE, Flat(stabilizer))], name="epsilon_alpha2_beta1_flat")


def epsilon_gamma_box(low: float | torch.Tensor, high: float | torch.Tensor, epsilon: float = 1e-6,
                      gamma: float = 0.25, stabilizer: float = 1e-6) -> Composite:
    """z^B on the input convolution, gamma on other convolutions, epsilon on dense layers
    (Zennit's ``EpsilonGammaBox``; as there, the box rule is used only if the input layer is a conv)."""
    return Composite(_base(stabilizer) + [(CONV, Gamma(gamma, stabilizer)), (nn.Linear, Epsilon(epsilon))],
                     [(CONV, ZBox(low, high, stabilizer))], name="epsilon_gamma_box")


PRESETS = {
    "epsilon_plus": epsilon_plus, "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
    "epsilon_plus_flat": epsilon_plus_flat, "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
}
