"""Optimizers and spectra-driven weight-decay / learning-rate schedulers."""

# --- spectral regularisers and the condition-gated optimizer (AlphaDecay engineer) ---
from ._module_alpha import module_param_groups
from .adadecay import AdaDecay
from .alphadecay import AlphaDecay
from .awd import AWD
from .gated import GatedSpectral
from .tempbalance import TempBalance

__all__ = ["AlphaDecay", "AWD", "AdaDecay", "TempBalance", "GatedSpectral", "module_param_groups"]
# --- end regularisers block ---
