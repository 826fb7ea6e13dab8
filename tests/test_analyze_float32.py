"""The float32 compute path of ``analyze``: accuracy against float64, and its float64 refinement."""
import numpy as np
import torch

from spectralens.analyze import FLOAT32_MAX_TAIL_RANGE, run_analysis


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
    assert a64["lambda_max"] / a64["xmin"] > FLOAT32_MAX_TAIL_RANGE  # the KS scan fits the whole range
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
