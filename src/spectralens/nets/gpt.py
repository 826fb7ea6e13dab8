"""A small decoder-only transformer, GPT-2 style or LLaMA style, for CPU experiments.

Module names are stable and explicit so per-kind summaries can read them:
``tok_emb``, ``blocks.{i}.norm1``, ``blocks.{i}.attn.{q,k,v,o}``, ``blocks.{i}.norm2``,
``blocks.{i}.mlp.{up,gate,down}`` (``gate`` only for SwiGLU), ``norm_f``, ``lm_head``.
Q, K and V are separate ``nn.Linear`` layers (not one fused c_attn) so each gets its own
spectrum, monitor row and weight decay.

Shapes: tokens (B, T) int64 -> logits (B, T, vocab_size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GPTConfig", "GPT", "RMSNorm"]


@dataclass
class GPTConfig:
    vocab_size: int = 96  # characters; the Shakespeare corpus has 84
    block_size: int = 128  # context length T
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256  # width d
    mlp_ratio: float = 4.0  # hidden width k = mlp_ratio * d (SwiGLU uses 2/3 of it, rounded)
    mlp: str = "gelu"  # "gelu" (GPT-2), "relu2" (squared ReLU), or "swiglu" (LLaMA)
    norm: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (LLaMA)
    rotary: bool = False  # rotary position embedding instead of a learned one
    bias: bool = False  # biases in Linear layers
    tie_weights: bool = False  # share tok_emb and lm_head weights

    @classmethod
    def llama(cls, **overrides) -> "GPTConfig":
        """RMSNorm + SwiGLU + rotary, the LLaMA recipe (AlphaDecay's setting)."""
        return cls(**{"mlp": "swiglu", "norm": "rmsnorm", "rotary": True, **overrides})


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * g."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _norm(cfg: GPTConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.n_embd)
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
    raise ValueError(f"unknown norm {cfg.norm!r}; expected 'layernorm' or 'rmsnorm'")


def _rotary(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary embedding on (B, H, T, Dh) with Dh even."""
    _, _, t, dh = x.shape
    inv = base ** (-torch.arange(0, dh, 2, device=x.device, dtype=torch.float32) / dh)
    ang = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd={cfg.n_embd} must be divisible by n_head={cfg.n_head}")
        self.n_head, self.rotary = cfg.n_head, cfg.rotary
        d = cfg.n_embd
        self.q = nn.Linear(d, d, bias=cfg.bias)
        self.k = nn.Linear(d, d, bias=cfg.bias)
        self.v = nn.Linear(d, d, bias=cfg.bias)
        self.o = nn.Linear(d, d, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_head
        q, k, v = (m(x).view(b, t, h, d // h).transpose(1, 2) for m in (self.q, self.k, self.v))
        if self.rotary:
            q, k = _rotary(q), _rotary(k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        d, self.kind = cfg.n_embd, cfg.mlp
        hidden = int(cfg.mlp_ratio * d)
        if cfg.mlp == "swiglu":
            hidden = int(2 * hidden / 3)
            hidden = 8 * ((hidden + 7) // 8)
            self.gate = nn.Linear(d, hidden, bias=cfg.bias)
        elif cfg.mlp not in ("gelu", "relu2"):
            raise ValueError(f"unknown mlp {cfg.mlp!r}; expected 'gelu', 'relu2' or 'swiglu'")
        self.up = nn.Linear(d, hidden, bias=cfg.bias)
        self.down = nn.Linear(hidden, d, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            return self.down(F.silu(self.gate(x)) * self.up(x))
        if self.kind == "relu2":
            return self.down(F.relu(self.up(x)).square())
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.norm1, self.attn = _norm(cfg), Attention(cfg)
        self.norm2, self.mlp = _norm(cfg), MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Decoder-only transformer; ``forward(idx, targets=None) -> (logits, loss or None)``."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = None if cfg.rotary else nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = _norm(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith("attn.o.weight") or name.endswith("mlp.down.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        b, t = idx.shape
        if t > self.config.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.config.block_size}")
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.norm_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss
