"""scikit-learn's handwritten digits (8 x 8 grey images, 10 classes) as float tensors.

The data ship inside scikit-learn (``sklearn.datasets.load_digits``: 1,797 images, UCI
optical recognition of handwritten digits), so nothing is downloaded. Install with
``pip install spectralens[lrp]``.

Normalisation: pixel counts 0..16 divided by 16, so every pixel lies in [0, 1] (the box
the z^B input rule and the brightness/contrast augmentations of ``spectralens repro
lrp-bounds`` assume). No mean subtraction: an all-zero image stays all zero.

Split: deterministic and by position, never random. The last ``test_fraction`` of the
samples (in scikit-learn's fixed order) are the test set, the rest the training set. The
file cycles through the classes, so both splits are close to balanced (test, default 0.2:
33-37 images per class).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch

from .shakespeare import CorpusNotInstalledError

__all__ = ["Digits", "DigitsNotInstalledError", "load_digits", "INSTALL_HINT", "N_CLASSES", "IMAGE_SIZE"]

INSTALL_HINT = "pip install spectralens[lrp]"
N_CLASSES = 10
IMAGE_SIZE = 8
_MAX_PIXEL = 16.0  # load_digits stores counts 0..16 per 4 x 4 block of the original 32 x 32 bitmap


class DigitsNotInstalledError(CorpusNotInstalledError):
    """scikit-learn (which ships the digits) is not installed.

    A subclass of :class:`CorpusNotInstalledError` so ``spectralens repro`` reports it as
    missing data (exit status 2) like the Shakespeare corpus.
    """


@dataclass(frozen=True)
class Digits:
    """Train/test split of the digits; images (N, 1, 8, 8) float32 in [0, 1], labels (N,) int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def n_classes(self) -> int:
        return N_CLASSES

    def __repr__(self) -> str:
        return f"Digits(train={len(self.y_train)}, test={len(self.y_test)}, image=1x{IMAGE_SIZE}x{IMAGE_SIZE})"


def _sklearn_load_digits():
    try:
        datasets = importlib.import_module("sklearn.datasets")
    except ImportError as exc:
        raise DigitsNotInstalledError(
            f"the digits data ship with scikit-learn, which is not installed ({exc}); install it with: "
            f"{INSTALL_HINT}") from exc
    return datasets.load_digits


def load_digits(test_fraction: float = 0.2, *, dtype: torch.dtype = torch.float32) -> Digits:
    """The digits as ``Digits``: x (N, 1, 8, 8) = pixels / 16 in [0, 1], y (N,) in 0..9.

    ``test_fraction`` in (0, 1): the last ``round(test_fraction * 1797)`` samples are the
    test set. Raises :class:`DigitsNotInstalledError` (naming ``pip install spectralens[lrp]``)
    when scikit-learn is missing, ValueError for a bad fraction or a non-floating dtype.
    """
    if not isinstance(test_fraction, (int, float)) or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch dtype, got {dtype!r}")
    bunch = _sklearn_load_digits()()
    x = torch.as_tensor(bunch.data, dtype=torch.float64).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE) / _MAX_PIXEL
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    n = len(y)
    n_test = int(round(float(test_fraction) * n))
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction {test_fraction} leaves an empty split of the {n} samples")
    x = x.to(dtype)
    cut = n - n_test
    return Digits(x[:cut].contiguous(), y[:cut].contiguous(), x[cut:].contiguous(), y[cut:].contiguous())
