"""The verdict: which layers (and layer kinds) want spectral updates.

From the monitor records (one row per layer per monitored step) compute, per layer and per
layer kind (rows of all layers of that kind pooled):

* ``steps``: records with both nr and st finite; ``held``: fraction with nr >= st;
  ``held2``: fraction with nr >= 2 st;
* ``nr``, ``st``, ``ratio``: medians of nr_grad, st_act and nr/st;
* ``recommendation``:

  - ``spectral``   if held >= 0.8 and median ratio >= 1.25: the spectral step's guaranteed
    decrease is larger (by the factor nr/st) on most steps, with a margin;
  - ``euclidean``  if held <= 0.2: the Euclidean (gradient) step's guarantee wins on most steps;
  - ``borderline`` otherwise, and ``n/a`` when no step has finite numbers.

  The thresholds are arguments. The condition compares guaranteed decreases of the two optimal
  steps (Davis & Drusvyatskiy, arXiv 2512.04299, section 2); ratio >= 2 (``held2``) is the
  two-sided form under which the spectral step is at least as good outright.
"""
from __future__ import annotations

import math

__all__ = ["summarize", "recommend"]


def recommend(held: float, median_ratio: float, *, spectral_frac: float = 0.8, spectral_ratio: float = 1.25,
              euclidean_frac: float = 0.2) -> str:
    """The rule above for one layer or kind."""
    if not (isinstance(held, (int, float)) and math.isfinite(held)):
        return "n/a"
    if held >= spectral_frac and median_ratio >= spectral_ratio:
        return "spectral"
    if held <= euclidean_frac:
        return "euclidean"
    return "borderline"


def _table(df, by: str, thresholds: dict):
    import pandas as pd

    ok = df[pd.to_numeric(df["nr_grad"], errors="coerce").notna() & pd.to_numeric(df["st_act"], errors="coerce").notna()]
    ok = ok.assign(nr_grad=ok["nr_grad"].astype(float), st_act=ok["st_act"].astype(float))
    ok = ok.assign(ratio=ok["nr_grad"] / ok["st_act"])
    rows = []
    for key, g in df.groupby(by, sort=False):
        gk = ok[ok[by] == key]
        n = len(gk)
        row = {by: key}
        if by == "layer":
            row["kind"] = g["kind"].iloc[0]
        else:
            row["layers"] = g["layer"].nunique()
        held = float((gk["nr_grad"] >= gk["st_act"]).mean()) if n else math.nan
        ratio = float(gk["ratio"].median()) if n else math.nan
        row.update(steps=n, held=held,
                   held2=float((gk["nr_grad"] >= 2 * gk["st_act"]).mean()) if n else math.nan,
                   nr=float(gk["nr_grad"].median()) if n else math.nan,
                   st=float(gk["st_act"].median()) if n else math.nan,
                   ratio=ratio, recommendation=recommend(held, ratio, **thresholds))
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(records, *, spectral_frac: float = 0.8, spectral_ratio: float = 1.25,
              euclidean_frac: float = 0.2) -> dict:
    """``{"layers": DataFrame, "kinds": DataFrame}`` from a records DataFrame (or list of dicts).

    Layer columns: layer, kind, steps, held, held2, nr, st, ratio, recommendation; kind columns:
    kind, layers, steps, held, held2, nr, st, ratio, recommendation. Kinds are ordered as
    :data:`spectralens.monitor.kinds.KINDS`.
    """
    import pandas as pd

    from .kinds import KINDS

    df = records if isinstance(records, pd.DataFrame) else pd.DataFrame(list(records))
    for col in ("layer", "kind", "nr_grad", "st_act"):
        if col not in df.columns:
            raise ValueError(f"summarize: records have no column {col!r} (got {list(df.columns)})")
    thresholds = dict(spectral_frac=spectral_frac, spectral_ratio=spectral_ratio, euclidean_frac=euclidean_frac)
    if df.empty:
        empty = pd.DataFrame(columns=["steps", "held", "held2", "nr", "st", "ratio", "recommendation"])
        return {"layers": empty.assign(layer=[], kind=[]), "kinds": empty.assign(kind=[], layers=[])}
    layers = _table(df, "layer", thresholds)
    kinds = _table(df, "kind", thresholds)
    order = {k: i for i, k in enumerate(KINDS)}
    kinds = kinds.sort_values("kind", key=lambda s: s.map(lambda k: order.get(k, len(order)))).reset_index(drop=True)
    return {"layers": layers, "kinds": kinds}
