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
* conv: the unfolded input patches (N * L, C_in/groups * prod(kernel)) computed with
  ``torch.nn.functional.unfold`` per chunk of samples and dropped after the Gram update;
  for ``groups > 1`` the patches of all groups are stacked as rows (exact for groups = 1);
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

import math
import time
import weakref

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LayerProbe", "InputGramCache", "conv_patches"]

_PATCH_CHUNK_ELEMENTS = 1 << 24


def _as_pair(v, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def conv_patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Unfolded input patches of a Conv1d/Conv2d: (B, C, *spatial) -> (B * L * groups, C/groups * k).

    The column order matches ``weight.reshape(out, -1)`` (``linalg.conv_flatten``), so
    ``conv(x)`` at every output position equals ``patches @ conv_flatten(W).T`` (groups = 1).
    """
    one_d = isinstance(module, nn.Conv1d)
    if one_d:
        x = x.unsqueeze(-2)
    nd = 2
    k = _as_pair(module.kernel_size, 1 if one_d else 2)
    s = _as_pair(module.stride, 1 if one_d else 2)
    d = _as_pair(module.dilation, 1 if one_d else 2)
    if one_d:
        k, s, d = (1, k[0]), (1, s[0]), (1, d[0])
    pad = module.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = (0,) * nd
        else:  # "same" (stride 1): total padding dilation*(k-1), the extra one on the right/bottom
            lr = []
            for ki, di in zip(reversed(k), reversed(d)):
                total = di * (ki - 1)
                lr += [total // 2, total - total // 2]
            x = F.pad(x, lr)
            pad = (0,) * nd
    else:
        pad = _as_pair(pad, 1 if one_d else 2)
        if one_d:
            pad = (0, pad[0])
    if module.padding_mode != "zeros" and any(pad):
        lr = []
        for p in reversed(pad):
            lr += [p, p]
        x = F.pad(x, lr, mode=module.padding_mode)
        pad = (0,) * nd
    cols = F.unfold(x, kernel_size=k, dilation=d, padding=pad, stride=s)  # (B, C*kk, L)
    b, ck, length = cols.shape
    g = module.groups
    cols = cols.view(b, g, ck // g, length).permute(0, 1, 3, 2)  # (B, g, L, C/g*kk)
    return cols.reshape(b * g * length, ck // g)


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
            b = x.shape[0]
            per_sample = max(1, x[0].numel() * math.prod(_as_pair(self.module.kernel_size, 1)))
            chunk = max(1, _PATCH_CHUNK_ELEMENTS // per_sample)
            for start in range(0, b, chunk):
                self._add_rows(conv_patches(self.module, x[start:start + chunk]))
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
