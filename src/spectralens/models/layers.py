"""Which tensors count as weight matrices, what kind of layer they belong to, and how they
become matrices.

A tensor is a *matrix candidate* when it has 2 to 5 dimensions and its name is not a bias,
a normalisation statistic or a mask (``attn.bias`` / ``masked_bias`` buffers of old GPT-2
checkpoints are 4-D causal masks, not weights).

Layer types (the ``layer_type`` column):

* ``linear``     2-D (out, in) weight of ``nn.Linear``; also Hugging Face ``Conv1D`` (GPT-2),
                 whose weight is stored transposed as (in, out). The ESD of W and W^T is the
                 same, so nothing is transposed; WeightWatcher also treats it as one matrix.
* ``embedding``  2-D (num_embeddings, dim) table of ``nn.Embedding`` (or a tensor whose
                 name says embedding: ``embed``, ``wte``, ``wpe``, ...).
* ``conv1d`` / ``conv2d`` / ``conv3d``  (out, in, *kernel) convolution weights.
* ``matrix``     any other >= 2-D parameter (e.g. ``MultiheadAttention.in_proj_weight``).

Conv weights become a batch of prod(kernel) slices W[:, :, i, j] of shape (out, in), scaled
by sqrt(0.5) (WeightWatcher's ``conv2d_norm``), whose eigenvalues are pooled (``"slices"``);
or one (out, in * prod(kernel)) matrix (``"flatten"``).
"""
from __future__ import annotations

import re

import torch

from ..linalg import WW_CONV2D_SCALE, conv_flatten, conv_slices

__all__ = [
    "LAYER_TYPES", "is_matrix_candidate", "infer_layer_type", "module_layer_type",
    "dtype_skip_reason", "as_matrices", "matrix_dims",
]

LAYER_TYPES = ("linear", "embedding", "conv1d", "conv2d", "conv3d", "matrix")

_NOT_WEIGHTS = re.compile(r"(^|\.)(bias|masked_bias|running_mean|running_var|num_batches_tracked|position_ids)$")
_EMBEDDING_NAME = re.compile(r"(embed|(^|\.)wte($|\.)|(^|\.)wpe($|\.)|tok_embeddings|word_embeddings)", re.I)


def is_matrix_candidate(key: str, shape: tuple[int, ...]) -> bool:
    """True for a 2-D..5-D tensor that is not a bias, a norm statistic or a mask buffer."""
    return 2 <= len(shape) <= 5 and not _NOT_WEIGHTS.search(key)


def module_layer_type(module: torch.nn.Module, param_name: str, ndim: int) -> str:
    """Layer type of parameter ``param_name`` of ``module`` from the module's class."""
    if param_name != "weight":
        return "matrix"
    cls = type(module).__name__.lower()
    if isinstance(module, torch.nn.Embedding) or "embedding" in cls:
        return "embedding"
    if isinstance(module, torch.nn.Conv1d):
        return "conv1d"
    if isinstance(module, torch.nn.Conv2d):
        return "conv2d"
    if isinstance(module, torch.nn.Conv3d):
        return "conv3d"
    if isinstance(module, torch.nn.Linear) or "linear" in cls or (cls == "conv1d" and ndim == 2):
        return "linear"  # the last case is transformers.pytorch_utils.Conv1D (GPT-2), W stored (in, out)
    return _type_from_shape(ndim)


def infer_layer_type(key: str, shape: tuple[int, ...]) -> str:
    """Layer type of a tensor known only by its name and shape (state dicts, files)."""
    if len(shape) == 2 and _EMBEDDING_NAME.search(key):
        return "embedding"
    return _type_from_shape(len(shape))


def _type_from_shape(ndim: int) -> str:
    return {2: "linear", 3: "conv1d", 4: "conv2d", 5: "conv3d"}.get(ndim, "matrix")


_FLOAT8 = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
                if hasattr(torch, n))


def dtype_skip_reason(dtype: torch.dtype | str) -> str | None:
    """None when the tensor's dtype is analysed (float16/bfloat16/float32/float64), else the reason."""
    if isinstance(dtype, str):
        return f"skipped: unsupported dtype {dtype}"
    if dtype in _FLOAT8:
        return f"skipped: quantised dtype {str(dtype).replace('torch.', '')} (needs its scales to be a matrix)"
    if dtype.is_complex:
        return f"skipped: complex dtype {str(dtype).replace('torch.', '')}"
    if not dtype.is_floating_point:
        return f"skipped: integer/quantised dtype {str(dtype).replace('torch.', '')}"
    return None


def matrix_dims(shape: tuple[int, ...], layer_type: str, conv: str = "slices") -> tuple[int, int, int]:
    """(N, M, rf): N >= M the matrix sides and rf the number of pooled slices.

    The layer's ESD has M * rf eigenvalues. Follows WeightWatcher: for conv slices N, M are
    max/min(out, in) and rf = prod(kernel).
    """
    if len(shape) == 2:
        return max(shape), min(shape), 1
    rf = 1
    for k in shape[2:]:
        rf *= int(k)
    if conv == "flatten":
        a, b = int(shape[0]), int(shape[1]) * rf
        return max(a, b), min(a, b), 1
    return max(shape[:2]), min(shape[:2]), rf


def as_matrices(W: torch.Tensor, conv: str = "slices") -> tuple[torch.Tensor, float]:
    """A weight tensor as a (B, n, m) batch of matrices (a view, no copy) and an eigenvalue scale.

    The layer's ESD is the pooled eigenvalues of the batch times the scale:
    2-D -> (1, N, M), scale 1; conv (out, in, *k) -> (prod(k), out, in) with scale
    0.5 = sqrt(0.5)^2 when ``conv="slices"`` (WeightWatcher multiplies W by sqrt(0.5);
    scaling the eigenvalues instead avoids a copy), or (1, out, in * prod(k)), scale 1,
    when ``conv="flatten"``.
    """
    if conv not in ("slices", "flatten"):
        raise ValueError(f"conv must be 'slices' or 'flatten', got {conv!r}")
    if W.dim() == 2:
        return W.unsqueeze(0), 1.0
    if conv == "flatten":
        return conv_flatten(W).unsqueeze(0), 1.0
    return conv_slices(W, 1.0), WW_CONV2D_SCALE ** 2
