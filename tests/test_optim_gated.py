"""GatedSpectral: pinned modes equal AdamW / a plain Muon transcription; the gate, hysteresis, hooks."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from reference_optim import train_muon_adamw
from spectralens.linalg import nuclear_rank, stable_rank
from spectralens.optim import GatedSpectral


class Net(nn.Module):
    """Three gated Linears (q, k share an input), a norm, and an output head."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Linear(8, 32)
        self.q = nn.Linear(32, 32)
        self.k = nn.Linear(32, 32)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.head(self.norm(torch.relu(self.q(h)) * self.k(h)))


def data(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return x, torch.sin(x[:, :4] * 2)


def loss_fn(model, x, y):
    return (model(x) - y).square().mean()


def test_force_euclidean_equals_torch_adamw():
    m1, m2 = Net(), Net()
    opt1 = GatedSpectral(m1, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, force="euclidean")
    decay = [p for p in m2.parameters() if p.dim() >= 2]
    nodecay = [p for p in m2.parameters() if p.dim() < 2]
    opt2 = torch.optim.AdamW([{"params": decay}, {"params": nodecay, "weight_decay": 0.0}], lr=1e-2,
                             betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    x, y = data()
    for _ in range(5):
        for m, o in ((m1, opt1), (m2, opt2)):
            o.zero_grad()
            loss_fn(m, x, y).backward()
            o.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_force_spectral_equals_plain_muon_transcription():
    m1, m2 = Net(), Net()
    lr, mu, wd = 1e-2, 0.95, 0.05
    opt1 = GatedSpectral(m1, lr=lr, momentum=mu, weight_decay=wd, force="spectral")
    x, y = data()
    for _ in range(4):
        opt1.zero_grad()
        loss_fn(m1, x, y).backward()
        opt1.step()
    train_muon_adamw(m2, [m2.inp.weight, m2.q.weight, m2.k.weight], (x, y), loss_fn, 4, lr, mu, wd)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert set(opt1.modes().values()) == {"spectral"}
    assert "head.weight" not in str(opt1.modes()) and set(opt1.modes()) == {"inp", "q", "k"}


def test_hysteresis_with_st_provider():
    model = Net()
    st = {}
    opt = GatedSpectral(model, lr=1e-3, every=1, hi=2.0, lo=1.0, st_provider=lambda n: st.get(n))
    x, y = data()

    def step_with_ratio(target):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        for n in ("inp", "q", "k"):
            nr = float(nuclear_rank(getattr(model, n).weight.grad))
            st[n] = nr / target
        opt.step()
        return opt.modes()

    assert set(step_with_ratio(1.5).values()) == {"euclidean"}   # between lo and hi: stays
    assert set(step_with_ratio(2.5).values()) == {"spectral"}    # above hi: switches
    assert set(step_with_ratio(1.5).values()) == {"spectral"}    # between: stays spectral
    assert set(step_with_ratio(0.5).values()) == {"euclidean"}   # below lo: back
    st.clear()
    assert set(step_with_ratio(float("nan")).values()) == {"euclidean"}  # no measurement: keep
    ch = opt.choices()
    assert list(ch.query("name == 'q'")["mode"]) == ["euclidean", "spectral", "spectral", "euclidean", "euclidean"]
    assert ch.query("name == 'q'")["ratio"].iloc[:4].tolist() == pytest.approx([1.5, 2.5, 1.5, 0.5], rel=1e-6)
    assert ch["switched"].sum() == 6


def test_measures_every_m_steps_with_hooks_matching_stable_rank():
    model = Net()
    opt = GatedSpectral(model, lr=1e-3, every=3)
    x, y = data()
    captured = {}
    h = model.q.register_forward_hook(lambda m, i, o: captured.__setitem__("q", i[0].detach().clone()))
    for _ in range(7):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        if opt.param_groups[0]["step_count"] == 6:
            want = float(stable_rank(captured["q"]))
        opt.step()
        with torch.no_grad():
            model(x)  # an evaluation forward must not disturb the measurement
    h.remove()
    ch = opt.choices()
    assert sorted(set(ch["step"])) == [0, 3, 6]
    row = ch.query("step == 6 and name == 'q'").iloc[0]
    assert row["st"] == pytest.approx(want, rel=1e-3)
    assert ch.query("step == 6 and name == 'k'").iloc[0]["st"] == row["st"]  # shared input
    assert row["nr"] >= 1.0
    assert len(model.q._forward_hooks) == 1
    opt.close()
    assert len(model.q._forward_hooks) == 0


def test_non_matrix_always_adamw_and_state_dict_round_trip():
    model = Net()
    opt = GatedSpectral(model, lr=1e-2, every=1, hi=1e-6, lo=1e-6)  # any finite ratio -> spectral
    x, y = data()
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()
    assert set(opt.modes().values()) == {"spectral"}
    for p in [model.norm.weight, model.q.bias, model.head.weight]:
        assert "spectral" not in opt.state[p] and opt.state[p]["step"] == 2
    sd = copy.deepcopy(opt.state_dict())
    model2 = Net(seed=1)
    model2.load_state_dict(model.state_dict())
    opt2 = GatedSpectral(model2, lr=1e-2, every=1, hi=1e-6, lo=1e-6)
    opt2.load_state_dict(sd)
    assert opt2.modes() == opt.modes()
    for o, m in ((opt, model), (opt2, model2)):
        o.zero_grad()
        loss_fn(m, x, y).backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("force", [None, "spectral", "euclidean"])
def test_reduces_loss(force):
    model = Net()
    opt = GatedSpectral(model, lr=3e-3, every=5, force=force)
    x, y = data()
    first = loss_fn(model, x, y).item()
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize("kwargs, needle", [
    (dict(lr=-1.0), "Invalid learning rate: -1.0"),
    (dict(every=0), "Invalid every: 0"),
    (dict(hi=0.5, lo=1.0), "lo=1.0, hi=0.5"),
    (dict(force="sgd"), "Invalid force: 'sgd'"),
    (dict(initial_mode="muon"), "Invalid initial_mode: 'muon'"),
    (dict(momentum=1.0), "Invalid momentum: 1.0"),
])
def test_bad_arguments_name_the_value(kwargs, needle):
    import re

    with pytest.raises(ValueError, match=re.escape(needle)):
        GatedSpectral(Net(), **kwargs)


def test_monitor_as_st_provider_agrees_with_own_hooks():
    monitor_mod = pytest.importorskip("spectralens.monitor")
    from spectralens.optim import st_from_monitor

    m1, m2 = Net(), Net()
    own = GatedSpectral(m1, lr=1e-2, every=2)
    mon = monitor_mod.SpectralMonitor(m2, every=2, alpha_every=0, weight_stats=False)
    via = GatedSpectral(m2, lr=1e-2, every=2, st_provider=st_from_monitor(mon))
    assert via._handles == []  # no hooks of its own when a provider is given
    x, y = data()
    for _ in range(5):
        for m, o in ((m1, own), (m2, via)):
            o.zero_grad()
            loss_fn(m, x, y).backward()
            if o is via:
                mon.step()
            o.step()
    mon.close()
    a, b = own.choices(), via.choices()
    assert list(a["step"]) == list(b["step"]) == [0, 0, 0, 2, 2, 2, 4, 4, 4]
    assert b["st"].tolist() == pytest.approx(a["st"].tolist(), rel=1e-2)
    assert list(a["mode"]) == list(b["mode"])
