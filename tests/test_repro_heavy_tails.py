"""heavy-tails reproduction: metrics against plain definitions, and the quick run end to end."""
import json
import math

import numpy as np
import pytest
import torch

from spectralens.experiments.heavy_tails import metrics
from spectralens.experiments.heavy_tails.setup import HeavyTailsConfig, make_problem, train_steps


def test_spectrum_matches_float64_svd_and_top_vector():
    W = torch.randn(60, 40, generator=torch.Generator().manual_seed(0))
    spec = metrics.spectrum(W)
    U, S, Vh = np.linalg.svd(W.double().numpy())
    np.testing.assert_allclose(spec.evals.numpy(), np.sort(S**2), rtol=1e-9)
    assert abs(abs(float(spec.v1 @ torch.from_numpy(Vh[0]))) - 1) < 1e-8
    wide = metrics.spectrum(W.T.contiguous())  # h < d: zeros padded, v1 in R^d
    assert wide.evals.shape == (60,) and torch.allclose(wide.evals[-40:], spec.evals)
    assert abs(abs(float(wide.v1 @ torch.from_numpy(U[:, 0]))) - 1) < 1e-8


def test_kta_equals_explicit_kernel_form():
    g = torch.Generator().manual_seed(1)
    Z, y = torch.randn(50, 30, generator=g), torch.randn(50, generator=g)
    K, Ky = Z @ Z.T, torch.outer(y, y)
    ref = float((K * Ky).sum() / (K.norm() * Ky.norm()))
    assert metrics.kernel_target_alignment(Z, y) == pytest.approx(ref, rel=1e-5)


def test_ridge_refit_matches_closed_form():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(30, 20, generator=g)
    Xp, yp = torch.randn(80, 20, generator=g), torch.randn(80, generator=g)
    Xt, yt = torch.randn(40, 20, generator=g), torch.randn(40, generator=g)
    Z = np.tanh(Xp.double().numpy() @ W.double().numpy().T / math.sqrt(20)) / math.sqrt(30)
    a = np.linalg.inv(Z.T @ Z + (0.01 / 30) * 80 * np.eye(30)) @ Z.T @ yp.double().numpy()
    Zt = np.tanh(Xt.double().numpy() @ W.double().numpy().T / math.sqrt(20)) / math.sqrt(30)
    test, probe, kta = metrics.ridge_refit_test_mse(W, Xp, yp, Xt, yt, 0.01)
    assert test == pytest.approx(float(np.mean((Zt @ a - yt.double().numpy()) ** 2)), rel=1e-4)
    assert probe == pytest.approx(float(np.mean((Z @ a - yp.double().numpy()) ** 2)), rel=1e-4)
    assert 0 < kta <= 1


def test_update_overlaps_of_a_rank_one_update():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(50, 40, generator=g)
    u, v = torch.randn(50, generator=g), torch.randn(40, generator=g)
    M = 100.0 * torch.outer(u / u.norm(), v / v.norm())
    ov_next = metrics.update_overlaps(W + M, M, k=5)
    assert ov_next.top_right() > 0.99 and ov_next.left[0, 0] > 0.99  # the spike is the update
    assert ov_next.m_singular_values[1] < 1e-3 * ov_next.m_singular_values[0]
    ov_prev = metrics.update_overlaps(W, M, k=40)
    assert ov_prev.right[:, 0].sum() == pytest.approx(1.0, abs=1e-4)  # v1(M) spread over W's basis
    with pytest.raises(ValueError, match="same shape"):
        metrics.update_overlaps(W, M[:, :3])


def test_train_steps_gd_is_plain_gradient_descent():
    cfg = HeavyTailsConfig(d=20, h=30, n=40, n_test=10, steps=2)
    p = make_problem(cfg, 0)
    Ws = [W for _, W in train_steps(cfg, p, "gd", 0.5)]
    W0 = p.init_state["first.weight"].clone().requires_grad_(True)
    a = p.init_state["a"]
    loss = torch.mean((torch.tanh(p.X @ W0.T / math.sqrt(20)) @ a / math.sqrt(30) - p.y) ** 2)
    (grad,) = torch.autograd.grad(loss, W0)
    torch.testing.assert_close(Ws[1], W0.detach() - 0.5 * grad, rtol=1e-5, atol=1e-6)
    assert len(Ws) == 3
    with pytest.raises(ValueError, match="unknown optimizer"):
        list(train_steps(cfg, p, "lbfgs", 1.0))


def test_quick_run_writes_outputs_and_one_adam_step_makes_a_teacher_aligned_spike(tmp_path):
    from spectralens.experiments.heavy_tails import config_for, run

    out = run(tmp_path, quick=True, seed=0, log=lambda *_: None)
    for name in ("results.json", "summary.md", "heavy_tails_esd.png", "heavy_tails_vs_lr.png",
                 "heavy_tails_overlaps.png"):
        assert (tmp_path / name).exists(), name
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["claims"] and all({"claim", "measured", "held"} <= set(c) for c in data["claims"])
    cfg = config_for(True)
    runs = {(r["optimizer"], r["lr"]): {s["step"]: s for s in r["steps"]} for r in out["results"]["runs"]}
    init, one = runs[("adam", 1.0)][0], runs[("adam", 1.0)][1]
    # What must hold at small scale: one large Adam step puts an outlier far above the
    # bulk (lambda1/lambda2 >> 1 at init) whose direction carries beta* far above chance.
    assert init["spike_ratio"] < 1.5 and one["spike_ratio"] > 3.0
    assert one["beta_alignment"] > 5 / math.sqrt(cfg.d)
    # ... and tiny GD steps leave the spectrum where it was.
    tiny = runs[("gd", 0.001)][cfg.steps]
    assert abs(tiny["hill_alpha"] / init["hill_alpha"] - 1) < 0.01
