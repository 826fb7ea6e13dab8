"""Import Zennit (a test-only LRP peer) without torchvision.

Zennit imports ``torchvision.models.resnet`` at package import, only to define its ResNet
canonizers. PyPI's torchvision wheels are CUDA builds pinned to one torch release, which do
not load next to the CPU torch this project installs, so ``scripts/setup.sh`` installs zennit
with ``--no-deps`` and this module stands in two empty block classes when torchvision is
missing. Nothing in our tests uses the ResNet canonizers.

Usage in a test module::

    from zennit_shim import import_zennit
    zennit = import_zennit()          # skips the test if zennit is not installed

The placeholders are removed from ``sys.modules`` once zennit is imported, so libraries that
probe for torchvision afterwards (transformers) still see it as missing.
"""
from __future__ import annotations

import importlib.util
import sys
import types

import torch


def _stub_torchvision() -> bool:
    """Put placeholder torchvision modules in sys.modules if the real one does not import."""
    try:
        import torchvision.models.resnet  # noqa: F401
        return False
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
    return True


def load_zennit():
    """The ``zennit`` package (composites, rules, attribution loaded), or None if not installed.

    Also used by ``benchmarks/lrp_throughput.py`` (no pytest needed)."""
    if importlib.util.find_spec("zennit") is None:
        return None
    stubbed = _stub_torchvision()
    try:
        import zennit
        import zennit.attribution  # noqa: F401
        import zennit.composites  # noqa: F401
        import zennit.rules  # noqa: F401
        import zennit.types  # noqa: F401
    finally:
        if stubbed:  # zennit keeps its references; everyone else must see torchvision as missing
            for name in ("torchvision.models.resnet", "torchvision.models", "torchvision"):
                sys.modules.pop(name, None)
    return zennit


def import_zennit():
    """Return the ``zennit`` package, or skip the calling test if it is not installed."""
    zennit = load_zennit()
    if zennit is None:
        import pytest

        pytest.skip("zennit is a test-only peer: pip install --no-deps zennit==0.5.1")
    return zennit
