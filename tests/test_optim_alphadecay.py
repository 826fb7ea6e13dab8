"""AlphaDecay against a plain reference: numpy full SVD in float64 + the textbook Hill MLE."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from spectralens.optim import AlphaDecay, module_param_groups


def make_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(),   # 0: first layer (excluded)
        nn.Linear(64, 64), nn.ReLU(),   # 2: tuned
        nn.Linear(64, 80), nn.ReLU(),   # 4: tuned
        nn.Linear(80, 40), nn.ReLU(),   # 6: 40 < 50 eigenvalues (excluded)
        nn.LayerNorm(40),               # 8: norm keeps wd0
        nn.Linear(40, 8),               # 9: last layer (excluded)
    )


def ref_hill(W: np.ndarray) -> float:
    """Textbook Hill: ascending eigenvalues of W^T W, xmin at index floor(N/2)."""
    ev = np.sort(np.linalg.svd(W.astype(np.float64), compute_uv=False) ** 2)
    k = len(ev) // 2
    tail = ev[k:]
    return 1.0 + len(tail) / np.sum(np.log(tail / ev[k]))


def ref_conv_hill(W: np.ndarray) -> float:
    out_c, in_c = W.shape[:2]
    slices = W.reshape(out_c, in_c, -1).transpose(2, 0, 1) * math.sqrt(0.5)
    ev = np.sort(np.concatenate([np.linalg.svd(s.astype(np.float64), compute_uv=False) ** 2 for s in slices]))
    k = len(ev) // 2
    return 1.0 + (len(ev) - k) / np.sum(np.log(ev[k:] / ev[k]))


def ref_wd(alphas: dict, wd0: float, s1: float, s2: float) -> dict:
    lo, hi = min(alphas.values()), max(alphas.values())
    return {n: wd0 * (s1 + (a - lo) / (hi - lo) * (s2 - s1)) for n, a in alphas.items()}


def wd_of(opt, module) -> float:
    return next(g["weight_decay"] for g in opt.param_groups if any(p is module.weight for p in g["params"]))


def test_assignments_match_reference_and_exclusions():
    model = make_mlp()
    opt = torch.optim.AdamW(module_param_groups(model, 0.1), lr=1e-3)
    ad = AlphaDecay(opt, model)
    alphas = {str(i): ref_hill(model[i].weight.detach().numpy()) for i in (2, 4)}
    expect = ref_wd(alphas, 0.1, 0.6666, 3.0)
    table = ad.assignments().set_index("name")
    for name in ("2", "4"):
        assert table.loc[name, "status"] == "tuned"
        assert table.loc[name, "alpha"] == pytest.approx(alphas[name], rel=1e-4)
        assert wd_of(opt, model[int(name)]) == pytest.approx(expect[name], rel=1e-4)
    assert table.loc["0", "status"] == "excluded: first layer"
    assert table.loc["9", "status"] == "excluded: last layer"
    assert table.loc["6", "status"].startswith("excluded: 40 < 50")
    for i in (0, 6, 9):
        assert wd_of(opt, model[i]) == 0.1
    norm_group = next(g for g in opt.param_groups if any(p is model[8].weight for p in g["params"]))
    assert norm_group["weight_decay"] == 0.1
    assert sorted(expect.values()) == pytest.approx([0.1 * 0.6666, 0.1 * 3.0])


def test_conv_uses_sqrt_half_slices():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 32, 3), nn.Conv2d(32, 32, 3), nn.Conv2d(32, 32, 3),
                          nn.Flatten(), nn.Linear(32, 4))
    opt = torch.optim.SGD(module_param_groups(model, 1e-2), lr=1e-2)
    ad = AlphaDecay(opt, model, s1=1.0, s2=2.0)
    table = ad.assignments().set_index("name")
    for i in (1, 2, 3):
        assert table.loc[str(i), "alpha"] == pytest.approx(ref_conv_hill(model[i].weight.detach().numpy()), rel=1e-4)
        assert table.loc[str(i), "num_evals"] == (9 * 16 if i == 1 else 9 * 32)


def test_mean_preserving_option():
    model = make_mlp()
    model.insert(4, nn.Linear(64, 64))  # a third tuned layer, so the mean is not trivially symmetric
    opt = torch.optim.AdamW(module_param_groups(model, 0.05), lr=1e-3)
    ad = AlphaDecay(opt, model, preserve_mean=True)
    tuned = ad.assignments().query("status == 'tuned'")
    assert len(tuned) == 3
    assert tuned["weight_decay"].mean() == pytest.approx(0.05, rel=1e-9)
    assert tuned["weight_decay"].std() > 0


def test_shared_group_raises_or_splits():
    model = make_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    with pytest.raises(ValueError, match="module '2' shares param group 0"):
        AlphaDecay(opt, model)
    ad = AlphaDecay(opt, model, split_groups=True)
    assert len(opt.param_groups) == 3
    assert {g.get("name") for g in opt.param_groups[1:]} == {"2", "4"}
    assert wd_of(opt, model[2]) != 0.1 and wd_of(opt, model[0]) == 0.1
    assert ad.assignments().query("status == 'tuned'").shape[0] == 2


@pytest.mark.parametrize("kwargs, needle", [
    (dict(every=0), "every must be a positive int, got 0"),
    (dict(s1=2.0, s2=1.0), "s1=2.0, s2=1.0"),
    (dict(s1=-1.0), "s1 must be a finite number >= 0, got -1.0"),
    (dict(min_eigs=-3), "min_eigs must be an int >= 0, got -3"),
])
def test_bad_arguments_name_the_value(kwargs, needle):
    model = make_mlp()
    opt = torch.optim.AdamW(module_param_groups(model, 0.1), lr=1e-3)
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        AlphaDecay(opt, model, **kwargs)


def _train(model, opt, ad, steps, seed, log):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, 16, generator=gen)
        loss = (model(x) - x[:, :8]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ad.step()
        log.append([g["weight_decay"] for g in opt.param_groups])
    return loss.item()


def test_state_dict_resume_gives_identical_assignments():
    model = make_mlp()
    opt = torch.optim.AdamW(module_param_groups(model, 0.1), lr=3e-3)
    ad = AlphaDecay(opt, model, every=3)
    _train(model, opt, ad, 4, seed=0, log=[])
    ckpt = copy.deepcopy((model.state_dict(), opt.state_dict(), ad.state_dict()))
    ckpt_wd = [g["weight_decay"] for g in opt.param_groups]
    straight: list = []
    _train(model, opt, ad, 8, seed=1, log=straight)

    model2 = make_mlp(seed=5)
    opt2 = torch.optim.AdamW(module_param_groups(model2, 0.1), lr=3e-3)
    ad2 = AlphaDecay(opt2, model2, every=3)
    model2.load_state_dict(ckpt[0])
    opt2.load_state_dict(ckpt[1])
    ad2.load_state_dict(ckpt[2])
    assert [g["weight_decay"] for g in opt2.param_groups] == ckpt_wd
    resumed: list = []
    _train(model2, opt2, ad2, 8, seed=1, log=resumed)
    assert resumed == straight
    assert ad2.assignments().equals(ad.assignments())


def test_recomputes_every_n_steps_and_reduces_loss():
    model = make_mlp()
    model.insert(4, nn.Linear(64, 64))  # three tuned layers: the middle factor can move
    opt = torch.optim.AdamW(module_param_groups(model, 0.1), lr=3e-3)
    ad = AlphaDecay(opt, model, every=5)
    first = _train(model, opt, ad, 1, seed=0, log=[])
    log: list = []
    last = _train(model, opt, ad, 29, seed=2, log=log)
    assert last < 0.7 * first
    changes = [i for i in range(1, len(log)) if log[i] != log[i - 1]]
    assert changes and all((i + 2) % 5 == 0 for i in changes)  # step counter = i + 2 at log index i
    assert ad.overhead_s > 0


def test_with_adam_coupled_l2_and_sgd():
    for cls in (torch.optim.Adam, torch.optim.SGD):
        model = make_mlp()
        opt = cls(module_param_groups(model, 1e-4), lr=1e-3)
        ad = AlphaDecay(opt, model, s2=5.0)
        assert max(g["weight_decay"] for g in opt.param_groups) == pytest.approx(5e-4)


def test_with_spectralens_muon_and_hybrid():
    optim = pytest.importorskip("spectralens.optim")
    if not hasattr(optim, "Muon") or not hasattr(optim, "hybrid"):
        pytest.skip("spectralens.optim.Muon / hybrid not available yet")
    model = make_mlp()
    groups = [g for g in module_param_groups(model, 0.1) if g["name"] != "untuned"]
    for g in groups:
        g["params"] = [p for p in g["params"] if p.dim() == 2]
    muon = optim.Muon(groups, lr=0.02, weight_decay=0.1)
    model2 = make_mlp()
    hyb = optim.hybrid(model2, lr=0.02, weight_decay=0.1, per_param_groups=True)
    x = torch.randn(32, 16)
    for m, opt in ((model, muon), (model2, hyb)):
        ad = AlphaDecay(opt, m, every=2)
        assert sorted(wd_of(opt, m[i]) for i in (2, 4)) == pytest.approx([0.1 * 0.6666, 0.3])
        for _ in range(3):
            opt.zero_grad()
            (m(x) - x[:, :8]).square().mean().backward()
            opt.step()
            ad.step()
        assert ad.assignments().query("status == 'tuned'").shape[0] == 2


def test_frozen_layer_is_skipped_and_wrong_model_raises():
    model = make_mlp()
    model.insert(4, nn.Linear(64, 64))
    model[4].weight.requires_grad_(False)
    groups = [g for g in module_param_groups(model, 0.1) if all(p.requires_grad for p in g["params"])]
    for g in groups:
        g["params"] = [p for p in g["params"] if p.requires_grad]
    opt = torch.optim.AdamW(groups, lr=1e-3)
    table = AlphaDecay(opt, model).assignments().set_index("name")
    assert table.loc["4", "status"] == "excluded: not in the optimizer"
    assert (table["status"] == "tuned").sum() == 2
    with pytest.raises(ValueError, match="none of the 3 tunable modules"):
        AlphaDecay(opt, make_mlp(seed=1).insert(4, nn.Linear(64, 64)))
