"""Errors raised by :mod:`spectralens.lrp`."""
from __future__ import annotations


class UnsupportedLayerError(TypeError):
    """A module in the model has no LRP rule.

    The message names the module's path in the model, its type, and the layer types and rules
    that are supported (and how to assign a rule by name, if the user knows one fits).
    """

    def __init__(self, path: str, module_type: str, hint: str):
        self.path, self.module_type = path, module_type
        super().__init__(f"module {path!r} of type {module_type} is not supported by spectralens.lrp. {hint}")


class ModuleReuseError(RuntimeError):
    """A module that carries an LRP rule was called more than once in one forward pass."""

    def __init__(self, path: str, module_type: str):
        self.path, self.module_type = path, module_type
        super().__init__(
            f"module {path!r} ({module_type}) was called twice in one forward pass. LRP assigns one rule and "
            "one layer position per module call of a Linear/Conv/pooling/Sum module, so give each use its own "
            "module instance (parameter-free modules such as nn.ReLU, nn.Flatten or nn.MaxPool2d may be reused)."
        )
