"""What every reproduction writes: ``results.json``, ``summary.md`` (a claims table), PNG figures.

A claim is a sentence from the paper, the number we measured, and whether it held at the
scale we ran (``held=None`` when the claim is reported but not decided, e.g. a comparison
the paper makes only at a scale we cannot reach). The summary says by how much the
experiment was scaled down, so nobody mistakes a CPU-sized run for the paper's.

matplotlib is imported lazily, with the Agg backend, only when a figure is drawn.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

__all__ = ["Claim", "write_outputs", "figure", "save_figure", "to_jsonable", "Stopwatch", "fmt", "torch_threads"]


@dataclass(frozen=True)
class Claim:
    claim: str  # what the paper says, in one sentence
    measured: str  # the number(s) we got, as text
    held: bool | None  # True / False at this scale; None = reported, not decided

    def to_dict(self) -> dict:
        return asdict(self)


def fmt(x: float, digits: int = 3) -> str:
    """Short number for tables: 3 significant digits, 'nan' for NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    return f"{x:.{digits}g}"


def to_jsonable(obj: Any) -> Any:
    """Tensors, numpy arrays/scalars, dataclasses, Paths -> plain JSON types; NaN/inf -> None."""
    if isinstance(obj, Claim):
        return obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "tolist"):  # torch.Tensor, numpy array or scalar
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return to_jsonable(obj.item())
    return str(obj)


def _held_text(held: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[held]


def write_outputs(
    out_dir: Path, *, title: str, claims: Iterable[Claim], results: dict, settings: dict,
    scale_note: str, figures: Iterable[str] = (), notes: Iterable[str] = (), seconds: float | None = None,
) -> dict:
    """Write ``results.json`` and ``summary.md`` into ``out_dir``; return the JSON payload.

    ``settings`` are the knobs actually used; ``scale_note`` says how the run differs from
    the paper's (or "paper scale"); ``figures`` are file names inside ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    claims = list(claims)
    payload = {
        "title": title,
        "settings": settings,
        "scale": scale_note,
        "claims": [c.to_dict() for c in claims],
        "all_held": all(c.held is not False for c in claims),
        "figures": list(figures),
        "seconds": seconds,
        "results": results,
    }
    payload = to_jsonable(payload)
    (out_dir / "results.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")

    lines = [f"# {title}", "", f"**Scale.** {scale_note}", ""]
    if seconds is not None:
        lines += [f"Wall time: {seconds:.1f} s.", ""]
    lines += ["| claim | measured | held? |", "|---|---|---|"]
    cell = lambda text: str(text).replace("|", "\\|")  # a literal | would end the table cell
    for c in claims:
        lines.append(f"| {cell(c.claim)} | {cell(c.measured)} | {_held_text(c.held)} |")
    lines.append("")
    notes = list(notes)
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Settings", "", "```", json.dumps(to_jsonable(settings), indent=1), "```", ""]
    figs = list(figures)
    if figs:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figs] + [""]
    (out_dir / "summary.md").write_text("\n".join(lines), encoding="utf-8")
    return payload


def figure(nrows: int = 1, ncols: int = 1, *, size: tuple[float, float] = (4.5, 3.4)):
    """A (fig, axes) pair from matplotlib with the Agg backend; imported here, lazily."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    return fig, axes


def save_figure(fig, path: Path, dpi: int = 110) -> str:
    """Save as PNG, close the figure, return the file name."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path.name


@contextmanager
def torch_threads(n: int):
    """Run a block with ``torch.set_num_threads(n)``, restoring the previous count after.

    The small float64 factorisations (100 x 100 to 512 x 512) and small matmuls of these
    experiments are slower with several threads on a shared, loaded machine than with one.
    ``n`` must be a positive int (otherwise torch.set_num_threads raises, before the block runs).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Stopwatch:
    """``with Stopwatch() as sw: ...; sw.seconds``."""

    def __enter__(self) -> "Stopwatch":
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t0

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0
