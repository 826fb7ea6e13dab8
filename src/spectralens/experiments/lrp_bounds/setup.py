"""Settings, the trained digits CNN, the three attribution methods and the bound B of each.

Methods (``METHODS``), all with the output relevance / seed of the target logit:

* ``gradient``: the plain input gradient ``d f_t / d x`` (``lrp.attribute(rule="gradient")``);
* ``epsilon``: LRP-epsilon with ``epsilon = EPSILON`` on every Conv/Linear layer;
* ``beta``: LRP-beta, alpha-beta with ``alpha = 1 + BETA``, ``beta = BETA`` on every Conv/Linear.

Average pooling takes the epsilon (Norm) rule and max pooling winner-takes-all in both LRP
methods (``spectralens.lrp`` defaults). The component-wise bound B of each method comes from
``spectralens.lrp.bounds.attribution_bound``; its formulas are derived there from the rule
definitions (the paper's abstract only claims that such bounds exist).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LRPBoundsConfig", "METHODS", "EPSILON", "BETA", "attribute", "trained_model", "pick_inputs",
           "bound_row"]

EPSILON = 1e-2  # LRP-epsilon's stabiliser (absolute, in units of each layer's pre-activation)
BETA = 1.0  # LRP-beta: alpha = 1 + beta = 2, the usual alpha2-beta1
METHODS: dict[str, dict] = {
    "gradient": {"rule": "gradient"},
    "epsilon": {"rule": "epsilon", "epsilon": EPSILON},
    "beta": {"rule": "alpha_beta", "alpha": 1.0 + BETA, "beta": BETA},
}


@dataclass(frozen=True)
class LRPBoundsConfig:
    n_inputs: int = 5  # test images explained (the first correctly classified ones of distinct classes)
    t_ref: int = 8192  # samples for the expectation E[R] (an estimate; its error is ~ sqrt(T/t_ref) of the deviation)
    repeats: int = 100  # independent means per T (the (1 - delta) quantile is taken over these)
    t_max: int = 256  # T runs over 1, 2, 4, ..., t_max
    delta: float = 0.05  # Hoeffding: P(|mean - E| >= t) <= delta
    noise_sigma: float = 0.15  # SmoothGrad: x + sigma * N(0, I), pixels in [0, 1]
    contrast: float = 0.3  # jitter: clip(a x + b + jitter_noise * N(0, I), 0, 1), a ~ U[1 - contrast, 1 + contrast]
    brightness: float = 0.15  # b ~ U[-brightness, brightness]
    jitter_noise: float = 0.05
    scales: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)  # part (ii): weights x c
    scaling_inputs: int | None = None  # part (ii) on the first this many inputs (None: all n_inputs)
    epochs: int = 30  # CNN training (DigitsTrainConfig)
    chunk: int = 4096  # attributions per call

    @property
    def ts(self) -> list[int]:
        out, t = [], 1
        while t <= self.t_max:
            out.append(t)
            t *= 2
        return out


def attribute(model, x: torch.Tensor, target: int, method: str) -> torch.Tensor:
    """Attributions (N, D) float64 of ``method`` for the batch ``x`` (N, 1, 8, 8), one target class."""
    from spectralens import lrp

    return lrp.attribute(model, x, target, **METHODS[method]).flatten(1).double()


def trained_model(cfg: LRPBoundsConfig, seed: int):
    """(model, data, TrainResult): the digits CNN (no BatchNorm) trained with ``seed``."""
    from spectralens.data.digits import load_digits
    from spectralens.nets.digits_cnn import DigitsTrainConfig, train_digits_cnn

    data = load_digits()
    model, res = train_digits_cnn(data, DigitsTrainConfig(epochs=cfg.epochs), seed=seed)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, data, res


def pick_inputs(model, data, n: int) -> tuple[torch.Tensor, list[int]]:
    """The first ``n`` correctly classified test images of distinct classes: (n, 1, 8, 8), targets."""
    with torch.no_grad():
        pred = model(data.x_test).argmax(1)
    idx, seen = [], set()
    for i in range(len(pred)):
        c = int(data.y_test[i])
        if int(pred[i]) == c and c not in seen:
            idx.append(i)
            seen.add(c)
        if len(idx) == n:
            break
    return data.x_test[idx], [int(data.y_test[i]) for i in idx]


def bound_row(model, x: torch.Tensor, target: int, method: str, *, x_bound: float | None = None,
              out_bound: float | None = None) -> dict:
    """``lrp.bounds.attribution_bound`` of ``method`` at one image ``x`` (1, 8, 8) or (1, 1, 8, 8), as a dict.

    Keys used here: ``K_uniform`` (the constant, valid for every input: prod_l ||W_l||_2 and pooling
    norms for the gradient and LRP-epsilon, (1 + 2 beta)^L for LRP-beta), ``B_uniform`` = K_uniform
    x the scale it multiplies (1, ``x_bound`` >= max|x_i|, or ``out_bound`` >= |f_t(x)|), ``B`` and
    ``K`` at ``x`` itself, ``K_observed`` (the actual per-layer norms' product at ``x``),
    ``observed_absmax`` = max |R_i(x)|, ``holds``.
    """
    from spectralens.lrp import bounds

    x = x.reshape(1, *x.shape[-3:])
    opts = {k: v for k, v in METHODS[method].items() if k != "rule"}
    df = bounds.attribution_bound(model, x, METHODS[method]["rule"], target=target, x_bound=x_bound,
                                  out_bound=out_bound, **opts)
    row = df.iloc[0].to_dict()
    return {k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v) for k, v in row.items()}
