"""``spectralens report RUN_DIR``: verdict, plots and HTML for a SpectralMonitor run.

RUN_DIR is the ``run_dir`` a :class:`spectralens.monitor.SpectralMonitor` wrote (``monitor.jsonl``
or ``monitor.csv``), or one of those files. Writes summary_layers.csv, summary_kinds.csv,
summary.json, nr_st_by_kind.png, ratio_by_layer.png and report.html (to RUN_DIR or ``--out``)
and prints the per-kind table. Exit codes: 0 done, 2 missing/unreadable run, 1 failure.
"""
from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("report", help="summarise a training-monitor run (nr(G) vs st(A)) into tables, plots, HTML",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory (or monitor.jsonl / monitor.csv) a SpectralMonitor wrote")
    p.add_argument("--out", default=None, help="output directory (default: RUN_DIR)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    p.add_argument("--spectral-frac", type=float, default=0.8, help="min fraction of steps with nr >= st for 'spectral'")
    p.add_argument("--spectral-ratio", type=float, default=1.25, help="min median nr/st for 'spectral'")
    p.add_argument("--euclidean-frac", type=float, default=0.2, help="max fraction of steps with nr >= st for 'euclidean'")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import sys

    from spectralens.report.monitor_report import write_monitor_report

    for name in ("spectral_frac", "euclidean_frac"):
        v = getattr(args, name)
        if not 0.0 <= v <= 1.0:
            print(f"spectralens report: --{name.replace('_', '-')} must be in [0, 1], got {v}", file=sys.stderr)
            return 2
    try:
        paths = write_monitor_report(args.run_dir, args.out, plots=not args.no_plots,
                                     spectral_frac=args.spectral_frac, spectral_ratio=args.spectral_ratio,
                                     euclidean_frac=args.euclidean_frac)
    except (FileNotFoundError, ValueError) as exc:
        print(f"spectralens report: {exc}", file=sys.stderr)
        return 2
    import pandas as pd

    kinds = pd.read_csv(paths["summary_kinds"])
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(kinds.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    print(f"\nwrote {paths['html']}")
    return 0
