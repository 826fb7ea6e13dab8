"""alpha, xmin and D of spectralens.analyze agree with weightwatcher 0.7.7 analyze() defaults.

Models are built locally (nothing downloaded): an MLP, a small conv net and a tiny GPT-2
(transformers.GPT2Config(n_layer=2, n_embd=64)), each random and briefly trained. WeightWatcher
names rows by ``longname`` = the module path, which is our ``name``; it analyses Linear,
Conv1d/Conv2d (slices scaled by sqrt(0.5), pooled), Embedding and GPT-2 Conv1D layers with
>= 8 pooled eigenvalues, N <= 50,000 and M * rf <= 15,000; biases are ignored.
"""
import logging
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import spectralens

ww = pytest.importorskip("weightwatcher")
logging.getLogger("weightwatcher").setLevel(logging.ERROR)

RTOL = 1e-3


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 96), nn.ReLU(), nn.Linear(96, 10))


class _ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.max_pool2d(x, 2)
        x = torch.relu(self.c2(x))
        x = torch.max_pool2d(x, 2)
        return self.fc(x.flatten(1))


def _gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(2)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=300, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def _train(model, kind: str, steps: int = 8):
    """A few Adam steps with a large learning rate: enough to move the spectra away from init."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread avoids contention on a shared 2-core machine
    try:
        return _train_steps(model, kind, steps)
    finally:
        torch.set_num_threads(threads)


def _train_steps(model, kind: str, steps: int):
    g = torch.Generator().manual_seed(3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        if kind == "mlp":
            x = torch.randn(32, 64, generator=g)
            loss = nn.functional.cross_entropy(model(x), (x[:, 0] > 0).long())
        elif kind == "conv":
            x = torch.randn(8, 3, 16, 16, generator=g)
            loss = nn.functional.cross_entropy(model(x), (x.mean((1, 2, 3)) > 0).long())
        else:
            ids = torch.randint(0, 300, (2, 16), generator=g)
            loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def _ww_details(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ww.WeightWatcher(model=model).analyze()


def _compare(model, dtype="float64"):
    ours = spectralens.analyze(model, dtype=dtype).set_index("name")
    theirs = _ww_details(model)
    assert len(theirs) > 0
    for rec in theirs.to_dict(orient="records"):
        name = rec["longname"]
        assert name in ours.index, f"WeightWatcher analysed {name}, we did not"
        row = ours.loc[name]
        assert row["status"] == "ok", (name, row["status"])
        assert int(row["num_evals"]) == int(rec["num_evals"]), name
        for col in ("alpha", "xmin", "D"):
            np.testing.assert_allclose(float(row[col]), float(rec[col]), rtol=RTOL, err_msg=f"{name} {col}")
        np.testing.assert_allclose(float(row["lambda_max"]), float(rec["lambda_max"]), rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(float(row["log_norm"]), float(rec["log_norm"]), rtol=1e-5, err_msg=name)
        # float32 mode: the entropy's normaliser log(rank) counts the eigenvalues float32 resolves
        np.testing.assert_allclose(float(row["entropy"]), float(rec["entropy"]), rtol=1e-4 if dtype == "float64" else 1e-2,
                                   err_msg=name)
    # row order: WeightWatcher's (named_modules) order is ours too
    ww_names = list(theirs["longname"])
    assert [n for n in ours.index if n in set(ww_names)] == ww_names
    return ours, theirs


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained"])
@pytest.mark.parametrize("kind", ["mlp", "conv", "gpt2"])
def test_parity_with_weightwatcher(kind, trained, dtype):
    """Both compute precisions: float32 (single-precision Gram and eigensolve, float64 refinement
    of long tails) must meet the same 1e-3 bound on alpha, xmin and D."""
    model = {"mlp": _mlp, "conv": _ConvNet, "gpt2": _gpt2}[kind]()
    if trained:
        _train(model, kind)
    ours, theirs = _compare(model, dtype)
    if kind == "conv":
        assert ours.loc["c2", "num_evals"] == 16 * 9  # 9 slices of 32 x 16, pooled
        assert ours.loc["c2", "layer_type"] == "conv2d"
    if kind == "gpt2":
        assert ours.loc["transformer.h.0.attn.c_attn", "layer_type"] == "linear"  # HF Conv1D
        assert set(theirs["longname"]) >= {"transformer.wte", "lm_head"}


def test_conv_pooling_matches_manual_slices():
    """Our conv ESD = pooled eigenvalues of 0.5 * W[:, :, i, j]^T W[:, :, i, j] (WW's sqrt(0.5) scaling)."""
    conv = nn.Conv2d(8, 12, 3)
    res = spectralens.analyze.run_analysis(conv, keep_esd=True)
    W = conv.weight.detach().double()
    ref = np.sort(np.concatenate([np.linalg.svd(0.5 ** 0.5 * W[:, :, i, j].numpy(), compute_uv=False) ** 2
                                  for i in range(3) for j in range(3)]))
    np.testing.assert_allclose(res.esd["weight"], ref, rtol=1e-9, atol=1e-12)
