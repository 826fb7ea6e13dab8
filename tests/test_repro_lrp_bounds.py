"""lrp-bounds reproduction: weight scaling, augmentations, deviation statistics, a tiny run end to end."""
import json
import math
import sys

import numpy as np
import pytest
import torch

from spectralens.experiments.lrp_bounds.convergence import augment, deviation_curves, loglog_slope
from spectralens.experiments.lrp_bounds.scaling import parametrised_layers, scale_weights
from spectralens.experiments.lrp_bounds.setup import LRPBoundsConfig
from spectralens.nets.digits_cnn import DigitsCNN


def _net(seed=0, **kw):
    torch.manual_seed(seed)
    return DigitsCNN((4, 8), 16, **kw).eval()


@pytest.mark.parametrize("c", [0.5, 2.0, 3.0])
def test_scale_weights_scales_the_function_by_c_to_the_depth(c):
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scaled = scale_weights(net, c)
    x = torch.rand(5, 1, 8, 8)
    L = len(parametrised_layers(net))
    assert L == 4
    torch.testing.assert_close(scaled(x), c ** L * net(x), rtol=1e-5, atol=1e-6)
    for depth, (a, b) in enumerate(zip(parametrised_layers(net), parametrised_layers(scaled)), start=1):
        torch.testing.assert_close(b.weight, c * a.weight)
        torch.testing.assert_close(b.bias, c ** depth * a.bias)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # the original is untouched


def test_scale_weights_refuses_bad_scales_and_batchnorm():
    with pytest.raises(ValueError, match="c must be > 0"):
        scale_weights(_net(), 0.0)
    with pytest.raises(ValueError, match="BatchNorm"):
        scale_weights(_net(batchnorm=True), 2.0)


def test_augmentations_shapes_ranges_and_determinism():
    cfg = LRPBoundsConfig()
    x = torch.rand(1, 1, 8, 8)
    sg = augment(x, 4000, "smoothgrad", cfg, torch.Generator().manual_seed(0))
    assert sg.shape == (4000, 1, 8, 8)
    assert float((sg.mean(0) - x[0]).abs().max()) < 5 * cfg.noise_sigma / math.sqrt(4000)
    assert abs(float((sg - x).std()) - cfg.noise_sigma) < 0.01
    jit = augment(x, 500, "jitter", cfg, torch.Generator().manual_seed(1))
    assert float(jit.min()) >= 0.0 and float(jit.max()) <= 1.0 and float(jit.std(0).mean()) > 0.01
    again = augment(x, 500, "jitter", cfg, torch.Generator().manual_seed(1))
    assert torch.equal(jit, again)
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(x, 2, "rotate", cfg, torch.Generator())


def test_loglog_slope_of_a_power_law():
    ts = [1, 2, 4, 8, 16]
    assert loglog_slope(ts, [3 * t ** -0.5 for t in ts]) == pytest.approx(-0.5)


def test_deviation_curves_on_iid_bounded_samples():
    """Uniform[-1, 1] components (B = 1, E = 0): rate -1/2, Hoeffding holds, statistics by hand."""
    g = torch.Generator().manual_seed(0)
    repeats, t_max, D, delta = 400, 64, 6, 0.05
    samples = 2 * torch.rand(repeats, t_max, D, generator=g, dtype=torch.float64) - 1
    ts = [1, 2, 4, 8, 16, 32, 64]
    out = deviation_curves(samples, torch.zeros(D, dtype=torch.float64), ts, delta, bound=1.0)
    assert -0.56 < out["slope_rms"] < -0.44
    assert out["ratio_max"] < 1 and max(out["exceed"]) <= delta
    # T = 8 by hand: the per-component 95% quantile of |mean of the first 8|, maximised over components
    dev8 = samples[:, :8].mean(1).abs().numpy()
    assert out["dev_q"][3] == pytest.approx(np.quantile(dev8, 0.95, axis=0).max(), rel=1e-9)
    assert out["rms"][0] == pytest.approx(math.sqrt(float((samples[:, 0] ** 2).mean())), rel=1e-9)
    assert out["hoeffding"][2] == pytest.approx(math.sqrt(2 * math.log(2 / delta) / 4))
    assert abs(out["rms"][0] - 1 / math.sqrt(3)) < 0.03  # std of U[-1, 1]


def test_tiny_run_writes_outputs_and_decides_every_claim(tmp_path):
    pytest.importorskip("sklearn")
    from spectralens.experiments.lrp_bounds import run

    cfg = LRPBoundsConfig(n_inputs=1, t_ref=512, repeats=16, t_max=8, epochs=3, chunk=512, scales=(0.5, 4.0))
    out = run(tmp_path, quick=True, seed=0, log=lambda *_: None, threads=1, config=cfg)
    for name in ("results.json", "summary.md", "lrp_bounds_convergence.png", "lrp_bounds_scaling.png",
                 "lrp_bounds_maps.png"):
        assert (tmp_path / name).exists(), name
    data = json.loads((tmp_path / "results.json").read_text())
    claims = data["claims"]
    assert len(claims) == 9 and all({"claim", "measured", "held"} <= set(c) for c in claims)
    assert all(isinstance(c["held"], bool) for c in claims)
    # exact maths, true at any size: Hoeffding's B covers the observed attributions, beta's
    # constant is weight-free, the gradient's grows like c^L, the scaled nets compute c^L f
    bound_claims = [c for c in claims if "Hoeffding's t(T)" in c["claim"]]
    assert len(bound_claims) == 3 and all(c["held"] for c in bound_claims)
    scaling = [c for c in claims if "weight norms" in c["claim"]]
    assert len(scaling) == 3 and all(c["held"] for c in scaling), scaling
    assert all(v < 1e-5 for v in out["results"]["scaling"]["homogeneity"].values())
    summ = out["results"]["scaling"]["summary"]
    growth = summ["gradient"]["growth_min"]
    assert growth == pytest.approx(8.0 ** 4, rel=1e-3)


def test_cli_without_scikit_learn_exits_2_naming_the_extra(tmp_path, monkeypatch, capsys):
    from spectralens.cli import main

    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert main(["repro", "lrp-bounds", "--quick", "--out", str(tmp_path)]) == 2
    assert "pip install spectralens[lrp]" in capsys.readouterr().err
