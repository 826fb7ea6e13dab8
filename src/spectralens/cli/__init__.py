"""The ``spectralens`` command line: a thin dispatcher over sub-command modules.

Each sub-command lives in its own module ``spectralens.cli.<name>_cmd`` exposing
``add_parser(subparsers)`` (which registers its options and ``set_defaults(run=...)``)
and ``run(args) -> int`` (the exit code). Heavy imports happen inside ``run``.
Exit codes: 0 success, 1 failure while working, 2 bad usage or input (missing path, ...).
"""
from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "build_parser"]

SUBCOMMANDS = ("demo", "analyze", "report", "repro")


def build_parser() -> argparse.ArgumentParser:
    from spectralens import __version__

    parser = argparse.ArgumentParser(
        prog="spectralens",
        description="See and use the spectra of neural networks: ESDs and heavy tails of weights, "
        "the spectral-update condition nr(G) >= st(A), spectral optimizers and regularisers.",
    )
    parser.add_argument("--version", action="version", version=f"spectralens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module_name = f"spectralens.cli.{name}_cmd"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a sub-command not installed in this build
            if exc.name != module_name:
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 2
    return int(args.run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
