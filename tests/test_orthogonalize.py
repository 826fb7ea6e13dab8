"""Orthogonalisers: singular-value bands, closeness to U V^T, shapes, Gram form vs textbook."""
import numpy as np
import pytest
import torch

from reference_optim import newton_schulz, polar_float64
from spectralens.linalg.orthogonalize import (
    NS_COEFFICIENTS, POLAR_EXPRESS_COEFFICIENTS, orthogonalize, orthogonalize_newton_schulz,
    orthogonalize_polar_express, polar_svd,
)


def _scalar_band(coeffs, s_min, steps=5, safety=1.0):
    """Range of the composed scalar polynomial over s0 in [s_min, 1]: the predicted band."""
    s = np.logspace(np.log10(s_min), 0, 20001) / safety
    sched = [coeffs] * steps if len(coeffs) == 3 and np.isscalar(coeffs[0]) else list(coeffs)[:steps]
    for a, b, c in sched:
        s = a * s + b * s**3 + c * s**5
    return s.min(), s.max()


def _matrix(m, n, seed=0, cond=None):
    g = torch.Generator().manual_seed(seed)
    if cond is None:
        return torch.randn(m, n, generator=g)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g))
    return (U * torch.logspace(0, -np.log10(cond), k)) @ V.T


@pytest.mark.parametrize("shape", [(48, 96), (96, 48), (64, 64)])
def test_ns_singular_values_in_predicted_band(shape):
    G = _matrix(*shape)
    s0 = torch.linalg.svdvals(G.double()) / G.double().norm()
    lo, hi = _scalar_band(NS_COEFFICIENTS, s0.min().item())
    sv = torch.linalg.svdvals(orthogonalize_newton_schulz(G).double())
    assert sv.min() >= lo - 1e-4 and sv.max() <= hi + 1e-4
    if s0.min() >= 3e-3:  # rectangular Gaussian; a square one has a near-zero singular value
        assert 0.68 - 1e-3 <= sv.min() and sv.max() <= 1.21  # the documented band
    assert _scalar_band(NS_COEFFICIENTS, 3e-3) == pytest.approx((0.6818, 1.2024), abs=1e-3)


def test_polar_express_closer_to_polar_factor_than_ns():
    G = _matrix(64, 160, seed=1, cond=100)
    P = polar_float64(G)
    err_ns = (orthogonalize_newton_schulz(G).double() - P).norm() / P.norm()
    err_pe = (orthogonalize_polar_express(G).double() - P).norm() / P.norm()
    assert err_pe < 0.5 * err_ns
    sv = torch.linalg.svdvals(orthogonalize_polar_express(G).double())
    lo, hi = _scalar_band(POLAR_EXPRESS_COEFFICIENTS, 1e-3, safety=1.01)
    assert lo - 1e-3 <= sv.min() and sv.max() <= hi + 1e-3
    assert (lo, hi) == pytest.approx((0.840, 1.124), abs=2e-3)


@pytest.mark.parametrize("shape", [(40, 70), (70, 40), (3, 33, 20)])
def test_polar_svd_is_exact(shape):
    G = torch.randn(*shape)
    Q = polar_svd(G)
    assert Q.shape == G.shape and Q.dtype == torch.float32
    ref = polar_float64(G)
    assert (Q.double() - ref).abs().max() < 1e-5
    k = min(shape[-2:])
    QQ = Q.mT @ Q if shape[-2] >= shape[-1] else Q @ Q.mT
    assert torch.allclose(QQ, torch.eye(k).expand_as(QQ), atol=1e-5)


@pytest.mark.parametrize("shape", [(32, 80), (80, 32), (24, 24)])
def test_ns_matches_textbook_transcription(shape):
    """Same maths, different op order (fused baddbmm): float32 rounding only, entries are O(0.3)."""
    G = _matrix(*shape, seed=3)
    assert torch.allclose(orthogonalize_newton_schulz(G), newton_schulz(G), atol=2e-6, rtol=0)


@pytest.mark.parametrize("cond", [None, 1e4])
def test_gram_form_agrees_with_textbook(cond):
    G = _matrix(96, 384, seed=4, cond=cond)
    ref = orthogonalize_newton_schulz(G.double(), dtype=torch.float64, gram=False)
    fast = orthogonalize_newton_schulz(G, gram=True)
    slow = orthogonalize_newton_schulz(G, gram=False)
    rel = lambda X: ((X.double() - ref).norm() / ref.norm()).item()  # noqa: E731
    assert rel(fast) < 1.5 * rel(slow) + 1e-6  # the restart keeps textbook accuracy
    assert rel(slow) < 1e-5 and (fast - slow).abs().max() < 1e-5


def test_batched_equals_one_by_one_and_tall_is_transpose():
    B = torch.randn(5, 24, 56)
    out = orthogonalize_newton_schulz(B)
    for i in range(5):
        assert torch.allclose(out[i], orthogonalize_newton_schulz(B[i]), atol=1e-6)
    assert torch.allclose(orthogonalize_newton_schulz(B.mT), out.mT, atol=1e-6)
    assert torch.allclose(orthogonalize_polar_express(B)[2], orthogonalize_polar_express(B[2]), atol=1e-6)


def test_dtype_defaults_and_edge_cases():
    G = torch.randn(8, 12, dtype=torch.float64)
    assert orthogonalize_newton_schulz(G).dtype == torch.float32  # per device: CPU -> float32
    assert orthogonalize_newton_schulz(G, dtype=torch.float64).dtype == torch.float64
    assert orthogonalize_newton_schulz(G[:4, :6].float(), dtype=torch.bfloat16).dtype == torch.bfloat16
    assert torch.equal(orthogonalize_newton_schulz(torch.zeros(4, 6)), torch.zeros(4, 6))
    assert torch.allclose(orthogonalize_newton_schulz(G, steps=0), (G / G.norm()).float(), atol=1e-7)
    with pytest.raises(ValueError, match=r"\(3, 4, 5, 6\)"):
        orthogonalize_newton_schulz(torch.zeros(3, 4, 5, 6))
    with pytest.raises(ValueError, match="'qr'"):
        orthogonalize(G, "qr")
    with pytest.raises(ValueError, match="steps=-1"):
        orthogonalize_newton_schulz(G, steps=-1)


def test_per_step_coefficient_list_repeats_last():
    G = torch.randn(10, 20)
    one = orthogonalize_newton_schulz(G, 5, [NS_COEFFICIENTS])
    assert torch.allclose(one, orthogonalize_newton_schulz(G, 5, NS_COEFFICIENTS))
