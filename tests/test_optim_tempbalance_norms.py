"""TempBalance(norm_follows=True): each norm layer's rate is the factor of the layer it follows.

The effective rate is read two ways: from the group's lr seen by a step pre-hook registered
after TempBalance's (i.e. what the optimizer uses), and from the plain-SGD update
``p_new = p - lr * grad`` of the norm's weight.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from spectralens.nets.gpt import RMSNorm as GPTRMSNorm
from spectralens.optim import TempBalance, module_param_groups


def make_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),     # 0 first layer (excluded), 1
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),   # 3 tuned (72 eigenvalues), 4
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),  # 6 tuned, 7
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),  # 9 tuned, 10
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),        # 14 last layer (excluded)
    )


CNN_FOLLOWS = {"1": "0", "4": "3", "7": "6", "10": "9"}


class Block(nn.Module):
    """Post-LN residual MLP block: x -> norm(x + proj(gelu(fc(x))))."""

    def __init__(self, d: int, norm: nn.Module):
        super().__init__()
        self.fc, self.proj, self.norm = nn.Linear(d, 2 * d), nn.Linear(2 * d, d), norm

    def forward(self, x):
        return self.norm(x + self.proj(nn.functional.gelu(self.fc(x))))


class TinyTransformerMLP(nn.Module):
    def __init__(self, norm=lambda d: nn.LayerNorm(d), d: int = 64, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Linear(16, d)
        self.blocks = nn.ModuleList(Block(d, norm(d)) for _ in range(3))
        self.norm_f = norm(d)
        self.head = nn.Linear(d, 8)

    def forward(self, x):
        x = self.inp(x)
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm_f(x))


MLP_FOLLOWS = {"blocks.0.norm": "blocks.0.proj", "blocks.1.norm": "blocks.1.proj",
               "blocks.2.norm": "blocks.2.proj", "norm_f": "blocks.2.proj"}


def cnn_loss(model, gen):
    x = torch.randn(8, 3, 8, 8, generator=gen)
    return (model(x) - x[:, 0, :2, :5].flatten(1)).square().mean()


def mlp_loss(model, gen):
    x = torch.randn(32, 16, generator=gen)
    return (model(x) - x[:, :8] * 2).square().mean()


def group_of(opt, p) -> int:
    return next(i for i, g in enumerate(opt.param_groups) if any(q is p for q in g["params"]))


def run_and_check(model, loss_fn, follows, *, norm_follows=True, steps=4, every=2, lam=lambda t: 1.0 / (1 + t)):
    """SGD + LambdaLR + TempBalance; at every step compare each norm's rate with the prediction."""
    opt = torch.optim.SGD(TempBalance.param_groups_for(model, 0.0), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    tb = TempBalance(opt, model, every=every, norm_follows=norm_follows)
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append([g["lr"] for g in o.param_groups]))
    modules = dict(model.named_modules())
    gen = torch.Generator().manual_seed(0)
    for t in range(steps):
        opt.zero_grad()
        loss_fn(model, gen).backward()
        sched_lr = 0.1 * lam(t)
        factors = tb.factors()
        expect = {n: sched_lr * (factors.get(lead, 1.0) if norm_follows else 1.0) for n, lead in follows.items()}
        before = {n: (modules[n].weight.detach().clone(), modules[n].weight.grad.clone()) for n in follows}
        opt.step()
        for n, lr in expect.items():
            assert seen[-1][group_of(opt, modules[n].weight)] == pytest.approx(lr, rel=1e-12), n
            assert seen[-1][group_of(opt, modules[n].bias)] == pytest.approx(lr, rel=1e-12), n
            w0, g0 = before[n]
            torch.testing.assert_close(modules[n].weight.detach(), w0 - lr * g0)
        # outside the step every group holds the scheduler's unscaled rate
        assert all(g["lr"] == pytest.approx(sched_lr) for g in opt.param_groups)
        sched.step()
        tb.step()
    return tb, opt


def test_cnn_batchnorm_follows_its_conv_and_composes_with_scheduler():
    model = make_cnn()
    tb, _ = run_and_check(model, cnn_loss, CNN_FOLLOWS)
    # bn after the excluded first conv keeps factor 1, like that conv (as the released code)
    assert tb.norm_factors()["1"] == 1.0
    assert len({tb.norm_factors()[n] for n in ("4", "7", "10")}) == 3  # three distinct factors used
    table = tb.assignments().set_index("name")
    assert list(table.index) == ["0", "1", "3", "4", "6", "7", "9", "10", "14"]  # registration order
    for bn, conv in CNN_FOLLOWS.items():
        assert table.loc[bn, "follows"] == conv
        assert table.loc[bn, "factor"] == table.loc[conv, "factor"]
        assert table.loc[bn, "lr"] == pytest.approx(table.loc[conv, "lr"])
    assert table.loc["4", "status"] == "follows"
    assert table.loc["1", "status"] == "excluded: follows '0', which is not tuned"


def test_transformer_mlp_layernorm_follows_previous_linear():
    model = TinyTransformerMLP()
    tb, _ = run_and_check(model, mlp_loss, MLP_FOLLOWS)
    f = tb.factors()
    assert tb.norm_factors() == {n: f[lead] for n, lead in MLP_FOLLOWS.items()}


@pytest.mark.parametrize("norm", [lambda d: nn.RMSNorm(d), lambda d: nn.GroupNorm(4, d), lambda d: nn.BatchNorm1d(d),
                                  lambda d: GPTRMSNorm(d)], ids=["RMSNorm", "GroupNorm", "BatchNorm1d", "gpt.RMSNorm"])
def test_other_norm_types_follow(norm):
    model = TinyTransformerMLP(norm)
    tb = TempBalance(torch.optim.SGD(TempBalance.param_groups_for(model, 0.0), lr=0.1), model)
    assert tb.norm_factors() == {n: tb.factors()[lead] for n, lead in MLP_FOLLOWS.items()}


@pytest.mark.parametrize("case", ["cnn", "mlp"])
def test_norm_follows_false_keeps_factor_one(case):
    model, loss_fn, follows = {"cnn": (make_cnn(), cnn_loss, CNN_FOLLOWS),
                               "mlp": (TinyTransformerMLP(), mlp_loss, MLP_FOLLOWS)}[case]
    tb, _ = run_and_check(model, loss_fn, follows, norm_follows=False, steps=2)
    assert set(tb.norm_factors().values()) == {1.0}
    assert set(tb.assignments().set_index("name").loc[list(follows), "status"]) == {"excluded: norm_follows=False"}


def test_norm_before_any_weight_layer_follows_the_next_one():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LayerNorm(64), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.LayerNorm(64),
                          nn.Linear(64, 8))
    opt = torch.optim.SGD(TempBalance.param_groups_for(model, 0.0, exclude_first=False), lr=0.1)
    tb = TempBalance(opt, model, exclude_first=False)
    assert tb.norm_factors() == {"0": tb.factors()["1"], "4": tb.factors()["3"]}
    assert tb.assignments(as_frame=False)[0]["follows"] == "1"


def test_shared_group_warns_or_splits_and_per_parameter_groups_work():
    model = make_cnn()
    opt = torch.optim.SGD(module_param_groups(model, 0.0), lr=0.1)  # norms sit in the "untuned" group
    with pytest.warns(UserWarning, match=r"norm layer '4' \(follows '3'\) shares param group 3 \('untuned'\)"):
        tb = TempBalance(opt, model)  # works as before: the norms keep factor 1, and say why
    assert set(tb.norm_factors().values()) == {1.0}
    rows = [r for r in tb.assignments(as_frame=False) if r["name"] == "4"]
    assert rows[0]["status"] == "excluded: shares a param group with other parameters"
    tb.remove()
    tb = TempBalance(opt, model, split_groups=True)
    assert [g["name"] for g in opt.param_groups] == ["3", "6", "9", "untuned", "4", "7", "10"]
    assert all(p is not model[4].weight for p in opt.param_groups[3]["params"])  # moved out of "untuned"
    assert tb.norm_factors()["4"] == tb.factors()["3"]
    # one group per parameter (hybrid(per_param_groups=True) style): weight and bias groups both scaled
    opt = torch.optim.SGD([{"params": [p]} for p in model.parameters()], lr=0.1)
    tb = TempBalance(opt, model)
    assert tb._norm_groups["7"] == [group_of(opt, model[7].weight), group_of(opt, model[7].bias)]


def test_split_keeps_param_names_consistent():
    model = TinyTransformerMLP()
    groups = module_param_groups(model, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        g["param_names"] = [names[id(p)] for p in g["params"]]
    opt = torch.optim.SGD(groups, lr=0.1)
    TempBalance(opt, model, split_groups=True)
    new = opt.param_groups[-1]
    assert new["name"] == "norm_f" and new["param_names"] == ["norm_f.weight", "norm_f.bias"]
    untuned = next(g for g in opt.param_groups if g["name"] == "untuned")
    assert len(untuned["param_names"]) == len(untuned["params"]) == 4  # inp and head, weight and bias


def test_state_dict_round_trip_with_cosine_schedule():
    def build(seed):
        model = make_cnn(seed)
        opt = torch.optim.SGD(TempBalance.param_groups_for(model, 1e-4), lr=0.05, momentum=0.9)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
        return model, opt, sched, TempBalance(opt, model, every=2)

    def train(n, model, opt, sched, tb, gen, hist):
        for _ in range(n):
            opt.zero_grad()
            cnn_loss(model, gen).backward()
            opt.step()
            sched.step()
            tb.step()
            hist.append((tb.factors(), tb.norm_factors(), [g["lr"] for g in opt.param_groups]))

    results = []
    for resume in (False, True):
        gen, hist = torch.Generator().manual_seed(0), []
        parts = build(0)
        train(3, *parts, gen, hist)
        if resume:
            ck = copy.deepcopy([x.state_dict() for x in parts])
            parts = build(5)
            for x, s in zip(parts, ck):
                x.load_state_dict(s)
        train(3, *parts, gen, hist)
        results.append((hist, [p.detach().clone() for p in parts[0].parameters()]))
    (h1, p1), (h2, p2) = results
    assert h1 == h2
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a TempBalance whose norm layers map elsewhere refuses the state
    model, opt, _, tb = build(0)
    state = tb.state_dict()
    assert state["config"]["norm_follows"] is True and state["norm_groups"]["4"] == [group_of(opt, model[4].weight)]
    other = TempBalance(opt, model, norm_follows=False)
    with pytest.raises(ValueError, match="norm layers to different param groups"):
        other.load_state_dict(state)


def test_bad_norm_follows_names_the_value():
    model = make_cnn()
    opt = torch.optim.SGD(TempBalance.param_groups_for(model, 0.0), lr=0.1)
    with pytest.raises(ValueError, match="norm_follows must be a bool, got 'yes'"):
        TempBalance(opt, model, norm_follows="yes")
