"""Orthogonalisation: map G = U S V^T to (approximately) its polar factor U V^T.

Three free functions, all tensor-in, tensor-out, for one matrix (m, n) or a batch (B, m, n);
the result has the shape of the input and the compute dtype (cast back with ``.to`` if needed).

* :func:`orthogonalize_newton_schulz` - the quintic Newton-Schulz (NS) iteration of Muon
  (K. Jordan et al., 2024, https://kellerjordan.github.io/posts/muon/):

      X_0 = G / max(||G||_F, eps),   X_{k+1} = a X_k + (b A_k + c A_k^2) X_k,   A_k = X_k X_k^T

  with (a, b, c) = (3.4445, -4.7750, 2.0315). Each singular value follows
  s -> a s + b s^3 + c s^5; after 5 steps every singular value with s_0 = sigma/||G||_F >= 3e-3
  lies in [0.68, 1.21] ([0.47, 1.21] for s_0 >= 1e-3; tests/test_orthogonalize.py), so the
  result is U S' V^T, *not* U V^T. Tiny singular values (directions the gradient barely has)
  stay small.
* :func:`orthogonalize_polar_express` - the same iteration with a different (a, b, c) per step,
  minimax-optimal for sign(s) (Amsel, Persson, Musco, Gower 2025, "The Polar Express",
  arXiv:2505.16932, with their 1.01 safety factor). Closer to U V^T in the same 5 steps:
  singular values in [0.84, 1.13] for s_0 >= 1e-3.
* :func:`polar_svd` - the exact polar factor U V^T from a reduced SVD (slow; for research and
  as a reference).

Cost and the Gram form. Work on the wide orientation (m <= n; a tall input is transposed). The
textbook step costs 4 m^2 n + 2 m^3 FLOPs (X X^T, A^2, B X). Because every A_k is a polynomial
of R_0 = X_0 X_0^T, the iteration can instead run on m x m matrices only:
X_k = Q_k X_0 with Q_{k+1} = M_k Q_k, R_{k+1} = M_k^2 R_k, M_k = a I + b R_k + c R_k^2. Run
straight through, float32 rounding in R ruins ill-conditioned inputs (relative error 1.5e-4
vs 5e-6 textbook at condition 1e4), so after 3 steps X_3 = Q_3 X_0 is formed and R recomputed
from it (the restart of Dao-AILab's gram-newton-schulz); that restores textbook accuracy
(tests/test_orthogonalize.py). Cost for 5 steps: 8 m^2 n + 28 m^3 instead of
5 (4 m^2 n + 2 m^3): 0.67x for 768 x 3072, 0.74x for 768 x 2304, 0.88x at n = 2m, worse for
square matrices. ``gram="auto"`` uses it when n >= 2 m and the compute dtype is float32 or
float64 (bfloat16 keeps the textbook form, as everyone runs it on GPUs).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = [
    "NS_COEFFICIENTS", "POLAR_EXPRESS_COEFFICIENTS", "orthogonalize_newton_schulz",
    "orthogonalize_polar_express", "polar_svd", "orthogonalize", "ORTHOGONALIZERS",
]

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

# Polar Express, degree 5 (arXiv:2505.16932, Algorithm 1), divided by the safety factor 1.01
# (a/1.01, b/1.01^3, c/1.01^5) except the last, which repeats for any further steps.
_PE_RAW = [
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
]
POLAR_EXPRESS_COEFFICIENTS = tuple(
    (a / 1.01, b / 1.01**3, c / 1.01**5) for a, b, c in _PE_RAW[:-1]) + (_PE_RAW[-1],)
_PE_NORM_SAFETY = 1.01
GRAM_RESTART = 3  # Gram-form steps between recomputing X and R (measured: keeps textbook accuracy)


def _schedule(coefficients, steps: int) -> list[tuple[float, float, float]]:
    """One (a, b, c) per step: a single triple repeats; a list's last entry repeats."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got steps={steps}")
    if len(coefficients) == 3 and all(isinstance(c, (int, float)) for c in coefficients):
        return [tuple(float(c) for c in coefficients)] * steps
    triples = [tuple(float(c) for c in t) for t in coefficients]
    if not triples or any(len(t) != 3 for t in triples):
        raise ValueError(f"coefficients must be one (a, b, c) triple or a list of triples, got {coefficients!r}")
    return [triples[min(i, len(triples) - 1)] for i in range(steps)]


def _as_batch(G: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if G.dim() not in (2, 3):
        raise ValueError(f"expected a matrix (m, n) or a batch (B, m, n), got shape {tuple(G.shape)}")
    return (G.unsqueeze(0), True) if G.dim() == 2 else (G, False)


def _default_dtype(G: torch.Tensor) -> torch.dtype:
    """float32 on CPU (bfloat16 matmul there is ~80x slower), bfloat16 on accelerators."""
    return torch.float32 if G.device.type == "cpu" else torch.bfloat16


def _iterate(X: torch.Tensor, schedule, gram: bool) -> torch.Tensor:
    """Run the odd-quintic iteration on a normalised wide batch X (B, m, n), m <= n."""
    if not gram:
        for a, b, c in schedule:
            A = torch.bmm(X, X.mT)
            B = torch.baddbmm(A, A, A, beta=b, alpha=c)   # b A + c A^2
            X = torch.baddbmm(X, B, X, beta=a)            # a X + B X
        return X
    # Gram form: X_k = Q_k X_0, R_k = X_k X_k^T; all m x m matrices commute (polynomials of R_0).
    # Every GRAM_RESTART steps X is formed and R recomputed from it: without that, rounding in
    # R (relative to ||R|| = O(1)) swamps the small singular values that the early steps lift.
    m = X.shape[-2]
    eye = torch.eye(m, dtype=X.dtype, device=X.device)
    R = torch.bmm(X, X.mT)
    Q = None
    for i, (a, b, c) in enumerate(schedule):
        if i and i % GRAM_RESTART == 0:
            X, Q = torch.bmm(Q, X), None
            R = torch.bmm(X, X.mT)
        R2 = torch.bmm(R, R)
        M = R2.mul_(c).add_(R, alpha=b).add_(eye, alpha=a)   # a I + b R + c R^2
        Q = M if Q is None else torch.bmm(M, Q)
        if i + 1 < len(schedule) and (i + 1) % GRAM_RESTART:
            R = torch.bmm(M, torch.bmm(M, R))                # R_{k+1} = M^2 R_k
    return X if Q is None else torch.bmm(Q, X)


def orthogonalize_newton_schulz(
    G: torch.Tensor,
    steps: int = 5,
    coefficients: Sequence = NS_COEFFICIENTS,
    dtype: torch.dtype | None = None,
    eps: float = 1e-7,
    gram: bool | str = "auto",
    norm_safety: float = 1.0,
) -> torch.Tensor:
    """Approximate polar factor of G (m, n) or (B, m, n) by ``steps`` quintic NS iterations.

    X_0 = G / max(safety * ||G||_F, eps) per matrix (so ||X_0||_2 <= 1), then for each step
    X <- a X + (b X X^T + c (X X^T)^2) X, on the wide orientation (tall G is transposed and the
    result transposed back). ``coefficients``: one (a, b, c) triple for every step, or a list of
    triples (one per step, the last repeating). ``dtype``: compute dtype; None = float32 on CPU,
    bfloat16 elsewhere. ``gram``: True / False / "auto" (see the module docstring).

    Limits: the output is U S' V^T with S' in [0.68, 1.21] for the standard coefficients, not
    U V^T; singular values below ~3e-3 ||G||_F are not lifted to that band in 5 steps; in
    bfloat16 expect ~1e-2 relative error. A zero matrix returns zeros.
    """
    dtype = dtype or _default_dtype(G)
    sched = _schedule(coefficients, steps)
    X, squeeze = _as_batch(G)
    tall = X.shape[-2] > X.shape[-1]
    X = X.to(dtype)
    if tall:
        X = X.mT
    norm = X.norm(dim=(-2, -1), keepdim=True)
    if norm_safety != 1.0:
        norm = norm * norm_safety
    X = X / norm.clamp_min(eps)
    if gram == "auto":
        gram = dtype in (torch.float32, torch.float64) and X.shape[-1] >= 2 * X.shape[-2]
    X = _iterate(X.contiguous(), sched, bool(gram))
    if tall:
        X = X.mT
    return X.squeeze(0) if squeeze else X


def orthogonalize_polar_express(
    G: torch.Tensor, steps: int = 5, dtype: torch.dtype | None = None, eps: float = 1e-7,
    gram: bool | str = "auto",
) -> torch.Tensor:
    """Polar Express (arXiv:2505.16932): NS with per-step minimax coefficients.

    X_0 = G / (1.01 ||G||_F), then step k uses ``POLAR_EXPRESS_COEFFICIENTS[k]`` (the last
    repeating after 8 steps). Shapes as :func:`orthogonalize_newton_schulz`. After 5 steps
    singular values with sigma/||G||_F >= 1e-3 lie in [0.84, 1.13] (more steps tighten it
    towards 1); the coefficients were designed for that lower bound (1e-3).
    """
    return orthogonalize_newton_schulz(G, steps, POLAR_EXPRESS_COEFFICIENTS, dtype, eps, gram,
                                       norm_safety=_PE_NORM_SAFETY)


def polar_svd(G: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Exact polar factor U V^T of G (m, n) or (B, m, n) from the reduced SVD G = U S V^T.

    Computed in float32 by default (float64 if G is float64, or ``dtype``). Zero singular
    values are kept (their U, V columns are arbitrary but orthonormal), so rank-deficient
    inputs still give a partial isometry of full rank min(m, n). O(m n min(m, n)), slow.
    """
    dtype = dtype or (torch.float64 if G.dtype == torch.float64 else torch.float32)
    X, squeeze = _as_batch(G)
    U, _, Vh = torch.linalg.svd(X.to(dtype), full_matrices=False)
    out = U @ Vh
    return out.squeeze(0) if squeeze else out


ORTHOGONALIZERS = ("newton_schulz", "polar_express", "svd")


def orthogonalize(G: torch.Tensor, method: str = "newton_schulz", steps: int = 5,
                  coefficients: Sequence = NS_COEFFICIENTS, dtype: torch.dtype | None = None,
                  eps: float = 1e-7) -> torch.Tensor:
    """Dispatch by name: ``"newton_schulz"``, ``"polar_express"`` or ``"svd"``."""
    if method == "newton_schulz":
        return orthogonalize_newton_schulz(G, steps, coefficients, dtype, eps)
    if method == "polar_express":
        return orthogonalize_polar_express(G, steps, dtype, eps)
    if method == "svd":
        return polar_svd(G, dtype)
    raise ValueError(f"unknown orthogonalizer {method!r}; expected one of {ORTHOGONALIZERS}")
