"""spectralens: see and use the spectra of neural networks.

Submodules (import what you need; nothing heavy is imported here):
``linalg`` (eigenvalues, stable/nuclear rank, spectral norm), ``fit`` (power-law and
Marchenko-Pastur fits), ``analyze`` (model -> per-layer table), ``monitor`` (the
spectral-update condition during training), ``optim`` (Muon, hybrid, AlphaDecay, ...),
``experiments`` (paper reproductions), ``report`` (plots and HTML).
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["analyze", "summarize", "__version__"]


def __getattr__(name: str):
    # Lazy: ``spectralens.analyze(...)`` works without importing pandas at package import.
    if name in ("analyze", "summarize"):
        import importlib

        # import_module, not "from . import analyze": that form calls hasattr(package, "analyze"),
        # which re-enters this __getattr__ before the submodule exists (infinite recursion).
        _analyze_module = importlib.import_module(".analyze", __name__)
        return getattr(_analyze_module, name)
    raise AttributeError(f"module 'spectralens' has no attribute {name!r}")
