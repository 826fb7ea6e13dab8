"""Optimizers and spectra-driven weight-decay / learning-rate schedulers."""

# --- Muon, hybrid, distributed Muon (Muon engineer) ---
from .hybrid import HybridOptimizer, hybrid
from .muon import SCALE_RULES, Muon, lr_scale

_MUON_ALL = ["Muon", "hybrid", "HybridOptimizer", "lr_scale", "SCALE_RULES"]
# --- end Muon block ---

# --- spectral regularisers and the condition-gated optimizer (AlphaDecay engineer) ---
from ._module_alpha import module_param_groups
from .adadecay import AdaDecay
from .alphadecay import AlphaDecay
from .awd import AWD
from .gated import GatedSpectral, st_from_monitor
from .tempbalance import TempBalance

__all__ = _MUON_ALL + ["AlphaDecay", "AWD", "AdaDecay", "TempBalance", "GatedSpectral", "st_from_monitor",
                         "module_param_groups"]
# --- end regularisers block ---
