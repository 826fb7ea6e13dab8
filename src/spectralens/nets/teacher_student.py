"""Two-layer teacher-student setup of Kothapalli et al. (arXiv 2406.04657).

Teacher: x ~ N(0, I_d), y = softplus(beta*^T x) + noise * xi, ||beta*|| = 1, xi ~ N(0, 1).
Student: f(x) = a^T tanh(W x / sqrt(d)) / sqrt(h), W (h, d) and a (h,) with N(0, 1)
entries; only W is trained (a is a frozen buffer). Defaults of the authors' code:
d = 1000, h = 1500, n = 2000; the demo and quick runs scale these down (see each caller).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TeacherStudentConfig", "TwoLayerStudent", "make_teacher_student_data"]


@dataclass
class TeacherStudentConfig:
    d: int = 1000  # input dimension
    h: int = 1500  # hidden width of the student
    n: int = 2000  # training samples (full batch)
    label_noise: float = 0.3  # std of the additive label noise
    seed: int = 0


def make_teacher_student_data(cfg: TeacherStudentConfig, n: int | None = None, *, generator: torch.Generator):
    """(X (n, d), y (n,), beta* (d,)); beta* is drawn from ``cfg.seed`` so every split shares it."""
    beta_gen = torch.Generator().manual_seed(cfg.seed + 10_000)
    beta = torch.randn(cfg.d, generator=beta_gen)
    beta = beta / beta.norm()
    n = cfg.n if n is None else n
    X = torch.randn(n, cfg.d, generator=generator)
    y = F.softplus(X @ beta) + cfg.label_noise * torch.randn(n, generator=generator)
    return X, y, beta


class TwoLayerStudent(nn.Module):
    """f(x) = a^T tanh(W x / sqrt(d)) / sqrt(h); ``W`` is the ``first`` Linear's weight."""

    def __init__(self, d: int, h: int, *, generator: torch.Generator | None = None):
        super().__init__()
        self.d, self.h = d, h
        self.first = nn.Linear(d, h, bias=False)
        with torch.no_grad():
            self.first.weight.copy_(torch.randn(h, d, generator=generator))
        self.register_buffer("a", torch.randn(h, generator=generator))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Z = tanh(X W^T / sqrt(d)) / sqrt(h), shape (n, h)."""
        return torch.tanh(self.first(x) / math.sqrt(self.d)) / math.sqrt(self.h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x) @ self.a
