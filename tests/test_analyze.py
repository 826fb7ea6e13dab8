"""run_analysis / analyze / summarize against plain reference computations."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import spectralens
from spectralens.analyze import COLUMNS, SUMMARY_METRICS, run_analysis, summarize
from spectralens.analyze.spectra import GramBatch, gram_batch
from spectralens.fit import fit_power_law


def _svd_evals(W: torch.Tensor) -> np.ndarray:
    return np.sort(np.linalg.svd(W.double().numpy(), compute_uv=False) ** 2)


def _sd(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(120, 40, generator=g), "b.weight": torch.randn(40, 90, generator=g),
            "c.weight": torch.randn(120, 40, generator=g), "d.weight": torch.randn(64, 64, generator=g)}


def test_columns_and_metrics_match_reference_definitions():
    sd = _sd()
    res = run_analysis(sd, keep_esd=True)
    df = res.layers.set_index("name")
    assert list(res.layers.columns) == COLUMNS
    for key, W in sd.items():
        name = key[:-len(".weight")]
        ev = _svd_evals(W)
        np.testing.assert_allclose(res.esd[name], ev, rtol=1e-9, atol=1e-9 * ev[-1])
        row = df.loc[name]
        fit = fit_power_law(ev)
        assert row["status"] == "ok"
        assert row["N"] == max(W.shape) and row["M"] == min(W.shape) and row["num_evals"] == min(W.shape)
        np.testing.assert_allclose(row["alpha"], fit.alpha, rtol=1e-9)
        np.testing.assert_allclose(row["lambda_max"], ev[-1], rtol=1e-10)
        np.testing.assert_allclose(row["norm"], float((W.double() ** 2).sum()), rtol=1e-10)
        np.testing.assert_allclose(row["log_spectral_norm"], math.log10(ev[-1]), rtol=1e-10)
        np.testing.assert_allclose(row["alpha_weighted"], fit.alpha * math.log10(ev[-1]), rtol=1e-9)
        np.testing.assert_allclose(row["log_alpha_norm"], math.log10((ev ** fit.alpha).sum()), rtol=1e-9)
        np.testing.assert_allclose(row["stable_rank"], ev.sum() / ev[-1], rtol=1e-10)
        assert 0 < row["entropy"] <= 1
        assert row["matrix_rank"] == min(W.shape)
        assert math.isfinite(row["mp_softrank"]) and row["num_spikes"] >= 0


def test_batched_eigensolve_equals_one_by_one():
    g = torch.Generator().manual_seed(1)
    mats = [torch.randn(1, 50, 30, generator=g, dtype=torch.float64) for _ in range(5)]
    batch = GramBatch(30)
    for i, W in enumerate(mats):
        batch.add(i, gram_batch(W), 1.0)
    out = batch.solve()
    for i, W in enumerate(mats):
        np.testing.assert_allclose(out[i], _svd_evals(W[0]), rtol=1e-9, atol=1e-10)


def test_gram_by_chunks_equals_direct(monkeypatch):
    from spectralens.analyze import spectra

    W = torch.randn(3, 1000, 20, dtype=torch.float64)
    direct = W.mT @ W
    monkeypatch.setattr(spectra, "CHUNK_ELEMENTS", 7 * 3 * 20)  # 7-row chunks
    torch.testing.assert_close(gram_batch(W), direct)
    torch.testing.assert_close(gram_batch(W.mT.contiguous()), direct)  # wide matrices are transposed


def test_analyze_is_the_layers_table_and_callable_from_the_package():
    sd = _sd()
    df1 = spectralens.analyze(sd)
    import spectralens.analyze as mod  # after the submodule import, the package attribute is the module

    df2 = spectralens.analyze(sd)  # ... and still callable
    df3 = mod.analyze(sd)
    assert df1.equals(df2) and df1.equals(df3)
    assert spectralens.summarize(df1) == summarize(df1)


def test_summary_means_over_ok_layers():
    sd = _sd() | {"z.weight": torch.zeros(30, 20)}
    res = run_analysis(sd)
    ok = res.layers[res.layers.status == "ok"]
    for m in SUMMARY_METRICS:
        np.testing.assert_allclose(res.summary[m], ok[m].astype(float).mean(), rtol=1e-12)
    assert res.summary["num_layers"] == 5 and res.summary["num_ok"] == 4


def test_hill_fit_float32_flatten_and_options():
    sd = _sd()
    hill = run_analysis(sd, fit="hill").layers
    ks = run_analysis(sd).layers
    assert not np.allclose(hill["alpha"], ks["alpha"])
    f32 = run_analysis(sd, dtype=torch.float32).layers
    np.testing.assert_allclose(f32["lambda_max"], ks["lambda_max"], rtol=1e-5)
    nomp = run_analysis(sd, mp_fit=False).layers
    assert nomp["mp_softrank"].isna().all()
    conv = nn.Conv2d(6, 10, 3)
    flat = run_analysis(conv, conv="flatten").layers.iloc[0]
    assert (flat["N"], flat["M"], flat["num_evals"]) == (54, 10, 10)
    sl = run_analysis(conv).layers.iloc[0]
    assert (sl["N"], sl["M"], sl["rf"], sl["num_evals"]) == (10, 6, 9, 54)


def test_progress_callback_reports_every_layer():
    seen = []
    run_analysis(_sd(), progress=lambda done, total, name: seen.append((done, total, name)))
    assert [d for d, _, _ in seen] == [1, 2, 3, 4] and {t for _, t, _ in seen} == {4}
    assert {n for _, _, n in seen} == {"a", "b", "c", "d"}


def test_alpha_invariant_to_scale_and_permutation():
    W = torch.randn(100, 50, generator=torch.Generator().manual_seed(3))
    perm_r, perm_c = torch.randperm(100), torch.randperm(50)
    rows = run_analysis({"w": W, "s": 7.5 * W, "p": W[perm_r][:, perm_c].contiguous()}).layers.set_index("name")
    np.testing.assert_allclose(rows.loc["s", "alpha"], rows.loc["w", "alpha"], rtol=1e-6)  # float32 rounding of 7.5 * W
    np.testing.assert_allclose(rows.loc["p", "alpha"], rows.loc["w", "alpha"], rtol=1e-6)  # float32 rounding of 7.5 * W


@pytest.mark.parametrize("fix", ["xmin_peak", "clip_xmax"])
def test_fix_fingers_is_passed_to_the_fit(fix):
    sd = _sd()
    res = run_analysis(sd, fix_fingers=fix, keep_esd=True)
    for name, ev in res.esd.items():
        row = res.layers.set_index("name").loc[name]
        ref = fit_power_law(ev, fix_fingers=fix)
        np.testing.assert_allclose(row["alpha"], ref.alpha, rtol=1e-12)
    assert res.settings["fix_fingers"] == fix
