"""A small ReLU CNN for scikit-learn's 8 x 8 digits, trained in a few seconds on one CPU core.

Architecture (a flat ``nn.Sequential``, so LRP composites, Zennit and Captum see every layer):

    conv1  Conv2d(1, c1, 3, padding=1)   (N, 1, 8, 8)  -> (N, c1, 8, 8)
    [bn1   BatchNorm2d(c1)]              only with ``batchnorm=True``
    relu1, pool1 MaxPool2d(2)                          -> (N, c1, 4, 4)
    conv2  Conv2d(c1, c2, 3, padding=1)                -> (N, c2, 4, 4)
    [bn2   BatchNorm2d(c2)]
    relu2, pool2 AvgPool2d(2)                          -> (N, c2, 2, 2)
    flatten                                            -> (N, 4 c2)
    fc1    Linear(4 c2, hidden), relu3
    fc2    Linear(hidden, 10)                          -> (N, 10) logits

Defaults c1 = 16, c2 = 32, hidden = 64 (~12k parameters). Both pooling kinds appear so
LRP's max-pool (winner takes all) and avg-pool (epsilon on the implicit weights) paths are
exercised. Training (:func:`train_digits_cnn`): Adam, cross-entropy, mini-batches drawn
from a seeded ``torch.Generator``; the same seed and thread count give the same weights.
Typical result: ~97-98% test accuracy after 20 epochs in ~2-4 s on one core.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DigitsCNN", "DigitsTrainConfig", "TrainResult", "train_digits_cnn", "accuracy"]


class DigitsCNN(nn.Sequential):
    """conv-relu-maxpool, conv-relu-avgpool, flatten, linear-relu, linear (see the module docstring)."""

    def __init__(self, channels: tuple[int, int] = (16, 32), hidden: int = 64, *, batchnorm: bool = False,
                 n_classes: int = 10):
        c1, c2 = channels
        for name, v in (("channels[0]", c1), ("channels[1]", c2), ("hidden", hidden), ("n_classes", n_classes)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        layers: list[tuple[str, nn.Module]] = [("conv1", nn.Conv2d(1, c1, 3, padding=1))]
        if batchnorm:
            layers.append(("bn1", nn.BatchNorm2d(c1)))
        layers += [("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)), ("conv2", nn.Conv2d(c1, c2, 3, padding=1))]
        if batchnorm:
            layers.append(("bn2", nn.BatchNorm2d(c2)))
        layers += [("relu2", nn.ReLU()), ("pool2", nn.AvgPool2d(2)), ("flatten", nn.Flatten()),
                   ("fc1", nn.Linear(4 * c2, hidden)), ("relu3", nn.ReLU()), ("fc2", nn.Linear(hidden, n_classes))]
        super().__init__(OrderedDict(layers))
        self.batchnorm = batchnorm


@dataclass(frozen=True)
class DigitsTrainConfig:
    epochs: int = 30  # passes over the 1,438 training images
    batch_size: int = 64
    lr: float = 1e-2  # Adam's peak rate, cosine-annealed to 0 over all steps
    weight_decay: float = 1e-4
    channels: tuple[int, int] = (16, 32)
    hidden: int = 64
    batchnorm: bool = False


@dataclass(frozen=True)
class TrainResult:
    train_accuracy: float
    test_accuracy: float
    seconds: float
    losses: tuple[float, ...]  # mean training loss per epoch


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of ``x`` (N, 1, 8, 8) classified as ``y`` (N,), in eval mode (mode restored)."""
    was_training = model.training
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(y), batch_size))
    model.train(was_training)
    return correct / max(len(y), 1)


def train_digits_cnn(data, config: DigitsTrainConfig = DigitsTrainConfig(), *, seed: int = 0
                     ) -> tuple[DigitsCNN, TrainResult]:
    """Train a :class:`DigitsCNN` on ``data`` (a :class:`spectralens.data.digits.Digits`).

    Initialisation and batch order come from ``seed`` only (the global RNG is left as it
    was). Returns the model in eval mode and a :class:`TrainResult`.
    """
    if config.epochs < 1 or config.batch_size < 1 or not config.lr > 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {config}")
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsCNN(config.channels, config.hidden, batchnorm=config.batchnorm)
    model = model.to(data.x_train.dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(data.y_train) // config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * steps_per_epoch)
    x, y = data.x_train, data.y_train
    losses = []
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for i in range(0, len(y), config.batch_size):
            idx = order[i:i + config.batch_size]
            if config.batchnorm and len(idx) < 2:
                continue  # BatchNorm cannot normalise a batch of one
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(y))
    model.eval()
    result = TrainResult(accuracy(model, x, y), accuracy(model, data.x_test, data.y_test),
                         time.perf_counter() - t0, tuple(losses))
    return model, result
