"""The paper's prediction on a least-squares layer, measured through the monitor.

L(W) = 1/(2n) ||W A - Y||_F^2 with A (d_in x n). Two optimal steps (Davis & Drusvyatskiy,
arXiv 2512.04299, section 2):

* GD:      W - G / L_F,                       L_F  = ||A||_op^2 / n, guaranteed decrease ||G||_F^2 / (2 L_F)
* SpecGD:  W - (||G||_* / L_op) polar(G),     L_op = ||A||_F^2 / n,  guaranteed decrease ||G||_*^2 / (2 L_op)

The guaranteed decreases are in the ratio nr(G)/st(A) exactly, and the actual decreases lie
within a factor 2 of the guarantees, so the actual ratio dS/dGD is in [nr/(2 st), 2 nr/st]:
nr >= 2 st => spectral wins outright; nr <= st/2 => GD wins outright.

The gradient is chosen freely by choosing the residual: with R = n G0 (A A^T)^{-1} A and
Y = W A - R, the gradient (W A - Y) A^T / n is exactly G0. So both regimes are built on purpose.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from spectralens.monitor import SpectralMonitor

D, N = 20, 200


def _loss(W, A, Y):
    return float(((W @ A - Y) ** 2).sum() / (2 * A.shape[1]))


def _run(A: torch.Tensor, G0: torch.Tensor, grad_method: str = "gram") -> dict:
    """Build the problem, read nr/st from the monitor, take both optimal steps."""
    n = A.shape[1]
    W0 = torch.randn(D, D, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    R = n * G0 @ torch.linalg.solve(A @ A.T, A)
    Y = W0 @ A - R
    layer = nn.Linear(D, D, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(W0)
    with SpectralMonitor(layer, every=1, gram_dtype=torch.float64, grad_method=grad_method) as mon:
        out = layer(A.T)  # rows = samples
        (((out - Y.T) ** 2).sum() / (2 * n)).backward()
        rec = mon.step()[0]
    G = layer.weight.grad
    torch.testing.assert_close(G, G0, rtol=1e-8, atol=1e-10)
    s = torch.linalg.svdvals(A)
    L_F, L_op = float(s[0] ** 2) / n, float((s ** 2).sum()) / n
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    d_gd = _loss(W0, A, Y) - _loss(W0 - G / L_F, A, Y)
    d_spec = _loss(W0, A, Y) - _loss(W0 - (float(S.sum()) / L_op) * (U @ Vh), A, Y)
    guar_gd = float((S ** 2).sum()) / (2 * L_F)
    guar_spec = float(S.sum()) ** 2 / (2 * L_op)
    return {"rec": rec, "d_gd": d_gd, "d_spec": d_spec, "guar_gd": guar_gd, "guar_spec": guar_spec}


def _spiked_A(strength: float, seed: int = 0) -> torch.Tensor:
    """Features with a mean spike (low st): A = strength * u 1^T + Z."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(D, 1, dtype=torch.float64, generator=g)
    return strength * u @ torch.ones(1, N, dtype=torch.float64) + torch.randn(D, N, dtype=torch.float64, generator=g)


def _isotropic_A(seed: int = 0) -> torch.Tensor:
    """A A^T = n I: st(A) = D exactly."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(N, D, dtype=torch.float64, generator=g))
    return (N ** 0.5) * Q.T


def _gradient(rank: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(D, rank, dtype=torch.float64, generator=g) @ torch.randn(rank, D, dtype=torch.float64, generator=g)


def _check_bracket(res):
    ratio = res["rec"]["ratio"]
    assert res["guar_spec"] / res["guar_gd"] == pytest.approx(ratio, rel=1e-6)  # exact identity (Gram eigenvalues: ~1e-8 error)
    actual = res["d_spec"] / res["d_gd"]
    assert ratio / 2 * (1 - 1e-6) <= actual <= 2 * ratio * (1 + 1e-6)
    return actual


def test_spectral_wins_when_nr_at_least_twice_st():
    res = _run(_spiked_A(3.0), _gradient(rank=D))
    rec = res["rec"]
    assert rec["st_act"] < 2.0 and rec["nr_grad"] > 8.0  # the regime was built: nr >= 2 st
    assert rec["cond2"] is True
    actual = _check_bracket(res)
    assert actual >= 1.0 and res["d_spec"] > res["d_gd"]


def test_gd_guarantee_wins_when_nr_below_st():
    res = _run(_isotropic_A(), _gradient(rank=1))
    rec = res["rec"]
    assert rec["st_act"] == pytest.approx(D, rel=1e-9) and rec["nr_grad"] == pytest.approx(1.0, rel=1e-6)
    exact = _run(_isotropic_A(), _gradient(rank=1), grad_method="svd")["rec"]
    assert exact["nr_grad"] == pytest.approx(1.0, rel=1e-12)  # the SVD path is exact for rank-1 G
    assert rec["cond"] is False
    assert res["guar_gd"] > res["guar_spec"]
    actual = _check_bracket(res)
    assert actual < 1.0 and res["d_gd"] > res["d_spec"]


@pytest.mark.parametrize("seed", range(6))
def test_ratio_of_decreases_tracks_nr_over_st(seed):
    """Random mixtures of spike strength and gradient rank: the bracket always holds, and the
    winner is the predicted one whenever nr/st >= 2 or <= 1/2."""
    g = torch.Generator().manual_seed(100 + seed)
    strength = float(torch.rand(1, generator=g)) * 4
    rank = int(torch.randint(1, D + 1, (1,), generator=g))
    res = _run(_spiked_A(strength, seed), _gradient(rank, seed + 7))
    actual = _check_bracket(res)
    ratio = res["rec"]["ratio"]
    if ratio >= 2:
        assert actual >= 1.0
    if ratio <= 0.5:
        assert actual <= 1.0
