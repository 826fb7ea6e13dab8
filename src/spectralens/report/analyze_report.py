"""Write the outputs of an analysis to a folder.

``write_analysis(analysis, out_dir)`` writes:

* ``layers.csv`` and ``layers.json`` (one record per layer), ``summary.json``;
* ``plots/esd_<layer>.png`` (needs ``keep_esd=True``) and ``plots/alpha_by_layer.png``;
* ``report.html``: summary, alpha plot, layer table and every ESD plot, images embedded as
  base64 so the one file is self-contained.

``html_page`` / ``img_tag`` / ``df_table`` are the small HTML helpers the demo report reuses.
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from .esd_plots import plot_alpha_by_layer, plot_esd, safe_name

__all__ = ["write_analysis", "write_tables", "write_plots", "html_page", "img_tag", "df_table", "summary_table"]

_TABLE_COLS = ["name", "layer_type", "shape", "num_evals", "alpha", "xmin", "D", "num_pl_spikes",
               "log_spectral_norm", "stable_rank", "mp_softrank", "warning", "status"]

_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.bad{color:#b00}.grid{display:flex;flex-wrap:wrap;gap:8px}
.grid figure{margin:0}figcaption{font-size:11px;color:#555}code{background:#f5f5f5;padding:1px 3px}"""


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


def write_tables(analysis, out_dir: str | Path) -> dict[str, Path]:
    """layers.csv, layers.json, summary.json in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = analysis.layers
    paths = {"layers.csv": out / "layers.csv", "layers.json": out / "layers.json", "summary.json": out / "summary.json"}
    df.to_csv(paths["layers.csv"], index=False)
    records = [{k: _clean(v) for k, v in rec.items()} for rec in df.to_dict(orient="records")]
    paths["layers.json"].write_text(json.dumps(records, indent=1))
    summary = {k: _clean(v) for k, v in analysis.summary.items()}
    meta = {"source": analysis.source, "settings": {k: _clean(v) if not isinstance(v, (list, tuple)) else list(v)
                                                     for k, v in analysis.settings.items()}}
    paths["summary.json"].write_text(json.dumps({**summary, **meta}, indent=1))
    return paths


def write_plots(analysis, out_dir: str | Path) -> dict[str, Path]:
    """plots/esd_<layer>.png for every layer with an ESD kept, plots/alpha_by_layer.png."""
    plots = Path(out_dir) / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    df = analysis.layers
    made: dict[str, Path] = {}
    if len(df):
        made["alpha_by_layer"] = plot_alpha_by_layer(list(df["name"]), list(df["alpha"].astype(float)),
                                                     plots / "alpha_by_layer.png")
    used: set[str] = set()
    for rec in df.to_dict(orient="records"):
        ev = analysis.esd.get(rec["name"])
        if ev is None:
            continue
        fname = safe_name(rec["name"])
        while fname in used:
            fname += "_"
        used.add(fname)
        made[rec["name"]] = plot_esd(ev, plots / f"esd_{fname}.png", name=rec["name"], alpha=float(rec["alpha"]),
                                     xmin=float(rec["xmin"]), xmax=float(rec["xmax"]), D=float(rec["D"]),
                                     num_pl_spikes=int(rec["num_pl_spikes"]))
    return made


def img_tag(path: str | Path, alt: str = "", width: int | None = None) -> str:
    """<img> with the PNG embedded as base64."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    w = f' width="{width}"' if width else ""
    return f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,{data}">'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return ""
        return f"{v:.4g}"
    return html.escape(str(v))


def df_table(df, cols: list[str] | None = None) -> str:
    """An HTML table of ``df`` (given columns); rows whose status is not "ok" are marked."""
    cols = [c for c in (cols or list(df.columns)) if c in df.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for rec in df.to_dict(orient="records"):
        cls = ' class="bad"' if rec.get("status", "ok") != "ok" else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(rec.get(c))}</td>" for c in cols) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def summary_table(summary: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in summary.items())
    return f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>"


def html_page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def analysis_body(analysis, plots: dict[str, Path], *, heading_level: int = 2) -> str:
    """The HTML fragment of one analysis: settings, summary, alpha plot, table, ESD plots."""
    h = f"h{heading_level}"
    s = analysis.settings
    parts = [f"<p>Source: <code>{html.escape(str(analysis.source))}</code>; fit <code>{s.get('fit')}</code>, "
             f"fix_fingers <code>{s.get('fix_fingers')}</code>, conv <code>{s.get('conv')}</code>, "
             f"dtype <code>{s.get('dtype')}</code>. alpha in [2, 6] is the usual healthy band "
             f"(&lt; 2 over-trained, &gt; 6 under-trained).</p>",
             f"<{h}>Summary (means over layers with status ok)</{h}>", summary_table(analysis.summary)]
    if "alpha_by_layer" in plots:
        parts += [f"<{h}>alpha by layer</{h}>", img_tag(plots["alpha_by_layer"], "alpha by layer")]
    parts += [f"<{h}>Layers</{h}>", df_table(analysis.layers, _TABLE_COLS)]
    esd_imgs = [(k, p) for k, p in plots.items() if k != "alpha_by_layer"]
    if esd_imgs:
        parts.append(f"<{h}>ESD of each layer (log-log, fitted power law dashed, xmin marked)</{h}><div class='grid'>")
        parts += [f"<figure>{img_tag(p, k, width=420)}<figcaption>{html.escape(k)}</figcaption></figure>"
                  for k, p in esd_imgs]
        parts.append("</div>")
    return "".join(parts)


def write_analysis(analysis, out_dir: str | Path, *, plots: bool = True, title: str | None = None) -> Path:
    """Write tables, plots and a self-contained report.html to ``out_dir``; returns report.html's path."""
    out = Path(out_dir)
    write_tables(analysis, out)
    made = write_plots(analysis, out) if plots else {}
    page = html_page(title or "spectralens analyze", analysis_body(analysis, made))
    report = out / "report.html"
    report.write_text(page)
    return report
