"""Forward-hook probes that accumulate what st(A) needs, never the activations themselves.

For a layer with incoming activation A (rows = samples/tokens, d columns) the stable rank is

    st(A) = ||A||_F^2 / ||A||_op^2 = trace(C) / lambda_max(C),   C = A^T A  (d x d).

C and ||A||_F^2 are sums over rows, so they can be accumulated block by block: over the
micro-batches of a gradient-accumulation step and over the several calls of a module that is
applied more than once in one forward (weight sharing). The rows of every call are the rows
of A, exactly as the weight gradient sums over every call. Memory is O(d^2) per layer and is
released after each monitored step. (Davis & Drusvyatskiy, arXiv 2512.04299, section 4.)

What A is for each family (see :mod:`spectralens.monitor.kinds`):

* linear / HF Conv1D: the input reshaped to (N, d_in);
* conv: the im2col patches (N * L * groups, C_in/groups * prod(kernel)); their Gram comes
  from :func:`spectralens.models.conv_patches.patch_gram`, which unfolds a chunk of samples
  (or a band of one sample) at a time and never holds the whole matrix; for ``groups > 1``
  the patches of all groups are stacked as rows (exact for groups = 1);
* embedding: the token-indicator matrix, whose Gram is diagonal with the token counts, so
  only ``bincount`` of the ids is kept: st = N / max_count = 1 / p_max;
* norm gains: the normalised input x_hat the gain multiplies ((x - mean)/std for LayerNorm,
  x / rms(x) for RMSNorm), reshaped to (N, d).

A probe only records when ``module.training`` and ``torch.is_grad_enabled()``, so evaluation
forwards are ignored. Activation checkpointing re-runs forwards: rows are counted twice,
which leaves st unchanged (doubling every row scales trace and lambda_max alike).
A hook never raises: an exception is stored in ``probe.error`` and reported as NaN later.
"""
from __future__ import annotations

import time
import weakref

import torch
from torch import nn

from ..models.conv_patches import PatchGeometry, patch_gram

__all__ = ["LayerProbe", "InputGramCache"]


def _normalised(module: nn.Module, x: torch.Tensor, d: int) -> torch.Tensor:
    x = x.reshape(-1, d).float() if x.dtype in (torch.float16, torch.bfloat16) else x.reshape(-1, d)
    eps = getattr(module, "eps", None)
    if eps is None:
        eps = getattr(module, "variance_epsilon", None)
    eps = float(eps) if eps is not None else torch.finfo(x.dtype).eps  # torch.nn.RMSNorm's default
    if "rms" in type(module).__name__.lower():
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    mean = x.mean(-1, keepdim=True)
    xc = x - mean
    return xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps)


class InputGramCache:
    """One-slot cache shared by the probes of a monitor: the Gram increment of the last input.

    Q, K and V (and GPT-2's c_attn vs separate projections, MLP up and gate) receive the
    *same* tensor object in one forward; the first probe computes A^T A, the next ones reuse
    it when the input is the very same object (checked by a weak reference, so a freed and
    reallocated tensor never matches) at the same version (no in-place change since).
    Holds at most one d x d tensor; ``clear()`` frees it.
    """

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        self._ref = None
        self._key = None
        self._value = None

    def get(self, x: torch.Tensor, dtype: torch.dtype):
        if self._ref is not None and self._ref() is x and self._key == (x._version, dtype):
            return self._value
        return None

    def put(self, x: torch.Tensor, dtype: torch.dtype, value) -> None:
        try:
            self._ref = weakref.ref(x)
        except TypeError:  # pragma: no cover - tensors support weak references
            self._ref = None
            return
        self._key, self._value = (x._version, dtype), value


class LayerProbe:
    """Accumulator for one monitored module; its ``hook`` is a forward hook.

    State while armed: ``gram`` (d x d, ``gram_dtype``) and ``fro2`` (float64 scalar) for
    linear/conv/norm, ``counts`` (int64, num_embeddings) for embeddings, ``rows`` (number of
    rows of A seen), ``calls`` (hook calls that recorded), ``hook_s`` (seconds spent in the
    hook). ``reset()`` drops all of it, so between monitored steps a probe holds no tensor.
    """

    def __init__(self, name: str, module: nn.Module, family: str, kind: str,
                 gram_dtype: torch.dtype = torch.float32, cache: InputGramCache | None = None):
        self.name, self.module, self.family, self.kind = name, module, family, kind
        self.gram_dtype = gram_dtype
        self.cache = cache
        self._geometry: PatchGeometry | None = None  # conv: how the module cuts its input, on first use
        self.handle = None
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------------
    def reset(self) -> None:
        self.gram: torch.Tensor | None = None
        self.fro2: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.rows = 0
        self.calls = 0
        self.hook_s = 0.0
        self.error: str | None = None

    def arm(self) -> None:
        if self.handle is None:
            self.handle = self.module.register_forward_hook(self.hook)

    def disarm(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    @property
    def armed(self) -> bool:
        return self.handle is not None

    # -- the hook ----------------------------------------------------------------------------
    def hook(self, module: nn.Module, args: tuple, output) -> None:
        if not (module.training and torch.is_grad_enabled()) or not args:
            return
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                self._accumulate(args[0])
            self.calls += 1
        except Exception as exc:  # never raise into the training loop
            self.error = f"{type(exc).__name__}: {exc}"
        self.hook_s += time.perf_counter() - t0

    def _accumulate(self, inp: torch.Tensor) -> None:
        x = inp.detach()  # a new object: the cache is keyed on ``inp``, the object the modules share
        fam = self.family
        if fam == "embedding":
            ids = x.reshape(-1).long()
            c = torch.bincount(ids, minlength=self.module.num_embeddings)
            self.counts = c if self.counts is None else self.counts + c
            self.rows += ids.numel()
            return
        if fam in ("linear", "hf_conv1d"):
            d = self.module.in_features if fam == "linear" else self.module.weight.shape[0]
            hit = self.cache.get(inp, self.gram_dtype) if self.cache is not None else None
            if hit is None:
                A = x.reshape(-1, d).to(self.gram_dtype)
                G = A.T @ A
                hit = (G, G.diagonal().sum(dtype=torch.float64), A.shape[0])  # ||A||_F^2 = trace(A^T A)
                if self.cache is not None:
                    self.cache.put(inp, self.gram_dtype, hit)
            self._add_gram(*hit)
        elif fam == "norm":
            self._add_rows(_normalised(self.module, x, self.module.weight.numel()))
        elif fam == "conv":
            if self._geometry is None:
                self._geometry = PatchGeometry.of(self.module)
            G, rows = patch_gram(self._geometry, x, dtype=self.gram_dtype)
            self._add_gram(G, G.diagonal().sum(dtype=torch.float64), rows)  # ||A||_F^2 = trace(A^T A)
        else:  # pragma: no cover - families are closed
            raise RuntimeError(f"unknown family {fam!r}")

    def _add_rows(self, A: torch.Tensor) -> None:
        """C += A^T A and ||A||_F^2 += sum A^2 for A of shape (n, d)."""
        A = A.to(self.gram_dtype)
        d = A.shape[1]
        if self.gram is None:
            self.gram = torch.zeros(d, d, dtype=self.gram_dtype, device=A.device)
            self.fro2 = torch.zeros((), dtype=torch.float64, device=A.device)
        self.gram.addmm_(A.T, A)
        self.fro2 += (A * A).sum(dtype=torch.float64)
        self.rows += A.shape[0]

    def _add_gram(self, gram: torch.Tensor, fro2: torch.Tensor, rows: int) -> None:
        """C += a precomputed A^T A (shared with another probe through the cache)."""
        if self.gram is None:
            self.gram = gram.clone()
            self.fro2 = fro2.clone()
        else:
            self.gram += gram
            self.fro2 += fro2
        self.rows += rows
