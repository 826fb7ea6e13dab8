"""SpectralMonitor numbers against float64 full SVDs of explicitly materialised A and G."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reference_monitor import InputRecorder, reference_layer
from spectralens.models.conv_patches import conv_patches
from spectralens.monitor import SpectralMonitor
from spectralens.nets.gpt import GPT, GPTConfig

FIELDS = ("st_act", "nr_grad", "ratio", "grad_fro", "grad_op", "weight_op", "st_weight", "rows")


def _check_against_reference(model, loss_fn, *, gram_dtype=torch.float32, rtol=2e-4, layers=None):
    """One training step with both the monitor and the explicit recorder; compare every layer."""
    mon = SpectralMonitor(model, every=1, layers=layers, gram_dtype=gram_dtype, alpha_every=1, weight_every=1)
    modules = {p.name: p.module for p in mon.probes}
    rec = InputRecorder(modules)
    model.zero_grad()
    loss_fn(model).backward()
    records = mon.step()
    rec.remove()
    mon.close()
    assert len(records) == len(modules)
    for r in records:
        assert r["status"] == "ok", r
        ref = reference_layer(modules[r["layer"]], rec.inputs[r["layer"]])
        for f in FIELDS:
            if f in ref:
                assert r[f] == pytest.approx(ref[f], rel=rtol, abs=1e-12), (r["layer"], f, r[f], ref[f])
        assert r["cond"] == (ref["nr_grad"] >= ref["st_act"])
        assert r["cond2"] == (ref["nr_grad"] >= 2 * ref["st_act"])
        W = modules[r["layer"]].weight
        if W.dim() > 1 and min(W.shape[0], W[0].numel()) >= 4:  # Hill alpha needs a few eigenvalues
            assert math.isfinite(r["alpha"]), r["layer"]
    return records


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


def _mlp_loss(model, x=None, y=None, scale=1.0):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 12, 10, generator=g) if x is None else x
    y = torch.randn(5, 12, 3, generator=g) if y is None else y
    return scale * ((model(x) - y) ** 2).mean()


@pytest.mark.parametrize("gram_dtype,rtol", [(torch.float32, 2e-4), (torch.float64, 1e-9)])
def test_mlp_matches_reference(gram_dtype, rtol):
    records = _check_against_reference(_mlp(), _mlp_loss, gram_dtype=gram_dtype, rtol=rtol)
    assert [r["rows"] for r in records] == [60, 60, 60]


def test_conv_net_matches_reference():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2, dilation=2, padding=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 5 * 5, 4))
    x = torch.randn(3, 3, 10, 10)
    _check_against_reference(model, lambda m: m(x).pow(2).mean())


@pytest.mark.parametrize("cfg", [GPTConfig(n_layer=1, n_embd=32, n_head=4, block_size=16),
                                 GPTConfig.llama(n_layer=1, n_embd=32, n_head=4, block_size=16)],
                         ids=["gpt2", "llama"])
def test_transformer_block_matches_reference(cfg):
    torch.manual_seed(0)
    model = GPT(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, 16), generator=torch.Generator().manual_seed(2))
    records = _check_against_reference(model, lambda m: m(idx, idx)[1])
    kinds = {r["layer"]: r["kind"] for r in records}
    assert kinds["blocks.0.attn.q"] == "q" and kinds["blocks.0.mlp.down"] == "mlp_down"
    assert kinds["tok_emb"] == "embedding" and kinds["lm_head"] == "head" and kinds["norm_f"] == "norm"
    emb = next(r for r in records if r["layer"] == "tok_emb")
    counts = torch.bincount(idx.reshape(-1))
    assert emb["st_act"] == pytest.approx(idx.numel() / counts.max().item())  # 1 / p_max


def test_gradient_accumulation_equals_one_big_batch():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(64, 10, generator=g), torch.randn(64, 3, generator=g)
    results = []
    for micro in (1, 4):
        model = _mlp()
        mon = SpectralMonitor(model, every=1)
        for xb, yb in zip(x.chunk(micro), y.chunk(micro)):
            _mlp_loss(model, xb, yb, scale=1.0 / micro).backward()
        results.append(mon.step())
        mon.close()
    for big, acc in zip(*results):
        assert acc["rows"] == big["rows"] == 64
        assert acc["st_act"] == pytest.approx(big["st_act"], rel=1e-5)
        assert acc["nr_grad"] == pytest.approx(big["nr_grad"], rel=1e-4)


class _Shared(nn.Module):
    """One Linear applied twice in a forward (weight sharing)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.lin(torch.tanh(self.lin(x)))))


def test_module_called_twice_per_forward():
    torch.manual_seed(0)
    x = torch.randn(20, 8)
    records = _check_against_reference(_Shared(), lambda m: m(x).pow(2).sum())
    lin = next(r for r in records if r["layer"] == "lin")
    assert lin["calls"] == 2 and lin["rows"] == 40


@pytest.mark.parametrize("conv", [
    nn.Conv2d(3, 4, 3, padding="same", dilation=2),
    nn.Conv2d(3, 4, (2, 3), stride=(2, 1), padding=(1, 2), padding_mode="reflect"),
    nn.Conv1d(3, 5, 3, stride=2, padding=1),
    nn.Conv1d(3, 5, 4, padding="same"),
], ids=["same-dilated", "reflect", "conv1d", "conv1d-same"])
def test_conv_patches_reproduce_the_convolution(conv):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 8) if isinstance(conv, nn.Conv2d) else torch.randn(2, 3, 11)
    with torch.no_grad():
        y = conv(x)  # (B, out, *spatial)
        P = conv_patches(conv, x)  # (B * L, C * k)
        z = P @ conv.weight.reshape(conv.out_channels, -1).T + conv.bias
        expect = y.flatten(2).transpose(1, 2).reshape(-1, conv.out_channels)
    torch.testing.assert_close(z, expect, rtol=1e-5, atol=1e-5)


def test_hooks_armed_only_on_monitored_steps_and_removed_on_close():
    model = _mlp()

    def n_hooks():
        return sum(len(m._forward_hooks) for m in model.modules())

    seen = []
    with SpectralMonitor(model, every=3) as mon:
        for s in range(7):
            seen.append((mon.step_count, mon.is_monitored(), n_hooks()))
            _mlp_loss(model).backward()
            recs = mon.step()
            assert bool(recs) == (s % 3 == 0)
            model.zero_grad()
    assert [h for _, _, h in seen] == [3 if s % 3 == 0 else 0 for s in range(7)]
    assert n_hooks() == 0
    assert all(p.gram is None for p in mon.probes)


def test_eval_and_no_grad_forwards_are_not_captured():
    model = _mlp()
    mon = SpectralMonitor(model, every=1)
    x = torch.randn(7, 10)
    with torch.no_grad():
        model(x)
    model.eval()
    model(x)
    model.train()
    assert all(p.rows == 0 for p in mon.probes)
    _mlp_loss(model).backward()
    recs = mon.step()
    assert all(r["rows"] == 60 for r in recs)
    mon.close()


def test_layer_selection_and_bad_arguments():
    model = _mlp()
    assert [p.name for p in SpectralMonitor(model, layers=r"^[02]$").probes] == ["0", "2"]
    assert [p.name for p in SpectralMonitor(model, layers=["4"]).probes] == ["4"]
    assert [p.name for p in SpectralMonitor(model, layers=lambda n, m: m.out_features == 3).probes] == ["4"]
    with pytest.raises(ValueError, match="no module named 'nope'"):
        SpectralMonitor(model, layers=["nope"])
    with pytest.raises(ValueError, match="ReLU"):
        SpectralMonitor(model, layers=["1"])
    with pytest.raises(ValueError, match="every"):
        SpectralMonitor(model, every=0)
    with pytest.raises(ValueError, match="no layer selected"):
        SpectralMonitor(model, layers="zzz")
    with pytest.raises(TypeError, match="Module"):
        SpectralMonitor("model")


def test_layer_kinds_cover_common_names():
    from spectralens.monitor import layer_kind

    lin = nn.Linear(2, 2)
    cases = {
        "model.layers.0.self_attn.q_proj": "q", "model.layers.0.self_attn.k_proj": "k",
        "model.layers.0.self_attn.v_proj": "v", "model.layers.0.self_attn.o_proj": "o",
        "model.layers.0.mlp.gate_proj": "mlp_gate", "model.layers.0.mlp.up_proj": "mlp_up",
        "model.layers.0.mlp.down_proj": "mlp_down", "transformer.h.0.attn.c_attn": "qkv",
        "transformer.h.0.attn.c_proj": "o", "transformer.h.0.mlp.c_fc": "mlp_up",
        "transformer.h.0.mlp.c_proj": "mlp_down", "model.decoder.layers.0.fc1": "mlp_up",
        "model.decoder.layers.0.fc2": "mlp_down", "model.decoder.layers.0.self_attn.out_proj": "o",
        "bert.encoder.layer.0.attention.self.query": "q", "bert.encoder.layer.0.attention.output.dense": "o",
        "bert.encoder.layer.0.intermediate.dense": "mlp_up", "bert.encoder.layer.0.output.dense": "mlp_down",
        "gpt_neox.layers.0.attention.query_key_value": "qkv", "lm_head": "head", "classifier": "head",
        "blocks.0.attn.q": "q", "blocks.0.mlp.gate": "mlp_gate", "encoder.0": "other",
    }
    for name, kind in cases.items():
        assert layer_kind(name, lin) == kind, name
    assert layer_kind("anything", nn.Embedding(3, 2)) == "embedding"
    assert layer_kind("x.ln_1", nn.LayerNorm(4)) == "norm"
    assert layer_kind("features.0", nn.Conv2d(1, 1, 1)) == "conv"


@pytest.mark.parametrize("spectrum", ["spiked", "flat", "decaying"])
def test_top_eigenvalue_large_gram(spectrum):
    from spectralens.monitor.metrics import EXACT_TOP_DIM, top_eigenvalue

    d = EXACT_TOP_DIM + 88
    g = torch.Generator().manual_seed(0)
    A = torch.randn(2 * d, d, generator=g, dtype=torch.float64)
    if spectrum == "spiked":
        A = A + 4 * torch.randn(1, d, generator=g, dtype=torch.float64)
    elif spectrum == "decaying":
        A = A * torch.linspace(1, 0.01, d, dtype=torch.float64)
    C = A.T @ A
    assert top_eigenvalue(C) == pytest.approx(float(torch.linalg.eigvalsh(C)[-1]), rel=1e-8)


def test_shared_input_gram_is_computed_once_and_version_checked():
    from spectralens.monitor.accumulators import InputGramCache, LayerProbe

    cache = InputGramCache()
    mods = [nn.Linear(6, 4) for _ in range(3)]
    probes = [LayerProbe(f"p{i}", m, "linear", "other", cache=cache) for i, m in enumerate(mods)]
    x = torch.randn(10, 6)
    probes[0].hook(mods[0], (x,), None)
    probes[1].hook(mods[1], (x,), None)
    assert cache.get(x, torch.float32) is not None  # the second probe reused the first's Gram
    x.mul_(2.0)  # in place: version changes, no reuse
    assert cache.get(x, torch.float32) is None
    probes[2].hook(mods[2], (x,), None)
    assert probes[1].fro2 == probes[0].fro2 and probes[1].gram is not probes[0].gram
    assert float(probes[2].fro2) == pytest.approx(4 * float(probes[0].fro2), rel=1e-6)
    assert cache.get(x.clone(), torch.float32) is None  # equal values, other object: no reuse
