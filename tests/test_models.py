"""Weight sources: modules, state dicts, safetensors (single, sharded, HF folder), weights_only
checkpoints; layer types; selection; tensor-by-tensor reading (peak RSS)."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from spectralens.analyze import run_analysis, select_refs
from spectralens.models import infer_layer_type, is_matrix_candidate, open_source


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = nn.Embedding(40, 16)
        self.conv = nn.Conv2d(4, 8, 3)
        self.conv1 = nn.Conv1d(4, 6, 5)
        self.fc1 = nn.Linear(16, 32)
        self.norm = nn.LayerNorm(32)
        self.fc2 = nn.Linear(32, 16)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))


def _sd(net):
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def test_module_refs_types_and_names():
    src = open_source(_Net())
    got = {r.name: r.layer_type for r in src.refs}
    assert got == {"embed": "embedding", "conv": "conv2d", "conv1": "conv1d", "fc1": "linear", "fc2": "linear"}
    assert [r.name for r in src.refs] == ["embed", "conv", "conv1", "fc1", "fc2"]  # named_modules order


def test_state_dict_file_and_module_give_same_table(tmp_path):
    net = _Net()
    save_file(_sd(net), str(tmp_path / "m.safetensors"))
    torch.save(_sd(net), tmp_path / "m.pt")
    a = run_analysis(net).layers.set_index("name")
    for src in (net.state_dict(), tmp_path / "m.safetensors", tmp_path / "m.pt", str(tmp_path)):
        b = run_analysis(src).layers.set_index("name")
        assert set(b.index) == set(a.index), src
        for col in ("alpha", "xmin", "D", "lambda_max", "num_evals"):
            np.testing.assert_allclose(b.loc[a.index, col].astype(float), a[col].astype(float), rtol=1e-12,
                                       err_msg=f"{src} {col}")
        assert (b.loc[a.index, "layer_type"] == a["layer_type"]).all()


def test_sharded_hf_folder_with_index(tmp_path):
    net = _Net()
    sd = _sd(net)
    keys = sorted(sd)
    shard1 = {k: sd[k] for k in keys[: len(keys) // 2]}
    shard2 = {k: sd[k] for k in keys[len(keys) // 2:]}
    save_file(shard1, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(shard2, str(tmp_path / "model-00002-of-00002.safetensors"))
    wm = {k: "model-00001-of-00002.safetensors" for k in shard1} | {k: "model-00002-of-00002.safetensors" for k in shard2}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    (tmp_path / "config.json").write_text("{}")
    df = run_analysis(tmp_path).layers
    assert sorted(df["name"]) == sorted(["embed", "conv", "conv1", "fc1", "fc2"])
    assert (df["status"] == "ok").all()


def test_lightning_style_checkpoint_is_unwrapped(tmp_path):
    torch.save({"epoch": 3, "state_dict": _sd(_Net())}, tmp_path / "last.ckpt")
    assert len(run_analysis(tmp_path / "last.ckpt").layers) == 5


def test_hf_gpt2_conv1d_is_linear_and_tied_head_computed_once():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(cfg)
    res = run_analysis(model, keep_esd=True)
    df = res.layers.set_index("name")
    assert df.loc["transformer.h.0.attn.c_attn", "layer_type"] == "linear"
    assert df.loc["transformer.h.0.attn.c_attn", "shape"] == "32x96"  # stored (in, out), not transposed
    assert df.loc["lm_head", "alpha"] == df.loc["transformer.wte", "alpha"]
    assert res.esd["lm_head"] is res.esd["transformer.wte"]


def test_matrix_candidates_and_name_types():
    assert not is_matrix_candidate("h.0.attn.bias", (1, 1, 64, 64))  # GPT-2 causal-mask buffer
    assert not is_matrix_candidate("fc.bias", (10,))
    assert is_matrix_candidate("fc.weight", (10, 5))
    assert infer_layer_type("model.embed_tokens.weight", (100, 8)) == "embedding"
    assert infer_layer_type("transformer.wte.weight", (100, 8)) == "embedding"
    assert infer_layer_type("h.0.mlp.c_fc.weight", (8, 32)) == "linear"
    assert infer_layer_type("conv.weight", (8, 4, 3, 3)) == "conv2d"


def test_select_by_regex_and_type():
    refs = open_source(_Net()).refs
    assert [r.name for r in select_refs(refs, layers=["^fc"])] == ["fc1", "fc2"]
    assert [r.name for r in select_refs(refs, types=["conv2d", "embedding"])] == ["embed", "conv"]
    assert [r.name for r in select_refs(refs, layers="fc", types="linear")] == ["fc1", "fc2"]
    df = run_analysis(_Net(), layers=["conv$"]).layers
    assert list(df["name"]) == ["conv"]


def test_natural_order_from_files(tmp_path):
    sd = {f"h.{i}.w.weight": torch.randn(20, 10) for i in (0, 1, 2, 10, 11)}
    save_file(sd, str(tmp_path / "m.safetensors"))
    assert list(run_analysis(tmp_path / "m.safetensors").layers["name"]) == [f"h.{i}.w" for i in (0, 1, 2, 10, 11)]


def test_large_vocab_embedding_is_analysed():
    """No size cap: a 60,000-row embedding (WeightWatcher skips N > 50,000) gets a fit."""
    emb = nn.Embedding(60_000, 12)
    df = run_analysis(emb).layers
    assert df.loc[0, "status"] == "ok" and df.loc[0, "N"] == 60_000 and df.loc[0, "num_evals"] == 12


_RSS_SCRIPT = textwrap.dedent("""
    import gc, json, sys
    import torch
    from spectralens.analyze import run_analysis
    def rss_kib(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])
    path = sys.argv[1]
    run_analysis(path)  # imports, BLAS/LAPACK buffers, allocator arenas: part of the baseline
    gc.collect()
    base = rss_kib("VmRSS:")
    # reset the high-water mark to the current RSS (Linux >= 4.0)
    open("/proc/self/clear_refs", "w").write("5")
    df = run_analysis(path).layers
    print(json.dumps({"base": base, "peak": rss_kib("VmHWM:"), "n": len(df), "ok": int((df.status == "ok").sum())}))
""")


def test_safetensors_peak_rss_follows_largest_tensor(tmp_path):
    """A 128 MiB file whose largest tensor is a 32768 x 256 float32 embedding (32 MiB) plus
    12 tensors of 8 MiB: a second analysis (after a warm-up run) peaks at most 2x the largest
    tensor above the resident baseline, i.e. tensors are read and released one at a time."""
    g = torch.Generator().manual_seed(0)
    sd = {"embed.weight": torch.randn(32768, 256, generator=g)}
    sd |= {f"h.{i}.weight": torch.randn(8192, 256, generator=g) for i in range(12)}
    path = tmp_path / "big.safetensors"
    save_file(sd, str(path))
    del sd
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["n"] == 13 and info["ok"] == 13
    largest_mib = 32768 * 256 * 4 / 2**20
    extra_mib = (info["peak"] - info["base"]) / 1024
    assert extra_mib <= 2 * largest_mib, (extra_mib, largest_mib)
