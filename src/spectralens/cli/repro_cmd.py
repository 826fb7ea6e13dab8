"""``spectralens repro NAME [--quick] [--out DIR] [--seed N]`` and ``spectralens repro --list``.

Runs one paper reproduction from ``spectralens.experiments.registry`` into ``DIR/NAME/``
(figures, results.json, summary.md) and prints its claims table. Exit codes: 0 ran (whether
or not every claim held: the summary says which did not), 1 the experiment failed while
running, 2 bad usage (unknown name, no name, missing data such as the Shakespeare corpus).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "repro", help="reproduce a paper's results and check its claims",
        description="Reproduce a paper's results on this machine; writes figures, results.json and "
        "summary.md (claim | measured | held?) into OUT/NAME/.",
    )
    p.add_argument("name", nargs="?", help="experiment name (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--quick", action="store_true", help="small sizes: <= 60 s on 2 CPU cores")
    p.add_argument("--out", type=Path, default=Path("spectralens-repro"), help="output folder (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="base random seed (default: %(default)s)")
    p.set_defaults(run=run)
    return p


def _list() -> int:
    from spectralens.experiments import registry

    width = max(len(n) for n in registry.names())
    for exp in registry.EXPERIMENTS:
        print(f"{exp.name:<{width}}  {exp.description}")
    return 0


def _print_claims(result: dict) -> None:
    for c in result.get("claims", []):
        held = {True: "held", False: "NOT HELD", None: "n/a"}[c.get("held")]
        print(f"  [{held:>8}] {c['claim']}  --  {c['measured']}")


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    from spectralens.experiments import registry

    if not args.name:
        print("spectralens repro: give an experiment NAME or --list; known: " + ", ".join(registry.names()), file=sys.stderr)
        return 2
    try:
        registry.get(args.name)
    except ValueError as exc:
        print(f"spectralens repro: {exc}", file=sys.stderr)
        return 2
    from spectralens.data.shakespeare import CorpusNotInstalledError

    t0 = time.perf_counter()
    try:
        result = registry.run(args.name, args.out, quick=args.quick, seed=args.seed)
    except CorpusNotInstalledError as exc:
        print(f"spectralens repro {args.name}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # report, do not dump a traceback on the user
        print(f"spectralens repro {args.name}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - t0
    parts = result.get("parts", {"": result})
    for part_name, part in parts.items():
        if part_name:
            print(f"{part_name}:")
        _print_claims(part)
    claims = [c for part in parts.values() for c in part.get("claims", [])]
    failed = sum(c.get("held") is False for c in claims)
    print(f"{args.name}: {len(claims) - failed}/{len(claims)} claims held or reported, {failed} not held "
          f"({seconds:.1f} s). Output: {Path(args.out) / args.name}")
    skipped = result.get("skipped") or {}
    for part_name, msg in skipped.items():
        print(f"spectralens repro {args.name}: part {part_name} not run: {msg}", file=sys.stderr)
    return 2 if skipped else 0
