"""FARMS: pooled ESD of fixed-aspect-ratio windows, then the Hill (or KS) fit."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spectralens.fit import farms_alpha, farms_eigenvalues, fit_power_law




def _W(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_windows_have_the_aspect_ratio_and_pool_their_eigenvalues():
    W = _W((300, 100))
    pooled = farms_eigenvalues(W, aspect_ratio=2.0)
    # c = 100 columns, r = 200 rows, 2 row windows (offsets 0 and 100): 2 * 100 eigenvalues
    assert pooled.shape == (200,)
    ref = torch.cat([torch.linalg.eigvalsh(B.T @ B) for B in (W[0:200], W[100:300])])
    torch.testing.assert_close(torch.sort(pooled).values, torch.sort(ref).values)


def test_farms_is_less_aspect_ratio_biased_than_the_plain_fit():
    shapes = [(1024, 128), (512, 256), (384, 384), (256, 1024)]
    plain, farms = [], []
    for i, s in enumerate(shapes):
        W = _W(s, i)
        plain.append(fit_power_law(torch.linalg.svdvals(W) ** 2, method="hill").alpha)
        farms.append(farms_alpha(W).alpha)
    assert np.ptp(farms) < 0.2 < np.ptp(plain)


def test_invariant_to_scaling_and_transpose():
    W = _W((200, 90), 4)
    base = farms_alpha(W, method="ks")
    assert base.status == "ok" and base.method == "farms-ks"
    assert farms_alpha(5.0 * W, method="ks").alpha == pytest.approx(base.alpha, rel=1e-8)
    assert farms_alpha(W.T.contiguous(), method="ks").alpha == pytest.approx(base.alpha, rel=1e-8)


def test_bad_input():
    W = _W((40, 20))
    W[3, 4] = float("nan")
    fit = farms_alpha(W)
    assert fit.status == "non-finite weights" and math.isnan(fit.alpha)
    assert farms_alpha(torch.zeros(40, 20)).status.startswith("no eigenvalues above")
    with pytest.raises(ValueError, match="aspect_ratio"):
        farms_alpha(_W((40, 20)), aspect_ratio=0.5)
    with pytest.raises(ValueError, match="2-D"):
        farms_alpha(torch.ones(3, 4, 5))
