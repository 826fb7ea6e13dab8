"""fit_marchenko_pastur against WeightWatcher 0.7.7's mp_fit and the MP law itself."""
from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import pytest
import torch

from reference import mp_edges
from spectralens.fit import MPFit, fit_marchenko_pastur
from spectralens.fit.mp import linear_kde


def _esd(N, M, seed, spikes=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((N, M))
    W[:, :spikes] *= 6.0
    return np.linalg.eigvalsh(W.T @ W)


def test_linear_kde_matches_sklearn():
    from sklearn.neighbors import KernelDensity
    x = np.random.default_rng(0).gamma(2.0, 0.5, 300)
    grid = np.linspace(0, x.max() + 0.5, 1000)
    ref = np.exp(KernelDensity(kernel="linear", bandwidth=0.1).fit(x[:, None]).score_samples(grid[:, None]))
    np.testing.assert_allclose(linear_kde(x, grid, 0.1), ref, atol=1e-12)


@pytest.fixture(scope="module")
def ww():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from weightwatcher.weightwatcher import WeightWatcher
        return WeightWatcher()


@pytest.mark.parametrize("N,M,seed,spikes", [(400, 200, 0, 0), (300, 150, 1, 4), (200, 200, 2, 0)])
def test_matches_weightwatcher_mp_fit(ww, N, M, seed, spikes):
    evals = _esd(N, M, seed, spikes)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        num_spikes, sigma, softrank, bulk_min, bulk_max, wscale = ww.mp_fit(
            evals, N, M, 1, "", 0, 0, False, False, "/tmp", "blue", 0.5, True, evals)
    fit = fit_marchenko_pastur(evals, N, M)
    assert fit.status == "ok"
    # WW polishes with Nelder-Mead, we with a local grid: agree to 1e-3 relative
    assert fit.sigma == pytest.approx(sigma, rel=1e-3)
    assert fit.bulk_max == pytest.approx(bulk_max, rel=2e-3)
    assert fit.bulk_min == pytest.approx(bulk_min, rel=2e-3, abs=1e-9)
    assert fit.mp_softrank == pytest.approx(softrank, rel=2e-3)
    assert abs(fit.num_spikes - num_spikes) <= 1
    assert fit.scale == pytest.approx(wscale ** 2, rel=1e-12)


def test_random_matrix_fits_mp_law_and_spikes_are_counted():
    N, M = 800, 200
    evals = _esd(N, M, 3)
    fit = fit_marchenko_pastur(torch.tensor(evals), N, M)
    lo, hi = mp_edges(fit.sigma, 4.0)
    assert fit.scale == pytest.approx(M / evals.sum())
    assert fit.Q == 4.0 and fit.bulk_max * fit.scale == pytest.approx(hi)
    assert fit.bulk_min * fit.scale == pytest.approx(lo)
    assert fit.bulk_max == pytest.approx(evals.max(), rel=0.1)   # pure noise: edge ~ lambda_max
    assert fit.num_spikes == 0 and 0.85 < fit.mp_softrank < 1.15
    spiked = _esd(N, M, 3, spikes=3)
    fs = fit_marchenko_pastur(spiked, M, N)                     # either orientation
    assert fs.Q == 4.0 and fs.num_spikes == 3 and fs.mp_softrank < 0.3


@pytest.mark.parametrize("evals,N,M,status", [
    ([], 10, 5, "too few"), ([1.0], 10, 1, "too few"), ([0.0, 0.0, 0.0], 6, 3, "all eigenvalues zero"),
    ([1.0, np.nan, 2.0], 6, 3, "non-finite"), ([1.0, np.inf, 2.0], 6, 3, "non-finite"), ([1.0, 2.0], 0, 2, "bad shape"),
])
def test_bad_input_gives_status(evals, N, M, status):
    fit = fit_marchenko_pastur(np.array(evals, dtype=float), N, M)
    assert isinstance(fit, MPFit) and fit.status.startswith(status) and math.isnan(fit.sigma)
