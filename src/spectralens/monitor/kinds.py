"""Which modules the monitor watches, and what kind of layer each one is.

A *monitored layer* is one module whose weight the spectral-update condition of Davis &
Drusvyatskiy (arXiv 2512.04299) applies to:

=============  ======================================  =====================================
family         modules                                  incoming activation A (rows = samples)
=============  ======================================  =====================================
``linear``     ``nn.Linear``; HF ``Conv1D`` (GPT-2)     the module input, all tokens as rows
``conv``       ``nn.Conv1d``, ``nn.Conv2d``             unfolded input patches (N*L, C*k)
``embedding``  ``nn.Embedding``                         token-indicator matrix, st = 1/p_max
``norm``       LayerNorm / RMSNorm (any class whose     the normalised input x_hat the gain
               name ends in ``Norm`` with a 1-D gain)   multiplies (diagonal block)
=============  ======================================  =====================================

``layer_kind(name, module)`` maps a module to one of :data:`KINDS`, by type first (embedding,
norm, conv) and then by the last components of its qualified name, covering spectralens'
GPT (``attn.q``, ``mlp.up``), LLaMA/Mistral (``q_proj``, ``gate_proj``, ``down_proj``), GPT-2
(``c_attn``, ``c_fc``, ``mlp.c_proj``), BERT (``query``, ``intermediate.dense``,
``output.dense``), OPT/BART (``fc1``, ``fc2``, ``out_proj``), GPT-NeoX (``query_key_value``,
``dense_h_to_4h``) and Meta LLaMA (``wq``, ``w1`` gate, ``w3`` up, ``w2`` down).
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, Union

from torch import nn

__all__ = ["KINDS", "layer_kind", "layer_family", "select_layers", "LayerSelector"]

KINDS = ("q", "k", "v", "qkv", "o", "mlp_up", "mlp_gate", "mlp_down", "embedding", "head",
         "norm", "conv", "other")

LayerSelector = Union[None, str, Iterable[str], Callable[[str, nn.Module], bool]]

_LEAF = {
    "q": {"q", "q_proj", "query", "wq", "to_q", "q_lin"},
    "k": {"k", "k_proj", "key", "wk", "to_k", "k_lin"},
    "v": {"v", "v_proj", "value", "wv", "to_v", "v_lin"},
    "qkv": {"c_attn", "qkv", "qkv_proj", "query_key_value", "wqkv", "in_proj", "w_pack"},
    "o": {"o", "o_proj", "out_proj", "wo", "to_out", "out_lin", "attn_out"},
    "mlp_up": {"up", "up_proj", "fc1", "c_fc", "fc_in", "w3", "dense_h_to_4h", "lin1", "wi", "w_in"},
    "mlp_gate": {"gate", "gate_proj", "w1"},
    "mlp_down": {"down", "down_proj", "fc2", "fc_out", "w2", "dense_4h_to_h", "lin2", "w_out"},
    "head": {"lm_head", "head", "classifier", "output", "score", "embed_out", "cls", "fc_head"},
    "embedding": {"tok_emb", "wte", "wpe", "embed_tokens", "word_embeddings", "embeddings",
                  "pos_emb", "embed_in", "tok_embeddings"},
}
_ATTN_PARENT = re.compile(r"attn|attention|self_attn")
_MLP_PARENT = re.compile(r"mlp|ffn|feed_forward|feedforward|intermediate")


def _is_norm(module: nn.Module) -> bool:
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)):
        return getattr(module, "weight", None) is not None
    name = type(module).__name__
    w = getattr(module, "weight", None)
    return name.endswith("Norm") and isinstance(w, nn.Parameter) and w.dim() == 1


def _is_hf_conv1d(module: nn.Module) -> bool:
    """transformers' GPT-2 ``Conv1D``: a Linear whose weight is stored (in, out)."""
    w = getattr(module, "weight", None)
    return type(module).__name__ == "Conv1D" and isinstance(w, nn.Parameter) and w.dim() == 2


def layer_family(module: nn.Module) -> str | None:
    """'linear', 'hf_conv1d', 'conv', 'embedding', 'norm', or None when not monitorable."""
    w = getattr(module, "weight", None)
    if not isinstance(w, nn.Parameter) or not w.requires_grad:
        return None
    if isinstance(module, nn.Linear):
        return "linear"
    if _is_hf_conv1d(module):
        return "hf_conv1d"
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and not isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "conv"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if _is_norm(module) and not isinstance(module, nn.GroupNorm):
        return "norm"
    return None


def layer_kind(name: str, module: nn.Module) -> str:
    """One of :data:`KINDS` for the module called ``name`` (e.g. ``blocks.0.attn.q``)."""
    family = layer_family(module)
    if family == "embedding" or isinstance(module, nn.Embedding):
        return "embedding"
    if family == "norm" or _is_norm(module):
        return "norm"
    if family == "conv":
        return "conv"
    parts = name.lower().split(".")
    leaf = parts[-1] if parts else ""
    parent = ".".join(parts[:-1])
    # BERT-style "...attention.output.dense", "...intermediate.dense", "...output.dense"
    if leaf == "dense" and len(parts) >= 2:
        if parts[-2] == "intermediate":
            return "mlp_up"
        if parts[-2] == "output":
            return "o" if _ATTN_PARENT.search(".".join(parts[:-2])) else "mlp_down"
        if _ATTN_PARENT.search(parent):
            return "o"
    if leaf == "c_proj":  # GPT-2: attn.c_proj is O, mlp.c_proj is the down projection
        return "o" if _ATTN_PARENT.search(parent) else "mlp_down"
    if leaf == "proj" and _ATTN_PARENT.search(parent):
        return "o"
    for kind, leaves in _LEAF.items():
        if leaf in leaves:
            if kind == "head" and leaf == "output" and parent:  # "output" nested deep is not a head
                continue
            return kind
    if leaf in ("fc", "proj") and _MLP_PARENT.search(parent):
        return "mlp_up" if leaf == "fc" else "mlp_down"
    return "other"


def select_layers(model: nn.Module, layers: LayerSelector = None) -> list[tuple[str, nn.Module, str]]:
    """(name, module, family) for every monitorable module ``layers`` selects.

    ``layers`` may be None (all monitorable modules), a regular expression matched with
    ``re.search`` against the qualified name, a list of exact module names (an unknown name
    raises ``ValueError`` naming it), or a predicate ``f(name, module) -> bool``.
    """
    named = [(n, m, layer_family(m)) for n, m in model.named_modules()]
    candidates = [(n, m, f) for n, m, f in named if f is not None]
    if layers is None:
        return candidates
    if callable(layers):
        return [(n, m, f) for n, m, f in candidates if layers(n, m)]
    if isinstance(layers, str):
        pattern = re.compile(layers)
        return [(n, m, f) for n, m, f in candidates if pattern.search(n)]
    wanted = list(layers)
    all_names = {n: (m, f) for n, m, f in named}
    out = []
    for n in wanted:
        if n not in all_names:
            raise ValueError(f"layers: no module named {n!r} in the model")
        m, f = all_names[n]
        if f is None:
            raise ValueError(f"layers: module {n!r} ({type(m).__name__}) has no trainable weight the monitor "
                             "understands (Linear, Conv1d/2d, Embedding, LayerNorm/RMSNorm)")
        out.append((n, m, f))
    return out
