"""lrp.layer_matrices / lrp.chain: explicit modified-gradient matrices equal lrp.attribute (float64, 1e-8),
and a plain-loop reference of every rule's formula on an MLP (independent of both implementations)."""
import math

import pytest
import torch
from lrp_nets import ResidualConv1d
import torch.nn.functional as F
from torch import nn

from spectralens import lrp
from spectralens.lrp.matrices import layer_matrices, chain

TOL = 1e-8
RULES = [
    ("gradient", {}), ("gradient_x_input", {}), ("epsilon", {}), ("epsilon", {"epsilon": 0.25}), ("lrp0", {}),
    ("gamma", {"gamma": 0.25}), ("zplus", {}), ("alpha_beta", {"beta": 1.0}), ("alpha_beta", {"alpha": 1.5}),
    ("adaptive_beta", {"beta_max": 0.5}), ("epsilon", {"input_rule": "zb", "low": -4.0, "high": 4.0}),
    ("alpha_beta", {"input_rule": "flat"}), ("zplus", {"input_rule": "wsquare", "stabilizer": 1e-4}),
]


def _ids(case):
    rule, opts = case
    return rule + "".join(f"-{k}={v}" for k, v in opts.items())


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 4)).double().eval()


def cnn(seed=4, bn=True):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 3, 3, padding=1)] + ([nn.BatchNorm2d(3)] if bn else []) + [
        nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3)]
    net = nn.Sequential(*layers).double()
    if bn:
        with torch.no_grad():
            b = net[1]
            b.running_mean.uniform_(-0.5, 0.5), b.running_var.uniform_(0.5, 2.0)
            b.weight.uniform_(0.5, 1.5), b.bias.uniform_(-0.3, 0.3)
    return net.eval()


def _x(shape, seed=1):
    torch.manual_seed(seed)
    return torch.randn(*shape, dtype=torch.float64)


@pytest.mark.parametrize("case", RULES, ids=_ids)
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_chain_equals_attribute(net, case):
    rule, opts = case
    model, x = (mlp(), _x((1, 6))) if net == "mlp" else (cnn(), _x((1, 1, 8, 8)))
    layers = layer_matrices(model, x, rule, **opts)
    ref = lrp.attribute(model, x, layers.target, rule, **opts)
    assert ref.abs().max() > 1e-6  # a non-trivial attribution
    got = chain(layers)
    assert got.shape == x.shape and got.dtype == torch.float64
    assert torch.allclose(got, ref, atol=TOL, rtol=0)
    for t in range(layers.logits.numel()):  # every target from the same matrices
        assert torch.allclose(chain(layers, t), lrp.attribute(model, x, t, rule, **opts), atol=TOL, rtol=0)


@pytest.mark.parametrize("rule", ["gradient", "epsilon", "alpha_beta", "gamma"])
def test_residual_sum_and_conv1d(rule):
    model, x = ResidualConv1d().double().eval(), _x((1, 2, 8))
    layers = layer_matrices(model, x, rule)
    assert [lm.kind for lm in layers].count("sum") == 1
    s = next(lm for lm in layers if lm.kind == "sum")
    assert len(s.inputs) == 2 and s.M.shape == (2 * s.n_out, s.n_out)
    assert torch.allclose(chain(layers), lrp.attribute(model, x, layers.target, rule), atol=TOL, rtol=0)


def test_linear_batchnorm1d_merged_and_names():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1), model[1].running_var.uniform_(0.5, 2)
    model.eval()
    x = _x((1, 5))
    layers = layer_matrices(model, x, "alpha_beta")
    assert [lm.name for lm in layers] == ["0+1", "2", "3"]
    assert torch.allclose(chain(layers), lrp.attribute(model, x, layers.target, "alpha_beta"), atol=TOL, rtol=0)


def test_per_layer_relevance_is_consistent():
    layers = layer_matrices(cnn(), _x((1, 1, 8, 8)), "epsilon")
    for k, lm in enumerate(layers):
        assert torch.allclose(lm.R_in, lm.M @ lm.R_out, atol=1e-14)
        if k + 1 < len(layers):
            assert torch.allclose(layers[k + 1].R_in, lm.R_out, atol=1e-14)
        assert lm.M.dtype == torch.float64 and lm.M.shape == (lm.a_in.numel(), lm.z.numel())
    assert torch.allclose(layers[0].R_in.reshape(1, 1, 8, 8), chain(layers), atol=1e-14)
    assert torch.equal(layers[-1].R_out, layers.R_out)


@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_c_form_epsilon_is_x_times_shrunken_gradient(eps):
    model, x = cnn(), _x((1, 1, 8, 8))
    layers = layer_matrices(model, x, "epsilon", epsilon=eps)
    onehot = torch.zeros(3, dtype=torch.float64)
    onehot[layers.target] = 1.0
    assert torch.allclose(x * chain(layers, onehot, form="c"), chain(layers), atol=TOL, rtol=0)
    grad = layer_matrices(model, x, "gradient")
    assert torch.allclose(chain(grad, onehot, form="c"), lrp.attribute(model, x, grad.target, "gradient"), atol=TOL)


def test_adaptive_beta_uncapped_is_lrp0():
    """Derived: beta_k = -z-_k / z_k makes (1+beta) z+_jk/z+_k - beta z-_jk/z-_k = z_jk / z_k."""
    model, x = mlp(2), _x((1, 6), 4)
    lrp0 = layer_matrices(model, x, "lrp0")
    t = int(lrp0.logits.argmax())
    assert lrp0.logits[t] > 0
    ada = layer_matrices(model, x, "adaptive_beta", beta_max=1e12, stabilizer=0.0, target=t)
    assert torch.allclose(chain(ada), chain(lrp0), atol=1e-10, rtol=0)


# ---------------------------------------------------------------- plain-loop reference (MLP, every rule)
def _s(z, eps):
    return z + eps * (1.0 if z >= 0 else -1.0)


def _q(num, den):
    return 0.0 if den == 0 else num / den


def _ref_linear(rule, a, W, b, R, o):
    """R_in_j for one Linear layer, element by element from the rule's formula (W: (out, in))."""
    n_out, n_in = len(W), len(W[0])
    pos = [[max(a[j], 0) * max(W[k][j], 0) + min(a[j], 0) * min(W[k][j], 0) for j in range(n_in)] for k in range(n_out)]
    neg = [[max(a[j], 0) * min(W[k][j], 0) + min(a[j], 0) * max(W[k][j], 0) for j in range(n_in)] for k in range(n_out)]
    Rin = [0.0] * n_in
    for k in range(n_out):
        z = sum(a[j] * W[k][j] for j in range(n_in)) + b[k]
        zp, zn = sum(pos[k]) + max(b[k], 0), sum(neg[k]) + min(b[k], 0)
        for j in range(n_in):
            if rule == "epsilon":
                share = _q(a[j] * W[k][j], _s(z, o["epsilon"]))
            elif rule == "zplus":
                share = _q(pos[k][j], _s(zp, o["stabilizer"]))
            elif rule in ("alpha_beta", "adaptive_beta"):
                beta = o.get("beta", 0.0)
                if rule == "adaptive_beta":
                    beta = min(-zn / (zp + zn), o["beta_max"]) if zp + zn > 0 else o["beta_max"]
                share = ((1 + beta) * _q(pos[k][j], _s(zp, o["stabilizer"]))
                         - beta * _q(neg[k][j], _s(zn, o["stabilizer"])))
            elif rule == "gamma":
                g = o["gamma"]
                if z > 0:
                    den = z + g * zp
                    share = _q(a[j] * W[k][j] + g * pos[k][j], _s(den, o["stabilizer"]))
                elif z < 0:
                    den = z + g * zn
                    share = _q(a[j] * W[k][j] + g * neg[k][j], _s(den, o["stabilizer"]))
                else:
                    share = 0.0
            elif rule == "flat":
                share = _q(1.0, _s(float(n_in), o["stabilizer"]))
            elif rule == "wsquare":
                share = _q(W[k][j] ** 2, _s(sum(W[k][i] ** 2 for i in range(n_in)) + b[k] ** 2, o["stabilizer"]))
            elif rule == "zb":
                lo, hi = o["low"], o["high"]
                den = sum(a[i] * W[k][i] - lo * max(W[k][i], 0) - hi * min(W[k][i], 0) for i in range(n_in))
                share = _q(a[j] * W[k][j] - lo * max(W[k][j], 0) - hi * min(W[k][j], 0), _s(den, o["stabilizer"]))
            Rin[j] += share * R[k]
    return Rin


def _ref_mlp(model, x, target, rule, input_rule=None, **opts):
    o = {"epsilon": 1e-6, "stabilizer": 1e-6, "gamma": 0.25, "beta_max": 1.0, **opts}
    if rule == "lrp0":
        rule, o["epsilon"] = "epsilon", 0.0
    if rule == "alpha_beta":
        o["beta"] = o.get("beta", o.get("alpha", 2.0) - 1.0)
    acts = [x.reshape(-1).tolist()]
    for m in model:
        acts.append(m(torch.tensor(acts[-1], dtype=torch.float64)[None]).reshape(-1).tolist())
    logits = acts[-1]
    R = [0.0] * len(logits)
    R[target] = 1.0 if rule.startswith("gradient") else logits[target]
    for i in range(len(model) - 1, -1, -1):
        m, a = model[i], acts[i]
        if isinstance(m, nn.ReLU):
            R = [r * (1.0 if v > 0 else 0.0) for r, v in zip(R, a)] if rule.startswith("gradient") else R
            continue
        W, b = m.weight.tolist(), m.bias.tolist()
        if rule.startswith("gradient"):
            R = [sum(W[k][j] * R[k] for k in range(len(R))) for j in range(len(a))]
        else:
            R = _ref_linear(input_rule if (i == 0 and input_rule) else rule, a, W, b, R, o)
    if rule == "gradient_x_input":
        R = [r * v for r, v in zip(R, acts[0])]
    return torch.tensor(R, dtype=torch.float64).reshape(x.shape)


@pytest.mark.parametrize("case", RULES, ids=_ids)
def test_mlp_against_plain_loops(case):
    rule, opts = case
    model = mlp(1)
    with torch.no_grad():
        model[0].bias[:3] = torch.tensor([0.4, -0.3, 0.0])
    x = _x((1, 6), 2)
    layers = layer_matrices(model, x, rule, **opts)
    ref = _ref_mlp(model, x, layers.target, rule, **opts)
    assert ref.abs().max() > 1e-6
    assert torch.allclose(chain(layers), ref, atol=TOL, rtol=0)


# ---------------------------------------------------------------- inputs, limits and errors
def test_unbatched_input_and_model_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True), nn.Linear(5, 3))  # float32, in-place ReLU
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(6)
    layers = layer_matrices(model, x, "epsilon")
    assert chain(layers).shape == (6,)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).dtype == torch.float32 and model.training
    ref = lrp.attribute(model.double(), x.double()[None], layers.target, "epsilon")[0]
    assert torch.allclose(chain(layers), ref, atol=TOL, rtol=0)


def test_single_channel_image_without_batch_dimension():
    model, x = cnn(), _x((1, 1, 8, 8))
    layers = layer_matrices(model, x[0], "alpha_beta")  # (1, 8, 8): one channel, no batch dimension
    assert chain(layers).shape == (1, 8, 8)
    assert torch.allclose(chain(layers), lrp.attribute(model, x, layers.target, "alpha_beta")[0], atol=TOL, rtol=0)


def test_size_limit_names_the_layer():
    with pytest.raises(ValueError, match=r"layer '0' \(Conv2d\) needs a dense 64 x 192.*max_entries"):
        layer_matrices(cnn(), _x((1, 1, 8, 8)), "epsilon", max_entries=5000)


def test_functional_op_is_refused():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(F.relu(self.a(x)))

    with pytest.raises(ValueError, match=r"input of module 'b'.*functional"):
        layer_matrices(Bad(), torch.randn(1, 4), "epsilon")


def test_unsupported_layer_and_reuse():
    with pytest.raises(lrp.UnsupportedLayerError, match="Tanh"):
        layer_matrices(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)), torch.randn(1, 3))
    lin = nn.Linear(3, 3)
    with pytest.raises(lrp.ModuleReuseError):
        layer_matrices(nn.Sequential(lin, nn.ReLU(), lin, nn.Linear(3, 2)), torch.randn(1, 3))


@pytest.mark.parametrize("kwargs, err, match", [
    ({"rule": "nope"}, ValueError, "unknown rule"),
    ({"rule": "gradient", "epsilon": 0.1}, ValueError, "takes no"),
    ({"rule": "epsilon", "gamma": 0.1}, TypeError, "does not take"),
    ({"rule": "epsilon", "input_rule": "zb"}, ValueError, "low= and high="),
    ({"rule": "alpha_beta", "alpha": 3.0, "beta": 1.0}, ValueError, "alpha - beta = 1"),
    ({"rule": "epsilon", "epsilon": -1.0}, ValueError, "epsilon must be"),
])
def test_bad_options(kwargs, err, match):
    with pytest.raises(err, match=match):
        layer_matrices(mlp(), _x((1, 6)), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        layer_matrices(mlp(), torch.full((1, 6), math.nan, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(1, classes\)"):
        layer_matrices(mlp(), _x((2, 6)))
    layers = layer_matrices(mlp(), _x((1, 6)))
    with pytest.raises(ValueError, match="entries"):
        chain(layers, torch.ones(5))
    with pytest.raises(ValueError, match="target"):
        chain(layers, 7)
    with pytest.raises(ValueError, match="c-form"):
        chain(layer_matrices(mlp(), _x((1, 6)), "zplus"), form="c")
