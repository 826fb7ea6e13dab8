"""Experiment 6: a NanoGPT-style model on CPU, AdamW vs hybrid Muon, with the condition monitored.

Davis & Drusvyatskiy (arXiv 2512.04299, section 6) train modded-nanogpt (124M, FineWeb,
8 GPUs) and report: MLP post-activation st ~1.5-10.5 out of a possible 3072, RMS-normed
states st ~2-12, gradient nr up to ~480 (MLP), ~280 (Q/K), ~240 (O), ~90 (V), so nr(G) >= st(A)
holds for the hidden blocks. Here, at CPU scale, we train a character-level model on the
Shakespeare plays (``spectralens.data.load_shakespeare``) built like modded-nanogpt's blocks
(``spectralens.nets.gpt``: RMSNorm, rotary, squared-ReLU MLP), once with AdamW and once with
``spectralens.optim.hybrid`` (Muon on hidden matrices, AdamW on embedding, head and gains),
same init, same batches, and watch every layer with ``spectralens.monitor.SpectralMonitor``.

Which activation is paired with which weight is the monitor's: the input of each nn.Linear
(RMS-normed state for q/k/v and mlp.up, attention output for o, MLP post-activation for
mlp.down, final normed state for lm_head) and the token-indicator matrix for the embedding
(st = 1/p_max).
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from spectralens.experiments.common import Claim, figure, fmt, save_figure, torch_threads, write_outputs

__all__ = ["run", "train_one", "SETTINGS"]

# Full (default) and quick settings. Full: 4 layers, width 256 (124M model: 12 x 768).
SETTINGS = {
    False: dict(n_layer=4, n_embd=256, n_head=4, block_size=128, batch_size=16, steps=150, monitor_every=15,
                eval_batches=8, max_chars=None),
    True: dict(n_layer=2, n_embd=64, n_head=2, block_size=64, batch_size=8, steps=30, monitor_every=5,
               eval_batches=2, max_chars=300_000),
}
ADAMW_LR, MUON_LR = 2e-3, 0.02  # fixed a priori (AdamW: usual char-GPT lr; Muon: hybrid default)
HIDDEN_KINDS = ("q", "k", "v", "o", "mlp_up", "mlp_down")


def train_one(optimizer_name: str, corpus, s: dict, seed: int) -> dict:
    """Train from a seeded init with 'adamw' or 'hybrid'; returns losses and monitor records."""
    from spectralens.monitor import SpectralMonitor
    from spectralens.nets.gpt import GPT, GPTConfig
    from spectralens.optim import hybrid

    cfg = GPTConfig(vocab_size=corpus.vocab_size, block_size=s["block_size"], n_layer=s["n_layer"],
                    n_head=s["n_head"], n_embd=s["n_embd"], mlp="relu2", norm="rmsnorm", rotary=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(cfg)
    if optimizer_name == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=ADAMW_LR, betas=(0.9, 0.95), weight_decay=0.0)
    elif optimizer_name == "hybrid":
        opt = hybrid(model, lr=MUON_LR, adamw_lr=ADAMW_LR, adamw_betas=(0.9, 0.95))
    else:
        raise ValueError(f"unknown optimizer {optimizer_name!r}; expected 'adamw' or 'hybrid'")
    gen = torch.Generator().manual_seed(seed + 1)  # the same batches for both optimizers
    losses = []
    with SpectralMonitor(model, every=s["monitor_every"], weight_stats=False, alpha_every=0) as mon:
        for _ in range(s["steps"]):
            x, y = corpus.batch("train", s["batch_size"], s["block_size"], gen)
            _, loss = model(x, y)
            loss.backward()
            mon.step()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
        records = mon.records()
        kinds = mon.summary()["kinds"]
    model.eval()
    egen = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        val = [float(model(*corpus.batch("val", s["batch_size"], s["block_size"], egen))[1])
               for _ in range(s["eval_batches"])]
    return {"train_loss": losses, "val_loss": sum(val) / len(val), "records": records, "kinds": kinds,
            "width": s["n_embd"], "mlp_width": model.blocks[0].mlp.up.out_features}


def _kind_table(res: dict) -> dict:
    df = res["records"]
    out = {}
    for kind, g in df.groupby("kind"):
        g = g.dropna(subset=["nr_grad", "st_act"])
        if len(g):
            out[kind] = {"nr_median": float(g.nr_grad.median()), "nr_max": float(g.nr_grad.max()),
                         "st_median": float(g.st_act.median()), "st_max": float(g.st_act.max()),
                         "held": float((g.nr_grad >= g.st_act).mean()), "n": int(len(g))}
    return out


def run(out_dir: Path, quick: bool = False, seed: int = 0) -> dict:
    with torch_threads(1):  # see common.torch_threads: faster than 2 on a shared machine
        return _run(Path(out_dir), quick, seed)


def _run(out_dir: Path, quick: bool, seed: int) -> dict:
    from spectralens.data.shakespeare import load_shakespeare

    t0 = time.perf_counter()
    s = SETTINGS[bool(quick)]
    corpus = load_shakespeare(val_fraction=0.1, max_chars=s["max_chars"])  # CorpusNotInstalledError if absent
    runs = {name: train_one(name, corpus, s, seed) for name in ("adamw", "hybrid")}
    tables = {name: _kind_table(r) for name, r in runs.items()}
    d, k = runs["adamw"]["width"], runs["adamw"]["mlp_width"]

    def kmax(kind: str, key: str) -> float:
        vals = [t[kind][key] for t in tables.values() if kind in t]
        return max(vals) if vals else float("nan")

    normed = [kmax(kd, "st_max") for kd in ("q", "mlp_up", "head")]
    claims = [
        Claim(f"MLP post-activation st stays far below the width (<= k/10 = {k / 10:.0f}; paper 1.5-10.5 of 3072)",
              f"max st(input of mlp.down) over layers, steps, both runs = {fmt(kmax('mlp_down', 'st_max'))} of k = {k} "
              f"(medians: AdamW {fmt(tables['adamw'].get('mlp_down', {}).get('st_median', math.nan))}, "
              f"hybrid {fmt(tables['hybrid'].get('mlp_down', {}).get('st_median', math.nan))})",
              kmax("mlp_down", "st_max") <= k / 10),
        Claim(f"RMS-normed states have st far below the width (<= d/10 = {d / 10:.1f}; paper ~2-12 of 768)",
              f"max st of attention input {fmt(normed[0])}, MLP input {fmt(normed[1])}, final normed state {fmt(normed[2])}; d = {d}",
              max(normed) <= d / 10),
    ]
    for name in ("adamw", "hybrid"):
        t = tables[name]
        frac = {kd: t[kd]["held"] for kd in HIDDEN_KINDS if kd in t}
        claims.append(Claim(
            f"{name}: hidden blocks (q, k, v, o, mlp up/down) satisfy nr(G) >= st(A) on most monitored steps (>= 80% each)",
            ", ".join(f"{kd} {100 * v:.0f}%" for kd, v in frac.items()), all(v >= 0.8 for v in frac.values()),
        ))
    claims.append(Claim(
        "nr(G) by block type (median / max over layers and monitored steps; paper up to ~480 MLP, ~280 Q/K, ~240 O, ~90 V)",
        "; ".join(f"{kd}: {fmt(tables['adamw'][kd]['nr_median'])}/{fmt(tables['adamw'][kd]['nr_max'])} (AdamW), "
                  f"{fmt(tables['hybrid'][kd]['nr_median'])}/{fmt(tables['hybrid'][kd]['nr_max'])} (hybrid)"
                  for kd in (*HIDDEN_KINDS, "head", "embedding") if kd in tables["adamw"] and kd in tables["hybrid"]),
        None,
    ))
    emb = {n: t.get("embedding", {}) for n, t in tables.items()}
    claims.append(Claim(
        "token embedding: nr(G) vs st = 1/p_max (paper: nr 100 -> 400 vs st ~26)",
        "; ".join(f"{n}: nr median {fmt(e.get('nr_median', math.nan))}, st median {fmt(e.get('st_median', math.nan))}, "
                  f"held {100 * e.get('held', math.nan):.0f}%" for n, e in emb.items()),
        None,
    ))
    la, lh = runs["adamw"]["val_loss"], runs["hybrid"]["val_loss"]
    claims.append(Claim(
        "hybrid Muon (spectral steps where the condition holds) ends at a lower validation loss than AdamW, same steps and batches",
        f"val loss AdamW {la:.3f}, hybrid {lh:.3f}; final train loss AdamW {runs['adamw']['train_loss'][-1]:.3f}, "
        f"hybrid {runs['hybrid']['train_loss'][-1]:.3f}", lh < la,
    ))

    figs = _plots(out_dir, runs, d, k)
    settings = {**s, "adamw_lr": ADAMW_LR, "muon_lr": MUON_LR, "mlp": "relu2", "norm": "rmsnorm", "rotary": True,
                "grad_clip": 1.0, "vocab_size": corpus.vocab_size, "train_chars": int(corpus.train.numel()), "seed": seed}
    tokens = s["steps"] * s["batch_size"] * s["block_size"]
    scale = (f"{s['n_layer']} layers x width {d} (paper: 12 x 768, 124M params), {s['steps']} steps x "
             f"{s['batch_size']} x {s['block_size']} = {tokens:,} characters (paper: 1750 steps of ~0.5M tokens on 8 GPUs), "
             "character-level Shakespeare instead of FineWeb" + ("; quick" if quick else ""))
    results = {"kinds": tables, "val_loss": {n: r["val_loss"] for n, r in runs.items()},
               "train_loss": {n: r["train_loss"] for n, r in runs.items()},
               "records": {n: r["records"].to_dict(orient="list") for n, r in runs.items()}}
    seconds = time.perf_counter() - t0
    write_outputs(out_dir, title="NanoGPT-style char model on CPU: AdamW vs hybrid Muon, monitored", claims=claims,
                  results=results, settings=settings, scale_note=scale, figures=figs, seconds=seconds,
                  notes=["nr and st come from spectralens.monitor.SpectralMonitor (float32 Grams, float64 eigensolves).",
                         "The learning rates were fixed before running and not tuned; one seed."])
    return {"claims": [c.to_dict() for c in claims], "results": {"kinds": tables, "val_loss": results["val_loss"]},
            "seconds": seconds}


def _plots(out_dir: Path, runs: dict, d: int, k: int) -> list[str]:
    fig, axes = figure(1, 3)
    ax = axes[0][0]
    for name, r in runs.items():
        ax.plot(r["train_loss"], label=f"{name} (val {r['val_loss']:.3f})")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    for ls, (name, r) in zip(("-", "--"), runs.items()):
        df = r["records"]
        for kind, color in (("mlp_down", "C0"), ("q", "C1"), ("head", "C2")):
            g = df[df.kind == kind].groupby("step").st_act.max()
            ax.plot(g.index, g.values, ls, color=color, label=f"st, input of {kind} ({name})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"st(A)  (d = {d}, k = {k})")
    ax.legend(fontsize=6)
    ax = axes[0][2]
    kinds = [kd for kd in (*HIDDEN_KINDS, "head", "embedding") if kd in set(runs["adamw"]["records"].kind)]
    for i, (name, r) in enumerate(runs.items()):
        df = r["records"]
        med_nr = [df[df.kind == kd].nr_grad.median() for kd in kinds]
        med_st = [df[df.kind == kd].st_act.median() for kd in kinds]
        xs = [j + 0.4 * i for j in range(len(kinds))]
        ax.bar(xs, med_nr, width=0.4, label=f"median nr(G), {name}")
        ax.plot(xs, med_st, "k_", markersize=12, label="median st(A)" if i == 0 else None)
    ax.set_xticks([j + 0.2 for j in range(len(kinds))])
    ax.set_xticklabels(kinds, rotation=45, fontsize=7)
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    return [save_figure(fig, out_dir / "nanogpt.png")]
