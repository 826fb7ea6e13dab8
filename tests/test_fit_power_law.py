"""fit_power_law: the vectorised KS scan against a plain loop, WeightWatcher 0.7.7 and powerlaw."""
from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from reference import hill_loop, ks_scan_loop, pareto_sample
from spectralens.fit import PowerLawFit, fit_power_law, hill_alpha, ks_scan


def _esd(n_rows: int, n_cols: int, seed: int, spikes: int = 0, heavy: float | None = None) -> np.ndarray:
    """Eigenvalues of W^T W for a Gaussian (optionally spiked or Student-t) matrix."""
    rng = np.random.default_rng(seed)
    W = rng.standard_t(heavy, (n_rows, n_cols)) if heavy else rng.standard_normal((n_rows, n_cols))
    W[:, :spikes] *= 8.0
    return np.linalg.eigvalsh(W.T @ W)


def _data(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "pareto+bulk":
        return np.concatenate([rng.uniform(0.1, 1.0, n // 2), pareto_sample(2.5, n - n // 2, seed=seed)])
    if kind == "pareto":  # a flat D(xmin) curve: the hard case for the pruned scan
        return pareto_sample(3.0, n, seed=seed)
    if kind == "ties":   # duplicated values: WW's k/n convention must hold on ties too
        return np.repeat(np.round(pareto_sample(3.0, n // 3, seed=seed), 1), 3)
    if kind == "esd":
        return _esd(2 * n, n, seed, spikes=3)
    return _esd(n, n, seed, heavy=3.0)


@pytest.mark.parametrize("kind", ["pareto+bulk", "pareto", "ties", "esd", "heavy"])
@pytest.mark.parametrize("n", [30, 240])
@pytest.mark.parametrize("prune", [False, True])
def test_ks_scan_matches_loop_reference(kind, n, prune):
    data = _data(kind, n, seed=n)
    alpha, xmin, D, sigma, alphas, Ds = ks_scan_loop(data)
    x = np.sort(data)
    x = x[x > 1e-5]
    scan = ks_scan(x, prune=prune)
    np.testing.assert_allclose(scan.alphas, alphas, rtol=1e-10)
    seen = ~np.isnan(scan.Ds)
    np.testing.assert_allclose(scan.Ds[seen], Ds[seen], rtol=1e-10, atol=1e-12)
    assert x[scan.best] == xmin
    fit = fit_power_law(data)
    assert fit.status == "ok"
    assert fit.alpha == pytest.approx(alpha, rel=1e-10)
    assert fit.D == pytest.approx(D, rel=1e-10)
    assert fit.sigma == pytest.approx(sigma, rel=1e-10)
    assert fit.num_pl_spikes == int(np.sum(data >= xmin)) and fit.num_evals == len(data)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(205, 400),
       kind=st.sampled_from(["pareto+bulk", "pareto", "esd", "heavy"]))
def test_pruned_scan_picks_the_same_xmin_as_the_full_scan(seed, n, kind):
    x = np.sort(_data(kind, n, seed))
    x = x[x > 1e-5]
    full, pruned = ks_scan(x, prune=False), ks_scan(x, prune=True)
    assert pruned.best == full.best
    assert pruned.Ds[pruned.best] == pytest.approx(full.Ds[full.best], rel=1e-12)


@pytest.fixture(scope="module")
def ww():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from weightwatcher.weightwatcher import WeightWatcher
        return WeightWatcher()


def _ww_fit(ww, evals, **kw):
    with contextlib.redirect_stdout(io.StringIO()):
        out = ww.fit_powerlaw(np.sort(evals), plot=False, **kw)
    alpha, _, xmin, xmax, D, sigma, num_pl_spikes, num_fingers, raw_alpha, status, warning = out
    return dict(alpha=alpha, xmin=xmin, xmax=xmax, D=D, sigma=sigma, num_pl_spikes=num_pl_spikes,
                num_fingers=num_fingers, status=status, warning=warning)


def _assert_ww(fit: PowerLawFit, ref: dict, rel: float = 1e-3):
    assert ref["status"] == "success" and fit.status == "ok"
    for name in ("alpha", "xmin", "xmax", "D", "sigma"):
        assert getattr(fit, name) == pytest.approx(ref[name], rel=rel), name
    assert fit.num_pl_spikes == ref["num_pl_spikes"]
    assert fit.warning == ref["warning"]


@pytest.mark.parametrize("shape,seed,spikes,heavy", [
    ((200, 100), 0, 0, None), ((600, 300), 1, 5, None), ((300, 300), 2, 0, 2.5),
    ((400, 64), 3, 2, 4.0), ((40, 15), 4, 0, None), ((30, 12), 5, 1, 3.0),   # last two: WW's small-N rule
])
def test_matches_weightwatcher_fit_powerlaw(ww, shape, seed, spikes, heavy):
    evals = _esd(*shape, seed, spikes=spikes, heavy=heavy)
    _assert_ww(fit_power_law(evals), _ww_fit(ww, evals))


def test_matches_weightwatcher_on_rank_deficient_esd_with_zeros(ww):
    rng = np.random.default_rng(7)
    W = rng.standard_normal((120, 40)) @ rng.standard_normal((40, 150))   # rank 40 of 150
    evals = np.clip(np.linalg.eigvalsh(W.T @ W), 0, None)
    fit = fit_power_law(evals)
    _assert_ww(fit, _ww_fit(ww, evals))
    assert fit.num_evals == 150


@pytest.mark.parametrize("xmax", [3, "force"])
def test_xmax_options_match_weightwatcher(ww, xmax):
    evals = _esd(300, 150, 8, spikes=4)
    _assert_ww(fit_power_law(evals, xmax=xmax), _ww_fit(ww, evals, xmax=xmax))


@pytest.mark.parametrize("seed,heavy", [(0, None), (11, 2.2), (12, 3.0)])
def test_clip_xmax_matches_weightwatcher(ww, seed, heavy):
    evals = _esd(400, 200, seed, spikes=6, heavy=heavy)
    ref = _ww_fit(ww, evals, fix_fingers="clip_xmax")
    fit = fit_power_law(evals, fix_fingers="clip_xmax")
    _assert_ww(fit, ref)
    assert fit.num_fingers == ref["num_fingers"]


def test_clip_xmax_accepts_a_finger_fit():
    # a clean Pareto tail plus 3 huge outliers: dropping them lowers alpha by more than 1
    x = np.concatenate([pareto_sample(2.5, 400, seed=3), [1e6, 2e6, 4e6]])
    first = fit_power_law(x)
    fit = fit_power_law(x, fix_fingers="clip_xmax")
    assert fit.raw_alpha == pytest.approx(first.alpha)
    if fit.num_fingers:
        assert fit.alpha + 1.0 < first.alpha and fit.xmax < 1e6


def test_xmin_peak_restricts_xmin_near_the_esd_peak():
    evals = _esd(400, 160, 9, spikes=5)
    x = np.sort(evals)
    counts, edges = np.histogram(np.log10(x), bins=100)
    peak = 10 ** edges[np.argmax(counts)]
    fit = fit_power_law(evals, fix_fingers="xmin_peak")
    assert fit.status == "ok" and 0.95 * peak <= fit.xmin <= 1.5 * peak
    # and it is the best-D candidate of the loop reference among those allowed
    _, _, _, _, alphas, Ds = ks_scan_loop(evals)
    allowed = (x[:-1] >= 0.95 * peak) & (x[:-1] <= 1.5 * peak)
    i = int(np.argmin(np.where(allowed, Ds, np.inf)))
    assert fit.xmin == x[i] and fit.alpha == pytest.approx(alphas[i], rel=1e-10)


def test_matches_powerlaw_package():
    import powerlaw
    data = np.concatenate([np.random.default_rng(0).uniform(0.2, 1.0, 120), pareto_sample(3.0, 180, seed=4)])
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # powerlaw 2.0 restricts alpha to (0, 3) by default; open the range to compare like with like
        ref = powerlaw.Fit(data, verbose=False, parameter_ranges={"alpha": [1, None]})
    fit = fit_power_law(data)
    assert fit.xmin == pytest.approx(ref.xmin, rel=1e-12)
    assert fit.alpha == pytest.approx(ref.alpha, rel=1e-6)
    assert fit.D == pytest.approx(ref.D, rel=1e-6)
    assert fit.sigma == pytest.approx(ref.sigma, rel=1e-6)


@pytest.mark.parametrize("alpha", [2.0, 2.5, 3.5, 5.0])
def test_hill_recovers_pareto_alpha(alpha):
    fit = fit_power_law(pareto_sample(alpha, 2000, xmin=0.5, seed=int(alpha * 10)), method="hill")
    assert fit.status == "ok" and fit.method == "hill"
    assert abs(fit.alpha - alpha) < 3 * fit.sigma
    assert fit.num_pl_spikes == 1000


def test_hill_matches_reference_and_hill_alpha():
    evals = _esd(300, 120, 5, spikes=2)
    fit = fit_power_law(torch.tensor(evals), method="hill")
    alpha, xmin = hill_loop(evals)
    assert fit.alpha == pytest.approx(alpha, rel=1e-10) and fit.xmin == xmin
    assert fit.alpha == pytest.approx(float(hill_alpha(torch.tensor(evals))), rel=1e-10)
    tail = np.sort(evals)[60:]
    from reference import ks_lower
    assert fit.D == pytest.approx(ks_lower(tail, xmin, alpha), rel=1e-10)
    assert fit.sigma == pytest.approx((alpha - 1) / math.sqrt(60), rel=1e-10)


def test_ks_recovers_pareto_alpha():
    fit = fit_power_law(pareto_sample(2.5, 800, seed=21))
    assert abs(fit.alpha - 2.5) < 3 * fit.sigma


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(20, 400), log_scale=st.floats(-2, 4),
       method=st.sampled_from(["ks", "hill"]))
def test_alpha_invariant_to_scaling_and_permutation(seed, n, log_scale, method):
    rng = np.random.default_rng(seed)
    evals = np.concatenate([rng.uniform(0.05, 1.0, n // 2), pareto_sample(2.0 + 3 * rng.random(), n - n // 2, seed=seed)])
    base = fit_power_law(evals, method)
    scaled = fit_power_law(evals * 10.0 ** log_scale, method)     # W -> c W scales eigenvalues by c^2
    shuffled = fit_power_law(rng.permutation(evals), method)
    for other, c in ((scaled, 10.0 ** log_scale), (shuffled, 1.0)):
        assert other.alpha == pytest.approx(base.alpha, rel=1e-8)
        assert other.xmin == pytest.approx(base.xmin * c, rel=1e-8)
        assert other.D == pytest.approx(base.D, rel=1e-7, abs=1e-12)
        assert other.num_pl_spikes == base.num_pl_spikes


def test_alpha_invariant_to_scaling_W():
    W = torch.randn(150, 60, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ev = torch.linalg.eigvalsh(W.T @ W)
    ev3 = torch.linalg.eigvalsh((3 * W).T @ (3 * W))
    assert fit_power_law(ev3).alpha == pytest.approx(fit_power_law(ev).alpha, rel=1e-8)


@pytest.mark.parametrize("bad,status", [
    ([], "too few eigenvalues"), ([2.0], "too few eigenvalues"), ([0.0, 0.0, 0.0], "no eigenvalues above"),
    ([1.0, np.nan, 3.0], "non-finite"), ([1.0, np.inf], "non-finite"), ([-np.inf, 1.0, 2.0], "non-finite"),
    ([4.0] * 30, "all eigenvalues equal"), ([1e-9, 2e-9, 3e-9], "no eigenvalues above"),
])
@pytest.mark.parametrize("method", ["ks", "hill"])
def test_bad_input_gives_status_not_exception(bad, status, method):
    fit = fit_power_law(np.array(bad, dtype=float), method)
    assert fit.status.startswith(status)
    assert math.isnan(fit.alpha) and math.isnan(fit.D) and fit.warning == ""
    assert fit.num_evals == len(bad)
    tensor_fit = fit_power_law(torch.tensor(bad, dtype=torch.float32), method)
    assert tensor_fit.status == fit.status


def test_too_many_clipped_fingers_and_bad_arguments():
    assert "clips more than half" in fit_power_law(np.arange(1.0, 11.0), xmax=8).status
    with pytest.raises(ValueError, match="method"):
        fit_power_law(np.arange(1.0, 50.0), method="mle")
    with pytest.raises(ValueError, match="fix_fingers"):
        fit_power_law(np.arange(1.0, 50.0), fix_fingers="peak")
    with pytest.raises(ValueError, match="1-D"):
        fit_power_law(np.ones((3, 40)))
    assert fit_power_law(np.arange(1.0, 50.0)[None, :]).status == "ok"


def test_warning_column_follows_weightwatcher():
    assert fit_power_law(pareto_sample(1.6, 500, seed=1)).warning == "over-trained"
    assert fit_power_law(pareto_sample(9.0, 500, seed=2)).warning == "under-trained"
    assert fit_power_law(pareto_sample(3.0, 500, seed=3)).warning == ""
