"""Parity with Zennit 0.5.1 (test-only peer): same model, rules and output relevance
(``attr_output = onehot * logit``) give the same input relevance (float64: 1e-10; float32: 1e-5)."""
import pytest
import torch
from torch import nn

from lrp_nets import randomize_batchnorm

from spectralens import lrp
from spectralens.lrp import composites
from zennit_shim import import_zennit

zennit = import_zennit()
from zennit import rules as zr  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import (  # noqa: E402
    EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat, LayerMapComposite,
    SpecialFirstLayerMapComposite)
from zennit.types import Activation, AvgPool, BatchNorm  # noqa: E402
from zennit.types import Linear as ZLinear  # noqa: E402


def mlp(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5)).to(dtype)


def cnn(dtype=torch.float64, bn=False):
    torch.manual_seed(1)
    layers = [nn.Conv2d(1, 4, 3, padding=1), *( [nn.BatchNorm2d(4)] if bn else []), nn.ReLU(), nn.MaxPool2d(2),
              nn.Conv2d(4, 6, 3), *([nn.BatchNorm2d(6)] if bn else []), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
              nn.Linear(24, 8), *([nn.BatchNorm1d(8)] if bn else []), nn.ReLU(), nn.Linear(8, 5)]
    model = nn.Sequential(*layers).to(dtype)
    if bn:  # non-trivial statistics
        randomize_batchnorm(model)
    return model.eval()


def cnn1d(dtype=torch.float64):
    """Conv1d (stride, dilation, groups), BatchNorm1d, MaxPool1d, AvgPool1d, AdaptiveAvgPool1d, in-place ReLU."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(inplace=True), nn.MaxPool1d(2),
                          nn.Conv1d(4, 6, 3, stride=2, dilation=2, groups=2), nn.ReLU(), nn.AvgPool1d(2),
                          nn.AdaptiveAvgPool1d(2), nn.Flatten(), nn.Linear(12, 5)).to(dtype)
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
        model[1].eps = 1e-12
    return model.eval()


def data(model, dtype=torch.float64, n=4):
    g = torch.Generator().manual_seed(2)
    shape = {nn.Linear: (n, 10), nn.Conv2d: (n, 1, 12, 12), nn.Conv1d: (n, 2, 24)}[type(model[0])]
    x = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    return x, torch.arange(n) % 5


def zennit_relevance(model, composite, x, t):
    with Gradient(model, composite) as attributor:
        _, rel = attributor(x.clone(), lambda out: torch.zeros_like(out).scatter_(1, t[:, None], 1.0) * out)
    return rel


def base():
    return [(Activation, zr.Pass()), (AvgPool, zr.Norm()), (BatchNorm, zr.Pass())]


RULES = [
    ("epsilon", lambda: zr.Epsilon(1e-3), dict(rule="epsilon", epsilon=1e-3)),
    ("lrp0", lambda: zr.Epsilon(0.0), dict(rule="epsilon", epsilon=0.0)),
    ("gamma", lambda: zr.Gamma(0.25), dict(rule="gamma", gamma=0.25)),
    ("zplus", lambda: zr.ZPlus(), dict(rule="zplus")),
    ("alpha2_beta1", lambda: zr.AlphaBeta(2.0, 1.0), dict(rule="alpha_beta", alpha=2.0, beta=1.0)),
    ("lrp_beta_0.5", lambda: zr.AlphaBeta(1.5, 0.5), dict(rule="alpha_beta", beta=0.5)),
]


@pytest.mark.parametrize("make", [mlp, cnn, cnn1d], ids=["mlp", "cnn", "cnn1d"])
@pytest.mark.parametrize("name,zrule,ours", RULES, ids=[r[0] for r in RULES])
def test_rule_parity(make, name, zrule, ours):
    model = make()
    x, t = data(model)
    comp = LayerMapComposite(base() + [(ZLinear, zrule())], canonizers=[SequentialMergeBatchNorm()])
    theirs = zennit_relevance(model, comp, x, t)
    mine = lrp.attribute(model, x, t, **ours)
    assert theirs.abs().max() > 1e-3
    torch.testing.assert_close(mine, theirs, atol=1e-10, rtol=1e-8)


FIRST = [
    ("flat", lambda: zr.Flat(), dict(input_rule="flat")),
    ("wsquare", lambda: zr.WSquare(), dict(input_rule="wsquare")),
    ("zb", lambda: zr.ZBox(0.0, 1.0), dict(input_rule="zb", low=0.0, high=1.0)),
]


@pytest.mark.parametrize("make", [mlp, cnn, cnn1d], ids=["mlp", "cnn", "cnn1d"])
@pytest.mark.parametrize("name,zfirst,ours", FIRST, ids=[r[0] for r in FIRST])
def test_input_rule_parity(make, name, zfirst, ours):
    model = make()
    x, t = data(model)
    comp = SpecialFirstLayerMapComposite(base() + [(ZLinear, zr.Epsilon(1e-4))], [(ZLinear, zfirst())],
                                         canonizers=[SequentialMergeBatchNorm()])
    theirs = zennit_relevance(model, comp, x, t)
    mine = lrp.attribute(model, x, t, rule="epsilon", epsilon=1e-4, **ours)
    torch.testing.assert_close(mine, theirs, atol=1e-10, rtol=1e-8)


PRESETS = [
    ("epsilon_plus", lambda: EpsilonPlus(), lambda: composites.epsilon_plus()),
    ("epsilon_alpha2_beta1", lambda: EpsilonAlpha2Beta1(), lambda: composites.epsilon_alpha2_beta1()),
    ("epsilon_plus_flat", lambda: EpsilonPlusFlat(), lambda: composites.epsilon_plus_flat()),
    ("epsilon_gamma_box", lambda: EpsilonGammaBox(0.0, 1.0), lambda: composites.epsilon_gamma_box(0.0, 1.0)),
]


@pytest.mark.parametrize("name,theirs_c,ours_c", PRESETS, ids=[p[0] for p in PRESETS])
def test_preset_parity_cnn(name, theirs_c, ours_c):
    model = cnn()
    x, t = data(model)
    torch.testing.assert_close(lrp.attribute(model, x, t, composite=ours_c()),
                               zennit_relevance(model, theirs_c(), x, t), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name,zrule,ours", [RULES[0], RULES[2], RULES[4]], ids=["epsilon", "gamma", "alpha2_beta1"])
def test_batchnorm_merged_parity(name, zrule, ours):
    """Zennit leaves each merged BatchNorm as x / sqrt(1 + eps); ours is the exact identity. With
    eps = 1e-12 both are the identity to float64 precision, so the comparison is tight."""
    model = cnn(bn=True)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.eps = 1e-12
    x, t = data(model)
    comp = LayerMapComposite(base() + [(ZLinear, zrule())], canonizers=[SequentialMergeBatchNorm()])
    theirs = zennit_relevance(model, comp, x, t)
    torch.testing.assert_close(lrp.attribute(model, x, t, **ours), theirs, atol=1e-10, rtol=1e-8)


def test_batchnorm_default_eps_within_1e5():
    model = cnn(bn=True)
    x, t = data(model)
    comp = LayerMapComposite(base() + [(ZLinear, zr.Epsilon(1e-3))], canonizers=[SequentialMergeBatchNorm()])
    theirs = zennit_relevance(model, comp, x, t)
    assert (lrp.attribute(model, x, t, rule="epsilon", epsilon=1e-3) - theirs).abs().max() < 1e-5


@pytest.mark.parametrize("make", [mlp, cnn], ids=["mlp", "cnn"])
def test_float32_parity(make):
    model = make(torch.float32)
    x, t = data(model, torch.float32)
    theirs = zennit_relevance(model, LayerMapComposite(base() + [(ZLinear, zr.AlphaBeta(2.0, 1.0))]), x, t)
    assert (lrp.attribute(model, x, t, rule="alpha_beta") - theirs).abs().max() < 1e-5
