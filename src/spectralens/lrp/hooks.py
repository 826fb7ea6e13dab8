"""Removable LRP hooks: :func:`lrp_context`.

Each hooked module call is wrapped in a custom autograd Function: the forward returns the
module's output unchanged, the backward receives the relevance of that output (as the incoming
"gradient") and returns the rule's input relevance (as the outgoing "gradient"). Because every
call gets its own Function node with its own saved inputs, nothing is stored on the hook or the
module. Modules without a rule (Flatten, MaxPool, Dropout, Identity, functional ops in a custom
``forward``) pass relevance by their ordinary gradient.

On entry the model is checked (unsupported modules raise :class:`UnsupportedLayerError`), put in
eval mode, and hooked; on exit every hook is removed and every module's training flag restored.
Parameters, buffers and ``requires_grad`` are never touched.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from . import canonizers
from .composites import Composite
from .errors import ModuleReuseError, UnsupportedLayerError
from .layers import ACTIVATION, AFFINE, AVGPOOL, BATCHNORM, GRADIENT, SUPPORTED_TEXT, Sum
from .rules import Gradient, Pass, Rule


_ACTIVE: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()   # models inside an lrp_context


class _RuleFunction(torch.autograd.Function):
    """forward(rule, module, output, *inputs) -> output; backward: the rule's input relevance."""

    @staticmethod
    def forward(ctx, rule, module, output, *inputs):
        ctx.rule, ctx.module = rule, module
        ctx.save_for_backward(*inputs)
        return output.clone()

    @staticmethod
    def backward(ctx, r):
        inputs = ctx.saved_tensors
        rel = ctx.rule.relevance(ctx.module, inputs, r)
        return (None, None, None, *(g if need else None for g, need in zip(rel, ctx.needs_input_grad[3:])))


@dataclass
class LRPContext:
    """What :func:`lrp_context` yields. ``assignments``: ``{module path: rule}`` of the last forward
    (``None``: plain gradient); ``input_layer``: path of the input layer in the last forward."""

    composite: Composite
    assignments: dict[str, Rule | None] = field(default_factory=dict)
    input_layer: str | None = None
    _calls: dict[str, int] = field(default_factory=dict)


def _hint(module: nn.Module) -> str:
    """What to do about an unsupported module."""
    if isinstance(module, BATCHNORM):
        return ("A BatchNorm must directly follow a Linear/Conv and be merged: wrap the call in "
                "`with lrp.merge_batchnorm(model, example_input=x[:1]):` (attribute() does this). ") + SUPPORTED_TEXT
    if isinstance(module, (nn.Softmax, nn.LogSoftmax)):
        return ("LRP explains logits: remove the softmax from the model (or call the model without it). "
                + SUPPORTED_TEXT)
    return (SUPPORTED_TEXT + " If a rule truly fits this module, assign it by name, e.g. "
            "attribute(..., rules={path: lrp.rules.Pass()}) for an element-wise activation, or "
            "lrp.rules.Gradient() for a module that only reshapes or selects entries.")


def check_model(model: nn.Module, composite: Composite) -> None:
    """Raise :class:`UnsupportedLayerError` for the first module LRP cannot handle."""
    names = {n for n, _ in model.named_modules()}
    unknown = sorted(set(composite.name_map) - names)
    if unknown:
        raise ValueError(f"rules given for module paths not in the model: {unknown}; known paths: {sorted(names)[:20]}")
    for path, module in model.named_modules():
        if path in composite.name_map:
            continue
        has_params = next(module.parameters(recurse=False), None) is not None
        is_leaf = next(module.children(), None) is None
        if isinstance(module, BATCHNORM):
            if not canonizers.is_merged(module):
                raise UnsupportedLayerError(path or "<root>", type(module).__name__, _hint(module))
        elif isinstance(module, AFFINE + AVGPOOL + ACTIVATION + GRADIENT + (Sum,)):
            continue
        elif is_leaf or has_params:
            raise UnsupportedLayerError(path or "<root>", type(module).__name__, _hint(module))


def _make_hook(ctx: LRPContext, path: str):
    def hook(module, inputs, output):
        is_affine = isinstance(module, AFFINE)
        first = is_affine and ctx.input_layer is None
        if first:
            ctx.input_layer = path
        rule = ctx.composite.rule_for(path, module, first=first)
        ctx.assignments[path] = rule
        if rule is None or isinstance(rule, Gradient):
            return None
        ctx._calls[path] = ctx._calls.get(path, 0) + 1
        if ctx._calls[path] > 1 and not isinstance(rule, Pass):
            raise ModuleReuseError(path or "<root>", type(module).__name__)
        rule.check(path or "<root>", module, inputs)
        if not torch.is_grad_enabled() or not isinstance(output, torch.Tensor):
            return None
        tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
        if len(tensors) != len(inputs) or not any(x.requires_grad for x in tensors):
            return None
        return _RuleFunction.apply(rule, module, output.detach(), *inputs)
    return hook


@contextmanager
def lrp_context(model: nn.Module, composite: Composite):
    """Hook ``model`` so that ``autograd.grad(model(x), x, R_out)`` returns LRP relevance.

    Usage::

        with lrp_context(model, composites.epsilon_plus()) as ctx:
            x = x.detach().requires_grad_()
            out = model(x)
            (R,) = torch.autograd.grad(out, x, onehot * out.detach())

    Call the root ``model`` (the per-forward bookkeeping resets on each root call). BatchNorm must
    be merged first (:func:`merge_batchnorm`). Yields an :class:`LRPContext`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(composite, Composite):
        raise TypeError(f"composite must be a spectralens.lrp.Composite, got {type(composite).__name__}")
    if model in _ACTIVE:
        raise RuntimeError("this model is already inside an lrp_context; nested contexts would hook it twice")
    check_model(model, composite)
    ctx = LRPContext(composite)

    def reset(module, inputs):
        ctx.assignments.clear()
        ctx._calls.clear()
        ctx.input_layer = None

    training = {m: m.training for m in model.modules()}
    handles = [model.register_forward_pre_hook(reset)]
    _ACTIVE.add(model)
    try:
        model.eval()
        for path, module in model.named_modules():
            container = next(module.children(), None) is not None and path not in composite.name_map
            if isinstance(module, BATCHNORM) or container:   # merged BatchNorm: the identity, no hook
                continue
            handles.append(module.register_forward_hook(_make_hook(ctx, path)))
        yield ctx
    finally:
        _ACTIVE.discard(model)
        for h in handles:
            h.remove()
        for m, flag in training.items():
            m.training = flag


@contextmanager
def eval_mode(model: nn.Module):
    """Eval mode for the duration; every module's training flag restored on exit."""
    training = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield model
    finally:
        for m, flag in training.items():
            m.training = flag
