"""Which paper reproductions exist: name -> module with ``run(out_dir, quick, seed) -> dict``.

Adding an experiment is one line in ``EXPERIMENTS`` below: its name (what
``spectralens repro NAME`` takes), the dotted module path, and a one-line description.
The module is imported only when the experiment is run (or its description is listed),
so a broken or heavy experiment never slows down or breaks the others.

Contract for an experiment module: a function

    run(out_dir: pathlib.Path, quick: bool, seed: int) -> dict

that writes its figures (PNG), ``results.json`` and ``summary.md`` into ``out_dir`` (which
the caller creates and passes already suffixed with the experiment name) and returns a
JSON-able dict with at least ``"claims"``: a list of ``{"claim", "measured", "held"}``
(see ``spectralens.experiments.common.Claim``). ``quick=True`` must finish in <= 60 s on
2 CPU cores; the default in <= 15 minutes.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

__all__ = ["Experiment", "EXPERIMENTS", "get", "names", "run"]


@dataclass(frozen=True)
class Experiment:
    name: str  # what `spectralens repro NAME` takes
    module: str  # dotted path of a module defining run(out_dir, quick, seed) -> dict
    description: str  # one line for `spectralens repro --list`

    def load(self) -> ModuleType:
        module = importlib.import_module(self.module)
        if not callable(getattr(module, "run", None)):
            raise TypeError(f"experiment module {self.module} has no run(out_dir, quick, seed) function")
        return module


_SC = "spectralens.experiments.spectral_condition"

EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment("spectral-condition", _SC, "Davis & Drusvyatskiy 2512.04299: all six experiments below, in sequence"),
    Experiment("spectral-condition.stable-rank-at-init", f"{_SC}.stable_rank_at_init", "st of post-activations at Gaussian init vs width, against pi, pi/2, 6, 2pi"),
    Experiment("spectral-condition.random-features", f"{_SC}.random_features", "ReLU random-feature regression (fig. 3): GD vs SpecGD, nr(G) vs st(A)"),
    Experiment("spectral-condition.swiglu-counterexample", f"{_SC}.swiglu_counterexample", "SwiGLU random features (fig. 11): nr(G) < st(A) and GD wins"),
    Experiment("spectral-condition.spiked-features", f"{_SC}.spiked_features", "spiked random features (figs. 14-15): nr flat at init, ~linear in k after one step"),
    Experiment("spectral-condition.sparse-regression", f"{_SC}.sparse_regression", "x1*x2*x3 with a 4-layer squared-ReLU net (figs. 1, 4): SpecGD on layers 2-3 vs GD"),
    Experiment("spectral-condition.nanogpt", f"{_SC}.nanogpt", "char-level GPT on Shakespeare, AdamW vs hybrid Muon, monitored nr(G) and st(A)"),
    Experiment("heavy-tails", "spectralens.experiments.heavy_tails", "Kothapalli et al. 2406.04657: teacher-student GD/Adam lr sweep, spike then heavy tail"),
    Experiment("alphadecay", "spectralens.experiments.alphadecay", "He et al. 2506.14562 at CPU scale: LLaMA-style GPT on Shakespeare, 5 decay policies x 3 seeds"),
    Experiment("lrp-bounds", "spectralens.experiments.lrp_bounds", "Binder et al. 2509.08963: digits CNN, mean-attribution convergence vs Hoeffding; LRP-beta's constant weight-free"),
)


def names() -> list[str]:
    return [e.name for e in EXPERIMENTS]


def get(name: str) -> Experiment:
    """The experiment called ``name``; ValueError listing the known names otherwise."""
    for exp in EXPERIMENTS:
        if exp.name == name:
            return exp
    raise ValueError(f"unknown experiment {name!r}; known: {', '.join(names())}")


def run(name: str, out_dir: Path, *, quick: bool = False, seed: int = 0) -> dict:
    """Run experiment ``name`` into ``out_dir / name`` and return its result dict."""
    exp = get(name)
    target = Path(out_dir) / exp.name
    target.mkdir(parents=True, exist_ok=True)
    return exp.load().run(target, quick=quick, seed=seed)
