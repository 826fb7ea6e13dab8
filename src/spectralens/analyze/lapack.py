"""CPU Gram products and symmetric eigensolves through ONE BLAS/LAPACK library.

numpy and scipy each bundle their own OpenBLAS, with their own thread pools. OpenBLAS threads
busy-wait for a while after each call, so alternating numpy's syrk with scipy's eigensolver makes
each pool wait on the other's spinning threads: measured on the 2-core machine, a 3072 x 768
float32 Gram + eigensolve took 90 ms alternating the two libraries against 30-37 ms with both in
scipy. So when scipy is installed both kernels come from scipy's library (``?syrk`` through
``scipy.linalg.blas``, ``dsyevd`` through its Cython LAPACK table); without scipy both come
from numpy (``X.T @ X`` is a syrk there).

    gram_into(C, X)      C (m, m) += X^T X   for X (n, m), float32 or float64, C the same dtype
    eigvalsh(C)          ascending float64 eigenvalues of a (B, k, k) or (k, k) stack
"""
from __future__ import annotations

import numpy as np

__all__ = ["HAVE_SCIPY", "gram_into", "eigvalsh", "float32_gram_error", "one_blas_thread", "cpu_count"]

try:
    from scipy.linalg import blas as _blas

    HAVE_SCIPY = True
except Exception:  # pragma: no cover - scipy is a dependency; numpy fallback if it is broken
    HAVE_SCIPY = False


def gram_into(C: np.ndarray, X: np.ndarray, use_numpy: bool = False) -> None:
    """C += X^T X for X (n, m), in place, full symmetric C (m, m) of X's dtype.

    scipy's syrk computes one triangle, with no copy of X when X or X^T is Fortran-ordered
    (``X.T`` of a C-ordered X is); the triangle is then mirrored (O(m^2)). ``use_numpy``: numpy's
    ``X.T @ X`` (also a syrk), which releases the GIL (scipy's wrapper does not), for Grams
    computed in parallel threads with one BLAS thread each. Overflow gives inf, which the
    caller detects.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if use_numpy or not HAVE_SCIPY or X.dtype not in (np.float32, np.float64) or C.dtype != X.dtype:
            C += X.T @ X  # numpy: same buffer, transposed -> syrk
            return
        syrk = _blas.ssyrk if X.dtype == np.float32 else _blas.dsyrk
        if X.T.flags.f_contiguous:      # C-ordered X: X^T is (m, n) Fortran, a a^T = X^T X
            upper = syrk(1.0, X.T, trans=0, lower=0)
        elif X.flags.f_contiguous:      # Fortran-ordered X (a transposed view): a^T a
            upper = syrk(1.0, X, trans=1, lower=0)
        else:
            upper = syrk(1.0, np.ascontiguousarray(X).T, trans=0, lower=0)
        # upper holds X^T X in its upper triangle and zeros below: mirror it, diagonal once
        C += upper
        C += upper.T
        idx = np.arange(C.shape[0])
        C[idx, idx] -= upper[idx, idx]


def eigvalsh(C: np.ndarray, parallel: bool = True) -> np.ndarray:
    """Ascending float64 eigenvalues of symmetric C, (k, k) -> (k,) or (B, k, k) -> (B, k).

    Always solved in float64 (``dsyevd``, eigenvalues only), whatever C's dtype. A float32
    eigensolve (``ssyevd``) was measured ~2x faster but with absolute errors of ~30 eps32
    lambda_max at k = 768 (its tridiagonal reduction's rounding), enough to move a short tail's
    alpha by 1e-4; a float32 Gram solved in float64 errs by <= 0.3 eps32 lambda_max (measured,
    see ``float32_gram_error``). A batch runs one single-threaded solve per core at once (LAPACK
    called through ctypes releases the GIL; scipy's and numpy's wrappers do not, or spin two
    BLAS pools); ``parallel=False`` solves it in the calling thread (already one of a pool of
    one thread per core: no nested pool).
    """
    C = np.asarray(C)
    single = C.ndim == 2
    stack = C[None] if single else C
    if stack.shape[0] == 0:
        return np.zeros(stack.shape[:-1], np.float64)
    solve = _syevd() or _fallback_eigvalsh
    workers = min(cpu_count(), stack.shape[0]) if parallel else 1
    if workers < 2 or _syevd() is None:
        out = np.stack([solve(c) for c in stack])
    else:
        from concurrent.futures import ThreadPoolExecutor

        with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
            out = np.stack(list(pool.map(solve, stack)))
    return out[0] if single else out


def float32_gram_error(lam_max: float) -> float:
    """Bound used for the absolute eigenvalue error of a float32-accumulated Gram solved in
    float64: eps32 * lambda_max (measured 0.12-0.28 eps32 lambda_max for 768 x 768 Grams of
    768-50,257 rows and a 384 x 384 Gram of 30,522 rows)."""
    return float(np.finfo(np.float32).eps) * float(lam_max)


def _fallback_eigvalsh(C: np.ndarray) -> np.ndarray:
    return np.linalg.eigvalsh(C.astype(np.float64, copy=False))


_SYEVD = None


def _syevd():
    """``dsyevd`` (eigenvalues only) from scipy's Cython LAPACK table, wrapped for ctypes, or
    None if unavailable: f(C (k, k)) -> ascending float64 eigenvalues (k,)."""
    global _SYEVD
    if _SYEVD is None:
        _SYEVD = _load_syevd() or False
    return _SYEVD or None


def _load_syevd():
    try:
        import ctypes

        from scipy.linalg import cython_lapack

        capsule = cython_lapack.__pyx_capi__["dsyevd"]
        api = ctypes.pythonapi
        api.PyCapsule_GetName.restype = ctypes.c_char_p
        api.PyCapsule_GetName.argtypes = [ctypes.py_object]
        api.PyCapsule_GetPointer.restype = ctypes.c_void_p
        api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        ptr = api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))
        INT = ctypes.POINTER(ctypes.c_int)
        VOID = ctypes.c_void_p
        # dsyevd(jobz, uplo, n, a, lda, w, work, lwork, iwork, liwork, info)
        fn = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, INT, VOID, INT, VOID, VOID, INT, VOID,
                              INT, INT)(ptr)
    except Exception:  # no scipy, or a build without the table: numpy fallback
        return None
    workspace: dict[int, int] = {}

    def call(a, w, work, lwork, iwork, n):
        info, liwork = ctypes.c_int(0), ctypes.c_int(1)
        fn(b"N", b"L", ctypes.byref(n), a.ctypes.data, ctypes.byref(n), w.ctypes.data, work.ctypes.data,
           ctypes.byref(lwork), iwork.ctypes.data, ctypes.byref(liwork), ctypes.byref(info))
        return info.value

    def solve(C: np.ndarray) -> np.ndarray:
        k = int(C.shape[-1])
        a = np.array(C, dtype=np.float64, order="F", copy=True)  # overwritten by LAPACK
        w, iwork, n = np.empty(k, np.float64), np.empty(1, np.int32), ctypes.c_int(k)
        if k not in workspace:  # workspace query: the optimal lwork lets ?sytrd use its blocked code
            query = np.empty(1, np.float64)
            ok = call(a, w, query, ctypes.c_int(-1), iwork, n) == 0
            workspace[k] = max(2 * k + 1, int(query[0])) if ok else 2 * k + 1
        info = call(a, w, np.empty(workspace[k], np.float64), ctypes.c_int(workspace[k]), iwork, n)
        if info != 0:
            raise np.linalg.LinAlgError(f"dsyevd failed to converge (info={info})")
        return w

    return solve


def cpu_count() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_CONTROLLER = None


def one_blas_thread():
    """Context limiting every loaded BLAS/LAPACK to one thread (threadpoolctl), else a no-op."""
    global _CONTROLLER
    if _CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController()
        except Exception:  # threadpoolctl missing: a no-op
            _CONTROLLER = False
    if _CONTROLLER is False:
        import contextlib

        return contextlib.nullcontext()
    return _CONTROLLER.limit(limits=1, user_api="blas")
