"""The float32 compute path of ``analyze``: accuracy against float64, and its float64 refinement."""
import numpy as np
import torch

from spectralens.analyze import run_analysis


def _with_spectrum(singular_values: np.ndarray, n: int, seed: int = 0) -> torch.Tensor:
    """n x m matrix U diag(s) V^T with Haar-random U, V (float32 storage)."""
    rng = np.random.default_rng(seed)
    m = singular_values.size
    U, _ = np.linalg.qr(rng.standard_normal((n, m)))
    V, _ = np.linalg.qr(rng.standard_normal((m, m)))
    return torch.from_numpy(((U * singular_values) @ V.T).astype(np.float32))


def test_float32_matches_float64_on_random_layers():
    torch.manual_seed(0)
    sd = {f"l{i}.weight": torch.randn(4 * 96, 96) / 10 for i in range(4)}
    sd["sq.weight"] = torch.randn(128, 128)
    a64 = run_analysis(sd, dtype="float64").layers.set_index("name")
    a32 = run_analysis(sd, dtype="float32").layers.set_index("name")
    for col in ("alpha", "xmin", "D", "lambda_max", "log_norm", "stable_rank"):
        np.testing.assert_allclose(a32[col].astype(float), a64[col].astype(float), rtol=1e-4, err_msg=col)
    assert set(a32["dtype"]) == {"float32"}  # none of these needed float64


def test_long_tail_is_refined_in_float64():
    """A power-law spectrum spanning 1e5 in lambda: float32 cannot resolve its small tail values,
    so the layer is recomputed in float64 and equals the float64 result exactly."""
    m = 200
    s = np.sqrt(np.logspace(0, -5, m))  # lambda from 1 down to 1e-5
    W = _with_spectrum(s, 400)
    sd = {"tail.weight": W}
    a64 = run_analysis(sd, dtype="float64").layers.iloc[0]
    a32 = run_analysis(sd, dtype="float32").layers.iloc[0]
    assert a64["lambda_max"] / a64["xmin"] > 1e3  # the KS scan fits the long tail: float32 cannot resolve it
    assert "refined in float64" in a32["dtype"]
    for col in ("alpha", "xmin", "D", "entropy", "matrix_rank"):
        assert a32[col] == a64[col], col


def test_float32_overflow_falls_back_to_float64():
    """Finite float32 weights whose float32 Gram overflows (entries ~1e20) still get a spectrum."""
    W = torch.randn(64, 32) * 1e20
    row = run_analysis({"big.weight": W}, dtype="float32").layers.iloc[0]
    assert row["status"] == "ok", row["status"]
    assert np.isfinite(row["alpha"])


def test_float32_rank_counts_what_float32_resolves():
    """Exact rank 20 of 64: the zero eigenvalues come out as float32 noise and are not counted."""
    rng = np.random.default_rng(1)
    W = torch.from_numpy((rng.standard_normal((128, 20)) @ rng.standard_normal((20, 64))).astype(np.float32))
    for dtype in ("float32", "float64"):
        row = run_analysis({"low.weight": W}, dtype=dtype).layers.iloc[0]
        assert row["matrix_rank"] == 20, (dtype, row["matrix_rank"])


def test_gram_into_every_layout_and_dtype():
    """The single-library syrk path equals X^T X for C-ordered, Fortran-ordered and strided X."""
    from spectralens.analyze import lapack

    rng = np.random.default_rng(2)
    base = rng.standard_normal((90, 24))
    for X in (base, np.asfortranarray(base), base[::2], base.T.copy().T):
        for dt in (np.float32, np.float64):
            Xd = X.astype(dt, copy=False) if X.dtype != dt else X
            C = np.zeros((24, 24), dtype=dt)
            lapack.gram_into(C, Xd)
            lapack.gram_into(C, Xd)  # accumulates
            ref = 2 * (Xd.astype(np.float64).T @ Xd.astype(np.float64))
            np.testing.assert_allclose(C, ref, rtol=1e-5 if dt == np.float32 else 1e-12, atol=1e-4)
    ev = lapack.eigvalsh(np.stack([base.T @ base] * 2))
    np.testing.assert_allclose(ev[0], np.linalg.eigvalsh(base.T @ base), rtol=1e-10)


def test_eigvalsh_ctypes_and_numpy_fallback_agree(monkeypatch):
    """The ctypes dsyevd path (parallel, GIL released) and the numpy fallback give the same ESD."""
    from spectralens.analyze import lapack

    rng = np.random.default_rng(3)
    C = np.stack([(lambda W: W.T @ W)(rng.standard_normal((200, 64))) for _ in range(5)])
    fast = lapack.eigvalsh(C)
    assert lapack._syevd() is not None  # scipy is a dependency: the fast path is the one tested
    monkeypatch.setattr(lapack, "_SYEVD", False)
    slow = lapack.eigvalsh(C)
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(lapack.eigvalsh(C[0]), slow[0], rtol=1e-10)
