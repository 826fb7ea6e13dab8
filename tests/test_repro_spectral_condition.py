"""The spectral-condition reproductions (Davis & Drusvyatskiy, arXiv 2512.04299) in quick mode.

Each part runs once per module (a few seconds each) and the tests assert the claims that
should hold even at this small scale; the claims that may fail at small scale are only
checked to be reported (held True/False with a measured number), never forced.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from spectralens.experiments.spectral_condition import _steps

PARTS = ("stable_rank_at_init", "random_features", "swiglu_counterexample", "spiked_features",
         "sparse_regression", "nanogpt")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Lazily run each part once in quick mode; returns part -> (result dict, out_dir)."""
    import importlib

    root = tmp_path_factory.mktemp("sc")
    cache = {}

    def get(part):
        if part not in cache:
            mod = importlib.import_module(f"spectralens.experiments.spectral_condition.{part}")
            cache[part] = (mod.run(root / part, quick=True, seed=0), root / part)
        return cache[part]

    return get


def claims_of(result):
    return {c["claim"]: c for c in result["claims"]}


def claim(result, prefix):
    hits = [c for text, c in claims_of(result).items() if text.startswith(prefix)]
    assert len(hits) == 1, (prefix, list(claims_of(result)))
    return hits[0]


# -- the maths the experiments rely on -------------------------------------------------------

def test_polar_and_nuclear_match_a_float64_svd():
    G = torch.randn(30, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    P, nuc = _steps.polar_and_nuclear(G)
    U, S, Vh = torch.linalg.svd(G, full_matrices=False)
    assert torch.allclose(P, U @ Vh, atol=1e-12)
    assert math.isclose(nuc, float(S.sum()), rel_tol=1e-12)
    assert torch.allclose(P.T @ P, torch.eye(20, dtype=torch.float64), atol=1e-12)
    assert math.isclose(_steps.nr(G), float(S.sum() ** 2 / S.square().sum()), rel_tol=1e-9)
    assert math.isclose(_steps.op_norm_sq(G), float(S[0] ** 2), rel_tol=1e-9)


def test_both_steps_achieve_their_guaranteed_decrease():
    """Least squares: GD decreases L by >= ||G||_F^2/(2 L_F), SpecGD by >= ||G||_*^2/(2 L_op)."""
    from spectralens.experiments.spectral_condition.random_features import make_problem

    p = make_problem("relu", dim=20, feature_dim=10, n=80, seed=3)
    n = p.A.shape[1]
    W = torch.randn(20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.1
    loss = lambda W: float((W @ p.A - p.Y).square().sum() / (2 * n))
    G = (W @ p.A - p.Y) @ p.A.T / n
    P, nuc = _steps.polar_and_nuclear(G)
    L_F, L_op = 1 / p.lr_gd, 1 / p.lr_spec  # ||A||_op^2 / n and ||A||_F^2 / n
    assert loss(W) - loss(W - p.lr_gd * G) >= float(G.square().sum()) / (2 * L_F) * (1 - 1e-9)
    assert loss(W) - loss(W - p.lr_spec * nuc * P) >= nuc**2 / (2 * L_op) * (1 - 1e-9)
    assert math.isclose(L_op / L_F, p.st_A, rel_tol=1e-9)  # L_op / L_F = st(A)


# -- each part writes its files ------------------------------------------------------------------

@pytest.mark.parametrize("part", PARTS)
def test_part_writes_results_summary_and_figures(quick, part):
    result, out = quick(part)
    payload = json.loads((out / "results.json").read_text())
    assert payload["claims"] and all(c["held"] in (True, False, None) for c in payload["claims"])
    assert all(c["measured"] for c in payload["claims"])
    summary = (out / "summary.md").read_text()
    assert "| claim | measured | held? |" in summary and "**Scale.**" in summary
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert result["claims"] == payload["claims"]


# -- claims that hold even at quick scale ---------------------------------------------------------

def test_stable_rank_at_init_bounds(quick):
    r, _ = quick("stable_rank_at_init")
    st = r["results"]["stable_rank"]
    assert max(st["relu"]) <= math.pi and max(st["abs"]) <= math.pi / 2 and max(st["relu2"]) <= 6
    assert max(st["block_mlp"]) <= 2 * math.pi
    assert st["swiglu"][-1] >= 4 * st["swiglu"][0]  # SwiGLU grows with width
    assert st["swiglu"][-1] > 10 * max(st["relu"])


def test_random_features_specgd_wins_and_condition_holds(quick):
    r, _ = quick("random_features")
    assert claim(r, "SpecGD reaches a lower loss")["held"]
    assert claim(r, "nr(G) stays above st(A) along the GD run")["held"]
    res = r["results"]
    assert res["specgd"]["loss"][-1] < 0.1 * res["gd"]["loss"][-1]
    assert max(res["gd"]["nr"]) > 10 * res["st_A"]


def test_swiglu_counterexample_gd_wins(quick):
    r, _ = quick("swiglu_counterexample")
    assert claim(r, "GD reaches a lower loss")["held"]
    res = r["results"]
    assert res["st_A"] > 5 * math.pi  # no mean spike: far above the ReLU bound
    below = sum(v < res["st_A"] for v in res["specgd"]["nr"]) / len(res["specgd"]["nr"])
    assert below > 0.5  # the condition fails on most of the run


def test_spiked_features_first_step_scaling(quick):
    r, _ = quick("spiked_features")
    assert claim(r, "nr(G) at initialisation is flat")["held"]
    assert claim(r, "nr(G) after one GD step grows about linearly")["held"]
    assert r["results"]["slope"] > 0 and r["results"]["r2"] >= 0.9


def test_sparse_regression_specgd_wins(quick):
    r, _ = quick("sparse_regression")
    assert claim(r, "SpecGD (spectral on layers 2-3) reaches a lower training loss")["held"]
    assert all(len(v) > 0 for v in r["results"]["gd"]["st"].values())


def test_nanogpt_low_stable_rank_activations(quick):
    r, _ = quick("nanogpt")
    assert claim(r, "MLP post-activation st stays far below the width")["held"]
    assert claim(r, "RMS-normed states have st far below the width")["held"]
    kinds = r["results"]["kinds"]
    for name in ("adamw", "hybrid"):
        assert {"q", "k", "v", "o", "mlp_up", "mlp_down", "head", "embedding"} <= set(kinds[name])
        assert math.isfinite(r["results"]["val_loss"][name])
        assert kinds[name]["mlp_up"]["held"] >= 0.8  # MLP up-projection: nr(G) >= st(A)


@pytest.mark.slow
def test_whole_quick_suite_through_the_cli(tmp_path):
    import time

    from spectralens.cli import main

    t0 = time.perf_counter()
    assert main(["repro", "spectral-condition", "--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "spectral-condition" / "results.json").read_text())
    assert set(payload["results"]["seconds_per_part"]) == set(PARTS)
    print(f"quick suite: {time.perf_counter() - t0:.1f} s wall")
