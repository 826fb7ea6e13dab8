"""AWD, AdaDecay and TempBalance: formulas against hand computations, schedulers, resume, loss."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from spectralens.optim import AWD, AdaDecay, TempBalance, module_param_groups


def make_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64),
                         nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))


def batch(gen):
    x = torch.randn(32, 16, generator=gen)
    return x, x[:, :8] * 2


def loss_of(model, gen):
    x, y = batch(gen)
    return (model(x) - y).square().mean()


def hill(W):
    ev = np.sort(np.linalg.svd(W.detach().double().numpy(), compute_uv=False) ** 2)
    k = len(ev) // 2
    return 1 + (len(ev) - k) / np.log(ev[k:] / ev[k]).sum()


# ---------------------------------------------------------------- AWD
def test_awd_formula_and_ema():
    model = make_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    awd = AWD(opt, lambda_awd=0.5)
    gen = torch.Generator().manual_seed(0)
    bar = 0.0
    for _ in range(3):
        opt.zero_grad()
        loss_of(model, gen).backward()
        g = math.sqrt(sum(float(p.grad.double().square().sum()) for p in model.parameters()))
        w = math.sqrt(sum(float(p.detach().double().square().sum()) for p in model.parameters()))
        bar = 0.1 * bar + 0.9 * 0.5 * g / (w + 1e-8)
        assert awd.step() == pytest.approx(bar, rel=1e-12)
        assert all(gr["weight_decay"] == pytest.approx(bar, rel=1e-12) for gr in opt.param_groups)
        opt.step()
    assert len(awd.assignments()) == 3


def test_awd_needs_gradients_and_checks_args():
    model = make_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(RuntimeError, match="after loss.backward"):
        AWD(opt).step()
    with pytest.raises(ValueError, match="got -1"):
        AWD(opt, lambda_awd=-1)
    with pytest.raises(ValueError, match="got 1.5"):
        AWD(opt, momentum=1.5)


# ---------------------------------------------------------------- AdaDecay
def test_adadecay_formula_within_blocks():
    torch.manual_seed(0)
    model = nn.Module()
    model.stem = nn.Linear(8, 32)
    model.blocks = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32)) for _ in range(2))
    model.head = nn.Linear(32, 4)
    opt = torch.optim.AdamW(module_param_groups(model, 0.1, min_eigs=0), lr=1e-3)
    ada = AdaDecay(opt, model)
    x = torch.randn(16, 8)
    h = model.stem(x)
    for b in model.blocks:
        h = torch.relu(b(h))
    model.head(h).square().mean().backward()
    ada.step()
    for bi, block in enumerate(model.blocks):
        g = np.array([float(block[j].weight.grad.double().norm()) for j in range(3)])
        z = (g - g.mean()) / g.std()
        for j in range(3):
            gi = next(i for i, gr in enumerate(opt.param_groups) if any(p is block[j].weight for p in gr["params"]))
            assert opt.param_groups[gi]["weight_decay"] == pytest.approx(0.1 * 2 / (1 + np.exp(-4 * z[j])), rel=1e-9)
    table = ada.assignments()
    assert set(table["block"]) == {"blocks.0", "blocks.1"}
    st = ada.state_dict()
    ada2 = AdaDecay(opt, model)
    ada2.load_state_dict(copy.deepcopy(st))
    assert ada2.assignments().equals(table)


def test_adadecay_bad_args():
    model = make_mlp()
    opt = torch.optim.AdamW(module_param_groups(model, 0.1), lr=1e-3)
    with pytest.raises(ValueError, match="slope must be a finite number > 0, got 0"):
        AdaDecay(opt, model, slope=0)


# ---------------------------------------------------------------- TempBalance
def test_tempbalance_factors_match_reference_and_compose_with_scheduler():
    model = make_mlp()
    opt = torch.optim.SGD(module_param_groups(model, 0.0), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    tb = TempBalance(opt, model, every=1000)
    alphas = {str(i): hill(model[i].weight) for i in (2, 4, 6)}
    lo, hi = min(alphas.values()), max(alphas.values())
    expect = {n: 0.5 + (a - lo) / (hi - lo) for n, a in alphas.items()}
    assert tb.factors() == pytest.approx(expect, rel=1e-4)
    gen = torch.Generator().manual_seed(0)
    for t in range(3):
        opt.zero_grad()
        loss_of(model, gen).backward()
        before = model[4].weight.detach().clone()
        grad = model[4].weight.grad.clone()
        opt.step()
        sched_lr = 0.1 / (1 + t)
        # the update used the scheduler's rate times the module's factor ...
        torch.testing.assert_close(model[4].weight.detach(), before - sched_lr * tb.factors()["4"] * grad)
        # ... and the group holds the scheduler's unscaled rate outside the step
        assert all(g["lr"] == pytest.approx(sched_lr) for g in opt.param_groups)
        sched.step()
        tb.step()
    table = tb.assignments().set_index("name")
    assert table.loc["4", "lr"] == pytest.approx(0.1 / 4 * expect["4"], rel=1e-4)
    tb.remove()
    assert not opt._optimizer_step_pre_hooks


def test_tempbalance_cosine_schedule_resume_identical():
    def run(steps_a, steps_b, resume):
        model = make_mlp()
        opt = torch.optim.AdamW(module_param_groups(model, 0.01), lr=3e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
        tb = TempBalance(opt, model, every=2)
        gen = torch.Generator().manual_seed(0)
        hist = []

        def train(n, model, opt, sched, tb):
            for _ in range(n):
                opt.zero_grad()
                loss_of(model, gen).backward()
                opt.step()
                sched.step()
                tb.step()
                hist.append((tb.factors(), [g["lr"] for g in opt.param_groups]))

        train(steps_a, model, opt, sched, tb)
        if resume:
            ck = copy.deepcopy((model.state_dict(), opt.state_dict(), sched.state_dict(), tb.state_dict()))
            model = make_mlp(seed=3)
            opt = torch.optim.AdamW(module_param_groups(model, 0.01), lr=3e-3)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
            tb = TempBalance(opt, model, every=2)
            model.load_state_dict(ck[0]); opt.load_state_dict(ck[1]); sched.load_state_dict(ck[2]); tb.load_state_dict(ck[3])
        train(steps_b, model, opt, sched, tb)
        return hist, [p.detach().clone() for p in model.parameters()]

    h1, p1 = run(5, 6, resume=False)
    h2, p2 = run(5, 6, resume=True)
    assert h1 == h2
    for a, b in zip(p1, p2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_tempbalance_bad_args():
    model = make_mlp()
    opt = torch.optim.SGD(module_param_groups(model, 0.0), lr=0.1)
    with pytest.raises(ValueError, match="s1=2.0, s2=0.5"):
        TempBalance(opt, model, s1=2.0, s2=0.5)
    with pytest.raises(TypeError, match="step hooks"):
        TempBalance(object.__new__(type("NoHooks", (), {"param_groups": []})), model)


# ---------------------------------------------------------------- all reduce the loss
@pytest.mark.parametrize("kind", ["awd", "adadecay", "tempbalance"])
def test_each_reduces_loss(kind):
    model = make_mlp()
    opt = torch.optim.AdamW(module_param_groups(model, 0.1), lr=3e-3)
    reg = {"awd": lambda: AWD(opt, 0.1), "adadecay": lambda: AdaDecay(opt, model),
           "tempbalance": lambda: TempBalance(opt, model, every=5)}[kind]()
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = loss_of(model, gen)
        loss.backward()
        if kind != "tempbalance":
            reg.step()
        opt.step()
        if kind == "tempbalance":
            reg.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_tempbalance_restores_rate_after_a_step_that_raised():
    model = make_mlp()
    opt = torch.optim.SGD(module_param_groups(model, 0.0), lr=0.1)
    TempBalance(opt, model)

    def bad_closure():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(bad_closure)
    gen = torch.Generator().manual_seed(0)
    loss_of(model, gen).backward()
    opt.step()
    assert all(g["lr"] == 0.1 for g in opt.param_groups)
