"""Slow, plain float32 transcriptions of the optimizers, written from the papers' formulas.

Used by tests/test_optim_muon*.py and tests/test_optim_hybrid.py to check the fast code:
no batching, no Gram trick, no distributed logic, one matrix at a time.
"""
from __future__ import annotations

import math

import torch

NS = (3.4445, -4.7750, 2.0315)


def newton_schulz(G: torch.Tensor, steps: int = 5, coeffs=NS, eps: float = 1e-7) -> torch.Tensor:
    """Textbook quintic NS on one matrix, float32: X <- a X + (b A + c A A) X, A = X X^T."""
    X = G.to(torch.float32)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    X = X / max(X.norm().item(), eps)
    for _ in range(steps):
        a, b, c = coeffs
        A = X @ X.T
        X = a * X + (b * A + c * (A @ A)) @ X
    return X.T if tall else X


def scale(rule: str, rows: int, cols: int) -> float:
    return {"original": math.sqrt(max(1.0, rows / cols)), "match_rms_adamw": 0.2 * math.sqrt(max(rows, cols)),
            "spectral": math.sqrt(rows / cols), "none": 1.0}[rule]


class ReferenceMuon:
    """Muon on a list of 2-D tensors: EMA (or classic) momentum, Nesterov, NS, decay, scale."""

    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0,
                 ns_steps=5, adjust_lr="original", momentum_type="ema"):
        self.params = list(params)
        self.lr, self.mu, self.nesterov, self.wd = lr, momentum, nesterov, weight_decay
        self.steps, self.rule, self.kind = ns_steps, adjust_lr, momentum_type
        self.bufs = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self):
        for p, buf in zip(self.params, self.bufs):
            g = p.grad
            if self.kind == "ema":
                buf.copy_(self.mu * buf + (1 - self.mu) * g)
                u = (1 - self.mu) * g + self.mu * buf if self.nesterov else buf
            else:
                buf.copy_(self.mu * buf + g)
                u = g + self.mu * buf if self.nesterov else buf
            rows, cols = p.shape[0], p[0].numel()
            o = newton_schulz(u.reshape(rows, cols), self.steps).reshape(p.shape)
            p.mul_(1 - self.lr * self.wd)
            p.sub_(self.lr * scale(self.rule, rows, cols) * o)


def polar_float64(G: torch.Tensor) -> torch.Tensor:
    """U V^T from a float64 SVD."""
    U, _, Vh = torch.linalg.svd(G.to(torch.float64), full_matrices=False)
    return U @ Vh


def train_muon_adamw(model: torch.nn.Module, muon_params: list, batch, loss_fn, steps: int, lr: float,
                     momentum: float, weight_decay: float) -> None:
    """``steps`` full-batch steps of the gated optimizer pinned to spectral, written plainly.

    ``muon_params``: EMA momentum buf = mu buf + (1 - mu) g, Nesterov u = (1 - mu) g + mu buf,
    decoupled decay p *= 1 - lr wd, p -= lr 0.2 sqrt(max(out, in)) NS5(u) with u seen as the
    (out, in * prod(kernel)) matrix (a Linear's own shape; a conv weight flattened, as Muon
    does). Every other parameter: torch AdamW (betas 0.9, 0.95), no decay on 1-D parameters.
    ``batch`` = (x, y); ``loss_fn(model, x, y)``.
    """
    rest = [p for p in model.parameters() if all(p is not q for q in muon_params)]
    adam = torch.optim.AdamW([{"params": [p for p in rest if p.dim() >= 2]},
                              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    bufs = [torch.zeros_like(p) for p in muon_params]
    x, y = batch
    for _ in range(steps):
        model.zero_grad()
        loss_fn(model, x, y).backward()
        adam.step()
        with torch.no_grad():
            for p, buf in zip(muon_params, bufs):
                buf.mul_(momentum).add_(p.grad, alpha=1 - momentum)
                u = ((1 - momentum) * p.grad + momentum * buf).reshape(p.shape[0], -1)
                p.mul_(1 - lr * weight_decay)
                p.sub_(lr * 0.2 * math.sqrt(max(u.shape)) * newton_schulz(u).reshape(p.shape))
