"""GatedSpectral: per layer, a spectral (Muon-like) or a Euclidean (AdamW) step, chosen by
the measured condition nr(G) vs st(A), with hysteresis.

Davis & Drusvyatskiy, "When do spectral gradient updates help in deep learning?",
arXiv 2512.04299: for a layer W with incoming activations A (n x d) and gradient G,
a spectral step is promised more descent than a Euclidean one when

    nr(G) = ||G||_*^2 / ||G||_F^2   >=   st(A) = ||A||_F^2 / ||A||_op^2,

and the ratio r = nr(G) / st(A) is the predicted ratio of the two guaranteed decreases.

Gated weights: every ``nn.Linear`` weight and, with ``gate_convs=True`` (the default), every
``nn.Conv1d`` / ``nn.Conv2d`` weight with ``groups == 1``, except the last of these layers in
module (registration) order - the output head - unless ``exclude_last=False``. In a CNN with a
Linear classifier the head is that Linear and every conv is gated; in a fully convolutional
net it is the last conv. ``gate_convs=False`` gates Linears only (the behaviour before convs
were gated: the head is then the last Linear).

A conv is gated as the linear map it is on input patches (Muon's view of a conv):

* Wmat = W.reshape(out, C * prod(kernel)) (Conv1d: (out, C, k); Conv2d: (out, C, kh, kw));
  G is reshaped the same way and nr(G) is that of the (out, C k) matrix;
* A = the im2col patch matrix of the conv's input, rows = batch * output positions,
  columns = C * prod(kernel), cut with the module's kernel_size/stride/padding/dilation and
  padding_mode (``torch.nn.functional.unfold``; Conv1d as a height-1 Conv2d). A is never
  held: A^T A ((C k) x (C k)) and ||A||_F^2 = trace(A^T A) are summed over chunks of rows
  (whole samples, or bands of output rows of one sample) and ||A||_op^2 = lambda_max(A^T A)
  comes from power iteration on it; every position is used, nothing is subsampled
  (``models.conv_patches.patch_stable_rank``);
* spectral step: Newton-Schulz on the reshaped momentum, reshaped back, scale
  0.2 sqrt(max(out, C k)) (as Muon flattens conv filters).

What it does, for every gated weight:

* every ``every`` optimizer steps (step 0, every, 2*every, ...) it measures r: nr(G) from the
  current gradient (eigenvalues of the smaller Gram of G, float64) and st(A) from the
  layer's input in the forward pass just before that step (forward hooks on the gated
  layers record the inputs of grad-enabled forwards on measurement steps only, inputs
  shared by several layers (Q, K, V) measured once; ||A||_op by power iteration). Or
  ``st_provider(name) -> float | None`` supplies st(A) (e.g. from the spectral monitor) and
  no hooks are installed;
* hysteresis: a Euclidean layer switches to spectral when r > ``hi``; a spectral layer
  switches back when r < ``lo`` (lo <= hi). Between measurements the mode is kept. A
  measurement that is NaN/None keeps the mode. Layers start in ``initial_mode``;
* Euclidean step = AdamW: m, v EMAs (betas), bias correction, p -= lr * m_hat / (sqrt(v_hat) + eps);
* spectral step = Muon: buf = mu buf + (1 - mu) G, Nesterov u = (1 - mu) G + mu buf (or buf),
  p -= lr * 0.2 sqrt(max(rows, cols)) * NS5(u) (the "match RMS of AdamW" scale of
  Moonlight, so ONE learning rate serves both steps); the momentum and the decayed, scaled
  update are ``optim.muon``'s own helpers, so this is Muon's code, not a copy;
* both states (Adam moments and Muon momentum) are updated every step whatever the mode,
  so a switch starts from warm statistics;
* decoupled weight decay p *= 1 - lr * weight_decay on parameters with >= 2 dims;
  1-D parameters (norm gains, biases) get none;
* every other parameter (embeddings, the output head, norms, biases, convs with
  ``groups > 1``, ConvTranspose and Conv3d weights) always takes the AdamW step.

``choices()`` returns the measurement history (step, name, nr, st, ratio, mode, switched).
``force="spectral"`` / ``"euclidean"`` pins every gated layer (an all-Muon-hidden hybrid or
plain AdamW with the same code path), for ablations.

Limits: only Linear and groups=1 Conv1d/Conv2d weights are gated; grouped/depthwise convs,
ConvTranspose1d/2d/3d and Conv3d take AdamW (their per-group patch condition is not
implemented). The measurement adds one Gram eigen-decomposition per gated weight and a power
iteration per distinct input every ``every`` steps; for a conv, forming A^T A costs
2 * rows * (C k)^2 FLOPs, about (C k)/out times the layer's forward, and holds a (C k)^2
Gram plus a chunk of at most ~2 * 2^24 patch entries (``models.conv_patches.PATCH_CHUNK_ELEMENTS``).
st(A) comes from one batch (the most recent forward of the layer), not an average; the head
that ``exclude_last`` drops is the last layer in registration order, not execution order.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..linalg.norms import power_iteration
from ..linalg.orthogonalize import orthogonalize_newton_schulz
from ..linalg.ranks import nuclear_rank_from_eigenvalues
from ..linalg.spectrum import eigenvalues
from ..models.conv_patches import PatchGeometry, patch_stable_rank
from .muon import _apply_update, _ema_momentum, lr_scale, matrix_shape

__all__ = ["GatedSpectral", "st_from_monitor"]

_MODES = ("euclidean", "spectral")


def _linear_stable_rank(A: torch.Tensor) -> float:
    """st(A) = ||A||_F^2 / ||A||_op^2 of a Linear's input A (n, d); ||A||_op by power iteration."""
    Af = A.float()
    fro2 = float(Af.square().sum())
    op = float(power_iteration(Af, iters=50, tol=1e-4))
    return fro2 / op**2 if op > 0 else float("nan")


def _is_gated_conv(module: nn.Module) -> bool:
    """A Conv1d/Conv2d (not ConvTranspose, not Conv3d) with groups == 1."""
    return isinstance(module, (nn.Conv1d, nn.Conv2d)) and module.groups == 1


def st_from_monitor(monitor) -> Callable[[str], float | None]:
    """An ``st_provider`` reading ``monitor.last_records`` of a ``spectralens.monitor.SpectralMonitor``.

    Protocol: give the monitor the same ``every`` as the optimizer and call ``monitor.step()``
    after ``loss.backward()`` and BEFORE ``optimizer.step()``, so its last records are the
    current step's st(A) (field ``st_act``, per module name).
    """
    def provider(name: str) -> float | None:
        for r in getattr(monitor, "last_records", ()) or ():
            if r.get("layer") == name:
                return r.get("st_act")
        return None
    return provider


class GatedSpectral(torch.optim.Optimizer):
    """Condition-gated spectral/Euclidean optimizer (see module docstring).

    Args:
        model: the model; its nn.Linear (and groups=1 Conv1d/Conv2d) weights, but the last
            such layer, are gated.
        lr: learning rate shared by both steps (AdamW scale).
        betas, eps: AdamW moments.
        weight_decay: decoupled decay on >= 2-D parameters.
        momentum, nesterov, ns_steps: the spectral (Muon) step.
        every: measure the condition every this many steps (>= 1).
        hi, lo: hysteresis thresholds on r = nr(G) / st(A) (0 < lo <= hi).
        st_provider: optional callable name -> st(A) (float or None); no hooks when given.
        initial_mode: "euclidean" or "spectral" before the first measurement.
        force: None, "euclidean" or "spectral" (no measurement, fixed mode).
        exclude_last: keep the last gated layer in module order (the output head) on AdamW.
        gate_convs: also gate groups=1 Conv1d/Conv2d weights (True); False gates Linears only.
    """

    def __init__(self, model: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, every: int = 10, hi: float = 1.5, lo: float = 1.0,
                 st_provider: Callable[[str], float | None] | None = None, initial_mode: str = "euclidean",
                 force: str | None = None, exclude_last: bool = True, gate_convs: bool = True):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not (isinstance(lr, (int, float)) and lr >= 0.0 and math.isfinite(lr)):
            raise ValueError(f"Invalid learning rate: {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid betas: {betas}")
        if not eps >= 0.0:
            raise ValueError(f"Invalid eps: {eps}")
        if not weight_decay >= 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Invalid momentum: {momentum}")
        if not (isinstance(ns_steps, int) and ns_steps >= 1):
            raise ValueError(f"Invalid ns_steps: {ns_steps!r}")
        if not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
            raise ValueError(f"Invalid every: {every!r} (must be a positive int)")
        if not (0.0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"Invalid hysteresis thresholds lo={lo}, hi={hi}: need 0 < lo <= hi < inf")
        if initial_mode not in _MODES:
            raise ValueError(f"Invalid initial_mode: {initial_mode!r}; expected one of {_MODES}")
        if force not in (None, *_MODES):
            raise ValueError(f"Invalid force: {force!r}; expected None or one of {_MODES}")
        if st_provider is not None and not callable(st_provider):
            raise TypeError(f"st_provider must be callable, got {type(st_provider).__name__}")
        if not isinstance(gate_convs, bool):
            raise ValueError(f"Invalid gate_convs: {gate_convs!r} (must be a bool)")

        layers = [(n, m) for n, m in model.named_modules()
                  if isinstance(m, nn.Linear) or (gate_convs and _is_gated_conv(m))]
        if exclude_last and layers:
            layers = layers[:-1]
        gated, seen = [], set()
        for n, m in layers:
            if m.weight.requires_grad and id(m.weight) not in seen:
                gated.append((n, m))
                seen.add(id(m.weight))
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
        groups = []
        if gated:
            groups.append({"params": [m.weight for _, m in gated], "gated": True, "step_count": 0})
        if rest:
            groups.append({"params": rest, "gated": False, "step_count": 0})
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, momentum=momentum,
                        nesterov=nesterov, ns_steps=ns_steps)
        super().__init__(groups, defaults)
        self.every, self.hi, self.lo = every, float(hi), float(lo)
        self.initial_mode, self.force = initial_mode, force
        self.st_provider = st_provider
        self._name_of = {id(m.weight): n for n, m in gated}
        self._history: list[dict] = []
        self.gate_convs = gate_convs
        # conv name -> how it cuts its input into patches (absent: a Linear)
        self._geometry = {n: PatchGeometry.of(m) for n, m in gated if _is_gated_conv(m)}
        # module name -> input of the last forward: (n, d) for a Linear, (B, C, *spatial) for a conv
        self._inputs: dict[str, torch.Tensor] = {}
        self._handles = []
        if st_provider is None and force is None:
            for n, m in gated:
                self._handles.append(m.register_forward_hook(self._make_hook(n, n in self._geometry)))

    # -- st(A) from forward hooks ------------------------------------------------------------
    def _steps_done(self) -> int:
        return self.param_groups[0]["step_count"] if self.param_groups else 0

    def _make_hook(self, name: str, conv: bool):
        def hook(module, inputs, output):
            if not torch.is_grad_enabled() or self._steps_done() % self.every:
                return
            x = inputs[0].detach()
            self._inputs[name] = x if conv else x.reshape(-1, x.shape[-1])
        return hook

    def _measure_st(self, names: list[str]) -> dict[str, float]:
        if self.st_provider is not None:
            out = {}
            for n in names:
                v = self.st_provider(n)
                out[n] = float("nan") if v is None else float(v)
            return out
        cache: dict[tuple, float] = {}
        out = {}
        for n in names:
            A = self._inputs.get(n)
            if A is None:
                out[n] = float("nan")
                continue
            geometry = self._geometry.get(n)  # None for a Linear
            key = (A.data_ptr(), tuple(A.shape), A.stride(), geometry)
            if key not in cache:  # a conv: st of its im2col patch matrix, never held whole
                cache[key] = _linear_stable_rank(A) if geometry is None else patch_stable_rank(geometry, A)
            out[n] = cache[key]
        self._inputs.clear()
        return out

    def close(self) -> None:
        """Remove the forward hooks (the model is left as it was)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- the step ------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            t = group["step_count"]
            if group["gated"]:
                self._gated_step(group, t)
            else:
                for p in group["params"]:
                    if p.grad is not None:
                        self._adamw(p, p.grad, group, self._state(p))
            group["step_count"] = t + 1
        return loss

    def _state(self, p: torch.Tensor) -> dict:
        st = self.state[p]
        if not st:
            st["step"] = 0
            st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return st

    def _adamw(self, p, g, group, st, apply: bool = True) -> None:
        b1, b2 = group["betas"]
        st["step"] += 1
        st["exp_avg"].lerp_(g, 1 - b1)
        st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
        if not apply:
            return
        lr = group["lr"]
        if group["weight_decay"] and p.dim() >= 2:
            p.mul_(1 - lr * group["weight_decay"])
        bc1, bc2 = 1 - b1 ** st["step"], 1 - b2 ** st["step"]
        denom = (st["exp_avg_sq"] / bc2).sqrt_().add_(group["eps"])
        p.addcdiv_(st["exp_avg"], denom, value=-lr / bc1)

    def _gated_step(self, group, t: int) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        measure = self.force is None and t % self.every == 0
        if measure:
            names = [self._name_of[id(p)] for p in params]
            st_vals = self._measure_st(names)
        for p in params:
            g, st, name = p.grad, self._state(p), self._name_of[id(p)]
            if "spectral" not in st:  # a bool: torch's load_state_dict mangles strings in state
                st["spectral"] = (self.force or self.initial_mode) == "spectral"
                st["momentum_buffer"] = torch.zeros_like(p)
            if self.force is not None:
                st["spectral"] = self.force == "spectral"
            _, rows, cols = matrix_shape(p.shape, flatten=True)  # conv: (out, C * prod(kernel))
            if measure:
                nr = float(nuclear_rank_from_eigenvalues(eigenvalues(g.reshape(rows, cols), dtype=torch.float64)))
                s = st_vals[name]
                ratio = nr / s if s and math.isfinite(s) and s > 0 else float("nan")
                old = st["spectral"]
                if math.isfinite(ratio):
                    if not old and ratio > self.hi:
                        st["spectral"] = True
                    elif old and ratio < self.lo:
                        st["spectral"] = False
                self._history.append(dict(step=t, name=name, nr=nr, st=s, ratio=ratio,
                                          mode=_MODES[st["spectral"]], switched=st["spectral"] != old))
            spectral = st["spectral"]
            # Muon's EMA momentum, kept warm in both modes; the Nesterov look-ahead only
            # matters (and is only computed) for a spectral step.
            u = _ema_momentum(st["momentum_buffer"], g, group["momentum"], group["nesterov"] and spectral)
            self._adamw(p, g, group, st, apply=not spectral)
            if spectral:
                O = orthogonalize_newton_schulz(u.reshape(rows, cols), group["ns_steps"], dtype=torch.float32)
                _apply_update(p, O.reshape(p.shape), group["lr"], group["weight_decay"],
                              lr_scale("match_rms_adamw", rows, cols))

    # -- reporting -------------------------------------------------------------------------------
    def modes(self) -> dict[str, str]:
        """Current mode of every gated weight (initial mode before its first step)."""
        out = {}
        for p in self.param_groups[0]["params"] if self.param_groups and self.param_groups[0]["gated"] else []:
            st = self.state.get(p, {})
            out[self._name_of[id(p)]] = _MODES[st["spectral"]] if "spectral" in st else (self.force or self.initial_mode)
        return out

    def choices(self, as_frame: bool = True):
        """Measurement history: step, name, nr, st, ratio, mode (after the decision), switched."""
        if not as_frame:
            return list(self._history)
        import pandas as pd

        return pd.DataFrame.from_records(self._history, columns=["step", "name", "nr", "st", "ratio", "mode", "switched"])
