"""Statistics on spectra: power-law tail fits and the Marchenko-Pastur bulk.

    fit_power_law(evals, method="ks"|"hill", fix_fingers=None|"xmin_peak"|"clip_xmax") -> PowerLawFit
    fit_marchenko_pastur(evals, N, M) -> MPFit
    farms_alpha(W, aspect_ratio=2.0) -> PowerLawFit
    hill_alpha(evals_batch) -> tensor

See docs/fit.md for the conventions and where they follow WeightWatcher 0.7.7.
"""
from .farms import farms_alpha, farms_eigenvalues
from .hill import hill_alpha
from .ks import KSScan, ks_scan
from .mp import MPFit, fit_marchenko_pastur
from .power_law import PowerLawFit, fit_power_law

__all__ = [
    "fit_power_law", "PowerLawFit", "fit_marchenko_pastur", "MPFit", "hill_alpha", "farms_alpha",
    "farms_eigenvalues", "ks_scan", "KSScan",
]
