"""GatedSpectral on Conv1d/Conv2d: st of the im2col patch matrix and nr of the reshaped gradient
against float64 SVD references, modes, a pinned spectral step against a plain Muon transcription,
training, state_dict, and the convs that stay on AdamW."""
from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reference_optim import train_muon_adamw
from spectralens.models.conv_patches import PatchGeometry, conv_patches, patch_gram, patch_stable_rank
from spectralens.optim import GatedSpectral


# -- slow, obvious references ------------------------------------------------------------------
def unfold_reference(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The patch matrix (B * positions, C * prod(kernel)) in float64, zero padding only.

    Conv2d: ``F.unfold`` with the module's settings. Conv1d: one patch per output position,
    sliced out of the zero-padded input by hand.
    """
    x = x.double()
    if isinstance(conv, nn.Conv2d):
        cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    (k,), (s,), (d,), (p,) = conv.kernel_size, conv.stride, conv.dilation, conv.padding
    xp = F.pad(x, (p, p))
    n_out = (xp.shape[-1] - d * (k - 1) - 1) // s + 1
    rows = [xp[b, :, [j * s + i * d for i in range(k)]].reshape(-1) for b in range(x.shape[0]) for j in range(n_out)]
    return torch.stack(rows)


def identity_conv_reference(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The patch matrix by definition: column j is the conv with the j-th one-hot filter (float64).

    Covers every padding ("same", padding_mode reflect/circular/replicate) as the module does it.
    """
    c, kernel = conv.in_channels, conv.kernel_size
    ck = c * math.prod(kernel)
    ref = type(conv)(c, ck, kernel, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                     bias=False, padding_mode=conv.padding_mode).double()
    with torch.no_grad():
        ref.weight.copy_(torch.eye(ck, dtype=torch.float64).reshape(ck, c, *kernel))
        y = ref(x.double())  # (B, C k, *out)
    return y.flatten(2).transpose(1, 2).reshape(-1, ck)


def st_reference(A: torch.Tensor) -> float:
    s = torch.linalg.svdvals(A.double())
    return float(s.square().sum() / s[0] ** 2)


def nr_reference(G: torch.Tensor) -> float:
    s = torch.linalg.svdvals(G.double().reshape(G.shape[0], -1))
    return float(s.sum() ** 2 / s.square().sum())


# -- models --------------------------------------------------------------------------------------
class CNN(nn.Module):
    """Conv2d, strided Conv2d, a depthwise Conv2d (AdamW), a dilated Conv1d, a Linear head."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.c1 = nn.Conv2d(2, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.t = nn.Conv1d(8, 6, 3, padding=2, dilation=2)
        self.head = nn.Linear(6 * 16, 3)

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.c1(x))))   # (B, 8, 4, 4)
        h = h + self.dw(h)
        h = torch.relu(self.t(h.flatten(2)))               # (B, 6, 16)
        return self.head(h.flatten(1))


def data(seed=0, n=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 8, 8, generator=g)
    y = torch.stack([x[:, 0].mean((1, 2)), x[:, 1, :4].mean((1, 2)), (x[:, 0] * x[:, 1]).mean((1, 2))], 1)
    return x, 4 * y


def loss_fn(model, x, y):
    return (model(x) - y).square().mean()


# -- st(A) of the patch matrix ---------------------------------------------------------------------
CONVS = [
    (lambda: nn.Conv1d(3, 5, 4, stride=2, padding=3, dilation=2), (17,)),
    (lambda: nn.Conv1d(4, 6, 3, stride=3, padding=1), (20,)),
    (lambda: nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2)), (9, 11)),
    (lambda: nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2), (10, 7)),
]


@pytest.mark.parametrize("make, spatial", CONVS)
@pytest.mark.parametrize("max_elements", [1 << 24, 40, 1])  # whole batch, samples/bands, one position
def test_patch_st_matches_unfold_svd(make, spatial, max_elements):
    torch.manual_seed(1)
    conv = make()
    x = torch.randn(5, conv.in_channels, *spatial) + 0.3  # a mean spike: st well below its maximum
    A = unfold_reference(conv, x)
    torch.testing.assert_close(A, identity_conv_reference(conv, x))  # the two references agree
    geometry = PatchGeometry.of(conv)
    gram, rows = patch_gram(geometry, x, max_elements, dtype=torch.float64)
    assert rows == A.shape[0]
    torch.testing.assert_close(gram, A.T @ A)
    assert patch_stable_rank(geometry, x, max_elements) == pytest.approx(st_reference(A), rel=1e-4)


@pytest.mark.parametrize("conv, spatial", [
    (nn.Conv1d(3, 4, 4, padding="same", dilation=2, padding_mode="reflect"), (15,)),
    (nn.Conv2d(2, 4, (4, 3), padding="same", padding_mode="circular"), (7, 9)),
    (nn.Conv2d(2, 3, 3, stride=2, padding=1, padding_mode="replicate"), (8, 8)),
    (nn.Conv2d(2, 3, 3, padding="valid"), (6, 5)),
])
def test_patch_st_follows_same_and_padding_modes(conv, spatial):
    x = torch.randn(3, conv.in_channels, *spatial, generator=torch.Generator().manual_seed(2)) + 0.3
    A = identity_conv_reference(conv, x)
    geometry = PatchGeometry.of(conv)
    torch.testing.assert_close(patch_gram(geometry, x, 7, dtype=torch.float64)[0], A.T @ A)
    assert patch_stable_rank(geometry, x) == pytest.approx(st_reference(A), rel=1e-4)


@pytest.mark.parametrize("conv, spatial", [
    (nn.Conv2d(6, 3, 3, padding=1, groups=3), (7, 7)),
    (nn.Conv2d(4, 8, (3, 2), stride=2, padding=1, dilation=(1, 2), groups=4, padding_mode="circular"), (9, 10)),
    (nn.Conv1d(6, 4, 4, padding="same", groups=2, padding_mode="reflect"), (13,)),
])
def test_grouped_patches_stack_the_groups_as_rows(conv, spatial):
    """groups > 1 (the monitor's A): each group's patches, cut as a groups=1 conv on its own
    C/groups channels cuts them, stacked as rows (sample, group, position); the Gram agrees."""
    x = torch.randn(3, conv.in_channels, *spatial, generator=torch.Generator().manual_seed(3)) + 0.3
    g, cg = conv.groups, conv.in_channels // conv.groups
    one = type(conv)(cg, 1, conv.kernel_size, stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                     padding_mode=conv.padding_mode)
    ckg = cg * math.prod(conv.kernel_size)
    parts = [identity_conv_reference(one, x[:, i * cg:(i + 1) * cg]).reshape(x.shape[0], -1, ckg) for i in range(g)]
    A = torch.stack(parts, 1).reshape(-1, parts[0].shape[-1])  # (B * g * L, C/g k)
    torch.testing.assert_close(conv_patches(conv, x.double()), A)
    for max_elements in (1 << 24, 7):  # whole batch; bands of one output row
        gram, rows = patch_gram(PatchGeometry.of(conv), x, max_elements, dtype=torch.float64)
        assert rows == A.shape[0]
        torch.testing.assert_close(gram, A.T @ A)


def test_unbatched_input_and_zero_input():
    conv = nn.Conv1d(3, 4, 3, padding=1)
    x = torch.randn(3, 10)
    geometry = PatchGeometry.of(conv)
    assert patch_stable_rank(geometry, x) == pytest.approx(st_reference(unfold_reference(conv, x[None])), rel=1e-4)
    assert math.isnan(patch_stable_rank(geometry, torch.zeros(2, 3, 10)))


# -- the optimizer's own measurement -----------------------------------------------------------------
class TwoOnOne(nn.Module):
    """Two convs with different kernels on the same input (a cache keyed on the input alone would mix them)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Conv2d(2, 4, 1)
        self.b = nn.Conv2d(2, 4, 3, padding=1, dilation=1, stride=2)
        self.head = nn.Linear(4 * 64 + 4 * 16, 3)

    def forward(self, x):
        return self.head(torch.cat([torch.relu(self.a(x)).flatten(1), torch.relu(self.b(x)).flatten(1)], 1))


def test_measured_st_and_nr_match_references():
    for model in (CNN(), TwoOnOne()):
        opt = GatedSpectral(model, lr=1e-3, every=2)
        seen = {}
        convs = {n: m for n, m in model.named_modules() if n in opt.modes()}
        handles = [m.register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, i[0].detach().clone()))
                   for n, m in convs.items()]
        x, y = data()
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        grads = {n: m.weight.grad.clone() for n, m in convs.items()}
        opt.step()
        for h in handles:
            h.remove()
        ch = opt.choices().set_index("name")
        assert set(ch.index) == set(convs)
        for n, m in convs.items():
            assert ch.loc[n, "st"] == pytest.approx(st_reference(unfold_reference(m, seen[n])), rel=1e-4), n
            assert ch.loc[n, "nr"] == pytest.approx(nr_reference(grads[n]), rel=1e-9), n
        opt.close()
        assert all(len(m._forward_hooks) == 0 for m in model.modules())


# -- which weights are gated -------------------------------------------------------------------------
def test_gated_layers_and_exclude_last():
    assert set(GatedSpectral(CNN()).modes()) == {"c1", "c2", "t"}   # head excluded, depthwise on AdamW
    assert set(GatedSpectral(CNN(), exclude_last=False).modes()) == {"c1", "c2", "t", "head"}
    assert GatedSpectral(CNN(), gate_convs=False).modes() == {}      # the old behaviour: Linears only
    fully_conv = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 1))
    assert set(GatedSpectral(fully_conv).modes()) == {"0", "2"}       # the last conv is the head
    mixed = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 2))
    assert set(GatedSpectral(mixed).modes()) == {"0", "2"}
    assert set(GatedSpectral(mixed, gate_convs=False).modes()) == {"2"}


def test_grouped_transposed_and_3d_convs_stay_adamw():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.ConvTranspose2d(4, 4, 2),
                          nn.Conv2d(4, 4, 1, groups=4), nn.Flatten(), nn.Linear(4 * 25, 2))
    opt = GatedSpectral(model, lr=1e-2, force="spectral", exclude_last=False)
    assert set(opt.modes()) == {"4"}
    vol = nn.Sequential(nn.Conv3d(1, 2, 2), nn.Flatten(), nn.Linear(2 * 27, 2), nn.Linear(2, 1))
    assert set(GatedSpectral(vol).modes()) == {"2"}
    x = torch.randn(3, 4, 4, 4)
    for _ in range(2):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    for i in (0, 1, 2):
        st = opt.state[model[i].weight]
        assert "spectral" not in st and st["step"] == 2


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_gate_convs_validated(bad):
    with pytest.raises(ValueError, match=re.escape(f"Invalid gate_convs: {bad!r}")):
        GatedSpectral(CNN(), gate_convs=bad)


# -- modes and the steps ---------------------------------------------------------------------------
def test_force_spectral_equals_plain_muon_on_reshaped_conv():
    m1, m2 = CNN(), CNN()
    lr, mu, wd = 1e-2, 0.95, 0.05
    opt1 = GatedSpectral(m1, lr=lr, momentum=mu, weight_decay=wd, force="spectral")
    x, y = data()
    for _ in range(3):
        opt1.zero_grad()
        loss_fn(m1, x, y).backward()
        opt1.step()
    train_muon_adamw(m2, [m2.c1.weight, m2.c2.weight, m2.t.weight], (x, y), loss_fn, 3, lr, mu, wd)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert set(opt1.modes().values()) == {"spectral"}


def test_conv_hysteresis_with_st_provider():
    model = CNN()
    st = {}
    opt = GatedSpectral(model, lr=1e-3, every=1, hi=2.0, lo=1.0, st_provider=lambda n: st.get(n))
    x, y = data()

    def step_with_ratio(target):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        for n in ("c1", "c2", "t"):
            st[n] = nr_reference(getattr(model, n).weight.grad) / target
        opt.step()
        return opt.modes()

    assert set(step_with_ratio(1.5).values()) == {"euclidean"}   # between lo and hi: stays
    assert set(step_with_ratio(2.5).values()) == {"spectral"}    # above hi: switches
    assert set(step_with_ratio(1.5).values()) == {"spectral"}    # between: stays spectral
    assert set(step_with_ratio(0.5).values()) == {"euclidean"}   # below lo: back
    ch = opt.choices().query("name == 't'")
    assert ch["ratio"].tolist() == pytest.approx([1.5, 2.5, 1.5, 0.5], rel=1e-6)
    assert ch["switched"].tolist() == [False, True, False, True]


def test_small_cnn_trains_and_state_dict_round_trips():
    model = CNN()
    opt = GatedSpectral(model, lr=3e-3, every=3)
    x, y = data()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]
    ch = opt.choices()
    assert set(ch["name"]) == {"c1", "c2", "t"} and ch["ratio"].notna().all()
    # the stem sees raw Gaussian pixels (high st) and stays Euclidean; deeper convs switch
    assert opt.modes() == {"c1": "euclidean", "c2": "spectral", "t": "spectral"}

    _assert_resumes_identically(opt, model, lambda m: GatedSpectral(m, lr=3e-3, every=3), (x, y))


def _assert_resumes_identically(opt, model, make_opt, batch):
    """A fresh model + optimizer loaded from (model, opt)'s state takes the same next step, bit for bit."""
    x, y = batch
    sd = copy.deepcopy(opt.state_dict())
    model2 = CNN(seed=1)
    model2.load_state_dict(model.state_dict())
    opt2 = make_opt(model2)
    opt2.load_state_dict(sd)
    assert opt2.modes() == opt.modes()
    for o, m in ((opt, model), (opt2, model2)):
        o.zero_grad()
        loss_fn(m, x, y).backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_state_dict_round_trip_in_spectral_mode():
    model = CNN()
    opt = GatedSpectral(model, lr=1e-2, every=1, hi=1e-6, lo=1e-6)  # any finite ratio -> spectral
    x, y = data()
    for _ in range(2):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()
    assert set(opt.modes().values()) == {"spectral"}
    _assert_resumes_identically(opt, model, lambda m: GatedSpectral(m, lr=1e-2, every=1, hi=1e-6, lo=1e-6), (x, y))


def test_conv_st_agrees_with_the_monitor():
    monitor_mod = pytest.importorskip("spectralens.monitor")
    from spectralens.optim import st_from_monitor

    m1, m2 = CNN(), CNN()
    own = GatedSpectral(m1, lr=1e-2, every=2)
    mon = monitor_mod.SpectralMonitor(m2, every=2, alpha_every=0, weight_stats=False)
    via = GatedSpectral(m2, lr=1e-2, every=2, st_provider=st_from_monitor(mon))
    x, y = data()
    for _ in range(3):
        for m, o in ((m1, own), (m2, via)):
            o.zero_grad()
            loss_fn(m, x, y).backward()
            if o is via:
                mon.step()
            o.step()
    mon.close()
    a, b = own.choices(), via.choices()
    assert list(a["name"]) == list(b["name"]) == ["c1", "c2", "t"] * 2
    assert b["st"].tolist() == pytest.approx(a["st"].tolist(), rel=1e-3)
    assert list(a["mode"]) == list(b["mode"])
