"""Muon step time: spectralens.optim.Muon vs torch.optim.Muon, the float32 floor, and AdamW.

Three measurements, printed as one table with ratios (see docs/optim.md for the recorded run):

1. pair: one Muon step over the GPT-2-small pair (768x768, 3072x768): spectralens (float32 NS
   on CPU, per-device default) vs torch.optim.Muon with its defaults (NS in bfloat16, which is
   ~80x slower than float32 matmul on this CPU). Target: >= 30x faster.
2. full: the GPT-2-small hidden set, 12 blocks of {768x2304, 768x768, 3072x768, 768x3072}:
   spectralens Muon step vs the float32 floor = textbook NS FLOPs, 5 (4 m^2 n + 2 m^3) per
   matrix (m <= n), over the float32 matmul rate measured in the same run. Target: <= 1.3x.
   (spectralens uses the Gram form of NS for n >= 2m, which does ~0.7x the textbook FLOPs, so it
   can go under the floor.) Also torch.optim.AdamW (foreach) on the same tensors.
3. one NS on a 3072x768 float32 matrix, textbook and Gram form, vs its own floor.

Usage: python benchmarks/optim_step.py [--quick] [--device cpu|cuda] [--repeat N]
``--quick`` divides every dimension by 4, uses 2 blocks instead of 12 and 1 repetition; it
checks that the script runs (ratios at that size are indicative only). On CUDA the default
compute dtype is bfloat16 and the floor uses the bfloat16 matmul rate. On a shared, overloaded
machine 2-thread wall times are dominated by OpenMP threads waiting for a core; use
``--threads 1 --clock cpu`` there (process CPU time of one thread) for meaningful ratios.
"""
from __future__ import annotations

import argparse
import time

import torch

from spectralens.linalg.orthogonalize import orthogonalize_newton_schulz
from spectralens.optim import Muon


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCK = time.perf_counter  # --clock cpu switches to process CPU time (for a shared machine)


def _time(fn, device, repeat: int, warmup: int = 1) -> float:
    """Best (minimum) time of fn() over ``repeat`` runs after ``warmup`` (robust to load spikes)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    ts = []
    for _ in range(repeat):
        t = CLOCK()
        fn()
        _sync(device)
        ts.append(CLOCK() - t)
    return min(ts)


def _params(shapes, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = []
    for s in shapes:
        p = torch.nn.Parameter((torch.randn(*s, generator=g) * 0.02).to(device))
        p.grad = torch.randn(*s, generator=g).to(device)
        ps.append(p)
    return ps


def ns_flops(shapes, steps: int = 5) -> float:
    """Textbook NS FLOPs: per step X X^T (2 m^2 n), A^2 (2 m^3), B X (2 m^2 n), m <= n."""
    total = 0.0
    for r, c in shapes:
        m, n = min(r, c), max(r, c)
        total += steps * (4 * m * m * n + 2 * m**3)
    return total


def matmul_rate(d: int, device, dtype, repeat: int) -> float:
    """FLOP/s of a (d x d) @ (d x 4d) matmul, the dominant NS product for GPT-2 shapes."""
    a = torch.randn(d, d, device=device, dtype=dtype)
    b = torch.randn(d, 4 * d, device=device, dtype=dtype)
    t = _time(lambda: a @ b, device, max(repeat, 3))
    return 2 * d * d * 4 * d / t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="dims / 4, 2 blocks, 1 repetition")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeat", type=int, default=None, help="timed repetitions (default 3; quick 1)")
    ap.add_argument("--skip-torch", action="store_true", help="skip torch.optim.Muon (slow on CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu = process CPU time: with --threads 1 it is a proxy for a quiet machine")
    ap.add_argument("--only-ns", action="store_true", help="only measurement 3 (one NS)")
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    k = 4 if args.quick else 1
    d = 768 // k
    blocks = 2 if args.quick else 12
    repeat = args.repeat or (1 if args.quick else 3)
    fdtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    rows = []

    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"{'QUICK (dims/4, 2 blocks) ' if args.quick else ''}repeat={repeat}")
    rate = matmul_rate(d, device, fdtype, repeat)
    print(f"matmul rate ({fdtype}): {rate / 1e9:.1f} GFLOP/s")

    if not args.only_ns:
        rows += _steps(args, device, d, blocks, repeat, rate)
    # 3. one NS on a 3072x768 matrix
    G = torch.randn(4 * d, d, device=device)
    one_floor = ns_flops([(4 * d, d)]) / rate
    for gram in (False, True):
        t = _time(lambda: orthogonalize_newton_schulz(G, dtype=fdtype, gram=gram), device, max(repeat, 3))
        rows.append((f"one NS {4 * d}x{d} ({'Gram form' if gram else 'textbook'})", t,
                     f"{t / one_floor:.2f}x floor", f"floor {one_floor * 1e3:.0f} ms"))

    w = max(len(r[0]) for r in rows)
    print(f"\n{'measurement'.ljust(w)}  {'time (s)':>10}  {'ratio':<22} note")
    for name, t, ratio, note in rows:
        print(f"{name.ljust(w)}  {t:10.4f}  {ratio:<22} {note}")


def _steps(args, device, d, blocks, repeat, rate) -> list[tuple]:
    rows = []
    # 1. the pair vs torch.optim.Muon defaults
    pair = [(d, d), (4 * d, d)]
    ours = Muon(_params(pair, device), lr=0.02)
    t_ours = _time(ours.step, device, repeat)
    rows.append(("pair: spectralens Muon", t_ours, "1.00x", ""))
    if not args.skip_torch:
        theirs = torch.optim.Muon(_params(pair, device))  # its defaults: lr 1e-3, wd 0.1, bf16 NS
        t_torch = _time(theirs.step, device, 1, warmup=0 if not args.quick else 1)
        rows.append(("pair: torch.optim.Muon (defaults)", t_torch, f"{t_torch / t_ours:.1f}x slower",
                     "target >= 30x"))

    # 2. the full GPT-2-small hidden set vs the float32 floor, and AdamW
    shapes = [(d, 3 * d), (d, d), (4 * d, d), (d, 4 * d)] * blocks
    floor = ns_flops(shapes) / rate
    full = Muon(_params(shapes, device), lr=0.02)
    t_full = _time(full.step, device, repeat)
    rows.append((f"full ({blocks} blocks): NS floor (textbook FLOPs / rate)", floor, "1.00x", ""))
    rows.append((f"full ({blocks} blocks): spectralens Muon", t_full, f"{t_full / floor:.2f}x floor",
                 "target <= 1.3x"))
    adam = torch.optim.AdamW(_params(shapes, device), lr=1e-3)
    t_adam = _time(adam.step, device, repeat)
    rows.append((f"full ({blocks} blocks): torch AdamW (foreach)", t_adam,
                 f"Muon = {t_full / t_adam:.1f}x AdamW", ""))

    return rows


if __name__ == "__main__":
    main()
