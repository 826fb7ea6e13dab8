"""Condition-gated optimizer vs all-AdamW vs hybrid Muon on the small character GPT.

Same model, data order, token budget, LR schedule (linear warmup, cosine to 10%) and seeds
for every optimizer; only the update rule differs:

* ``adamw``  : torch.optim.AdamW (decay on >= 2-D parameters only), lr ``--lr``.
* ``muon``   : spectralens.optim.hybrid (Muon on hidden matrices, AdamW on the rest), Muon with
               adjust_lr="match_rms_adamw" so the same ``--lr`` applies; falls back to
               GatedSpectral(force="spectral") (identical rule) if ``hybrid`` is not importable.
* ``gated``  : spectralens.optim.GatedSpectral, lr ``--lr``, measuring nr(G)/st(A) every
               ``--every`` steps with hysteresis (``--hi``, ``--lo``).

Prints a table of final train loss (mean of the last 10% of steps) and validation loss
(fixed held-out batches) as mean +- std over seeds, writes a JSON with every curve and,
with ``--plot``, a PNG. ``--quick`` is a seconds-long smoke run.

    python benchmarks/gated_vs_adamw_muon.py --quick
    python benchmarks/gated_vs_adamw_muon.py --seeds 0 1 2 --steps 100 --threads 2 --json out.json --plot curves.png
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch

from spectralens.data.shakespeare import load_shakespeare
from spectralens.nets.gpt import GPT, GPTConfig
from spectralens.optim import GatedSpectral

OPTIMIZERS = ("adamw", "muon", "gated")


def make_optimizer(kind: str, model: torch.nn.Module, args):
    if kind == "adamw":
        decay = [p for p in model.parameters() if p.dim() >= 2]
        nodecay = [p for p in model.parameters() if p.dim() < 2]
        return torch.optim.AdamW([{"params": decay}, {"params": nodecay, "weight_decay": 0.0}], lr=args.lr,
                                 betas=(0.9, 0.95), weight_decay=args.wd), "torch.optim.AdamW"
    if kind == "muon":
        try:
            from spectralens.optim import hybrid
        except ImportError:
            hybrid = None
        if hybrid is not None:
            opt = hybrid(model, lr=args.lr, weight_decay=args.wd, adjust_lr="match_rms_adamw", adamw_lr=args.lr,
                         adamw_betas=(0.9, 0.95), adamw_weight_decay=args.wd)
            return opt, "spectralens.optim.hybrid"
        return GatedSpectral(model, lr=args.lr, weight_decay=args.wd, force="spectral"), "GatedSpectral(force=spectral)"
    if kind == "gated":
        return GatedSpectral(model, lr=args.lr, weight_decay=args.wd, every=args.every, hi=args.hi, lo=args.lo,
                             initial_mode=args.initial_mode), f"GatedSpectral(initial_mode={args.initial_mode})"
    raise ValueError(f"unknown optimizer {kind!r}; expected one of {OPTIMIZERS}")


def lr_lambda(steps: int, warmup: int):
    def f(t: int) -> float:
        if t < warmup:
            return (t + 1) / warmup
        p = (t - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    return f


@torch.no_grad()
def evaluate(model, batches) -> float:
    model.eval()
    out = statistics.fmean(model(x, y)[1].item() for x, y in batches)
    model.train()
    return out


def run_one(kind: str, seed: int, corpus, args) -> dict:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=corpus.vocab_size, block_size=args.block, n_layer=args.layers, n_head=args.heads,
                    n_embd=args.width)
    model = GPT(cfg)
    opt, impl = make_optimizer(kind, model, args)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(args.steps, max(1, args.steps // 10)))
    gen = torch.Generator().manual_seed(1000 + seed)           # same data order for every optimizer
    vgen = torch.Generator().manual_seed(12345)                # same validation batches for every run
    val = [corpus.batch("val", args.batch, args.block, vgen) for _ in range(args.val_batches)]
    train_curve, val_curve = [], []
    t0 = time.perf_counter()
    for step in range(args.steps):
        x, y = corpus.batch("train", args.batch, args.block, gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        train_curve.append(loss.item())
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            val_curve.append((step + 1, evaluate(model, val)))
    wall = time.perf_counter() - t0
    tail = max(1, args.steps // 10)
    rec = dict(optimizer=kind, impl=impl, seed=seed, train_curve=train_curve, val_curve=val_curve, wall_s=wall,
               final_train=statistics.fmean(train_curve[-tail:]), final_val=val_curve[-1][1])
    if kind == "gated":
        ch = opt.choices(as_frame=False)
        rec["choices"] = ch
        last = max(c["step"] for c in ch)
        rec["spectral_fraction_last"] = statistics.fmean(c["mode"] == "spectral" for c in ch if c["step"] == last)
        rec["switches"] = sum(c["switched"] for c in ch)
        opt.close()
    return rec


def summarize(records: list[dict]) -> list[dict]:
    rows = []
    for kind in OPTIMIZERS:
        rs = [r for r in records if r["optimizer"] == kind]
        if not rs:
            continue
        def ms(key):
            v = [r[key] for r in rs]
            return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)
        row = dict(optimizer=kind, impl=rs[0]["impl"], seeds=len(rs), train=ms("final_train"), val=ms("final_val"),
                   wall_s=ms("wall_s"))
        if kind == "gated":
            row["spectral_fraction_last"] = statistics.fmean(r["spectral_fraction_last"] for r in rs)
            row["switches"] = statistics.fmean(r["switches"] for r in rs)
        rows.append(row)
    return rows


def gate_by_kind(records: list[dict]) -> list[dict]:
    """Per layer kind (q, k, v, o, up, down, ...): median nr, st, ratio and the spectral share,
    over every measurement of every gated run."""
    by: dict[str, list[dict]] = {}
    for r in records:
        for c in r.get("choices", ()):
            by.setdefault(c["name"].rsplit(".", 1)[-1], []).append(c)
    rows = []
    for kind, cs in by.items():
        fin = [c for c in cs if math.isfinite(c["ratio"])]
        med = lambda k: statistics.median(c[k] for c in fin) if fin else float("nan")  # noqa: E731
        rows.append(dict(kind=kind, n=len(cs), nr=med("nr"), st=med("st"), ratio=med("ratio"),
                         spectral=statistics.fmean(c["mode"] == "spectral" for c in cs)))
    return rows


def plot(records: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for kind, color in zip(OPTIMIZERS, ("tab:blue", "tab:orange", "tab:green")):
        rs = [r for r in records if r["optimizer"] == kind]
        if not rs:
            continue
        tr = np.array([r["train_curve"] for r in rs])
        k = max(1, tr.shape[1] // 30)
        smooth = np.array([np.convolve(c, np.ones(k) / k, mode="valid") for c in tr])
        xs = np.arange(smooth.shape[1]) + k
        m, s = smooth.mean(0), smooth.std(0)
        axes[0].plot(xs, m, color=color, label=kind)
        axes[0].fill_between(xs, m - s, m + s, color=color, alpha=0.2)
        vs = np.array([[v for _, v in r["val_curve"]] for r in rs])
        vx = [st for st, _ in rs[0]["val_curve"]]
        axes[1].errorbar(vx, vs.mean(0), yerr=vs.std(0), color=color, marker="o", label=kind, capsize=3)
    axes[0].set(xlabel="step", ylabel=f"train loss (moving mean of {k})", title="train")
    axes[1].set(xlabel="step", ylabel="val loss", title="validation")
    for a in axes:
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    p.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--hi", type=float, default=1.5)
    p.add_argument("--lo", type=float, default=1.0)
    p.add_argument("--initial-mode", default="euclidean", choices=("euclidean", "spectral"))
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--val-batches", type=int, default=8)
    p.add_argument("--max-chars", type=int, default=2_000_000)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.width, args.layers, args.heads = args.seeds[:1], 12, 64, 2, 2
        args.block, args.batch, args.eval_every, args.val_batches, args.every = 32, 8, 6, 2, 4
        args.max_chars = 200_000
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = load_shakespeare(max_chars=args.max_chars)
    tokens = args.steps * args.batch * args.block
    print(f"GPT {args.layers}x{args.width}, T={args.block}, batch {args.batch}, {args.steps} steps "
          f"= {tokens} tokens per run, lr {args.lr}, wd {args.wd}, seeds {args.seeds}, threads {torch.get_num_threads()}")
    records = []
    for seed in args.seeds:
        for kind in args.optimizers:
            r = run_one(kind, seed, corpus, args)
            records.append(r)
            extra = f" spectral {r['spectral_fraction_last']:.2f}" if kind == "gated" else ""
            print(f"  {kind:6s} seed {seed}: train {r['final_train']:.4f} val {r['final_val']:.4f} "
                  f"({r['wall_s']:.1f}s){extra}", flush=True)
            if args.json:  # after every run, so an interrupted comparison keeps what it finished
                with open(args.json, "w") as f:
                    json.dump(dict(args=vars(args), summary=summarize(records), runs=records), f)
    rows = summarize(records)
    print(f"\n| optimizer | implementation | seeds | final train loss | final val loss | wall s/run |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['optimizer']} | {r['impl']} | {r['seeds']} | {r['train'][0]:.4f} ± {r['train'][1]:.4f} | "
              f"{r['val'][0]:.4f} ± {r['val'][1]:.4f} | {r['wall_s'][0]:.1f} |")
    for r in rows:
        if "spectral_fraction_last" in r:
            print(f"gated: fraction of gated layers spectral at the last measurement {r['spectral_fraction_last']:.2f}, "
                  f"switches per run {r['switches']:.1f}")
    kinds = gate_by_kind(records)
    if kinds:
        print("\n| layer kind | measurements | median nr(G) | median st(A) | median ratio | share spectral |")
        print("|---|---|---|---|---|---|")
        for k in kinds:
            print(f"| {k['kind']} | {k['n']} | {k['nr']:.1f} | {k['st']:.2f} | {k['ratio']:.2f} | {k['spectral']:.2f} |")
    if args.plot:
        plot(records, args.plot)


if __name__ == "__main__":
    main()
