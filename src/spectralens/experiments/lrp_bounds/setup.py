"""Settings, the trained digits CNN, the three attribution methods and the bound B of each.

Methods (``METHODS``), all with the output relevance / seed of the target logit:

* ``gradient``: the plain input gradient ``d f_t / d x`` (``lrp.attribute(rule="gradient")``);
* ``epsilon``: LRP-epsilon with ``epsilon = EPSILON`` on every Conv/Linear layer;
* ``beta``: LRP-beta, alpha-beta with ``alpha = 1 + BETA``, ``beta = BETA`` on every Conv/Linear.

Average pooling takes the epsilon (Norm) rule and max pooling winner-takes-all in both LRP
methods (``spectralens.lrp`` defaults). The component-wise bound B of each method at one
input comes from ``spectralens.lrp.bounds.attribution_bound`` (helper B's module; its
docstring says which bound is the paper's and which is derived).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["LRPBoundsConfig", "METHODS", "EPSILON", "BETA", "attribute", "trained_model", "bounds_at"]

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
    n_bound: int = 32  # augmented copies on which B is evaluated (B = their max, the clean input included)
    noise_sigma: float = 0.15  # SmoothGrad: x + sigma * N(0, I), pixels in [0, 1]
    contrast: float = 0.3  # jitter: clip(a x + b + jitter_noise * N(0, I), 0, 1), a ~ U[1 - contrast, 1 + contrast]
    brightness: float = 0.15  # b ~ U[-brightness, brightness]
    jitter_noise: float = 0.05
    scales: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)  # part (ii): weights x c
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


def bounds_at(model, xs: torch.Tensor, target: int, method: str) -> dict:
    """B at each input of ``xs`` (N, 1, 8, 8): {"B": (N,) float64, "output_relevance": (N,), "constant": (N,)}.

    ``constant`` is what multiplies the output-side quantity in the bound: ``B / |R_out|`` for
    LRP-beta (R form), ``B / 1`` for the gradient (seed 1), ``B / ||x||_inf`` for LRP-epsilon
    (c form, c_out = 1); see ``spectralens.lrp.bounds``.
    """
    from spectralens.lrp import bounds

    Bs, routs, consts = [], [], []
    for x in xs:
        b = bounds.attribution_bound(model, x, target=target, **METHODS[method])
        Bs.append(float(b.B))
        routs.append(float(b.output_relevance))
        consts.append(float(b.constant))
    return {"B": torch.tensor(Bs, dtype=torch.float64), "output_relevance": torch.tensor(routs, dtype=torch.float64),
            "constant": torch.tensor(consts, dtype=torch.float64)}
