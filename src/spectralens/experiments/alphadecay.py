"""Reproduction: AlphaDecay, module-wise weight decay from heavy-tail alpha, at CPU scale.

He et al., "AlphaDecay: Module-wise Weight Decay for Heavy-Tailed Balancing in LLMs",
arXiv 2506.14562. A LLaMA-style GPT (``spectralens.nets.gpt``: RMSNorm, SwiGLU, rotary) is
trained on the Shakespeare characters (``spectralens.data.shakespeare``, held-out split by
position within each play) for a fixed token budget with AdamW and five decay policies, all
from ``spectralens.optim`` (the experiment only drives them):

* ``none``: weight_decay = 0 everywhere;
* ``uniform``: wd0 everywhere;
* ``alphadecay``: ``AlphaDecay(opt, model, every, s1=0.6666, s2=3)``: per tuned module
  wd_i = wd0 (s1 + (alpha_i - alpha_min)/(alpha_max - alpha_min)(s2 - s1)), Hill alpha;
* ``awd``: ``AWD(opt)``: one global decay lambda_awd ||grad|| / ||w|| (EMA);
* ``adadecay``: ``AdaDecay(opt, model)``: wd0 * 2 / (1 + exp(-4 z)), z the gradient norm
  standardised within each block.

All policies share the parameter groups (one group per tuned module, ``module_param_groups``),
the initialisation and the batch sequence of a seed, so per-seed differences are paired.
Measured: validation perplexity exp(mean CE) over a fixed set of validation windows (mean ±
std over seeds); Hill alpha of every tuned matrix at the end, attention (q, k, v, o) against
MLP (gate, up, down), under uniform decay and under AlphaDecay (the paper's mechanism claim).

Scale: the paper's smallest model (60M: width 512, 8 layers, 1.1B C4 tokens, batch 512 x 256)
against ours (~0.45M parameters, width 96, 4 layers, ~0.12M characters): its ~1-3% perplexity
gains are far below what 3 seeds of a CPU run can resolve, and we say so when they are.
float32 throughout (never bf16 on CPU).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from spectralens import linalg
from spectralens.data.shakespeare import load_shakespeare
from spectralens.fit import hill_alpha
from spectralens.nets.gpt import GPT, GPTConfig
from spectralens.optim import AWD, AdaDecay, AlphaDecay, module_param_groups

from .common import Claim, fmt, torch_threads, write_outputs

__all__ = ["run", "AlphaDecayReproConfig", "config_for", "METHODS", "train_one", "module_kind_alphas"]

NAME = "alphadecay"
PAPER = "He et al., AlphaDecay, arXiv 2506.14562"
METHODS = ("none", "uniform", "alphadecay", "awd", "adadecay")
ATTN, MLP = ("attn.q", "attn.k", "attn.v", "attn.o"), ("mlp.gate", "mlp.up", "mlp.down")


@dataclass(frozen=True)
class AlphaDecayReproConfig:
    n_layer: int = 4  # transformer blocks (paper 60M: 8)
    n_embd: int = 96  # width (paper 60M: 512); SwiGLU hidden = 256
    n_head: int = 4
    block_size: int = 64  # context T (paper: 256)
    batch_size: int = 16  # sequences per step (paper: 512)
    steps: int = 120  # token budget = steps * batch_size * block_size (15 runs must fit 15 min on 2 busy cores)
    lr: float = 3e-3  # peak AdamW lr (paper: 1e-3 at 60M; a tiny model trains faster at 3e-3)
    warmup_frac: float = 0.1  # linear warmup, then cosine to 10% (paper's schedule)
    weight_decay: float = 0.1  # wd0, AdamW (the paper's AdamW table uses 0.1)
    alphadecay_every: int = 6  # recompute period: 20 recomputes per run (paper: 500 of ~10k steps)
    s1: float = 0.6666
    s2: float = 3.0
    awd_lambda: float = 0.1  # spectralens.optim.AWD default
    grad_clip: float = 1.0
    seeds: int = 3
    eval_batches: int = 16  # fixed validation windows: eval_batches * batch_size * block_size characters
    val_fraction: float = 0.1
    max_chars: int | None = None  # truncate the corpus (quick runs only)
    methods: tuple[str, ...] = METHODS

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_size * self.block_size


def config_for(quick: bool) -> AlphaDecayReproConfig:
    if quick:
        return AlphaDecayReproConfig(n_layer=2, n_embd=64, n_head=2, block_size=64, batch_size=8, steps=40,
                                     alphadecay_every=5, seeds=2, eval_batches=8, max_chars=400_000)
    return AlphaDecayReproConfig()


def _lr_at(cfg: AlphaDecayReproConfig, step: int) -> float:
    warm = max(1, int(cfg.warmup_frac * cfg.steps))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def module_kind_alphas(model: GPT) -> dict[str, float]:
    """Hill alpha (``spectralens.fit.hill_alpha`` of the ESD from ``spectralens.linalg``) of every
    attention and MLP matrix, keyed by module name (``blocks.{i}.attn.q`` ...)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and name.endswith(ATTN + MLP):
            out[name] = float(hill_alpha(linalg.eigenvalues(m.weight.detach(), dtype=torch.float32)))
    return out


def _kind_means(alphas: dict[str, float]) -> tuple[float, float]:
    a = [v for k, v in alphas.items() if k.endswith(ATTN)]
    m = [v for k, v in alphas.items() if k.endswith(MLP)]
    return float(np.mean(a)), float(np.mean(m))


@torch.no_grad()
def _val_loss(model: GPT, corpus, cfg) -> float:
    g = torch.Generator().manual_seed(1234)  # the same windows for every method and seed
    model.eval()
    losses = [float(model(*corpus.batch("val", cfg.batch_size, cfg.block_size, g))[1]) for _ in range(cfg.eval_batches)]
    model.train()
    return float(np.mean(losses))


def train_one(cfg: AlphaDecayReproConfig, corpus, method: str, seed: int) -> dict:
    """Train one model with one decay policy; return losses, perplexity, alphas and decays."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    torch.manual_seed(seed)  # GPT's init draws from the global generator
    model = GPT(GPTConfig.llama(vocab_size=corpus.vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                                n_embd=cfg.n_embd, block_size=cfg.block_size))
    init_alphas = module_kind_alphas(model)
    wd0 = 0.0 if method == "none" else cfg.weight_decay
    opt = torch.optim.AdamW(module_param_groups(model, wd0, lr=cfg.lr), lr=cfg.lr, betas=(0.9, 0.95))
    before = after = None
    if method == "alphadecay":
        after = AlphaDecay(opt, model, every=cfg.alphadecay_every, s1=cfg.s1, s2=cfg.s2)
    elif method == "awd":
        before = AWD(opt, lambda_awd=cfg.awd_lambda)
    elif method == "adadecay":
        before = AdaDecay(opt, model)
    gen = torch.Generator().manual_seed(10_000 + seed)  # the same batches for every method
    train_losses, mean_wd = [], []
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, step)
        x, y = corpus.batch("train", cfg.batch_size, cfg.block_size, gen)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if before is not None:
            before.step()  # AWD / AdaDecay read the gradients before the update
        mean_wd.append(float(np.mean([g["weight_decay"] for g in opt.param_groups if g.get("name") != "untuned"])))
        opt.step()
        if after is not None:
            after.step()  # AlphaDecay recomputes every ``every`` optimizer steps
        train_losses.append(loss.item())
        if not math.isfinite(train_losses[-1]):
            break
    val = _val_loss(model, corpus, cfg) if math.isfinite(train_losses[-1]) else float("nan")
    final_alphas = module_kind_alphas(model)
    decays = {g["name"]: float(g["weight_decay"]) for g in opt.param_groups if g.get("name") != "untuned"}
    return {"method": method, "seed": seed, "val_loss": val, "val_ppl": math.exp(val) if math.isfinite(val) else None,
            "train_losses": train_losses, "mean_weight_decay": mean_wd, "final_weight_decay": decays,
            "init_alphas": init_alphas, "final_alphas": final_alphas,
            "alphadecay_overhead_s": after.overhead_s if after is not None else 0.0}


# --- statistics and claims -------------------------------------------------------------------

_T975 = {1: 12.71, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def paired_difference(a: list[float], b: list[float]) -> dict:
    """Paired per-seed difference a - b: mean, std, and whether a two-sided 95% paired t-test
    separates it from 0 (``resolved``); with one seed nothing is resolved."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    mean = float(d.mean())
    std = float(d.std(ddof=1)) if n > 1 else float("nan")
    half = _T975.get(n - 1, 1.96) * std / math.sqrt(n) if n > 1 else float("inf")
    return {"mean": mean, "std": std, "ci95_half_width": half, "resolved": bool(n > 1 and abs(mean) > half)}


def _comparison_claim(text: str, lo: str, hi_list, ppl: dict) -> Claim:
    """'``lo`` has lower perplexity than each of ``hi_list``': yes/no if resolved, n/a if within noise."""
    parts, verdicts = [], []
    for other in hi_list:
        if lo not in ppl or other not in ppl:
            continue
        d = paired_difference(ppl[lo], ppl[other])
        rel = d["mean"] / float(np.mean(ppl[other]))
        parts.append(f"{lo} - {other}: {d['mean']:+.3f} ± {d['ci95_half_width']:.3f} (95% CI, paired) = {rel:+.2%}"
                     + ("" if d["resolved"] else " [within seed noise]"))
        verdicts.append(None if not d["resolved"] else d["mean"] < 0)
    held = None if (not verdicts or None in verdicts) else all(verdicts)
    if verdicts and False in verdicts:
        held = False
    return Claim(text, "; ".join(parts), held)


def evaluate_claims(runs: list[dict], cfg: AlphaDecayReproConfig) -> tuple[list[Claim], dict]:
    by = {m: sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"]) for m in cfg.methods}
    ppl = {m: [r["val_ppl"] if r["val_ppl"] is not None else float("nan") for r in rs] for m, rs in by.items() if rs}
    stats = {m: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else float("nan"),
                 "values": v} for m, v in ppl.items()}
    table = ", ".join(f"{m} {s['mean']:.3f} ± {fmt(s['std'])}" for m, s in stats.items())
    claims = [
        _comparison_claim("AlphaDecay reaches a lower validation perplexity than uniform weight decay "
                          "(paper, AdamW 60M: 31.20 vs 31.95, -2.3%)", "alphadecay", ["uniform"], ppl),
        _comparison_claim("AlphaDecay beats the adaptive baselines AWD and AdaDecay (paper: 32.58 and 31.88 vs 31.20)",
                          "alphadecay", ["awd", "adadecay"], ppl),
    ]
    context = _comparison_claim("(context, not a paper claim, never decided) uniform decay vs no decay",
                                "uniform", ["none"], ppl)
    claims.append(Claim(context.claim, context.measured, None))
    gaps = {}
    for m in ("uniform", "alphadecay"):
        if by.get(m):
            per_seed = [_kind_means(r["final_alphas"]) for r in by[m]]
            gaps[m] = {"attn": [a for a, _ in per_seed], "mlp": [b for _, b in per_seed],
                       "gap": [b - a for a, b in per_seed]}
    init = [_kind_means(r["init_alphas"]) for r in by.get("uniform", [])]
    init_txt = (f"at init attn {np.mean([a for a, _ in init]):.3f}, MLP {np.mean([b for _, b in init]):.3f} "
                "(square attention vs rectangular MLP matrices: the aspect ratio alone moves the Hill alpha)"
                ) if init else ""
    if "uniform" in gaps:
        g = gaps["uniform"]
        d = paired_difference(g["attn"], g["mlp"])
        claims.append(Claim(
            "Attention matrices are heavier-tailed (lower alpha) than MLP matrices (under uniform decay)",
            f"mean Hill alpha at the end: attn {np.mean(g['attn']):.3f}, MLP {np.mean(g['mlp']):.3f} "
            f"(attn - MLP {d['mean']:+.3f} ± {d['ci95_half_width']:.3f}); {init_txt}",
            None if not d["resolved"] else d["mean"] < 0))
    if init and "uniform" in gaps:
        g = gaps["uniform"]
        d_attn = [e - i for e, (i, _) in zip(g["attn"], init)]
        d_mlp = [e - i for e, (_, i) in zip(g["mlp"], init)]
        d = paired_difference(d_attn, d_mlp)
        claims.append(Claim(
            "... and not only by the aspect-ratio offset present at init: training lowers attention alpha more "
            "than MLP alpha (our control, uniform decay)",
            f"change from init: attn {np.mean(d_attn):+.3f}, MLP {np.mean(d_mlp):+.3f} "
            f"(difference {d['mean']:+.3f} ± {d['ci95_half_width']:.3f})",
            None if not d["resolved"] else d["mean"] < 0))
    if {"uniform", "alphadecay"} <= set(gaps):
        d = paired_difference(gaps["alphadecay"]["gap"], gaps["uniform"]["gap"])
        claims.append(Claim(
            "AlphaDecay narrows the attention-MLP alpha gap (MLP alpha - attn alpha) relative to uniform decay",
            f"gap uniform {np.mean(gaps['uniform']['gap']):+.3f}, AlphaDecay {np.mean(gaps['alphadecay']['gap']):+.3f}; "
            f"paired difference {d['mean']:+.3f} ± {d['ci95_half_width']:.3f}",
            None if not d["resolved"] else abs(np.mean(gaps["alphadecay"]["gap"])) < abs(np.mean(gaps["uniform"]["gap"]))))
    return claims, {"ppl": stats, "ppl_table": table, "alpha_gaps": gaps}


# --- figures -------------------------------------------------------------------------------


def _figures(runs: list[dict], cfg: AlphaDecayReproConfig, out_dir: Path) -> list[str]:
    from .common import figure, save_figure

    names = []
    methods = [m for m in cfg.methods if any(r["method"] == m for r in runs)]
    fig, axes = figure(1, 4, size=(4.6, 3.6))
    ax = axes[0][0]
    for i, m in enumerate(methods):
        v = [r["val_ppl"] for r in runs if r["method"] == m and r["val_ppl"] is not None]
        ax.bar(i, np.mean(v), yerr=np.std(v, ddof=1) if len(v) > 1 else 0, color=f"C{i}", alpha=0.6, capsize=4)
        ax.plot([i] * len(v), v, "k.", ms=5)
    ax.set_xticks(range(len(methods)), methods, rotation=20)
    lo = min(r["val_ppl"] for r in runs if r["val_ppl"] is not None)
    hi = max(r["val_ppl"] for r in runs if r["val_ppl"] is not None)
    ax.set_ylim(lo - 0.6 * (hi - lo + 1e-3), hi + 0.6 * (hi - lo + 1e-3))
    ax.set_title("validation perplexity (mean ± std, dots = seeds)")
    ax = axes[0][1]
    for i, m in enumerate(methods):
        curves = np.array([r["train_losses"] for r in runs if r["method"] == m and len(r["train_losses"]) == cfg.steps])
        if len(curves):
            k = max(1, cfg.steps // 20)
            smooth = np.convolve(curves.mean(0), np.ones(k) / k, mode="valid")
            ax.plot(np.arange(len(smooth)) + k - 1, smooth, color=f"C{i}", label=m, lw=1)
    ax.set_xlabel("step")
    ax.set_title("train loss (mean over seeds, smoothed)")
    ax.legend(fontsize=8)
    ax = axes[0][2]
    for i, m in enumerate(methods):
        w = np.array([r["mean_weight_decay"] for r in runs if r["method"] == m and len(r["mean_weight_decay"]) == cfg.steps])
        if len(w):
            ax.plot(w.mean(0), color=f"C{i}", label=m, lw=1)
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_xlabel("step")
    ax.set_title("mean weight decay over tuned modules")
    ax.legend(fontsize=8)
    ax = axes[0][3]
    base = [r["val_ppl"] for r in sorted(runs, key=lambda r: r["seed"]) if r["method"] == "uniform"]
    for i, m in enumerate(methods):
        v = [r["val_ppl"] for r in sorted(runs, key=lambda r: r["seed"]) if r["method"] == m]
        if m == "uniform" or len(v) != len(base) or None in v or None in base:
            continue
        d = paired_difference(v, base)
        ax.errorbar(i, d["mean"], yerr=d["ci95_half_width"] if math.isfinite(d["ci95_half_width"]) else 0,
                    fmt="o", color=f"C{i}", capsize=4)
        ax.plot([i] * len(v), np.asarray(v) - np.asarray(base), "k.", ms=4)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks(range(len(methods)), methods, rotation=20)
    ax.set_title("ppl - uniform, paired by seed (95% CI)")
    names.append(save_figure(fig, out_dir / "alphadecay_ppl.png"))

    fig, axes = figure(1, 2, size=(6.0, 3.8))
    ax = axes[0][0]
    kinds = [k.split(".")[-1] for k in ATTN + MLP]
    width = 0.27
    series = [("init", "init_alphas", "uniform"), ("uniform", "final_alphas", "uniform"),
              ("AlphaDecay", "final_alphas", "alphadecay")]
    for j, (label, key, m) in enumerate(series):
        rs = [r for r in runs if r["method"] == m]
        if not rs:
            continue
        vals = [np.mean([v for r in rs for n, v in r[key].items() if n.endswith(suffix)]) for suffix in ATTN + MLP]
        ax.bar(np.arange(len(kinds)) + (j - 1) * width, vals, width, label=label)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.axvline(3.5, color="gray", lw=0.8)
    finite = [v for r in runs for key in ("init_alphas", "final_alphas") for v in r[key].values() if math.isfinite(v)]
    if finite:
        ax.set_ylim(0.9 * min(finite), None)
    ax.set_ylabel("Hill alpha (mean over blocks, seeds)")
    ax.set_title("alpha by module kind: attention | MLP")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    rs = [r for r in runs if r["method"] == "alphadecay"]
    for r in rs:
        xs = [r["final_alphas"][n] for n in r["final_weight_decay"] if n in r["final_alphas"]]
        ys = [r["final_weight_decay"][n] for n in r["final_weight_decay"] if n in r["final_alphas"]]
        cs = ["C0" if n.endswith(ATTN) else "C1" for n in r["final_weight_decay"] if n in r["final_alphas"]]
        ax.scatter(xs, ys, c=cs, s=12)
    ax.set_xlabel("Hill alpha at the end")
    ax.set_ylabel("weight decay assigned")
    ax.set_title("AlphaDecay's assignment (blue attn, orange MLP)")
    names.append(save_figure(fig, out_dir / "alphadecay_alpha.png"))
    return names


# --- entry point ---------------------------------------------------------------------------


def run(out_dir: Path, quick: bool = False, seed: int = 0, *, log=print, threads: int = 1) -> dict:
    """Train every method for every seed, write figures, results.json and summary.md.

    Raises ``spectralens.data.shakespeare.CorpusNotInstalledError`` (with the install command)
    when the corpus is missing.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = config_for(quick)
    t0 = time.time()
    corpus = load_shakespeare(val_fraction=cfg.val_fraction, max_chars=cfg.max_chars)
    runs = []
    with torch_threads(threads):
        for s in range(cfg.seeds):
            for method in cfg.methods:
                r = train_one(cfg, corpus, method, seed + s)
                runs.append(r)
                log(f"[alphadecay] seed {seed + s} {method:10s} val ppl {fmt(r['val_ppl'], 4)} "
                    f"({time.time() - t0:.0f}s)")
    claims, stats = evaluate_claims(runs, cfg)
    figures = _figures(runs, cfg, out_dir)
    n_params = sum(p.numel() for p in GPT(GPTConfig.llama(vocab_size=corpus.vocab_size, n_layer=cfg.n_layer,
                                                            n_head=cfg.n_head, n_embd=cfg.n_embd)).parameters())
    scale = (f"LLaMA-style GPT, {cfg.n_layer} layers, width {cfg.n_embd}, {n_params / 1e6:.2f}M parameters, "
             f"{cfg.tokens:,} training characters ({cfg.steps} steps of {cfg.batch_size} x {cfg.block_size}) on "
             f"Shakespeare{' (first ' + format(cfg.max_chars, ',') + ' characters)' if cfg.max_chars else ''}; "
             "paper's smallest: 60M parameters, width 512, 8 layers, ~1.1B C4 tokens. "
             f"{cfg.seeds} seed(s) per method; AlphaDecay recomputed every {cfg.alphadecay_every} steps "
             f"(paper: 500).")
    notes = [f"Validation perplexity: {stats['ppl_table']} (exp of the mean character cross-entropy over "
             f"{cfg.eval_batches * cfg.batch_size * cfg.block_size:,} fixed held-out characters).",
             "Comparisons are paired by seed (same init and batches); 'within seed noise' = the 95% paired-t "
             "interval contains 0, and the claim is then marked n/a, not held.",
             f"Optimizer AdamW (betas 0.9, 0.95), lr {cfg.lr} with {cfg.warmup_frac:.0%} warmup and cosine to 10%, "
             f"grad clip {cfg.grad_clip}, wd0 {cfg.weight_decay} on every group (embeddings and norms included, as "
             f"the paper); AlphaDecay s1={cfg.s1}, s2={cfg.s2}; AWD lambda {cfg.awd_lambda}; AdaDecay slope 4."]
    ad = [r for r in runs if r["method"] == "alphadecay"]
    if ad:
        notes.append("AlphaDecay's mean assigned decay at the end: "
                     f"{np.mean([np.mean(list(r['final_weight_decay'].values())) for r in ad]):.4f} "
                     f"(wd0 {cfg.weight_decay}; no mean normalisation, as the paper); SVD overhead "
                     f"{np.mean([r['alphadecay_overhead_s'] for r in ad]):.2f} s per run.")
    aw = [r for r in runs if r["method"] == "awd"]
    if aw:
        notes.append(f"AWD's decay over the run: mean {np.mean([np.mean(r['mean_weight_decay']) for r in aw]):.2e}.")
    settings = asdict(cfg) | {"seed": seed, "quick": quick, "threads": threads, "dtype": "float32",
                              "vocab_size": corpus.vocab_size, "n_params": n_params,
                              "train_chars": int(len(corpus.train)), "val_chars": int(len(corpus.val))}
    return write_outputs(out_dir, title=f"AlphaDecay at CPU scale ({PAPER})", claims=claims,
                         results={"stats": stats, "runs": runs}, settings=settings, scale_note=scale,
                         figures=figures, notes=notes, seconds=time.time() - t0)
