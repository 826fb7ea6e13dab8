"""hybrid(model): routing table, one optimizer object, AdamW/Muon parity per group, conventions."""
import copy
import logging

import pytest
import torch
from torch import nn

from reference_optim import ReferenceMuon
from spectralens.nets.gpt import GPT, GPTConfig
from spectralens.optim import HybridOptimizer, Muon, hybrid


def _gpt(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=True)
    return GPT(GPTConfig(**{**cfg, **kw}))


def _where(opt):
    return {a.name: a.optimizer for a in opt.assignment}


@pytest.mark.parametrize("tie", [False, True])
def test_gpt_routing(tie):
    model = _gpt(tie_weights=tie)
    where = _where(hybrid(model))
    assert where["tok_emb.weight"] == "adamw" and where["pos_emb.weight"] == "adamw"
    if not tie:
        assert where["lm_head.weight"] == "adamw"
    else:
        assert "lm_head.weight" not in where  # the same tensor as tok_emb.weight, listed once
    for name, p in model.named_parameters():
        hidden = name.startswith("blocks.") and name.endswith("weight") and p.dim() == 2
        assert where[name] == ("muon" if hidden else "adamw"), name
    assert set(where) == {n for n, _ in model.named_parameters()}


def test_tied_head_registered_first_still_goes_to_adamw():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.out = nn.Linear(8, 20, bias=False)
            self.hidden = nn.Linear(8, 8)
            self.emb = nn.Embedding(20, 8)
            self.emb.weight = self.out.weight
    opt = hybrid(Net())
    reasons = {a.name: a.reason for a in opt.assignment}
    assert _where(opt)["out.weight"] == "adamw" and "tied to embedding 'emb'" in reasons["out.weight"]
    assert _where(opt)["hidden.weight"] == "muon"


def test_conv_net_routing_first_conv_and_conv1d():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.Conv1d(8, 4, 3),
                        nn.Flatten(), nn.Linear(16, 16), nn.Linear(16, 10))
    opt = hybrid(net, head_names=("6",))
    w = _where(opt)
    assert w["0.weight"] == "adamw" and w["2.weight"] == "muon" and w["3.weight"] == "muon"
    assert w["5.weight"] == "muon" and w["6.weight"] == "adamw" and w["0.bias"] == "adamw"
    conv_group = next(g for g in opt.param_groups if g["group_name"] == "muon_conv")
    assert conv_group["flatten"] is True and conv_group["use_muon"]
    assert len(conv_group["params"]) == 2


def test_moe_stack_goes_to_muon_as_a_batch():
    class MoE(nn.Module):
        def __init__(self):
            super().__init__()
            self.router = nn.Linear(8, 4, bias=False)
            self.experts = nn.Parameter(torch.randn(4, 16, 8))
    opt = hybrid(MoE())
    reasons = {a.name: (a.optimizer, a.reason) for a in opt.assignment}
    assert reasons["experts"] == ("muon", "stack of matrices, batched")


def test_name_pattern_overrides_and_bad_pattern():
    model = _gpt()
    w = _where(hybrid(model, adamw_patterns=["blocks.0.attn.*"], muon_patterns=["lm_head.*"]))
    assert w["blocks.0.attn.q.weight"] == "adamw" and w["blocks.1.attn.q.weight"] == "muon"
    assert w["lm_head.weight"] == "muon"
    with pytest.raises(ValueError, match="'blocks.0.norm1.weight'"):
        hybrid(model, muon_patterns=["blocks.0.norm1.*"])


def test_assignment_is_logged_and_tabulated(caplog):
    with caplog.at_level(logging.INFO, logger="spectralens.optim.hybrid"):
        opt = hybrid(_gpt())
    assert "blocks.0.mlp.up.weight" in caplog.text and "hidden matrix" in caplog.text
    table = opt.assignment_table()
    assert table.splitlines()[0].split() == ["parameter", "shape", "optimizer", "reason"]
    assert "lm_head.weight" in table and "output head 'lm_head'" in table


def test_one_optimizer_matches_separate_adamw_and_muon():
    """The hybrid step == torch.optim.AdamW on the AdamW groups + reference Muon on the rest.

    No biases: the key bias has an identically-zero gradient (softmax shift invariance), whose
    rounding noise Adam would amplify into an lr-sized, run-dependent step.
    """
    model = _gpt(bias=False)
    ref = copy.deepcopy(model)
    opt = hybrid(model, lr=0.02, weight_decay=0.1, adamw_lr=1e-3, adamw_weight_decay=0.05,
                 adamw_betas=(0.9, 0.95))
    assert isinstance(opt, torch.optim.Optimizer) and isinstance(opt, HybridOptimizer)
    muon_names = {a.name for a in opt.assignment if a.optimizer == "muon"}
    named = dict(ref.named_parameters())
    r_muon = ReferenceMuon([named[n] for n in sorted(muon_names)], lr=0.02, weight_decay=0.1)
    decay = [p for n, p in named.items() if n not in muon_names and p.dim() >= 2]
    no_decay = [p for n, p in named.items() if n not in muon_names and p.dim() < 2]
    r_adam = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                {"params": no_decay, "weight_decay": 0.0}], lr=1e-3, betas=(0.9, 0.95))
    x = torch.randint(0, 32, (4, 16))
    for _ in range(3):
        for m, o in ((model, opt), (ref, None)):
            m.zero_grad()
            m(x, x)[1].backward()
        opt.step()
        r_muon.step()
        r_adam.step()
    for (n, a), b in zip(model.named_parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), n


def test_state_dict_scheduler_zero_grad_closure():
    model = _gpt()
    opt = hybrid(model, lr=0.02, adamw_lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    x = torch.randint(0, 32, (4, 16))

    def closure():
        opt.zero_grad()
        loss = model(x, x)[1]
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
        sched.step()
    lrs = {g["group_name"]: g["lr"] for g in opt.param_groups}
    assert lrs["muon"] == pytest.approx(0.005) and lrs["adamw"] == pytest.approx(2.5e-4)
    clone = copy.deepcopy(model)
    opt2 = hybrid(clone, lr=0.02, adamw_lr=1e-3)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    opt.step(closure)

    def closure2():
        opt2.zero_grad()
        loss = clone(x, x)[1]
        loss.backward()
        return loss

    opt2.step(closure2)
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_per_param_groups_for_alphadecay():
    model = _gpt()
    opt = hybrid(model, per_param_groups=True)
    assert len(opt.param_groups) == len(list(model.parameters()))
    assert all(len(g["param_names"]) == 1 for g in opt.param_groups)
    muon_groups = [g for g in opt.param_groups if g["use_muon"]]
    assert {g["param_names"][0] for g in muon_groups} == {a.name for a in opt.assignment if a.optimizer == "muon"}


def test_hand_made_groups_and_bad_arguments():
    lin = nn.Linear(6, 6)
    opt = HybridOptimizer([{"params": [lin.weight], "use_muon": True},
                           {"params": [lin.bias], "use_muon": False, "lr": 1e-2}])
    assert opt.param_groups[0]["momentum"] == 0.95 and opt.param_groups[1]["betas"] == (0.9, 0.95)
    with pytest.raises(ValueError, match="use_muon"):
        HybridOptimizer([{"params": [lin.weight]}])
    with pytest.raises(ValueError, match=r"'bias'|\(6,\)"):
        HybridOptimizer([{"params": [lin.bias], "use_muon": True}])
    with pytest.raises(ValueError, match="lr=-0.5"):
        hybrid(_gpt(), lr=-0.5)
    with pytest.raises(ValueError, match="lr=-1"):
        hybrid(_gpt(), adamw_lr=-1)
    with pytest.raises(ValueError, match="adjust_lr='rms'"):
        hybrid(_gpt(), adjust_lr="rms")


def test_reduces_loss_on_small_gpt():
    model = _gpt()
    opt = hybrid(model, lr=0.02, adamw_lr=3e-3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 32, (8, 16), generator=g)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = model(x, x.roll(-1, 1))[1]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert isinstance(Muon, type)
