"""Paper reproductions, one readable module per result; see ``registry`` for the list.

Run one with ``spectralens repro NAME [--quick] [--out DIR]`` or
``spectralens.experiments.run(NAME, out_dir, quick=True)``. Nothing heavy is imported here.
"""
from __future__ import annotations

from .registry import EXPERIMENTS, Experiment, get, names, run

__all__ = ["EXPERIMENTS", "Experiment", "get", "names", "run"]
