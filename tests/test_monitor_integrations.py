"""transformers Trainer and Lightning callbacks train a tiny model through the monitor."""
from __future__ import annotations

import importlib
import sys

import pytest
import torch


def test_hf_trainer_callback(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # transformers.Trainer needs it (in the [transformers] extra)
    from spectralens.monitor.integrations.hf import SpectralMonitorCallback

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=32, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(cfg)
    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": t, "labels": t} for t in torch.randint(0, 40, (16, 16), generator=g)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, gradient_accumulation_steps=2,
        report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True, learning_rate=1e-3)
    cb = SpectralMonitorCallback(every=2)
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[cb]).train()
    df = cb.monitor.records()
    assert sorted(df["step"].unique()) == [0, 2]
    kinds = dict(zip(df["layer"], df["kind"]))
    assert kinds["transformer.h.0.attn.c_attn"] == "qkv" and kinds["transformer.h.0.mlp.c_fc"] == "mlp_up"
    assert kinds["transformer.h.0.mlp.c_proj"] == "mlp_down" and kinds["transformer.wte"] == "embedding"
    assert (df["status"] == "ok").all()
    c_attn = df[df["layer"] == "transformer.h.0.attn.c_attn"]
    assert (c_attn["rows"] == 2 * 2 * 16).all()  # both accumulated micro-batches of 2 x 16 tokens
    assert (tmp_path / "spectral" / "monitor.jsonl").exists()
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_lightning_callback(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from spectralens.monitor.integrations.lightning import SpectralMonitorCallback

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 2))

        def training_step(self, batch, _):
            x, y = batch
            return ((self.net(x) - y) ** 2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    ds = TensorDataset(torch.randn(64, 6), torch.randn(64, 2))
    cb = SpectralMonitorCallback(every=2)
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=2,
                         default_root_dir=str(tmp_path), callbacks=[cb])
    trainer.fit(Tiny(), DataLoader(ds, batch_size=4))
    df = cb.monitor.records()
    assert sorted(df["step"].unique()) == [0, 2]
    assert set(df["layer"]) == {"net.0", "net.2"}
    assert (df["rows"] == 8).all() and (df["status"] == "ok").all()
    assert (tmp_path / "spectral" / "monitor.csv").exists()


@pytest.mark.parametrize("module,missing,extra", [("hf", "transformers", "transformers"),
                                                   ("lightning", "lightning", "lightning")])
def test_missing_extra_gives_a_clear_import_error(monkeypatch, module, missing, extra):
    name = f"spectralens.monitor.integrations.{module}"
    monkeypatch.delitem(sys.modules, name, raising=False)
    for key in list(sys.modules):
        if key == missing or key.startswith(missing + "."):
            monkeypatch.delitem(sys.modules, key)
    monkeypatch.setitem(sys.modules, missing, None)
    if missing == "lightning":
        monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    with pytest.raises(ImportError, match=rf"pip install spectralens\[{extra}\]"):
        importlib.import_module(name)
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_hf_conv1d_matches_reference():
    """GPT-2's Conv1D stores its weight (in, out): A is the input, G the transposed gradient."""
    transformers = pytest.importorskip("transformers")
    from reference_monitor import InputRecorder, grad_ref, st_ref
    from spectralens.monitor import SpectralMonitor

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=16,
                                                                 n_layer=1, n_head=2))
    names = ["transformer.h.0.attn.c_attn", "transformer.h.0.mlp.c_proj"]
    mods = dict(model.named_modules())
    mon = SpectralMonitor(model, every=1, layers=names)
    rec = InputRecorder({n: mods[n] for n in names})
    idx = torch.randint(0, 40, (3, 16), generator=torch.Generator().manual_seed(0))
    model(input_ids=idx, labels=idx).loss.backward()
    recs = {r["layer"]: r for r in mon.step()}
    rec.remove()
    mon.close()
    for n in names:
        W = mods[n].weight
        A = torch.cat([x.reshape(-1, W.shape[0]) for x in rec.inputs[n]])
        ref = grad_ref(W.grad.T)
        assert recs[n]["family"] == "hf_conv1d"
        assert recs[n]["st_act"] == pytest.approx(st_ref(A), rel=2e-4)
        assert recs[n]["nr_grad"] == pytest.approx(ref["nr_grad"], rel=1e-6)
        assert recs[n]["grad_op"] == pytest.approx(ref["grad_op"], rel=1e-6)
