"""Import Zennit (a test-only LRP peer) without torchvision.

Zennit imports ``torchvision.models.resnet`` at package import, only to define its ResNet
canonizers. PyPI's torchvision wheels are CUDA builds pinned to one torch release, which do
not load next to the CPU torch this project installs, so ``scripts/setup.sh`` installs zennit
with ``--no-deps`` and this module stands in two empty block classes when torchvision is
missing. Nothing in our tests uses the ResNet canonizers.

Usage in a test module::

    from zennit_shim import import_zennit
    zennit = import_zennit()          # skips the module if zennit is not installed
"""
from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import torch


def _stub_torchvision() -> None:
    try:
        import torchvision.models.resnet  # noqa: F401
        return
    except Exception:  # missing, or a CUDA build that fails to load its ops
        pass
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")

    class BasicBlock(torch.nn.Module):
        """Placeholder: zennit.torchvision only uses it in isinstance checks."""

    class Bottleneck(torch.nn.Module):
        """Placeholder: zennit.torchvision only uses it in isinstance checks."""

    resnet.BasicBlock, resnet.Bottleneck = BasicBlock, Bottleneck
    tv.models, models.resnet = models, resnet
    sys.modules.update({"torchvision": tv, "torchvision.models": models, "torchvision.models.resnet": resnet})


def import_zennit():
    """Return the ``zennit`` package (with composites, rules, attribution loaded), or skip."""
    if importlib.util.find_spec("zennit") is None:
        pytest.skip("zennit is a test-only peer: pip install --no-deps zennit==0.5.1")
    _stub_torchvision()
    import zennit
    import zennit.attribution  # noqa: F401
    import zennit.composites  # noqa: F401
    import zennit.rules  # noqa: F401
    return zennit
