"""spectralens.optim.Muon: agreement with a float32 transcription and torch.optim.Muon,
shapes (conv, 3-D stacks, batching across groups), torch.optim conventions, bad arguments."""
import copy
import math

import pytest
import torch
from torch import nn

from reference_optim import ReferenceMuon, newton_schulz, scale
from spectralens.linalg.orthogonalize import polar_svd
from spectralens.optim import Muon, lr_scale

SHAPES = [(24, 40), (40, 24), (24, 40), (32, 32)]


def _params(shapes=SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(*s, generator=g) * 0.1) for s in shapes]


def _grads(params, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=g) for p in params] for _ in range(steps)]


def _run(opt, params, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("opts", [
    dict(),
    dict(nesterov=False, weight_decay=0.1, adjust_lr="match_rms_adamw"),
    dict(momentum_type="classic", momentum=0.9, adjust_lr="spectral", weight_decay=0.01),
    dict(momentum_type="classic", nesterov=False, adjust_lr="none", ns_steps=3),
])
def test_matches_float32_transcription(opts):
    ours, ref = _params(), _params()
    grads = _grads(ours, 4)
    _run(Muon(ours, lr=0.05, **opts), ours, grads)
    _run(ReferenceMuon(ref, lr=0.05, **opts), ref, grads)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), (a - b).abs().max()


@pytest.mark.parametrize("rule, nesterov", [("original", True), ("match_rms_adamw", False)])
def test_agrees_with_torch_optim_muon_to_bf16_rounding(rule, nesterov):
    """torch.optim.Muon runs NS in bfloat16; ours in float32 on CPU: relative update diff ~1e-2."""
    shapes = [(32, 48), (48, 32)]
    cfg = dict(lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=nesterov)
    ours, theirs, ours_bf16 = _params(shapes), _params(shapes), _params(shapes)
    start = [p.detach().clone() for p in ours]
    grads = _grads(ours, 3)
    _run(Muon(ours, adjust_lr=rule, **cfg), ours, grads)
    _run(torch.optim.Muon(theirs, adjust_lr_fn=rule, **cfg), theirs, grads)
    _run(Muon(ours_bf16, adjust_lr=rule, compute_dtype=torch.bfloat16, **cfg), ours_bf16, grads)
    for a, b, c, s in zip(ours, theirs, ours_bf16, start):
        rel = ((a - s) - (b - s)).norm() / (b - s).norm()
        assert rel < 3e-2, rel
        assert ((c - s) - (b - s)).norm() / (b - s).norm() < 1e-2  # same dtype: closer still


def test_torch_defaults_and_scale_rules():
    assert lr_scale("original", 3072, 768) == pytest.approx(2.0) and lr_scale("original", 768, 3072) == 1.0
    assert lr_scale(None, 3072, 768) == 2.0
    assert lr_scale("match_rms_adamw", 768, 3072) == pytest.approx(0.2 * math.sqrt(3072))
    assert lr_scale("spectral", 768, 3072) == pytest.approx(0.5)
    for rule in ("original", "match_rms_adamw", "spectral", "none"):
        assert lr_scale(rule, 40, 24) == pytest.approx(scale(rule, 40, 24))
    opt = Muon(_params())
    d = opt.defaults
    assert (d["lr"], d["momentum"], d["nesterov"], d["weight_decay"], d["ns_steps"], d["adjust_lr"]) == \
        (0.02, 0.95, True, 0.0, 5, "original")
    assert d["compute_dtype"] is None


def test_conv_weight_flattened_with_scale_on_flat_shape():
    w = nn.Parameter(torch.zeros(8, 3, 3, 3))
    g = torch.randn(8, 3, 3, 3)
    w.grad = g
    Muon([w], lr=0.1, momentum=0.0).step()
    flat = g.reshape(8, 27)
    expect = -0.1 * scale("original", 8, 27) * newton_schulz(flat).reshape(8, 3, 3, 3)
    assert torch.allclose(w.detach(), expect, atol=1e-6)


def test_3d_stack_is_a_batch_and_flatten_true_is_conv1d():
    w = nn.Parameter(torch.zeros(4, 16, 8))
    g = torch.randn(4, 16, 8)
    w.grad = g
    Muon([w], lr=0.1, momentum=0.0).step()
    for e in range(4):
        assert torch.allclose(w[e].detach(), -0.1 * 2**0.5 * newton_schulz(g[e]), atol=1e-6)
    c = nn.Parameter(torch.zeros(6, 4, 3))
    c.grad = torch.randn(6, 4, 3)
    Muon([{"params": [c], "flatten": True}], lr=0.1, momentum=0.0).step()
    assert torch.allclose(c.detach().reshape(6, 12), -0.1 * newton_schulz(c.grad.reshape(6, 12)), atol=1e-6)


def test_same_shape_batched_across_groups_with_their_own_lr(monkeypatch):
    import spectralens.optim.muon as muon_mod
    calls = []
    real = muon_mod.orthogonalize
    monkeypatch.setattr(muon_mod, "orthogonalize", lambda X, *a: calls.append(tuple(X.shape)) or real(X, *a))
    ps = _params([(16, 24)] * 3 + [(24, 16)])
    ref = _params([(16, 24)] * 3 + [(24, 16)])
    grads = _grads(ps, 2)
    opt = Muon([{"params": ps[:2], "lr": 0.01}, {"params": ps[2:], "lr": 0.03}])
    _run(opt, ps, grads)
    assert sorted(calls) == sorted([(3, 16, 24), (1, 24, 16)] * 2)  # one call per shape per step
    r1, r2 = ReferenceMuon(ref[:2], lr=0.01), ReferenceMuon(ref[2:], lr=0.03)
    for gs in grads:
        for p, g in zip(ref, gs):
            p.grad = g.clone()
        r1.step(), r2.step()
    for a, b in zip(ps, ref):
        assert torch.allclose(a, b, atol=1e-6)


def test_svd_orthogonalizer_gives_exact_polar_update():
    w = nn.Parameter(torch.zeros(12, 20))
    w.grad = torch.randn(12, 20)
    Muon([w], lr=1.0, momentum=0.0, orthogonalizer="svd").step()
    assert torch.allclose(-w.detach(), polar_svd(w.grad), atol=1e-6)
    w2 = nn.Parameter(torch.zeros(12, 20))
    w2.grad = w.grad.clone()
    Muon([w2], lr=1.0, momentum=0.0, orthogonalizer="polar_express").step()
    assert (w2.detach() + polar_svd(w.grad)).norm() < 0.2 * polar_svd(w.grad).norm()


def test_lazy_state_closure_state_dict_round_trip():
    ps = _params()
    opt = Muon(ps, lr=0.05, weight_decay=0.1)
    assert len(opt.state) == 0
    grads = _grads(ps, 6)
    _run(opt, ps, grads[:3])
    assert set(opt.state[ps[0]]) == {"momentum_buffer"}
    clone = _params()
    for a, b in zip(clone, ps):
        a.data.copy_(b.data)
    opt2 = Muon(clone, lr=0.05, weight_decay=0.1)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if saved to disk
    _run(opt, ps, grads[3:])
    _run(opt2, clone, grads[3:])
    for a, b in zip(ps, clone):
        assert torch.equal(a, b)
    w = nn.Parameter(torch.randn(6, 6))
    o = Muon([w])

    def closure():
        o.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    assert o.step(closure) is not None and w.grad is not None


def test_bfloat16_parameters_keep_their_dtype_and_compute_in_float32():
    w = nn.Parameter(torch.randn(16, 24).bfloat16())
    w.grad = torch.randn(16, 24).bfloat16()
    opt = Muon([w], lr=0.1)
    opt.step()
    assert w.dtype == torch.bfloat16 and opt.state[w]["momentum_buffer"].dtype == torch.bfloat16
    assert torch.isfinite(w.float()).all()


def test_zero_gradient_gives_no_nan_and_no_grad_is_skipped():
    w, v = nn.Parameter(torch.randn(5, 7)), nn.Parameter(torch.randn(5, 7))
    before = v.detach().clone()
    w.grad = torch.zeros(5, 7)
    Muon([w, v]).step()
    assert torch.isfinite(w).all() and torch.equal(v.detach(), before)


def test_lr_scheduler_and_grad_clipping_work():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.Tanh(), nn.Linear(16, 1, bias=False))
    opt = Muon(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    for _ in range(4):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0125)


def test_reduces_loss_on_teacher_student_regression():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 8))
    student = nn.Sequential(nn.Linear(16, 32, bias=False), nn.Tanh(), nn.Linear(32, 32, bias=False),
                            nn.Tanh(), nn.Linear(32, 8, bias=False))
    x = torch.randn(256, 16)
    y = teacher(x).detach()
    opt = Muon(student.parameters(), lr=0.02)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.mse_loss(student(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


@pytest.mark.parametrize("kwargs, text", [
    (dict(lr=-0.1), "lr=-0.1"),
    (dict(adjust_lr="sqrt"), "adjust_lr='sqrt'"),
    (dict(momentum=1.5), "momentum=1.5"),
    (dict(weight_decay=-1.0), "weight_decay=-1.0"),
    (dict(orthogonalizer="qr"), "orthogonalizer='qr'"),
    (dict(momentum_type="adam"), "momentum_type='adam'"),
    (dict(ns_steps=-2), "ns_steps=-2"),
])
def test_bad_arguments_name_the_value(kwargs, text):
    with pytest.raises(ValueError) as e:
        Muon(_params(), **kwargs)
    assert text in str(e.value)


def test_1d_parameter_rejected_with_its_name_and_shape():
    model = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"'bias' of shape \(3,\)"):
        Muon(model.named_parameters())
    with pytest.raises(ValueError, match=r"1-D parameter of shape \(3,\)"):
        Muon([model.weight, model.bias])
    with pytest.raises(ValueError, match="lr=-1"):
        Muon([{"params": [model.weight], "lr": -1}])
