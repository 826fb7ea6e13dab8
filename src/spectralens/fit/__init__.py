"""Statistics on spectra: power-law tail fits and the Marchenko-Pastur bulk."""
from .hill import hill_alpha

__all__ = ["hill_alpha"]
