"""``attribute`` / ``explain``: input relevance of a target logit.

Output relevance (the usual LRP start): ``R_out = onehot(target) * logits``, i.e. the target
logit of each sample; LRP then propagates it to the input, ``R`` with the shape of ``inputs``.
Conservation: ``sum_i R_i`` vs ``R_out`` (exact for LRP-0/alpha-beta without biases; the
stabiliser, biases and the Flat/WSquare/z^B input rules make it approximate).
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import composites as _composites
from .canonizers import merge_batchnorm
from .composites import Composite
from .errors import ModuleReuseError, UnsupportedLayerError
from .hooks import eval_mode, lrp_context
from .layers import BATCHNORM
from .rules import RULES, AlphaBeta, Epsilon, Rule

# rule name -> options it accepts (besides the input-layer rule's)
_OPTIONS = {
    "epsilon": ("epsilon", "stabilizer"), "lrp0": ("stabilizer",), "gamma": ("gamma", "stabilizer"),
    "zplus": ("stabilizer",),
    "alpha_beta": ("alpha", "beta", "stabilizer"), "adaptive_beta": ("beta_max", "stabilizer"),
    "gradient": (), "gradient_x_input": (),
}
_INPUT_OPTIONS = {"zb": ("low", "high", "stabilizer"), "flat": ("stabilizer",), "wsquare": ("stabilizer",)}


@dataclass(frozen=True)
class Explanation:
    """Result of :func:`explain`.

    relevance: input relevance, shape of ``inputs``.
    output_relevance: (N,) the relevance LRP starts from (the target logit).
    relevance_sum: (N,) ``relevance`` summed over all non-batch dimensions.
    conservation_error: (N,) ``relevance_sum - output_relevance`` (for "gradient" it has no meaning).
    rule: description of the rules used.
    """

    relevance: torch.Tensor
    output_relevance: torch.Tensor
    relevance_sum: torch.Tensor
    conservation_error: torch.Tensor
    rule: str


def _build_composite(rule: str, input_rule: str | None, options: dict) -> Composite:
    allowed = _OPTIONS[rule] + (_INPUT_OPTIONS[input_rule] if input_rule else ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"rule {rule!r}" + (f" with input_rule {input_rule!r}" if input_rule else "")
                        + f" does not take option(s) {unknown}; it takes {sorted(set(allowed))}")
    mine = {k: options[k] for k in _OPTIONS[rule] if k in options}
    if rule in ("epsilon", "lrp0"):
        mine.pop("stabilizer", None)  # for Norm (average pooling, Sum) only
    if rule == "lrp0":
        main: Rule = Epsilon(0.0)
    elif rule == "alpha_beta":
        beta = mine.pop("beta", None)
        alpha = mine.pop("alpha", None)
        beta = (1.0 if alpha is None else alpha - 1.0) if beta is None else beta
        main = AlphaBeta(1.0 + beta if alpha is None else alpha, beta, **mine)
    else:
        main = RULES[rule](**mine)
    first = None
    if input_rule is not None:
        opts = {k: options[k] for k in _INPUT_OPTIONS[input_rule] if k in options}
        if input_rule == "zb" and not {"low", "high"} <= set(opts):
            raise ValueError("input_rule='zb' needs low= and high= (the input's lowest and highest values)")
        first = RULES[input_rule](**opts)
    return _composites.uniform(main, first, stabilizer=options.get("stabilizer", 1e-6))


def _check_inputs(inputs) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        raise ValueError(f"inputs must be a torch.Tensor with a batch dimension, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise ValueError(f"inputs must be floating point, got {inputs.dtype}")
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise ValueError(f"inputs need a non-empty batch dimension first, got shape {tuple(inputs.shape)} "
                         "(for one sample use x.unsqueeze(0))")
    bad = (~torch.isfinite(inputs)).sum().item()
    if bad:
        raise ValueError(f"inputs contain {bad} NaN/inf entries (of {inputs.numel()})")
    return inputs.detach()


def _check_target(target, out: torch.Tensor, n: int) -> torch.Tensor:
    if out.ndim != 2 or out.shape[0] != n:
        raise ValueError(f"the model must return logits of shape (N, classes) = ({n}, C), got {tuple(out.shape)}")
    classes = out.shape[1]
    if isinstance(target, bool) or (isinstance(target, torch.Tensor) and target.dtype == torch.bool):
        raise ValueError("target must be a class index (int), a sequence of ints or a LongTensor, not bool")
    if isinstance(target, np.integer):  # e.g. a class index read from a DataFrame row
        target = int(target)
    if isinstance(target, int):
        t = torch.full((n,), target, dtype=torch.long)
    elif isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex():
            raise ValueError(f"target tensor must hold integers, got {target.dtype}")
        if target.ndim > 1:
            raise ValueError(f"target tensor must have shape (N,) = ({n},), got {tuple(target.shape)}")
        t = target.detach().long().cpu().reshape(-1)
        t = t.expand(n) if target.ndim == 0 else t
    else:
        try:
            t = torch.tensor([int(v) if not isinstance(v, bool) and float(v) == int(v) else None for v in target])
        except (TypeError, ValueError):
            raise ValueError(f"target must be an int, a sequence of ints or a LongTensor, got {target!r}") from None
    if t.shape != (n,):
        raise ValueError(f"target has {t.numel()} entries for a batch of {n} inputs")
    if bool((t < 0).any() or (t >= classes).any()):
        raise ValueError(f"target {t.tolist()} out of range for {classes} classes (0..{classes - 1})")
    return t.to(out.device)


@contextlib.contextmanager
def _forward_errors(x: torch.Tensor):
    """A RuntimeError from the user's forward (shape/dtype mismatch) becomes a ValueError."""
    try:
        yield
    except (UnsupportedLayerError, ModuleReuseError, ValueError):
        raise
    except RuntimeError as e:
        raise ValueError(f"the model's forward failed on inputs of shape {tuple(x.shape)}, dtype {x.dtype} "
                         f"(inputs need the batch dimension first): {e}") from e


def explain(model: nn.Module, inputs: torch.Tensor, target, rule: str | None = None, *,
            composite: Composite | None = None, input_rule: str | None = None,
            rules: Mapping[str, Rule] | None = None, merge_bn: bool = True, **rule_options) -> Explanation:
    """Input relevance of ``target`` with the given rule(s); see :func:`attribute` for the arguments."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if composite is not None and (rule is not None or input_rule is not None or rule_options):
        raise ValueError("give either composite= or rule=/input_rule=/options (options go into the composite)")
    rule = "epsilon" if rule is None and composite is None else rule
    if rule is not None and rule not in _OPTIONS:
        raise ValueError(f"unknown rule {rule!r}; choose from {sorted(_OPTIONS)} or pass composite=")
    if input_rule is not None and input_rule not in _INPUT_OPTIONS:
        raise ValueError(f"unknown input_rule {input_rule!r}; choose from {sorted(_INPUT_OPTIONS)}")
    gradient = rule in ("gradient", "gradient_x_input")
    if gradient and (input_rule or rules or rule_options):
        raise ValueError(f"rule={rule!r} takes no input_rule, rules or options")
    if composite is None and not gradient:
        composite = _build_composite(rule, input_rule, rule_options)
    if rules:
        composite = composite.with_overrides(rules)
    x = _check_inputs(inputs)

    with contextlib.ExitStack() as stack, torch.enable_grad():
        stack.enter_context(eval_mode(model))
        if merge_bn and not gradient and any(isinstance(m, BATCHNORM) for m in model.modules()):
            with _forward_errors(x):   # the merge traces one forward
                stack.enter_context(merge_batchnorm(model, example_input=x[:1]))
        if not gradient:
            stack.enter_context(lrp_context(model, composite))
        xg = x.clone().requires_grad_(True)
        with _forward_errors(x):
            out = model(xg)
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"the model must return a logits tensor, got {type(out).__name__}")
        t = _check_target(target, out, x.shape[0])
        onehot = torch.zeros_like(out).scatter_(1, t[:, None], 1.0)
        seed = onehot if gradient else onehot * out.detach()
        (rel,) = torch.autograd.grad(out, xg, seed, allow_unused=True)
    rel = torch.zeros_like(x) if rel is None else rel.detach()
    if rule == "gradient_x_input":
        rel = rel * x
    r_out = out.detach().gather(1, t[:, None]).squeeze(1)
    r_sum = rel.flatten(1).sum(1)
    desc = rule if gradient else composite.describe()
    return Explanation(rel, r_out, r_sum, r_sum - r_out, desc)


def attribute(model: nn.Module, inputs: torch.Tensor, target, rule: str | None = None, **kwargs) -> torch.Tensor:
    """LRP input relevance of the target logit, shape of ``inputs``.

    Parameters
    ----------
    model: an ``nn.Module`` returning logits (N, C); unchanged afterwards (run in eval mode).
    inputs: (N, ...) floating tensor, finite.
    target: class index: an int (all samples), a sequence of N ints, or a LongTensor (N,).
    rule: "epsilon" (default; ``epsilon=1e-6``), "lrp0", "gamma" (``gamma=0.25``), "zplus",
        "alpha_beta" (``alpha=2, beta=1``; give ``beta`` alone for LRP-beta, alpha = 1 + beta),
        "adaptive_beta" (``beta_max=1``), "gradient" (plain input gradient of the target logit,
        no hooks) or "gradient_x_input". ``stabilizer=1e-6``: the non-epsilon rules' and the Norm
        rule's (average pooling, :class:`Sum`) stabiliser.
    input_rule: "zb" (``low=, high=``), "flat" or "wsquare" for the input layer (the first
        Linear/Conv in forward order).
    composite: a :class:`Composite` instead of ``rule`` (e.g. ``composites.epsilon_plus()``).
    rules: ``{module path: Rule}`` overrides.
    merge_bn: merge BatchNorm into the preceding Linear/Conv for the call (default True).

    Raises ``ValueError`` for bad inputs/targets, :class:`UnsupportedLayerError` for modules without
    a rule, :class:`ModuleReuseError` for a rule-bearing module called twice in one forward.
    """
    return explain(model, inputs, target, rule, **kwargs).relevance
