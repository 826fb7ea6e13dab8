"""``spectralens analyze PATH``: spectra and heavy-tail fits of every weight matrix of a checkpoint."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Compute the empirical spectral density (eigenvalues of W^T W) of every weight matrix in a
checkpoint, fit a power law to its tail (WeightWatcher's default KS-scan fit), and write a
table, plots and a self-contained HTML report.

PATH may be a .safetensors file, a folder of (sharded) safetensors or a local Hugging Face
model folder (model.safetensors.index.json), or a .pt/.pth/.bin/.ckpt checkpoint (loaded with
torch.load(weights_only=True): pickles that need code are refused). Tensors are read one at a
time, so memory follows the largest tensor, not the model. Nothing is skipped for size.

Outputs in --out: layers.csv, layers.json, summary.json, plots/esd_<layer>.png,
plots/alpha_by_layer.png and report.html. alpha in [2, 6] is the usual healthy band
(< 2 over-trained, > 6 under-trained).

Exit codes: 0 ok, 1 the file could not be read (corrupt, truncated, refused pickle),
2 bad usage or missing path."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("analyze", help="spectra and power-law fits of every weight matrix of a checkpoint",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="checkpoint file (.safetensors, .pt, .bin, ...) or model folder")
    p.add_argument("--out", metavar="DIR", default="spectralens-analyze",
                   help="folder for layers.csv/json, summary.json, plots/ and report.html "
                        "(created if missing; default: %(default)s)")
    p.add_argument("--layers", metavar="REGEX", nargs="+", default=None,
                   help="analyse only matrices whose name matches any of these regular expressions "
                        "(Python re.search on names like 'h.0.attn.c_attn'; default: all)")
    p.add_argument("--types", metavar="TYPE", nargs="+", default=None,
                   choices=["linear", "embedding", "conv1d", "conv2d", "conv3d", "matrix"],
                   help="analyse only these layer types: linear (incl. GPT-2 Conv1D), embedding, "
                        "conv1d, conv2d, conv3d, matrix (any other >= 2-D tensor); default: all")
    p.add_argument("--fit", choices=["ks", "hill"], default="ks",
                   help="power-law tail fit: 'ks' tries every eigenvalue as xmin and keeps the smallest "
                        "KS distance (WeightWatcher's default); 'hill' uses the median eigenvalue as xmin "
                        "(TempBalance/AlphaDecay). Default: %(default)s")
    p.add_argument("--fix-fingers", choices=["xmin_peak", "clip_xmax"], default=None,
                   help="WeightWatcher's finger fixes: 'xmin_peak' restricts xmin to near the peak of the "
                        "log-ESD; 'clip_xmax' refits without the top few outlying eigenvalues. Default: none")
    p.add_argument("--conv", choices=["slices", "flatten"], default="slices",
                   help="conv weights (out, in, kh, kw): 'slices' pools the ESDs of the kh*kw (out x in) "
                        "slices scaled by sqrt(0.5) (WeightWatcher); 'flatten' uses one out x (in*kh*kw) "
                        "matrix. Default: %(default)s")
    p.add_argument("--no-mp", action="store_true",
                   help="skip the Marchenko-Pastur bulk fit (columns mp_softrank and num_spikes stay empty)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64",
                   help="precision of the Gram matrices W^T W (eigensolves run in float64 either way). "
                        "float32 is ~1.3x faster on CPU: alpha within ~1e-6 of float64, layers whose alpha "
                        "could move by more than 1e-4 are recomputed in float64 (their dtype column says so), "
                        "and matrix_rank counts what float32 resolves. Default: %(default)s")
    p.add_argument("--min-evals", type=int, default=8, metavar="K",
                   help="layers with fewer than K eigenvalues get a status instead of a fit (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="write the tables and report without PNG plots")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no table; print only the path of report.html")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    path = Path(args.path).expanduser()
    if not path.exists():
        print(f"spectralens analyze: error: {path}: no such file or folder", file=sys.stderr)
        return 2
    if args.min_evals < 1:
        print(f"spectralens analyze: error: --min-evals must be >= 1, got {args.min_evals}", file=sys.stderr)
        return 2
    import re

    for pat in args.layers or []:
        try:
            re.compile(pat)
        except re.error as exc:
            print(f"spectralens analyze: error: --layers {pat!r} is not a valid regex: {exc}", file=sys.stderr)
            return 2

    from ..analyze import run_analysis
    from ..models import SourceError, SourceNotFound
    from ..report.analyze_report import write_analysis

    kwargs = dict(layers=args.layers, types=args.types, fit=args.fit, fix_fingers=args.fix_fingers,
                  mp_fit=not args.no_mp, conv=args.conv, dtype=args.dtype, min_evals=args.min_evals,
                  keep_esd=not args.no_plots)
    try:
        if args.quiet:
            analysis = run_analysis(path, **kwargs)
        else:
            analysis = _with_progress(run_analysis, path, kwargs)
    except SourceNotFound as exc:
        print(f"spectralens analyze: error: {exc}", file=sys.stderr)
        return 2
    except SourceError as exc:
        print(f"spectralens analyze: error: {exc}", file=sys.stderr)
        return 1
    if len(analysis.layers) == 0:
        print(f"spectralens analyze: error: no weight matrices selected in {path}", file=sys.stderr)
        return 2
    report = write_analysis(analysis, args.out, plots=not args.no_plots, title=f"spectralens analyze: {path.name}")
    if not args.quiet:
        _print_table(analysis)
    print(str(report.resolve()))
    return 0


def _with_progress(run_analysis, path, kwargs):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from rich.console import Console

    with Progress(TextColumn("[bold]analyze"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        return run_analysis(path, progress=progress, **kwargs)


def _print_table(analysis) -> None:
    from rich.console import Console
    from rich.table import Table

    def f(v, fmt="{:.3f}"):
        return fmt.format(v) if isinstance(v, float) and math.isfinite(v) else ("" if isinstance(v, float) else str(v))

    df = analysis.layers
    t = Table(title=f"{len(df)} matrices in {analysis.source}", show_lines=False)
    for col, just in (("name", "left"), ("type", "left"), ("shape", "right"), ("alpha", "right"),
                      ("D", "right"), ("log ||W||_op^2", "right"), ("stable rank", "right"), ("status", "left")):
        t.add_column(col, justify=just, overflow="fold")
    for rec in df.to_dict(orient="records"):
        a = rec["alpha"]
        style = None
        if isinstance(a, float) and math.isfinite(a) and not (2.0 <= a <= 6.0):
            style = "yellow"
        if rec["status"] != "ok":
            style = "red"
        status = rec["status"] + (f" ({rec['warning']})" if rec["warning"] else "")
        t.add_row(rec["name"], rec["layer_type"], rec["shape"], f(a), f(rec["D"]), f(rec["log_spectral_norm"]),
                  f(rec["stable_rank"], "{:.1f}"), status, style=style)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 140))
    console.print(t)
    s = analysis.summary
    console.print("summary: " + ", ".join(f"{k}={f(v)}" for k, v in s.items() if isinstance(v, float)) +
                  f"; {s['num_ok']}/{s['num_layers']} layers ok")
