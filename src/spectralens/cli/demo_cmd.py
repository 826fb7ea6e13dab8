"""``spectralens demo``: train a tiny network, checkpoint it, analyse every checkpoint, write a report."""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
The main job on a built-in example, with no download: train the two-layer teacher-student
network of Kothapalli et al. (arXiv 2406.04657; d=500 inputs, h=750 hidden units, n=1000
samples, full-batch Adam with a large learning rate) for a few seconds, save checkpoints as
.safetensors at steps 0, 1, 2, 5, 10, 20, ..., analyse each one exactly as
`spectralens analyze FILE` does, and write a report showing the weight spectrum growing a
heavy tail over training (ESD overlay across checkpoints, alpha against step) plus each
checkpoint's own analyze outputs. Prints the path of report.html."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="train a tiny network, analyse its checkpoints, write a report",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", metavar="DIR", default="spectralens-demo",
                   help="output folder: report.html, plots/, checkpoints/*.safetensors and one analyze "
                        "report per checkpoint (default: %(default)s)")
    p.add_argument("--steps", type=int, default=30, metavar="N",
                   help="number of full-batch Adam steps (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1.0, help="Adam learning rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed for data and initialisation (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="print only the path of report.html")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.steps < 1:
        print(f"spectralens demo: error: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    if not args.lr > 0:
        print(f"spectralens demo: error: --lr must be > 0, got {args.lr}", file=sys.stderr)
        return 2
    from ..analyze.demo import DemoConfig, run_demo

    log = None if args.quiet else (lambda s: print(s, file=sys.stderr))
    report = run_demo(args.out, config=DemoConfig(steps=args.steps, lr=args.lr, seed=args.seed), log=log)
    if not args.quiet:
        print("report:", file=sys.stderr)
    print(str(report.resolve()))
    return 0
