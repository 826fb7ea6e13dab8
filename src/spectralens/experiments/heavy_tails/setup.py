"""Configuration, data and training loop of the heavy-tails reproduction.

Kothapalli, Pang, Deng, Liu, Yang, "Crafting heavy-tails in weight matrix spectrum without
gradient noise" (arXiv 2406.04657; TMLR 2025 as "From spikes to heavy tails").

Teacher y = softplus(beta*^T x) + 0.3 xi, x ~ N(0, I_d); student f(x) = a^T tanh(W x / sqrt(d)) / sqrt(h)
with W (h, d) trained and a (h,) frozen (``spectralens.nets.teacher_student``). Full-batch
MSE, GD (SGD without momentum or decay) or Adam (PyTorch defaults), learning rates absolute.
All training maths in float32.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from spectralens.nets.teacher_student import TeacherStudentConfig, TwoLayerStudent, make_teacher_student_data

__all__ = ["HeavyTailsConfig", "Problem", "make_problem", "make_optimizer", "train_steps", "PAPER_LRS"]

PAPER_LRS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 2000.0, 3000.0)


@dataclass(frozen=True)
class HeavyTailsConfig:
    d: int = 1000  # input dimension (paper: 1000)
    h: int = 1500  # student width (paper: 1500)
    n: int = 2000  # training = probe set size, full batch (paper: 2000)
    n_test: int = 200  # fresh test samples for the ridge-refit MSE (paper: 200)
    label_noise: float = 0.3  # std of the teacher's additive noise (paper: 0.3)
    steps: int = 10  # full-batch steps per run (paper: 10)
    lrs: tuple[float, ...] = PAPER_LRS  # absolute learning rates (paper's sweep)
    optimizers: tuple[str, ...] = ("gd", "adam")
    ridge_lambda: float = 0.01  # ridge of the refit a = (Z^T Z + (lambda/h) n I)^-1 Z^T y (paper: 0.01)
    repeats: int = 5  # independent draws of data and init (paper: 5)
    featured: tuple[tuple[str, float], ...] = (("adam", 1.0), ("gd", 2000.0))  # runs with overlaps
    overlap_k: int = 20  # top-k singular vectors shown in the overlap matrices
    metric_steps: tuple[int, ...] = (1, 5, 10)  # steps (besides 0) with the full metrics (ESD, ridge refit)
    hist_steps: tuple[int, ...] = (0, 1, 10)  # steps whose ESD histograms are plotted

    @property
    def scale(self) -> float:
        """Linear scale against the paper's (d, h, n) = (1000, 1500, 2000)."""
        return self.d / 1000.0


@dataclass
class Problem:
    """One draw: train/probe/test data sharing beta*, and a student at initialisation."""

    X: torch.Tensor  # (n, d) training inputs
    y: torch.Tensor  # (n,)
    X_probe: torch.Tensor  # (n, d) separate set for the ridge refit and the KTA
    y_probe: torch.Tensor
    X_test: torch.Tensor  # (n_test, d)
    y_test: torch.Tensor
    beta: torch.Tensor  # (d,) unit-norm teacher direction
    init_state: dict  # the student's state_dict at initialisation


def make_problem(cfg: HeavyTailsConfig, seed: int) -> Problem:
    """Deterministic draw from ``seed``: data sets and student init use disjoint generators."""
    ts = TeacherStudentConfig(d=cfg.d, h=cfg.h, n=cfg.n, label_noise=cfg.label_noise, seed=seed)
    gens = [torch.Generator().manual_seed(seed * 7919 + k) for k in range(4)]
    X, y, beta = make_teacher_student_data(ts, cfg.n, generator=gens[0])
    Xp, yp, _ = make_teacher_student_data(ts, cfg.n, generator=gens[1])
    Xt, yt, _ = make_teacher_student_data(ts, cfg.n_test, generator=gens[2])
    student = TwoLayerStudent(cfg.d, cfg.h, generator=gens[3])
    state = {k: v.clone() for k, v in student.state_dict().items()}
    return Problem(X, y, Xp, yp, Xt, yt, beta, state)


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """GD = SGD without momentum or weight decay; Adam with PyTorch defaults."""
    if name == "gd":
        return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=0.0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; expected 'gd' or 'adam'")


def train_steps(cfg: HeavyTailsConfig, problem: Problem, optimizer: str, lr: float):
    """Yield (step, W_step) for step = 0..cfg.steps; W is a float32 (h, d) copy.

    Loss = mean_i (f(x_i) - y_i)^2 over the full training set (torch MSELoss, as the authors).
    """
    student = TwoLayerStudent(cfg.d, cfg.h)
    student.load_state_dict(problem.init_state)
    opt = make_optimizer(optimizer, [student.first.weight], lr)
    yield 0, student.first.weight.detach().clone()
    for step in range(1, cfg.steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((student(problem.X) - problem.y) ** 2)
        loss.backward()
        opt.step()
        yield step, student.first.weight.detach().clone()
