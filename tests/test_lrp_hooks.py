"""Hooks, BatchNorm merge, errors and bad input: the user's model is unchanged afterwards;
unsupported layers and reused modules are named; batches equal single samples."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lrp_nets import randomize_batchnorm

from spectralens import lrp
from spectralens.lrp import composites, rules


def cnn(bn=True):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), *([nn.BatchNorm2d(4)] if bn else []), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Identity(), nn.Conv2d(4, 6, 3),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(24, 8),
                          *([nn.BatchNorm1d(8)] if bn else []), nn.ReLU(), nn.Linear(8, 5)).double()
    return randomize_batchnorm(model)


def x_cnn(n=3):
    return torch.rand(n, 1, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()},
        "params": {k: (id(p), p.requires_grad, p.grad) for k, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {n: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                      "forward" in vars(m)) for n, m in model.named_modules()},
        "bias_none": {n: getattr(m, "bias", 0) is None for n, m in model.named_modules()},
    }


def assert_same(before, after):
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        a, b = before["state"][k], after["state"][k]
        assert a.dtype == b.dtype and torch.equal(a, b), k   # bitwise
    assert before["params"] == after["params"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    assert before["bias_none"] == after["bias_none"]


@pytest.mark.parametrize("opts", [dict(rule="epsilon"), dict(rule="gradient"),
                                  dict(composite=composites.epsilon_gamma_box(0.0, 1.0)),
                                  dict(rule="alpha_beta", input_rule="zb", low=0.0, high=1.0)],
                         ids=["epsilon", "gradient", "gamma_box", "beta_zb"])
def test_model_unchanged(opts):
    model = cnn()
    model.train()                 # attribute runs in eval mode and restores the flags
    model[0].weight.requires_grad_(False)
    before = snapshot(model)
    lrp.attribute(model, x_cnn(), 2, **opts)
    assert_same(before, snapshot(model))


def test_model_unchanged_after_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    before = snapshot(model)
    with pytest.raises(lrp.UnsupportedLayerError):
        lrp.attribute(model, torch.rand(2, 4, dtype=torch.float64), 0)
    assert_same(before, snapshot(model))


def test_merge_batchnorm_restores_bitwise_and_keeps_outputs():
    model = cnn().eval()
    x = x_cnn()
    ref = model(x).detach()
    bias_free = nn.Sequential(nn.Linear(4, 3, bias=False), nn.BatchNorm1d(3)).double().eval()
    with torch.no_grad():
        bias_free[1].running_mean.uniform_(-1, 1)
    before, before_bf = snapshot(model), snapshot(bias_free)
    with lrp.merge_batchnorm(model) as pairs, lrp.merge_batchnorm(bias_free) as pairs_bf:
        assert len(pairs) == 2 and len(pairs_bf) == 1
        torch.testing.assert_close(model(x), ref, atol=1e-12, rtol=1e-12)
        assert bias_free[0].bias is not None
    assert_same(before, snapshot(model))
    assert_same(before_bf, snapshot(bias_free))
    assert bias_free[0].bias is None


class CustomOrder(nn.Module):
    """BN registered before its conv and a custom forward: registration order would mislead."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Linear(3 * 8 * 8, 4)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))   # functional relu and flatten: relevance by gradient
        return self.head(torch.flatten(h, 1))


def test_traced_merge_custom_forward():
    model = CustomOrder().double().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    with lrp.merge_batchnorm(model) as pairs:
        assert pairs == []                                 # not in an nn.Sequential: untraced, not merged
    with lrp.merge_batchnorm(model, example_input=x[:1]) as pairs:
        assert pairs == [(model.conv, model.bn)]
    before = snapshot(model)
    rel = lrp.attribute(model, x, [0, 3])
    assert rel.shape == x.shape and torch.isfinite(rel).all()
    assert_same(before, snapshot(model))


def test_unmerged_batchnorm_is_refused_by_lrp_context():
    model = cnn()
    with pytest.raises(lrp.UnsupportedLayerError, match=r"'1'.*BatchNorm2d.*merge_batchnorm"):
        with lrp.lrp_context(model, composites.epsilon_plus()):
            pass
    with pytest.raises(lrp.UnsupportedLayerError):
        lrp.attribute(model, x_cnn(), 0, merge_bn=False)


@pytest.mark.parametrize("layer,match", [(nn.Tanh(), "Tanh"), (nn.Softmax(dim=1), "remove the softmax"),
                                         (nn.LayerNorm(4), "LayerNorm")])
def test_unsupported_layer_named(layer, match):
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(layer), nn.Linear(4, 2)).double()
    with pytest.raises(lrp.UnsupportedLayerError, match=r"'1\.0'") as info:
        lrp.attribute(model, torch.rand(2, 4, dtype=torch.float64), 0)
    assert isinstance(info.value, TypeError)
    assert match in str(info.value) and "Supported: Linear" in str(info.value)


class Reshape(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], -1)


def test_custom_reshape_by_gradient_rule():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), Reshape(), nn.Linear(2 * 4 * 4, 3)).double()
    x = torch.rand(2, 1, 6, 6, dtype=torch.float64)
    with pytest.raises(lrp.UnsupportedLayerError, match="'2'.*Reshape.*Gradient"):
        lrp.attribute(model, x, 0)
    ours = lrp.attribute(model, x, 0, rules={"2": rules.Gradient()})
    ref = nn.Sequential(model[0], model[1], nn.Flatten(), model[3])
    torch.testing.assert_close(ours, lrp.attribute(ref, x, 0))


def test_unsupported_layer_can_be_assigned_by_name():
    model = nn.Sequential(nn.Linear(4, 4), nn.LeakyReLU(), nn.Linear(4, 2)).double()
    x = torch.rand(2, 4, dtype=torch.float64)
    rel = lrp.attribute(model, x, 0, rules={"1": rules.Pass()})
    assert rel.shape == x.shape
    with pytest.raises(ValueError, match="not in the model"):
        lrp.attribute(model, x, 0, rules={"nope": rules.Pass()})
    with pytest.raises(lrp.UnsupportedLayerError, match="applies to Linear"):
        lrp.attribute(model, x, 0, rules={"1": rules.ZPlus()})


class Reuse(nn.Module):
    def __init__(self, reuse_linear):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.relu = nn.ReLU()              # reused below: fine (Pass rule, per-call relevance)
        self.out = nn.Linear(4, 2)
        self.reuse_linear = reuse_linear

    def forward(self, x):
        h = self.relu(self.fc(x))
        h = self.relu(self.fc(h)) if self.reuse_linear else self.relu(h)
        return self.out(h)


def test_module_reuse():
    x = torch.rand(2, 4, dtype=torch.float64)
    with pytest.raises(lrp.ModuleReuseError, match="'fc'.*Linear.*twice"):
        lrp.attribute(Reuse(True).double(), x, 0)
    rel = lrp.attribute(Reuse(False).double(), x, 0, rule="epsilon", epsilon=0.0)   # reused ReLU
    model = Reuse(False).double()
    twin = nn.Sequential(model.fc, nn.ReLU(), nn.ReLU(), model.out)
    torch.testing.assert_close(lrp.attribute(model, x, 1), lrp.attribute(twin, x, 1))
    assert torch.isfinite(rel).all()


@pytest.mark.parametrize("opts", [dict(rule="epsilon", epsilon=0.01), dict(rule="gamma"), dict(rule="adaptive_beta"),
                                  dict(composite=composites.epsilon_alpha2_beta1_flat()),
                                  dict(rule="gradient_x_input")],
                         ids=["epsilon", "gamma", "adaptive", "ab_flat", "gxi"])
def test_batch_equals_single(opts):
    model, x = cnn(), x_cnn(4)
    target = torch.tensor([0, 3, 1, 4])
    batch = lrp.attribute(model, x, target, **opts)
    single = torch.cat([lrp.attribute(model, x[i:i + 1], int(target[i]), **opts) for i in range(4)])
    torch.testing.assert_close(batch, single, atol=1e-12, rtol=1e-10)


class Functional(nn.Module):
    def __init__(self, seq):
        super().__init__()
        self.c1, self.c2, self.fc = seq[0], seq[3], seq[6]

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        h = F.relu(self.c2(h))
        return self.fc(torch.flatten(h, 1))


def test_functional_relu_flatten_maxpool_by_gradient():
    torch.manual_seed(2)
    seq = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64)
    for opts in (dict(rule="epsilon"), dict(rule="zplus"), dict(rule="alpha_beta")):
        torch.testing.assert_close(lrp.attribute(Functional(seq), x, 1, **opts), lrp.attribute(seq, x, 1, **opts))


def test_gradient_rules():
    model, x = cnn(bn=False), x_cnn(2)
    xg = x.clone().requires_grad_(True)
    model.eval()
    (g,) = torch.autograd.grad(model(xg)[:, 2].sum(), xg)
    torch.testing.assert_close(lrp.attribute(model, x, 2, rule="gradient"), g)
    torch.testing.assert_close(lrp.attribute(model, x, 2, rule="gradient_x_input"), g * x)


def test_lrp0_without_bias_is_gradient_x_input():
    """With eps = 0 and no biases, LRP-0 on a ReLU MLP equals gradient x input (reference note)."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False)).double()
    x = torch.rand(3, 6, dtype=torch.float64)
    torch.testing.assert_close(lrp.attribute(model, x, 1, rule="lrp0", stabilizer=0.0),
                               lrp.attribute(model, x, 1, rule="gradient_x_input"))


def test_explanation_fields_and_targets():
    model, x = cnn(), x_cnn(3)
    ex = lrp.explain(model, x, [4, 0, 2], rule="alpha_beta", beta=1.0)
    logits = copy.deepcopy(model).eval()(x).detach()
    torch.testing.assert_close(ex.output_relevance, logits[[0, 1, 2], [4, 0, 2]])
    torch.testing.assert_close(ex.relevance_sum, ex.relevance.sum((1, 2, 3)))
    torch.testing.assert_close(ex.conservation_error, ex.relevance_sum - ex.output_relevance)
    assert "AlphaBeta(alpha=2.0, beta=1.0" in ex.rule
    for t in ([4, 0, 2], (4, 0, 2), torch.tensor([4, 0, 2]), torch.tensor([4, 0, 2], dtype=torch.int32)):
        torch.testing.assert_close(lrp.attribute(model, x, t, rule="alpha_beta", beta=1.0), ex.relevance)
    one = lrp.attribute(model, x, 3, rule="epsilon")
    torch.testing.assert_close(lrp.attribute(model, x, np.int64(3), rule="epsilon"), one)  # numpy scalar
    torch.testing.assert_close(lrp.attribute(model, x, np.array([3, 3, 3]), rule="epsilon"), one)


@pytest.mark.parametrize("inputs,target,match", [
    (torch.full((2, 1, 12, 12), float("nan"), dtype=torch.float64), 0, "NaN"),
    (torch.rand(2, 1, 12, 12, dtype=torch.float64), 5, "out of range"),
    (torch.rand(2, 1, 12, 12, dtype=torch.float64), -1, "out of range"),
    (torch.rand(2, 1, 12, 12, dtype=torch.float64), [0, 1, 2], "3 entries for a batch of 2"),
    (torch.rand(2, 1, 12, 12, dtype=torch.float64), torch.tensor([0.0, 1.0]), "integers"),
    (torch.rand(2, 1, 12, 12, dtype=torch.float64), True, "not bool"),
    (torch.rand(2, 1, 12, 12, dtype=torch.float64), "cat", "int"),
    (torch.rand(2, 1, 4, 4, dtype=torch.float64), 0, "forward failed"),
    (torch.rand(2, 1, 12, 12), 0, "forward failed"),     # float32 input, float64 model
    (torch.rand(12, 12, dtype=torch.float64), 0, "batch dimension first"),
    (torch.zeros(2, 1, 12, 12, dtype=torch.long), 0, "floating point"),
    ([[1.0]], 0, "torch.Tensor"),
])
def test_bad_input(inputs, target, match):
    with pytest.raises(ValueError, match=match):
        lrp.attribute(cnn(), inputs, target)


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(rule="nope"), ValueError, "unknown rule"),
    (dict(rule="epsilon", gamma=0.2), TypeError, "does not take"),
    (dict(rule="epsilon", input_rule="zb"), ValueError, "low= and high="),
    (dict(rule="epsilon", input_rule="zb", low=0.5, high=1.0), ValueError, "outside"),
    (dict(rule="epsilon", input_rule="zb", low=torch.zeros(3), high=1.0), ValueError, "broadcast"),
    (dict(rule="epsilon", composite=composites.epsilon_plus()), ValueError, "either composite"),
    (dict(rule="alpha_beta", alpha=3.0, beta=1.0), ValueError, "alpha - beta"),
])
def test_bad_options(kwargs, err, match):
    with pytest.raises(err, match=match):
        lrp.attribute(cnn(), x_cnn(2), 0, **kwargs)


def test_lrp_context_direct_use_and_assignments():
    model, x = cnn(bn=False), x_cnn(2)
    with lrp.lrp_context(model, composites.epsilon_gamma_box(0.0, 1.0)) as ctx:
        xg = x.clone().requires_grad_(True)
        out = model(xg)
        (rel,) = torch.autograd.grad(out, xg, torch.eye(5, dtype=out.dtype)[[1, 1]] * out.detach())
        assert ctx.input_layer == "0"
        assert isinstance(ctx.assignments["0"], rules.ZBox) and isinstance(ctx.assignments["4"], rules.Gamma)
        assert isinstance(ctx.assignments["9"], rules.Epsilon) and ctx.assignments["2"] is None
        model(xg)                                   # a second forward resets the per-forward bookkeeping
    torch.testing.assert_close(rel, lrp.attribute(model, x, 1, composite=composites.epsilon_gamma_box(0.0, 1.0)))
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_sum_module():
    s = lrp.Sum()
    a, b = torch.rand(3), torch.rand(3)
    torch.testing.assert_close(s(a, b), a + b)
    with pytest.raises(ValueError, match="equal shapes"):
        s(a, torch.rand(4))
    with pytest.raises(ValueError, match="at least two"):
        s(a)


def test_single_layer_root_and_nested_context():
    torch.manual_seed(0)
    layer = nn.Linear(5, 3).double()
    x = torch.rand(2, 5, dtype=torch.float64)
    z = layer(x).detach()
    rel = lrp.attribute(layer, x, 1, rule="epsilon", epsilon=0.0)
    torch.testing.assert_close(rel, x * layer.weight.detach()[1] * (z[:, 1:2] / z[:, 1:2]))
    with lrp.lrp_context(layer, composites.epsilon_plus()):
        with pytest.raises(RuntimeError, match="already inside"):
            with lrp.lrp_context(layer, composites.epsilon_plus()):
                pass
    assert not layer._forward_hooks and not layer._forward_pre_hooks
    torch.testing.assert_close(lrp.attribute(layer, x, torch.tensor(1)), lrp.attribute(layer, x, [1, 1]))
