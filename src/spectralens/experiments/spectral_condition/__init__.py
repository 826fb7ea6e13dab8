"""Davis & Drusvyatskiy, "When do spectral gradient updates help in deep learning?" (arXiv 2512.04299).

Six experiments, one module each, run in sequence by ``spectralens repro spectral-condition``
(or one at a time, e.g. ``spectralens repro spectral-condition.random-features``):

1. ``stable_rank_at_init``   st of post-activations at Gaussian init vs width
2. ``random_features``       ReLU random-feature regression, GD vs SpecGD (fig. 3)
3. ``swiglu_counterexample`` SwiGLU features: nr < st and GD wins (fig. 11)
4. ``spiked_features``       nr after one step ~ linear in k (figs. 14-15)
5. ``sparse_regression``     x1 x2 x3, 4-layer squared-ReLU net, SpecGD on layers 2-3 (figs. 1, 4)
6. ``nanogpt``               char-level GPT on Shakespeare, AdamW vs hybrid Muon, monitored

Each writes figures, ``results.json`` and ``summary.md`` into ``out_dir/<part>/``; this
module writes the combined ``summary.md`` / ``results.json`` in ``out_dir``.
"""
from __future__ import annotations

import importlib
import time
from pathlib import Path

from spectralens.experiments.common import Claim, write_outputs

__all__ = ["run", "PARTS"]

PARTS = ("stable_rank_at_init", "random_features", "swiglu_counterexample", "spiked_features",
         "sparse_regression", "nanogpt")


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict:
    """Run the six parts into ``out_dir/<part>``; a part that cannot run (missing corpus) is
    recorded under ``skipped`` with its message and the others still run."""
    from spectralens.data.shakespeare import CorpusNotInstalledError

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    parts, skipped, claims, cpu = {}, {}, [], {}
    for name in PARTS:
        module = importlib.import_module(f"{__name__}.{name}")
        c0 = time.process_time()
        try:
            parts[name] = module.run(out_dir / name, quick=quick, seed=seed)
        except CorpusNotInstalledError as exc:
            skipped[name] = str(exc)
            continue
        finally:
            cpu[name] = time.process_time() - c0
        claims += [Claim(f"[{name}] {c['claim']}", c["measured"], c["held"]) for c in parts[name]["claims"]]
    for name, msg in skipped.items():
        claims.append(Claim(f"[{name}] not run", msg, None))
    seconds = time.perf_counter() - t0
    write_outputs(
        out_dir, title="When do spectral gradient updates help? (Davis & Drusvyatskiy) - all experiments",
        claims=claims, results={"seconds_per_part": {n: p["seconds"] for n, p in parts.items()},
                                "cpu_seconds_per_part": cpu, "skipped": skipped},
        settings={"quick": quick, "seed": seed, "parts": list(PARTS)},
        scale_note="see each part's summary.md: " + ", ".join(f"[{n}]({n}/summary.md)" for n in PARTS),
        seconds=seconds, notes=[f"CPU time (user + system, this process): {sum(cpu.values()):.0f} s; wall time is "
                                "larger when other jobs share the cores."],
    )
    return {"claims": [c.to_dict() for c in claims], "parts": parts, "skipped": skipped, "seconds": seconds}
