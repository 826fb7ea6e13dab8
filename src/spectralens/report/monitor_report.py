"""Report of a training-monitor run: summary tables, plots of nr and st over steps, HTML.

Reads what :class:`spectralens.monitor.SpectralMonitor` wrote to ``RUN_DIR`` (``monitor.jsonl``,
else ``monitor.csv``) and writes next to it (or to ``out_dir``):

* ``summary_layers.csv``, ``summary_kinds.csv``, ``summary.json`` - the verdicts of
  :func:`spectralens.monitor.summarize` (fraction of steps with nr(G) >= st(A), medians,
  recommendation spectral / euclidean / borderline);
* ``nr_st_by_kind.png`` - per layer kind, the median over its layers of nr(G) and st(A) per step;
* ``ratio_by_layer.png`` - nr/st per layer over steps, with the lines 1 and 2;
* ``report.html`` - all of the above on one page.

matplotlib is imported lazily (Agg backend) and only when plots are asked for.
(Davis & Drusvyatskiy, arXiv 2512.04299.)
"""
from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

__all__ = ["load_monitor_records", "plot_nr_st_by_kind", "plot_ratio_by_layer", "write_monitor_report"]

_NUMERIC = ("step", "nr_grad", "st_act", "ratio", "grad_fro", "grad_op", "st_grad", "weight_op", "st_weight",
            "alpha", "act_fro2", "act_op2", "rows", "calls", "hook_ms", "metric_ms")


def load_monitor_records(run: str | os.PathLike):
    """DataFrame of the records in a run directory (``monitor.jsonl`` or ``monitor.csv``) or file."""
    import pandas as pd

    path = Path(run)
    if path.is_dir():
        for name in ("monitor.jsonl", "monitor.csv"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{run}: no monitor.jsonl or monitor.csv (is this a SpectralMonitor run_dir?)")
    elif not path.is_file():
        raise FileNotFoundError(f"{run}: no such file or directory")
    if path.suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: not a JSON record ({exc.msg})") from None
        df = pd.DataFrame(rows)
    else:
        df = pd.read_csv(path)
    if df.empty:
        raise ValueError(f"{path}: no records")
    for col in ("step", "layer", "kind", "nr_grad", "st_act"):
        if col not in df.columns:
            raise ValueError(f"{path}: records have no column {col!r}")
    for col in _NUMERIC:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _kind_order(kinds):
    from spectralens.monitor.kinds import KINDS

    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(kinds, key=lambda k: order.get(k, len(order)))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_nr_st_by_kind(df, path: str | os.PathLike) -> Path:
    """Small multiples: per kind, median (over its layers) nr(G) and st(A) against step."""
    plt = _pyplot()
    kinds = _kind_order(df["kind"].dropna().unique())
    ncol = min(3, max(1, len(kinds)))
    nrow = math.ceil(len(kinds) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.0 * nrow), squeeze=False, sharex=True)
    for ax, kind in zip(axes.flat, kinds):
        g = df[df["kind"] == kind].groupby("step")[["nr_grad", "st_act"]].median()
        ax.plot(g.index, g["nr_grad"], label="nr(G)", color="C0")
        ax.plot(g.index, g["st_act"], label="st(A)", color="C3")
        ax.set_yscale("log")
        ax.set_title(kind)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    axes.flat[0].legend()
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.suptitle("gradient nuclear rank vs activation stable rank (median over layers of each kind)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ratio_by_layer(df, path: str | os.PathLike) -> Path:
    """nr/st per layer over steps, coloured by kind; dashed lines at 1 (condition) and 2 (two-sided)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    kinds = _kind_order(df["kind"].dropna().unique())
    colors = {k: f"C{i % 10}" for i, k in enumerate(kinds)}
    for (layer, kind), g in df.groupby(["layer", "kind"], sort=False):
        g = g.sort_values("step")
        ax.plot(g["step"], g["nr_grad"] / g["st_act"], color=colors[kind], alpha=0.6, lw=1)
    for k in kinds:
        ax.plot([], [], color=colors[k], label=k)
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.axhline(2.0, color="k", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("nr(G) / st(A)")
    ax.legend(ncol=2, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _html(run: str, kinds, layers, images: list[str]) -> str:
    css = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;font-size:13px}"
           "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
           ".spectral{background:#d7f0d7}.euclidean{background:#f6d8d8}.borderline{background:#f6efcf}")

    def table(df):
        fmt = {c: "{:.3g}".format for c in ("held", "held2", "nr", "st", "ratio")}
        out = df.to_html(index=False, formatters=fmt, na_rep="-", escape=True, border=0)
        for r in ("spectral", "euclidean", "borderline"):
            out = out.replace(f"<td>{r}</td>", f'<td class="{r}">{r}</td>')
        return out

    imgs = "".join(f'<p><img src="{html.escape(i)}" style="max-width:100%"></p>' for i in images)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>spectralens monitor report</title>
<style>{css}</style></head><body>
<h1>Spectral-update condition: {html.escape(run)}</h1>
<p>Davis &amp; Drusvyatskiy (arXiv 2512.04299): a spectral (Muon-like) step is promised more descent than a
gradient step when the gradient's nuclear rank nr(G) = ||G||<sub>*</sub><sup>2</sup>/||G||<sub>F</sub><sup>2</sup>
exceeds the stable rank st(A) = ||A||<sub>F</sub><sup>2</sup>/||A||<sub>op</sub><sup>2</sup> of the layer's
incoming activations; nr &ge; 2 st makes it at least as good outright. <i>held</i>: fraction of monitored steps
with nr &ge; st; <i>held2</i>: with nr &ge; 2 st; nr, st, ratio: medians. Recommendation: spectral if held &ge; 0.8
and median ratio &ge; 1.25, euclidean if held &le; 0.2, else borderline.</p>
<h2>By layer kind</h2>{table(kinds)}
{imgs}
<h2>By layer</h2>{table(layers)}
</body></html>"""


def write_monitor_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                         plots: bool = True, **thresholds) -> dict[str, Path]:
    """Write summary CSV/JSON, plots and ``report.html``; returns {name: path}."""
    from spectralens.monitor.summary import summarize

    df = load_monitor_records(run_dir)
    out = Path(out_dir) if out_dir is not None else (Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent)
    out.mkdir(parents=True, exist_ok=True)
    summ = summarize(df, **thresholds)
    paths = {"summary_layers": out / "summary_layers.csv", "summary_kinds": out / "summary_kinds.csv",
             "summary_json": out / "summary.json"}
    summ["layers"].to_csv(paths["summary_layers"], index=False)
    summ["kinds"].to_csv(paths["summary_kinds"], index=False)
    payload = {"run": str(run_dir), "steps": int(df["step"].nunique()), "thresholds": thresholds or "defaults",
               "kinds": json.loads(summ["kinds"].to_json(orient="records")),
               "layers": json.loads(summ["layers"].to_json(orient="records"))}
    paths["summary_json"].write_text(json.dumps(payload, indent=1), encoding="utf-8")
    images = []
    if plots:
        paths["plot_nr_st"] = plot_nr_st_by_kind(df, out / "nr_st_by_kind.png")
        paths["plot_ratio"] = plot_ratio_by_layer(df, out / "ratio_by_layer.png")
        images = [paths["plot_nr_st"].name, paths["plot_ratio"].name]
    paths["html"] = out / "report.html"
    paths["html"].write_text(_html(str(run_dir), summ["kinds"], summ["layers"], images), encoding="utf-8")
    return paths
