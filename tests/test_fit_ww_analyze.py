"""End-to-end WeightWatcher parity of the fit: ww.analyze() defaults vs fit_power_law on the same layers."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch

from spectralens.fit import fit_power_law




def _model(seed: int, train_steps: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(48, 160), torch.nn.ReLU(), torch.nn.Linear(160, 96),
                                torch.nn.ReLU(), torch.nn.Linear(96, 30), torch.nn.ReLU(), torch.nn.Linear(30, 8))
    if train_steps:   # a few large-lr steps on a random regression task: heavier, spikier spectra
        x, y = torch.randn(256, 48, generator=g), torch.randn(256, 8, generator=g)
        opt = torch.optim.SGD(model.parameters(), lr=0.2)
        for _ in range(train_steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    return model


@pytest.mark.parametrize("seed,train_steps", [(0, 0), (1, 60)])
def test_analyze_defaults_match(seed, train_steps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import weightwatcher as ww
    model = _model(seed, train_steps)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        details = ww.WeightWatcher(model=model).analyze()
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert len(details) >= 3
    for _, row in details.iterrows():
        W = linears[int(row["layer_id"]) // 2].weight.detach().double().numpy()
        evals = np.linalg.svd(W, compute_uv=False) ** 2
        fit = fit_power_law(evals)
        for name in ("alpha", "xmin", "D", "sigma", "xmax"):
            assert getattr(fit, name) == pytest.approx(row[name], rel=1e-3), (row["layer_id"], name)
        assert fit.num_pl_spikes == row["num_pl_spikes"] and fit.num_evals == row["num_evals"]
        assert fit.warning == row["warning"]
