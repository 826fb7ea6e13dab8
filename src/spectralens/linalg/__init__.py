"""Pure tensor-in, tensor-out spectral maths. No modules, no hooks."""
from .conv import WW_CONV2D_SCALE, conv_flatten, conv_slices
from .norms import power_iteration, spectral_norm
from .orthogonalize import (
    orthogonalize, orthogonalize_newton_schulz, orthogonalize_polar_express, polar_svd,
)
from .ranks import (
    effective_rank, effective_rank_from_eigenvalues, nuclear_rank, nuclear_rank_from_eigenvalues,
    numerical_rank_from_eigenvalues, spectral_entropy, spectral_entropy_from_eigenvalues,
    stable_rank, stable_rank_from_eigenvalues, stable_rank_from_gram,
)
from .spectrum import eigenvalues, gram

__all__ = [
    "eigenvalues", "gram", "stable_rank", "nuclear_rank", "spectral_entropy", "effective_rank",
    "stable_rank_from_eigenvalues", "nuclear_rank_from_eigenvalues", "spectral_entropy_from_eigenvalues",
    "effective_rank_from_eigenvalues", "stable_rank_from_gram", "numerical_rank_from_eigenvalues",
    "spectral_norm", "power_iteration", "conv_slices", "conv_flatten", "WW_CONV2D_SCALE",
    "orthogonalize", "orthogonalize_newton_schulz", "orthogonalize_polar_express", "polar_svd",
]
