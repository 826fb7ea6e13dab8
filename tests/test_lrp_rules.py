"""Rules against plain re-implementations of their formulas (dense layer, explicit sums over
input j and output k), and conservation sum_i R_i = R_out where the theory says it holds."""
import pytest
import torch
from torch import nn

from spectralens import lrp
from spectralens.lrp import rules


def s(z, eps):
    return z + eps if z >= 0 else z - eps


def pos(v):
    return max(v, 0.0)


def neg(v):
    return min(v, 0.0)


def reference(rule, W, b, x, R):
    """R_j for one sample, straight from the docstring formulas (W: (out, in), b: (out,), x: (in,))."""
    n_out, n_in = W.shape
    out = torch.zeros(n_in, dtype=torch.float64)
    for k in range(n_out):
        w = [float(W[k, j]) for j in range(n_in)]
        xs = [float(v) for v in x]
        bk, Rk = float(b[k]), float(R[k])
        z = sum(xs[j] * w[j] for j in range(n_in)) + bk
        if isinstance(rule, rules.Epsilon):
            d = s(z, rule.epsilon)
            contrib = [xs[j] * w[j] / d * Rk for j in range(n_in)]
        elif isinstance(rule, rules.Gamma):
            g = rule.gamma
            if z > 0:
                wa = [wj + g * pos(wj) for wj in w]   # for x+
                wb = [wj + g * neg(wj) for wj in w]   # for x-
                bias = bk + g * pos(bk)
            elif z < 0:
                wa = [wj + g * neg(wj) for wj in w]
                wb = [wj + g * pos(wj) for wj in w]
                bias = bk + g * neg(bk)
            else:
                continue
            parts = [pos(xs[j]) * wa[j] + neg(xs[j]) * wb[j] for j in range(n_in)]
            d = s(sum(parts) + bias, rule.stabilizer)
            contrib = [p / d * Rk for p in parts]
        elif isinstance(rule, (rules.ZPlus, rules.AlphaBeta)):
            zp_j = [pos(xs[j]) * pos(w[j]) + neg(xs[j]) * neg(w[j]) for j in range(n_in)]
            zn_j = [pos(xs[j]) * neg(w[j]) + neg(xs[j]) * pos(w[j]) for j in range(n_in)]
            zp, zn = sum(zp_j) + pos(bk), sum(zn_j) + neg(bk)
            if isinstance(rule, rules.ZPlus):
                beta = 0.0
            elif isinstance(rule, rules.AdaptiveBeta):
                beta = min(-zn / (zp + zn), rule.beta_max) if zp + zn > 0 else rule.beta_max
            else:
                beta = rule.beta
            st = rule.stabilizer
            contrib = [((1 + beta) * zp_j[j] / s(zp, st) - beta * zn_j[j] / s(zn, st)) * Rk for j in range(n_in)]
        elif isinstance(rule, rules.ZBox):
            lo, hi = rule.low, rule.high
            parts = [xs[j] * w[j] - lo * pos(w[j]) - hi * neg(w[j]) for j in range(n_in)]
            d = s(sum(parts), rule.stabilizer)
            contrib = [p / d * Rk for p in parts]
        elif isinstance(rule, rules.WSquare):
            d = s(sum(wj * wj for wj in w) + bk * bk, rule.stabilizer)
            contrib = [wj * wj / d * Rk for wj in w]
        elif isinstance(rule, rules.Flat):
            contrib = [Rk / s(float(n_in), rule.stabilizer)] * n_in
        else:
            raise AssertionError(rule)
        out += torch.tensor(contrib, dtype=torch.float64)
    return out


ALL = [rules.Epsilon(0.0), rules.Epsilon(0.3), rules.Gamma(0.25), rules.Gamma(1.0), rules.ZPlus(),
       rules.AlphaBeta(2.0, 1.0), rules.AlphaBeta(1.5, 0.5), rules.AdaptiveBeta(1.0), rules.AdaptiveBeta(0.2),
       rules.ZBox(-1.0, 1.0), rules.WSquare(), rules.Flat()]


@pytest.mark.parametrize("rule", ALL, ids=repr)
def test_rule_matches_formula(rule):
    torch.manual_seed(0)
    layer = nn.Linear(6, 4).double()
    x = torch.rand(3, 6, dtype=torch.float64) * 2 - 1   # signed inputs: exercises the x- terms
    R = torch.randn(3, 4, dtype=torch.float64)
    (got,) = rule.relevance(layer, (x,), R)
    want = torch.stack([reference(rule, layer.weight.detach(), layer.bias.detach(), x[i], R[i]) for i in range(3)])
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)


def test_adaptive_beta_uncapped_is_lrp0():
    """beta_k = -z-_k / z_k turns alpha-beta into z_jk / z_k (LRP-0) on units with z_k > 0."""
    torch.manual_seed(1)
    layer = nn.Linear(8, 5, bias=False).double()
    x = torch.rand(4, 8, dtype=torch.float64)
    R = torch.randn(4, 5, dtype=torch.float64)
    z = layer(x).detach()
    R = R * (z > 0)                                   # only units with z_k > 0 carry relevance
    (ada,) = rules.AdaptiveBeta(beta_max=1e9, stabilizer=0.0).relevance(layer, (x,), R)
    (eps0,) = rules.Epsilon(0.0).relevance(layer, (x,), R)
    torch.testing.assert_close(ada, eps0, atol=1e-12, rtol=1e-10)


def test_norm_and_pass():
    pool = nn.AvgPool2d(2)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    R = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    (got,) = rules.Norm(0.0).relevance(pool, (x,), R)
    z = pool(x)
    want = x * (R / z).repeat_interleave(2, -1).repeat_interleave(2, -2) / 4
    torch.testing.assert_close(got, want)
    a, b = torch.rand(5, dtype=torch.float64), torch.rand(5, dtype=torch.float64)
    r = torch.randn(5, dtype=torch.float64)
    ra, rb = rules.Norm(0.0).relevance(lrp.Sum(), (a, b), r)
    torch.testing.assert_close(ra, a / (a + b) * r)
    torch.testing.assert_close(ra + rb, r)
    assert rules.Pass().relevance(nn.ReLU(), (x,), x * 2)[0] is not None


@pytest.mark.parametrize("bad", [
    lambda: rules.Epsilon(-1.0), lambda: rules.Gamma(float("nan")), lambda: rules.AlphaBeta(2.0, 0.5),
    lambda: rules.AlphaBeta(-1.0, -2.0), lambda: rules.ZBox(1.0, 0.0), lambda: rules.AdaptiveBeta(-0.1),
])
def test_rule_arguments_validated(bad):
    with pytest.raises(ValueError):
        bad()


# ----------------------------------------------------------------------------- conservation
def nobias_cnn():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 8, 3, bias=False), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 24, bias=False), nn.ReLU(), nn.Linear(24, 5, bias=False)).double()


class Residual(nn.Module):
    """Linear -> ReLU -> (Linear -> ReLU) + skip via lrp.Sum -> Linear, no biases."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 10, bias=False)
        self.branch = nn.Sequential(nn.Linear(10, 10, bias=False), nn.ReLU())
        self.add = lrp.Sum()
        self.act = nn.ReLU()
        self.head = nn.Linear(10, 3, bias=False)
        self.double()

    def forward(self, x):
        h = self.act(self.inp(x))
        return self.head(self.add(h, self.branch(h)))


@pytest.mark.parametrize("opts", [dict(rule="epsilon", epsilon=0.0),
                                  dict(rule="epsilon", epsilon=0.0, input_rule="flat"),
                                  dict(rule="epsilon", epsilon=0.0, input_rule="wsquare")],
                         ids=["lrp0", "flat", "wsquare"])
@pytest.mark.parametrize("make,shape", [(nobias_cnn, (3, 1, 12, 12)), (Residual, (3, 6))], ids=["cnn", "residual"])
def test_conservation_without_bias(make, shape, opts):
    """LRP-0 (and Flat/WSquare on the input layer) through conv, max/avg pooling, ReLU and lrp.Sum."""
    model = make()
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ex = lrp.explain(model, x, [0, 1, 2], stabilizer=0.0, **opts)   # stabiliser 0: nothing absorbed (0/0 := 0)
    torch.testing.assert_close(ex.relevance_sum, ex.output_relevance, atol=1e-10, rtol=1e-10)
    assert ex.conservation_error.abs().max() < 1e-10


@pytest.mark.parametrize("rule", [rules.AlphaBeta(2.0, 1.0, 0.0), rules.AlphaBeta(1.25, 0.25, 0.0),
                                  rules.AdaptiveBeta(0.7, 0.0), rules.ZPlus(0.0)], ids=repr)
def test_alpha_beta_conserves_per_unit(rule):
    """sum_j M_jk = alpha - beta = 1 for every unit with z+_k > 0 > z-_k (no bias); a unit with only
    positive contributions would return alpha R_k instead (the known non-conservation)."""
    torch.manual_seed(5)
    layer = nn.Linear(12, 7, bias=False).double()
    x = torch.randn(4, 12, dtype=torch.float64)
    R = torch.randn(4, 7, dtype=torch.float64)
    (got,) = rule.relevance(layer, (x,), R)
    torch.testing.assert_close(got.sum(1), R.sum(1), atol=1e-12, rtol=1e-10)


def test_epsilon_absorbs_relevance():
    """A large epsilon loses relevance: |sum R| < |R_out|."""
    model = nobias_cnn()
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    ex = lrp.explain(model, x, [0, 1], rule="epsilon", epsilon=1.0)
    assert (ex.relevance_sum.abs() < ex.output_relevance.abs()).all()
