"""alphadecay reproduction: the statistics, one short training per policy, the quick run, and
the missing-corpus message."""
import json
import math

import numpy as np
import pytest

from spectralens.experiments import alphadecay as ad


def test_paired_difference_resolves_only_clear_gaps():
    d = ad.paired_difference([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    assert d["mean"] == pytest.approx(-0.5) and d["std"] == pytest.approx(0.0) and d["resolved"]
    noisy = ad.paired_difference([1.0, 2.0, 3.0], [1.5, 1.5, 3.2])
    assert not noisy["resolved"]
    assert not ad.paired_difference([1.0], [2.0])["resolved"]


def test_comparison_claim_marks_noise_as_not_decided():
    ppl = {"alphadecay": [10.0, 11.0, 12.0], "uniform": [10.02, 10.97, 12.05], "awd": [11.0, 12.0, 13.01]}
    assert ad._comparison_claim("x", "alphadecay", ["uniform"], ppl).held is None
    assert ad._comparison_claim("x", "alphadecay", ["awd"], ppl).held is True
    assert ad._comparison_claim("x", "awd", ["alphadecay"], ppl).held is False


@pytest.fixture(scope="module")
def corpus():
    from spectralens.data.shakespeare import CorpusNotInstalledError, load_shakespeare

    try:
        return load_shakespeare(0.1, max_chars=100_000)
    except CorpusNotInstalledError as exc:
        pytest.skip(str(exc))


def test_every_policy_trains_and_sets_its_decays(corpus):
    cfg = ad.AlphaDecayReproConfig(n_layer=2, n_embd=64, n_head=2, block_size=32, batch_size=4, steps=6,
                                   alphadecay_every=2, eval_batches=2)
    out = {m: ad.train_one(cfg, corpus, m, seed=0) for m in ad.METHODS}
    for m, r in out.items():
        assert math.isfinite(r["val_loss"]) and r["val_loss"] < math.log(corpus.vocab_size) + 0.5, m
        assert set(r["final_alphas"]) and all(math.isfinite(a) for a in r["final_alphas"].values())
    assert all(w == 0.0 for w in out["none"]["final_weight_decay"].values())
    assert all(w == pytest.approx(0.1) for w in out["uniform"]["final_weight_decay"].values())
    # AlphaDecay: decay increasing in alpha, within [s1, s2] * wd0.
    r = out["alphadecay"]
    wd = r["final_weight_decay"]
    assert min(wd.values()) >= 0.1 * cfg.s1 - 1e-9 and max(wd.values()) <= 0.1 * cfg.s2 + 1e-9
    assert len(set(round(v, 9) for v in wd.values())) > 1
    # same init and batches across policies: step-0 losses agree exactly
    assert len({r["train_losses"][0] for r in out.values()}) == 1
    with pytest.raises(ValueError, match="unknown method"):
        ad.train_one(cfg, corpus, "lion", seed=0)


def test_quick_run_writes_outputs(tmp_path, corpus):
    out = ad.run(tmp_path, quick=True, seed=0, log=lambda *_: None)
    for name in ("results.json", "summary.md", "alphadecay_ppl.png", "alphadecay_alpha.png"):
        assert (tmp_path / name).exists(), name
    data = json.loads((tmp_path / "results.json").read_text())
    runs = data["results"]["runs"]
    cfg = ad.config_for(True)
    assert len(runs) == cfg.seeds * len(ad.METHODS)
    # At any scale: every policy trains well below the uniform-guess loss ln(vocab).
    assert all(r["val_loss"] < np.log(corpus.vocab_size) - 1.0 for r in runs)
    assert {c["held"] for c in out["claims"]} <= {True, False, None}


def test_missing_corpus_gives_install_message(tmp_path, monkeypatch):
    import importlib.util

    from spectralens.data.shakespeare import CorpusNotInstalledError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "shksprdata" else real(name, *a))
    with pytest.raises(CorpusNotInstalledError, match="pip install"):
        ad.run(tmp_path, quick=True)
