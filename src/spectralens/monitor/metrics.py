"""The per-layer numbers of the spectral-update condition, as pure tensor -> float functions.

Davis & Drusvyatskiy (arXiv 2512.04299): for a block W with gradient G and incoming
activation A, a spectral step (``||G||_* / L_op`` times polar(G)) is promised more descent
than a gradient step (``1 / L_F``) when

    nr(G) = ||G||_*^2 / ||G||_F^2  >=  st(A) = ||A||_F^2 / ||A||_op^2,

the guaranteed decreases being in the ratio nr/st; nr >= 2 st makes the spectral step at
least as good outright (two-sided form). For a diagonal block (norm gain g) the spectral
step is a sign step and nr becomes ||g||_1^2 / ||g||_2^2.

All eigenvalue work is in float64 on the smaller Gram (``spectralens.linalg.eigenvalues``),
never a full SVD. Every function returns plain Python floats; callers turn exceptions and
non-finite values into NaN.
"""
from __future__ import annotations

import math

import torch

from spectralens.fit import hill_alpha
from spectralens.linalg import (
    conv_flatten, eigenvalues, nuclear_rank_from_eigenvalues, stable_rank_from_eigenvalues,
    stable_rank_from_gram,
)

__all__ = ["weight_matrix", "top_eigenvalue", "activation_stats", "token_stats", "gradient_stats",
           "gradient_stats_from_eigenvalues", "gram_eigenvalues", "gain_gradient_stats", "weight_stats",
           "weight_stats_from_eigenvalues", "condition"]

_NAN = float("nan")


def weight_matrix(t: torch.Tensor, family: str) -> torch.Tensor:
    """A weight (or its gradient) as the matrix that multiplies A's rows: (out, in).

    linear: as stored; HF Conv1D stores (in, out) and is transposed; conv: (out, in/groups * k);
    embedding: (vocab, d) (nr and st are transpose-invariant).
    """
    if family == "hf_conv1d":
        return t.T
    if family == "conv":
        return conv_flatten(t)
    return t


EXACT_TOP_DIM = 512  # activation Grams up to this size use a full symmetric eigensolver


def top_eigenvalue(C: torch.Tensor, *, block: int = 8, max_iter: int = 60, tol: float = 1e-10) -> float:
    """lambda_max of a symmetric PSD matrix C (d x d), in float64.

    d <= :data:`EXACT_TOP_DIM`: ``eigvalsh``. Larger d: block subspace iteration with a
    Rayleigh-Ritz step (Q <- qr(C Q), lambda = max eig(Q^T C Q)), ``block`` columns started
    from the columns of C with the largest diagonal plus a seeded perturbation. Ritz values are
    lower bounds that converge like (lambda_{block+1}/lambda_1)^(2k); it stops when the estimate
    changes by less than ``tol`` relatively, and falls back to ``eigvalsh`` after ``max_iter``
    sweeps. Cost O(d^2 * block) per sweep instead of O(d^3); activation Grams have a dominant
    spike (low stable rank), where a handful of sweeps suffice.
    """
    C = C.to(torch.float64)
    d = C.shape[-1]
    if d <= EXACT_TOP_DIM:
        return float(torch.linalg.eigvalsh(C)[-1])
    k = min(block, d)
    gen = torch.Generator(device="cpu").manual_seed(0)
    start = C[:, torch.topk(C.diagonal(), k).indices]
    Q, _ = torch.linalg.qr(start + 1e-3 * start.norm() / d ** 0.5 * torch.randn(d, k, generator=gen, dtype=C.dtype).to(C.device))
    prev = -1.0
    for _ in range(max_iter):
        Z = C @ Q
        lam = float(torch.linalg.eigvalsh(Q.T @ Z)[-1])
        if prev > 0 and abs(lam - prev) <= tol * lam:
            return lam
        prev = lam
        Q, _ = torch.linalg.qr(Z)
    return float(torch.linalg.eigvalsh(C)[-1])


def activation_stats(gram: torch.Tensor, fro2: torch.Tensor | None = None) -> dict:
    """st(A) = trace(C) / lambda_max(C) from C = A^T A (d x d), in float64
    (``linalg.stable_rank_from_gram``; lambda_max by :func:`top_eigenvalue` for large d).

    Returns ``st_act``, ``act_fro2`` = ||A||_F^2 (the accumulated sum when given, else trace C)
    and ``act_op2`` = ||A||_op^2 = lambda_max(C).
    """
    C = gram.to(torch.float64)
    if C.shape[-1] <= EXACT_TOP_DIM:
        st = float(stable_rank_from_gram(C))
        top = float(C.diagonal().sum()) / st if st > 0 else 0.0
    else:
        top = top_eigenvalue(C)
        st = float(C.diagonal().sum()) / top if top > 0 else _NAN
    f2 = float(fro2) if fro2 is not None else float(C.diagonal().sum())
    return {"st_act": st, "act_fro2": f2, "act_op2": top if top > 0 else _NAN}


def token_stats(counts: torch.Tensor) -> dict:
    """Token-indicator matrix E (N x vocab, one 1 per row): E^T E = diag(counts), so
    ||E||_F^2 = N, ||E||_op^2 = max count and st(E) = N / max count = 1 / p_max."""
    n = float(counts.sum())
    top = float(counts.max()) if counts.numel() else 0.0
    return {"st_act": n / top if top > 0 else _NAN, "act_fro2": n, "act_op2": top}


def gradient_stats(G: torch.Tensor, method: str = "gram") -> dict:
    """nr(G), ||G||_F, ||G||_op and st(G) of a gradient matrix (out, in) from eigenvalues of
    its smaller Gram in float64 (lambda_i = s_i^2); ``method="svd"`` uses a float64 SVD of G
    instead (slower; exact small singular values, e.g. for a numerically low-rank G)."""
    return gradient_stats_from_eigenvalues(eigenvalues(G.detach(), dtype=torch.float64, method=method))


def gradient_stats_from_eigenvalues(ev: torch.Tensor) -> dict:
    """:func:`gradient_stats` from the ascending eigenvalues lambda_i = s_i^2 of G's smaller
    Gram (min(out, in) of them; e.g. the Gram summed over the shards of a sharded G)."""
    fro2 = float(ev.sum())
    return {
        "nr_grad": float(nuclear_rank_from_eigenvalues(ev)),
        "grad_fro": math.sqrt(max(fro2, 0.0)),
        "grad_op": math.sqrt(max(float(ev[-1]), 0.0)),
        "st_grad": float(stable_rank_from_eigenvalues(ev)),
    }


def gram_eigenvalues(C: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues of a symmetric PSD Gram C (k x k), float64, clamped at 0 (what
    ``linalg.eigenvalues(M, method="gram")`` returns when C is M's smaller Gram)."""
    return torch.linalg.eigvalsh(C.to(torch.float64)).clamp_min(0)


def gain_gradient_stats(g: torch.Tensor) -> dict:
    """Diagonal block diag(g): singular values |g_i|, so nr = ||g||_1^2 / ||g||_2^2,
    ||.||_op = max |g_i| and st = ||g||_2^2 / max g_i^2."""
    g = g.detach().reshape(-1).to(torch.float64)
    l1, l2sq, top = float(g.abs().sum()), float((g * g).sum()), float(g.abs().max())
    return {
        "nr_grad": l1 * l1 / l2sq if l2sq > 0 else _NAN,
        "grad_fro": math.sqrt(l2sq),
        "grad_op": top,
        "st_grad": l2sq / (top * top) if top > 0 else _NAN,
    }


def weight_stats(W: torch.Tensor, *, alpha: bool = False) -> dict:
    """||W||_op, st(W) and (when ``alpha``) the Hill/median power-law alpha of W's ESD.
    A 1-D weight (norm gain) is the diagonal matrix diag(w)."""
    W = W.detach()
    if W.dim() == 1:
        return weight_stats_from_eigenvalues(torch.sort(W.to(torch.float64) ** 2).values, alpha=False)
    return weight_stats_from_eigenvalues(eigenvalues(W, dtype=torch.float64, method="gram"), alpha=alpha)


def weight_stats_from_eigenvalues(ev: torch.Tensor, *, alpha: bool = False) -> dict:
    """:func:`weight_stats` from the ascending eigenvalues of W's smaller Gram (all min(m, n)
    of them: the Hill alpha's tail is the upper half)."""
    out = {"weight_op": math.sqrt(max(float(ev[-1]), 0.0)), "st_weight": float(stable_rank_from_eigenvalues(ev))}
    out["alpha"] = float(hill_alpha(ev)) if alpha else _NAN
    return out


def condition(nr: float, st: float) -> dict:
    """ratio = nr/st and the flags nr >= st (``cond``) and nr >= 2 st (``cond2``); None flags
    when either number is not finite."""
    if not (math.isfinite(nr) and math.isfinite(st)) or st <= 0:
        return {"ratio": _NAN, "cond": None, "cond2": None}
    return {"ratio": nr / st, "cond": bool(nr >= st), "cond2": bool(nr >= 2 * st)}
