"""linalg against float64 full SVDs (numpy) and the definitions, plus property tests."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spectralens import linalg


def _svd_evals(W: torch.Tensor) -> np.ndarray:
    return np.sort(np.linalg.svd(W.double().numpy(), compute_uv=False) ** 2)


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (200, 200), (1000, 50), (7, 3)])
def test_eigenvalues_match_float64_svd(shape):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    ours = linalg.eigenvalues(W).numpy()
    ref = _svd_evals(W)
    assert ours.shape == (min(shape),)
    assert abs(ours[-1] - ref[-1]) / ref[-1] <= 1e-6
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9 * ref[-1])


@pytest.mark.parametrize("method", ["gram", "svd"])
def test_methods_agree(method):
    W = torch.randn(300, 120, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(linalg.eigenvalues(W, method=method).numpy(), _svd_evals(W), rtol=1e-6, atol=1e-8)


def test_float32_auto_is_accurate_on_near_square():
    W = torch.randn(256, 200, generator=torch.Generator().manual_seed(2))
    ev = linalg.eigenvalues(W, dtype=torch.float32).double().numpy()
    ref = _svd_evals(W)
    assert abs(ev[-1] - ref[-1]) / ref[-1] < 1e-5


def test_batched_equals_unbatched():
    Ws = torch.randn(5, 40, 30, generator=torch.Generator().manual_seed(3))
    batched = linalg.eigenvalues(Ws)
    for i in range(5):
        torch.testing.assert_close(batched[i], linalg.eigenvalues(Ws[i]), rtol=1e-10, atol=1e-10)


def test_chunked_gram_matches_direct(monkeypatch):
    from spectralens.linalg import spectrum

    W = torch.randn(1000, 16, generator=torch.Generator().manual_seed(4))
    direct = W.double().T @ W.double()
    monkeypatch.setattr(spectrum, "_GRAM_CHUNK_ELEMENTS", 16 * 37)  # forces ~27 chunks
    torch.testing.assert_close(spectrum.gram(W), direct)


def test_ranks_against_definitions():
    g = torch.Generator().manual_seed(5)
    M = torch.randn(50, 20, generator=g, dtype=torch.float64)
    s = torch.linalg.svdvals(M)
    assert torch.isclose(linalg.stable_rank(M), (s**2).sum() / s[0] ** 2)
    assert torch.isclose(linalg.nuclear_rank(M), s.sum() ** 2 / (s**2).sum())
    q = s / s.sum()
    assert torch.isclose(linalg.effective_rank(M), torch.exp(-(q * q.log()).sum()))


def test_stable_rank_from_gram_equals_direct():
    A = torch.randn(500, 64, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert torch.isclose(linalg.stable_rank_from_gram(A.T @ A), linalg.stable_rank(A))


def test_entropy_matches_weightwatcher_formula():
    W = torch.randn(80, 40, generator=torch.Generator().manual_seed(7))
    sv = np.linalg.svd(W.double().numpy(), compute_uv=False)
    rank = np.count_nonzero(sv > sv.max() * 80 * np.finfo(float).eps) + 1e-10
    p = sv**2 / np.sum(sv**2) + 1e-10
    expected = -np.sum(p * np.log(p)) / np.log(rank)
    assert float(linalg.spectral_entropy(W)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("method", ["exact", "power"])
def test_spectral_norm(method):
    W = torch.randn(300, 100, generator=torch.Generator().manual_seed(8))
    ref = np.linalg.svd(W.double().numpy(), compute_uv=False)[0]
    got = float(linalg.spectral_norm(W, method=method, iters=500, tol=1e-10))
    assert got == pytest.approx(ref, rel=1e-5)


def test_conv_slices_and_flatten():
    w = torch.randn(8, 4, 3, 3)
    sl = linalg.conv_slices(w)
    assert sl.shape == (9, 8, 4)
    torch.testing.assert_close(sl[4], w[:, :, 1, 1] * linalg.WW_CONV2D_SCALE)
    assert linalg.conv_flatten(w).shape == (8, 36)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        linalg.eigenvalues(torch.zeros(5))
    with pytest.raises(TypeError, match="int8"):
        linalg.eigenvalues(torch.zeros(4, 4, dtype=torch.int8))
    with pytest.raises(ValueError, match="method"):
        linalg.eigenvalues(torch.zeros(4, 4), method="qr")
    assert linalg.eigenvalues(torch.zeros(0, 4)).shape == (0,)
    assert torch.isnan(linalg.stable_rank(torch.zeros(4, 4)))


matrices = st.tuples(st.integers(2, 12), st.integers(2, 12), st.integers(0, 10_000))


@settings(max_examples=40, deadline=None)
@given(matrices)
def test_stable_and_nuclear_rank_bounds(spec):
    n, m, seed = spec
    M = torch.randn(n, m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rank = torch.linalg.matrix_rank(M).item()
    for value in (linalg.stable_rank(M), linalg.nuclear_rank(M)):
        assert 1 - 1e-9 <= float(value) <= rank + 1e-9


@settings(max_examples=25, deadline=None)
@given(matrices, st.floats(1e-3, 1e3))
def test_ranks_invariant_to_scale_and_permutation(spec, scale):
    n, m, seed = spec
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(n, m, generator=g, dtype=torch.float64)
    P = M[torch.randperm(n, generator=g)][:, torch.randperm(m, generator=g)] * scale
    assert torch.isclose(linalg.stable_rank(M), linalg.stable_rank(P), rtol=1e-8)
    assert torch.isclose(linalg.nuclear_rank(M), linalg.nuclear_rank(P), rtol=1e-8)
