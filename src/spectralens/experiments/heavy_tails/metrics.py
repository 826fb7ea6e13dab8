"""Metrics of the heavy-tails reproduction (Kothapalli et al., arXiv 2406.04657, sec. 3-5).

Shapes: W (h, d) first-layer weight, X (n, d), y (n,), beta (d,) with ||beta|| = 1.

* ESD: eigenvalues of W^T W, lambda_i = s_i(W)^2 (``spectralens.linalg``), float64.
* Heavy-tail exponent: Hill/median alpha (``spectralens.fit.hill_alpha``) and the KS-scan
  alpha (``spectralens.fit.fit_power_law(method="ks")``).
* Kernel-target alignment on the probe set, Z = tanh(X W^T / sqrt(d)) / sqrt(h) (n, h):
  KTA = <Z Z^T, y y^T>_F / (||Z Z^T||_F ||y y^T||_F) = ||Z^T y||^2 / (||Z^T Z||_F ||y||^2)
  (the second form avoids the n x n kernel).
* Teacher alignment |<v1, beta*>|, v1 the top right singular vector of W.
* Ridge refit of the frozen second layer on the probe set:
  a = (Z^T Z + (lambda / h) n I_h)^-1 Z^T y, then test MSE = mean (Z_test a - y_test)^2.
* Update overlaps: M_t = W_{t+1} - W_t; squared overlaps (U_W^T U_M)^2 and (V_W^T V_M)^2 of
  the top-k singular vectors of W_t (or W_{t+1}) and of M_t, and the singular values of M_t.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spectralens import linalg
from spectralens.fit import hill_alpha

__all__ = [
    "Spectrum", "spectrum", "ks_alpha", "features", "kernel_target_alignment", "ridge_refit_test_mse",
    "update_overlaps", "UpdateOverlaps", "thin_svd",
]


@dataclass(frozen=True)
class Spectrum:
    evals: torch.Tensor  # (d,) ascending eigenvalues of W^T W, float64
    v1: torch.Tensor  # (d,) top right singular vector of W, unit norm

    @property
    def spike_ratio(self) -> float:
        """lambda_1 / lambda_2: ~1 for a Marchenko-Pastur bulk, >> 1 with an outlier."""
        return float(self.evals[-1] / self.evals[-2])

    def alignment(self, beta: torch.Tensor) -> float:
        """|<v1, beta*>| for unit-norm beta*; ~1/sqrt(d) for an unrelated direction."""
        return float(torch.dot(self.v1, beta.to(self.v1.dtype)).abs() / beta.norm())

    def hill_alpha(self) -> float:
        return float(hill_alpha(self.evals))

    def n_above(self, edge: float) -> int:
        """Number of eigenvalues above ``edge`` (e.g. lambda_max at initialisation)."""
        return int((self.evals > edge).sum())


def spectrum(W: torch.Tensor) -> Spectrum:
    """Eigenvalues of W^T W and the top right singular vector, from the smaller Gram in float64."""
    if W.dim() != 2:
        raise ValueError(f"spectrum needs a matrix, got shape {tuple(W.shape)}")
    h, d = W.shape
    C = linalg.gram(W, torch.float64)  # (d, d) = W^T W if h >= d, else (h, h) = W W^T
    evals, vecs = torch.linalg.eigh(C)
    top = vecs[:, -1]
    if h < d:  # top left singular vector -> right one: v1 = W^T u1 / s1
        top = W.to(torch.float64).T @ top
        top = top / top.norm()
        evals = torch.cat([torch.zeros(d - h, dtype=evals.dtype), evals])
    return Spectrum(evals.clamp_min(0), top)


def ks_alpha(evals: torch.Tensor) -> float:
    """KS-scan power-law alpha (Clauset et al.) through ``spectralens.fit.fit_power_law``.

    NaN if that fit is not available in this build (it is developed separately).
    """
    try:
        from spectralens.fit import fit_power_law
    except ImportError:
        try:  # built but not yet re-exported from spectralens.fit
            from spectralens.fit.power_law import fit_power_law
        except ImportError:
            return float("nan")
    return float(fit_power_law(evals, method="ks").alpha)


def features(W: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Z = tanh(X W^T / sqrt(d)) / sqrt(h), shape (n, h)."""
    h, d = W.shape
    return torch.tanh(X @ W.T / math.sqrt(d)) / math.sqrt(h)


def kernel_target_alignment(Z: torch.Tensor, y: torch.Tensor) -> float:
    """KTA = ||Z^T y||^2 / (||Z^T Z||_F ||y||^2), in float64."""
    Z, y = Z.to(torch.float64), y.to(torch.float64)
    return float((Z.T @ y).square().sum() / (torch.linalg.matrix_norm(Z.T @ Z) * y.square().sum()))


def ridge_refit_test_mse(W: torch.Tensor, X_probe, y_probe, X_test, y_test, ridge_lambda: float) -> tuple[float, float, float]:
    """(test MSE, probe MSE, KTA) after refitting a by ridge on the probe set.

    Z and Z^T Z are formed once in float32 (they feed both the ridge solve, done in float64,
    and the kernel-target alignment).
    """
    h = W.shape[0]
    Z = features(W, X_probe)
    n = Z.shape[0]
    G = (Z.T @ Z).to(torch.float64)
    zy = (Z.T @ y_probe).to(torch.float64)
    yd = y_probe.to(torch.float64)
    kta = float(zy.square().sum() / (torch.linalg.matrix_norm(G) * yd.square().sum()))
    a = torch.linalg.solve(G + (ridge_lambda / h) * n * torch.eye(h, dtype=torch.float64), zy)
    probe = float(((Z.to(torch.float64) @ a) - yd).square().mean())
    test = float(((features(W, X_test).to(torch.float64) @ a) - y_test).square().mean())
    return test, probe, kta


@dataclass(frozen=True)
class UpdateOverlaps:
    """Squared singular-vector overlaps between W and the update M (top-k of each)."""

    left: torch.Tensor  # (k, k) (U_W[:, :k]^T U_M[:, :k])^2
    right: torch.Tensor  # (k, k) (V_W[:, :k]^T V_M[:, :k])^2
    m_singular_values: torch.Tensor  # (min(h, d),) descending singular values of M

    def top_right(self) -> float:
        """(v1(W) . v1(M))^2."""
        return float(self.right[0, 0])

    def max_right_for_m1(self) -> float:
        """max_i (v_i(W) . v1(M))^2 over W's top-k: does M's top direction sit among W's top ones?"""
        return float(self.right[:, 0].max())


def thin_svd(A: torch.Tensor):
    """(U, S, Vh) of the float32 thin SVD; pass it to ``update_overlaps`` to avoid recomputing."""
    return torch.linalg.svd(A.float(), full_matrices=False)


def update_overlaps(W: torch.Tensor, M: torch.Tensor, k: int = 20, *, svd_w=None, svd_m=None) -> UpdateOverlaps:
    """Top-k squared overlaps of the singular vectors of W (h, d) and M (h, d), float32 SVD.

    ``svd_w`` / ``svd_m``: precomputed ``thin_svd`` of W / M (W_{t+1} is W_t of the next step).
    """
    if W.shape != M.shape:
        raise ValueError(f"W {tuple(W.shape)} and M {tuple(M.shape)} must have the same shape")
    Uw, _, Vhw = svd_w if svd_w is not None else thin_svd(W)
    Um, Sm, Vhm = svd_m if svd_m is not None else thin_svd(M)
    k = min(k, Uw.shape[1])
    left = (Uw[:, :k].T @ Um[:, :k]).square()
    right = (Vhw[:k] @ Vhm[:k].T).square()
    return UpdateOverlaps(left, right, Sm)
