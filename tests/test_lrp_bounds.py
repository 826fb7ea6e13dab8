"""lrp.bounds: per-layer singular-value bounds, component-wise attribution bounds, method constants under
weight scaling, Hoeffding deviation. Bounds are derived (docs/lrp-bounds.md); these tests check that they
hold on random, trained-ish and scaled networks, and that some are attained."""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from spectralens import lrp
from spectralens.lrp import bounds
from spectralens.lrp.matrices import layer_matrices

R_RULES = [("zplus", {}), ("alpha_beta", {"beta": 1.0}), ("alpha_beta", {"beta": 0.25}), ("gamma", {"gamma": 0.25}),
           ("gamma", {"gamma": 2.0}), ("adaptive_beta", {"beta_max": 0.5}), ("alpha_beta", {"input_rule": "flat"}),
           ("zplus", {"input_rule": "wsquare"}), ("alpha_beta", {"input_rule": "zb", "low": -5.0, "high": 5.0})]
C_RULES = [("gradient", {}), ("gradient_x_input", {}), ("epsilon", {}), ("epsilon", {"epsilon": 0.5}), ("lrp0", {}),
           ("epsilon", {"input_rule": "zb", "low": -5.0, "high": 5.0}), ("epsilon", {"input_rule": "flat"})]
ALL = R_RULES + C_RULES


def _ids(case):
    return case[0] + "".join(f"-{k}={v}" for k, v in case[1].items())


def mlp(seed=0, bias=True):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4)).double()
    if not bias:
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
    return net.eval()


def cnn(seed=4):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 6),
                        nn.ReLU(), nn.Linear(6, 3)).double()
    with torch.no_grad():
        net[1].running_var.uniform_(0.5, 2.0), net[1].running_mean.uniform_(-0.5, 0.5)
    return net.eval()


def trained_mlp():
    """A few hundred Adam steps on Gaussian blobs: weights with trained-ish structure, in < 0.3 s."""
    g = torch.Generator().manual_seed(0)
    centers = 2.0 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (256,), generator=g)
    x = centers[y] + torch.randn(256, 6, generator=g, dtype=torch.float64)
    net = mlp(7).train()
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    assert (net(x).argmax(1) == y).double().mean() > 0.8
    return net.eval()


def scaled(net, c, biases=False):
    """Every Linear/Conv weight times c (biases too if asked; then BatchNorm-free nets are c^l homogeneous)."""
    net = copy.deepcopy(net)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(c)
                if biases and m.bias is not None:
                    m.bias.mul_(c)
    return net


def _x(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


NETS = {"mlp": (mlp, (1, 6)), "cnn": (cnn, (1, 1, 8, 8))}


@pytest.mark.parametrize("case", ALL, ids=_ids)
@pytest.mark.parametrize("net", ["mlp", "cnn"])
@pytest.mark.parametrize("c", [0.5, 4.0])
def test_layer_and_attribution_bounds_hold(net, case, c):
    rule, opts = case
    make, shape = NETS[net]
    model = scaled(make(), c)
    for seed in range(2):
        layers = layer_matrices(model, _x(shape, seed), rule, **opts)
        table = bounds.layer_bounds(layers, rule)
        assert table["holds"].all(), table[["layer", "sigma_max", "sigma_bound", "norm1", "norm1_bound"]]
        assert (table["sigma_bound"] <= table["sigma_bound_uniform"] * (1 + 1e-12)).all()
        assert (table["sigma_max"] <= table["holder"] * (1 + 1e-9)).all()  # sqrt(||M||_1 ||M||_inf)
        row = bounds.attribution_bound(layers).iloc[0]
        assert row["holds"] and row["observed_absmax"] <= row["B"] <= row["B_uniform"] * (1 + 1e-12)
        assert row["K_observed"] <= row["K"] * (1 + 1e-9) <= row["K_uniform"] * (1 + 1e-9)
        assert row["weight_free"] == (rule not in ("gradient", "gradient_x_input", "epsilon", "lrp0"))


@pytest.fixture(scope="module")
def trained():
    return trained_mlp()


@pytest.mark.parametrize("case", ALL, ids=_ids)
def test_bounds_hold_on_trained_net_for_many_inputs(case, trained):
    rule, opts = case
    for seed in range(6):
        x = 2.0 * _x((1, 6), 10 + seed)
        assert bounds.layer_bounds(layer_matrices(trained, x, rule, **opts))["holds"].all()
        assert bounds.attribution_bound(trained, x, rule, **opts)["holds"].all()


def test_lrp_beta_entries_and_column_sums():
    """Derived: without biases, column k sums to alpha z+/s(z+) - beta z-/s(z-): 1 (without stabiliser)
    when both parts are non-zero, alpha when the unit has no negative contribution (so "columns sum to 1"
    needs both signs), -beta with no positive one."""
    beta = 1.0
    layers = layer_matrices(mlp(bias=False), _x((1, 6), 3), "alpha_beta", beta=beta, stabilizer=0.0)
    for lm in layers:
        if lm.kind != "linear":
            continue
        assert lm.M.min() >= -beta and lm.M.max() <= 1 + beta
        a, W = lm.a_in, lm.W
        contrib = a[:, None] * W
        zp, zn = contrib.clamp(min=0).sum(0), contrib.clamp(max=0).sum(0)
        sums = lm.M.sum(0)
        both = (zp > 0) & (zn < 0)
        assert torch.allclose(sums[both], torch.ones_like(sums[both]), atol=1e-12)
        assert torch.allclose(sums[(zp > 0) & (zn == 0)], torch.full_like(sums[(zp > 0) & (zn == 0)], 1 + beta),
                              atol=1e-12)
        assert (lm.M.abs().sum(0) <= 1 + 2 * beta + 1e-12).all()


def test_zplus_sigma_bound_is_attained():
    """One input carries every positive contribution: every column is e_0, sigma = sqrt(n_out)."""
    lin = nn.Linear(3, 5, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0, -2.0]] * 5) * torch.arange(1.0, 6.0)[:, None])
    layers = layer_matrices(nn.Sequential(lin), torch.tensor([[1.0, 0.5, 0.2]], dtype=torch.float64), "zplus")
    row = bounds.layer_bounds(layers).iloc[0]
    assert row["sigma_bound"] == pytest.approx(math.sqrt(5))
    assert row["tightness"] == pytest.approx(1.0, abs=1e-5)


def test_gamma_column_bound_is_approached():
    """Derived: ||M||_1 <= 1 + 2/gamma, approached when z_k = P - N -> 0+ (P, N: positive/negative parts)."""
    lin = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0]]))
    for gamma in (0.25, 1.0):
        layers = layer_matrices(nn.Sequential(lin), torch.tensor([[1.0, 1.0 - 1e-5]], dtype=torch.float64), "gamma",
                                gamma=gamma, stabilizer=0.0)
        row = bounds.layer_bounds(layers).iloc[0]
        assert row["holds"] and row["norm1_bound"] == 1 + 2 / gamma
        assert row["norm1"] / row["norm1_bound"] > 0.999
        assert row["entry_max"] / (1 + 1 / gamma) > 0.999 and row["entry_min"] / (-1 / gamma) > 0.999


def test_epsilon_c_form_bound_and_gradient_equality():
    layers = layer_matrices(cnn(), _x((1, 1, 8, 8), 0), "epsilon", epsilon=0.5)
    table = bounds.layer_bounds(layers)
    lin = table[table.kind.isin(["linear", "conv2d"])]
    assert (lin.form == "c").all() and (lin.sigma_bound < lin.sigma_bound_uniform).all()  # max|z/s(z)| < 1
    grad = bounds.layer_bounds(layer_matrices(cnn(), _x((1, 1, 8, 8), 0), "gradient"))
    g = grad[grad.kind.isin(["linear", "conv2d"])]
    assert np.allclose(g.sigma_max, g.sigma_bound)  # the gradient's bound ||W||_2 is its sigma
    assert np.allclose(g.sigma_bound_uniform.values, lin.sigma_bound_uniform.values)


@pytest.mark.parametrize("biases", [False, True])
def test_constants_under_weight_scaling(biases):
    """LRP-beta's constant is (1+2 beta)^L for every c; the gradient's and epsilon's scale as c^L."""
    base = mlp(1, bias=not biases) if biases else mlp(1)
    x = _x((1, 6), 5)
    rows = {c: bounds.method_constants(scaled(base, c, biases), x, target=0).set_index("method")
            for c in (0.5, 1.0, 2.0, 4.0)}
    L = 3
    for c, df in rows.items():
        assert df["holds"].all()
        assert df.loc["lrp_beta", "K_uniform"] == pytest.approx(3.0 ** L, rel=1e-12)
        for m in ("gradient", "epsilon"):
            assert df.loc[m, "K_uniform"] == pytest.approx(c ** L * rows[1.0].loc[m, "K_uniform"], rel=1e-9)
        if biases:  # biases scaled too: positively homogeneous net, LRP-beta's matrices unchanged up to the
            # stabiliser 1e-6 (relative to z ~ c^l); ||M||_1 = alpha + beta is attained without biases
            assert df.loc["lrp_beta", "K_observed"] == pytest.approx(rows[1.0].loc["lrp_beta", "K_observed"], rel=1e-3)
    assert list(rows[1.0].index) == ["gradient", "epsilon", "lrp_beta"]


def test_residual_sum_bounds():
    torch.manual_seed(0)

    class Res(nn.Module):
        def __init__(self, relu_before_sum):
            super().__init__()
            self.a, self.ra, self.b, self.rb = nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU()
            self.add, self.out = lrp.Sum(), nn.Linear(5, 3)
            self.relu_before_sum = relu_before_sum

        def forward(self, x):
            h = self.ra(self.a(x))
            u = self.b(h)
            return self.out(self.add(self.rb(u) if self.relu_before_sum else u, h))

    x = _x((1, 4), 0)
    ok = Res(True).double().eval()
    for rule in ("gradient", "epsilon", "alpha_beta"):
        assert bounds.layer_bounds(layer_matrices(ok, x, rule))["holds"].all()
        assert bounds.attribution_bound(ok, x, rule)["holds"].all()
    # a summand with negative entries: the proportional split is unbounded, so no weight-free bound is claimed
    table = bounds.layer_bounds(layer_matrices(Res(False).double().eval(), x, "alpha_beta"))
    s = table[table.kind == "sum"].iloc[0]
    assert not s["assumption_holds"] and math.isnan(s["sigma_bound"]) and s["holds"] is None


def test_zb_outside_box_claims_nothing():
    layers = layer_matrices(mlp(), 3.0 * _x((1, 6), 0), "alpha_beta", input_rule="zb", low=-1.0, high=1.0)
    row = bounds.layer_bounds(layers).iloc[0]
    assert row["rule"] == "zb" and not row["assumption_holds"] and math.isnan(row["sigma_bound"])


def test_hoeffding():
    t = bounds.hoeffding_deviation(2.0, 100, 0.05)
    assert t == pytest.approx(2.0 * math.sqrt(2 * math.log(40) / 100))
    # the tail bound at that t equals delta
    assert 2 * math.exp(-100 * t ** 2 / (2 * 2.0 ** 2)) == pytest.approx(0.05)
    ts = bounds.hoeffding_deviation(1.0, np.array([1, 4, 16]))
    assert np.allclose(ts[:-1] / ts[1:], 2.0)  # 1/sqrt(T) rate
    assert bounds.hoeffding_deviation(1.0, 10, 0.05, components=64) > bounds.hoeffding_deviation(1.0, 10, 0.05)
    T = bounds.hoeffding_samples(2.0, t, 0.05)
    assert T in (100, 101) and bounds.hoeffding_deviation(2.0, T, 0.05) <= t * (1 + 1e-12)
    for bad in (dict(B=-1.0, T=4), dict(B=1.0, T=0), dict(B=1.0, T=4, delta=1.5), dict(B=math.inf, T=4)):
        with pytest.raises(ValueError):
            bounds.hoeffding_deviation(**bad)


def test_smoothgrad_samples_respect_the_uniform_gradient_bound():
    """The gradient's K_uniform holds for every input, so SmoothGrad samples lie in [-B, B] and the mean
    of T of them is within hoeffding_deviation(B, T) of the expectation (here: of a 2000-sample mean)."""
    model, x = mlp(2), _x((1, 6), 1)
    row = bounds.attribution_bound(model, x, "gradient").iloc[0]
    g = torch.Generator().manual_seed(0)
    noisy = x + 0.5 * torch.randn(2000, 6, generator=g, dtype=torch.float64)
    R = lrp.attribute(model, noisy, int(row["target"]), "gradient")
    assert float(R.abs().max()) <= row["B_uniform"]
    T = 16
    means = R[: 100 * T].reshape(100, T, 6).mean(1)
    dev = (means - R.mean(0)).abs().max()
    assert float(dev) <= bounds.hoeffding_deviation(row["B_uniform"], T, 0.05, components=6)


def test_convergence_table_and_errors():
    df = bounds.method_constants(mlp(), _x((1, 6), 0))
    conv = bounds.convergence_table(df, Ts=(1, 4), delta=0.1)
    assert list(conv.columns) == ["method", "T", "B", "deviation"] and len(conv) == 6
    with pytest.raises(ValueError, match="column"):
        bounds.convergence_table(df, column="nope")
    layers = layer_matrices(mlp(), _x((1, 6), 0), "zplus")
    with pytest.raises(ValueError, match="zplus"):
        bounds.layer_bounds(layers, "epsilon")
    with pytest.raises(TypeError):
        bounds.layer_bounds(list(layers))
    with pytest.raises(ValueError, match="either"):
        bounds.attribution_bound(layers, _x((1, 6), 0))
    assert bounds.singular_values(layers[0]).shape == (6,)  # min(n_in, n_out) = min(6, 10)


def test_sparse_column_singular_values_match_svd():
    """The O(n m) path for matrices with <= 1 nonzero per column equals a full SVD."""
    from spectralens.lrp.bounds import _svdvals

    g = torch.Generator().manual_seed(0)
    diag = torch.diag(torch.rand(7, generator=g, dtype=torch.float64) * (torch.rand(7, generator=g) > 0.3))
    routing = torch.zeros(12, 5, dtype=torch.float64)
    routing[torch.tensor([0, 3, 3, 7, 11]), torch.arange(5)] = 1.0  # two outputs read input 3
    for M in (diag, routing, routing.T.contiguous() * 0, torch.zeros(4, 6, dtype=torch.float64)):
        torch.testing.assert_close(_svdvals(M), torch.linalg.svdvals(M))
