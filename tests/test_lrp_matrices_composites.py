"""lrp.layer_matrices with composites and per-name rules: chain == attribute (float64, 1e-8) for every
preset and for per-name overrides, on an MLP, a CNN with BatchNorm and a residual Conv1d net (the nets
of test_lrp_matrices.py); combinations without a per-layer matrix are refused by name."""
import pytest
import torch
from torch import nn

from lrp_nets import ResidualConv1d, randomize_batchnorm
from spectralens import lrp
from spectralens.lrp import composites, rules
from spectralens.lrp.matrices import chain, layer_matrices

TOL = 1e-8
AFFINE_KINDS = ("linear", "conv1d", "conv2d")


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 7), nn.ReLU(), nn.Linear(7, 4)).double().eval()


def cnn():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                        nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    return randomize_batchnorm(net).eval()


def _net(name):
    torch.manual_seed(1)
    shape = {"mlp": (1, 6), "cnn": (1, 1, 8, 8), "residual": (1, 2, 8)}[name]
    model = {"mlp": mlp, "cnn": cnn, "residual": lambda: ResidualConv1d().double().eval()}[name]()
    return model, torch.randn(*shape, dtype=torch.float64)


def _preset(name):
    return composites.PRESETS[name](low=-4.0, high=4.0) if name == "epsilon_gamma_box" else composites.PRESETS[name]()


def _expected_affine_rules(net, preset, n_affine, n_linear):
    """Zennit's presets: a conv rule, epsilon on Linear, an input-layer rule (flat; z^B on a conv only)."""
    conv = {"epsilon_plus": "zplus", "epsilon_alpha2_beta1": "alpha_beta", "epsilon_gamma_box": "gamma"}
    conv = conv[preset.removesuffix("_flat")]
    out = [conv] * (n_affine - n_linear) + ["epsilon"] * n_linear
    if preset.endswith("_flat"):
        out[0] = "flat"
    elif preset == "epsilon_gamma_box" and net != "mlp":
        out[0] = "zb"
    return out


def _same(model, x, **kw):
    layers = layer_matrices(model, x, **kw)
    ref = lrp.attribute(model, x, layers.target, **kw)
    assert ref.abs().max() > 1e-6  # a non-trivial attribution
    got = chain(layers)
    assert got.shape == x.shape and got.dtype == torch.float64
    assert torch.allclose(got, ref, atol=TOL, rtol=0), float((got - ref).abs().max())
    return layers


@pytest.mark.parametrize("preset", sorted(composites.PRESETS))
@pytest.mark.parametrize("net", ["mlp", "cnn", "residual"])
def test_preset_chain_equals_attribute(net, preset):
    model, x = _net(net)
    comp = _preset(preset)
    layers = _same(model, x, composite=comp)
    assert layers.rule is None and layers.composite is comp
    kinds = [lm.kind for lm in layers]
    got = [lm.rule for lm in layers if lm.kind in AFFINE_KINDS]
    assert got == _expected_affine_rules(net, preset, len(got), kinds.count("linear"))
    assert all(lm.rule == "pass" for lm in layers if lm.kind == "relu")
    assert all(lm.rule == "norm" for lm in layers if lm.kind in ("avgpool", "sum"))
    if net == "cnn":  # the other targets from the same matrices
        for t in range(layers.logits.numel()):
            assert torch.allclose(chain(layers, t), lrp.attribute(model, x, t, composite=comp), atol=TOL, rtol=0)


OVERRIDES = {
    "mlp": ("epsilon_plus_flat", {"2": rules.Gamma(0.5), "3": rules.Gradient(), "4": rules.Epsilon(0.1, zero_bias=True)}),
    # by name beats the input-layer map (z^B) on "0"; Norm on max pooling; adaptive beta on a conv
    "cnn": ("epsilon_gamma_box", {"0": rules.Epsilon(0.0), "3": rules.Norm(), "4": rules.AdaptiveBeta(0.5)}),
    "residual": ("epsilon_alpha2_beta1", {"add": rules.Gradient(), "c2": rules.Epsilon(0.1), "pool": rules.Norm()}),
}


@pytest.mark.parametrize("net", sorted(OVERRIDES))
def test_per_name_overrides(net):
    model, x = _net(net)
    preset, names = OVERRIDES[net]
    layers = _same(model, x, composite=_preset(preset), rules=names)
    by_name = {lm.name.split("+")[0]: lm.rule for lm in layers}
    assert {p: by_name[p] for p in names} == {p: r.name for p, r in names.items()}
    merged = _preset(preset).with_overrides(names)  # Composite.with_overrides: the same matrices
    assert torch.allclose(chain(layer_matrices(model, x, composite=merged)), chain(layers), atol=0, rtol=0)


def test_rule_string_with_overrides():
    model, x = _net("mlp")
    layers = _same(model, x, rule="zplus", input_rule="wsquare", rules={"2": rules.AlphaBeta(1.5, 0.5)})
    assert [lm.rule for lm in layers] == ["wsquare", "pass", "alpha_beta", "pass", "zplus"]
    assert layers.rule is None and layers.input_rule == "wsquare"


@pytest.mark.parametrize("rule", [rules.Pass(), rules.Norm(), rules.Gradient()])
def test_rule_by_name_on_an_otherwise_unsupported_module(rule):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double().eval()
    x = torch.randn(1, 5, dtype=torch.float64)
    layers = _same(model, x, composite=composites.epsilon_plus(), rules={"1": rule})
    assert (layers[1].kind, layers[1].rule) == ("other", rule.name)
    with pytest.raises(lrp.UnsupportedLayerError, match="Tanh"):  # without the name: refused, as attribute
        layer_matrices(model, x, composite=composites.epsilon_plus())


def test_c_form_where_every_layer_has_one():
    model, x = _net("mlp")  # epsilon_plus on an MLP: epsilon on every Linear
    layers = layer_matrices(model, x, composite=composites.epsilon_plus())
    onehot = torch.zeros(4, dtype=torch.float64)
    onehot[layers.target] = 1.0
    assert torch.allclose(x * chain(layers, onehot, form="c"), chain(layers), atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="c-form"):
        chain(layer_matrices(*_net("cnn"), composite=composites.epsilon_plus()), form="c")


# ---------------------------------------------------------------- refusals and errors
class MyEpsilon(rules.Epsilon):
    """A subclass: attribute runs its relevance(), layer_matrices knows no formula for it."""


def test_rule_without_a_matrix_form_is_refused_by_name():
    model, x = _net("mlp")
    lrp.attribute(model, x, 0, rules={"2": MyEpsilon()})  # fine for the hooks
    with pytest.raises(ValueError, match=r"layer '2' \(Linear\) has rule MyEpsilon.*cannot write as a per-layer"):
        layer_matrices(model, x, rules={"2": MyEpsilon()})


def test_rule_on_a_container_is_refused_by_name():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Linear(5, 5), nn.ReLU()), nn.Linear(5, 3)).double().eval()
    x = torch.randn(1, 5, dtype=torch.float64)
    lrp.attribute(model, x, 0, rules={"0": rules.Pass()})  # the hooks pass relevance over the whole block
    with pytest.raises(ValueError, match=r"Pass\(\) is given by name to '0' \(Sequential\), a module with submodules"):
        layer_matrices(model, x, rules={"0": rules.Pass()})
    _same(model, x, rules={"0": rules.Gradient()})  # Gradient on a container changes nothing: allowed


@pytest.mark.parametrize("kwargs, err, match", [
    ({"composite": "epsilon_plus"}, TypeError, r"Composite.*composite=lrp\.composites\.epsilon_plus\(\)"),
    ({"composite": {"fc": "epsilon"}}, TypeError, r"must be a spectralens\.lrp\.Composite.*presets"),
    ({"composite": composites.epsilon_plus(), "rule": "epsilon"}, ValueError, "either composite="),
    ({"composite": composites.epsilon_plus(), "epsilon": 0.1}, ValueError, "either composite="),
    ({"rules": {"nope": rules.Pass()}}, ValueError, r"not in the model: \['nope'\]"),
    ({"rules": {"2": "epsilon"}}, TypeError, r"name_map\['2'\] must be a spectralens\.lrp\.rules\.Rule"),
    ({"rule": "gradient", "rules": {"2": rules.Epsilon()}}, ValueError, "takes no input_rule, rules"),
    ({"composite": lrp.Composite([(nn.ReLU, rules.Epsilon())])}, lrp.UnsupportedLayerError, "ReLU"),
    ({"composite": composites.epsilon_gamma_box(low=torch.zeros(5), high=torch.ones(5))}, ValueError,
     "do not broadcast"),
])
def test_bad_composites_fail_like_attribute(kwargs, err, match):
    model, x = _net("cnn")
    with pytest.raises(err, match=match):
        layer_matrices(model, x, **kwargs)
    with pytest.raises(err):
        lrp.attribute(model, x, 0, **kwargs)


def test_zb_outside_the_box_is_a_matrix_not_an_error():
    """attribute refuses an input outside [low, high]; the matrix is still defined (lrp.bounds reports it)."""
    model, x = _net("cnn")
    comp = composites.epsilon_gamma_box(low=-0.1, high=0.1)
    with pytest.raises(ValueError, match="outside"):
        lrp.attribute(model, x, 0, composite=comp)
    assert layer_matrices(model, x, composite=comp)[0].rule == "zb"


def test_module_reuse_with_a_composite():
    lin = nn.Linear(3, 3)
    model = nn.Sequential(lin, nn.ReLU(), lin, nn.Linear(3, 2)).double()
    with pytest.raises(lrp.ModuleReuseError):
        layer_matrices(model, torch.randn(1, 3, dtype=torch.float64), composite=composites.epsilon_plus())


def test_bounds_of_composite_matrices_are_per_layer_only():
    """layer_bounds works layer by layer; attribution_bound chains bounds of one rule, so it
    refuses matrices from a composite with a clear message instead of a NaN constant."""
    from spectralens.lrp import bounds

    model, x = _net("mlp")
    layers = layer_matrices(model, x, composite=_preset("epsilon_plus_flat"))
    table = bounds.layer_bounds(layers)
    assert len(table) == len(layers)
    with pytest.raises(ValueError, match="one rule for every layer"):
        bounds.attribution_bound(layers)
