"""spectralens.analyze vs weightwatcher.WeightWatcher.analyze on the same models, in one process.

Models (randomly initialised, built locally, nothing downloaded):
  * bert-22m: transformers.BertModel(BertConfig(hidden_size=384, num_hidden_layers=6,
    num_attention_heads=12, intermediate_size=1536)) - the all-MiniLM-L6-v2 shape, 22.7M params;
  * bert-33m (``--models bert-33m``): the same with 12 layers (MiniLM-L12-H384), 33.4M params;
  * gpt2-124m: transformers.GPT2LMHeadModel(GPT2Config()).
``--quick`` uses tiny versions of both (seconds) to check the script runs.

For each model: WeightWatcher analyze() with its defaults (KS-scan power-law fit, no MP fit,
layers with N <= 50,000 and 8 <= M*rf <= 15,000), then spectralens on exactly the layers
WeightWatcher analysed, with the same fit (KS, mp_fit=False). Also spectralens on all layers
(no size cap: the 50,257 x 768 GPT-2 embedding/LM head included) and with float32 Grams.

Printed: wall time, ratio WW/ours, peak resident memory above the baseline (VmHWM after
resetting it through /proc/self/clear_refs), max |alpha difference| over common layers, and
the floor: FLOPs of the Gram products (n m^2 per n x m matrix, n >= m: a symmetric rank-k
update computes half of the 2 n m^2 of a general product) and eigensolves
(~4/3 m^3 for the tridiagonal reduction, the dominant part of an eigenvalues-only solve) over
the measured float64 (or float32) matmul rate; time/floor says how far from that we are. And
the kernel floor: each analysed layer's Gram and eigensolve timed alone on one core (one BLAS
thread), summed, over the number of cores: no schedule of these kernels beats it here;
eig_share is the eigensolves' part of it.
Finally: peak RSS when analysing the model saved as one .safetensors file, vs its largest tensor.

Run the full size only on a quiet machine:  python benchmarks/analyze_vs_weightwatcher.py --repeats 3
Quick check:                                 python benchmarks/analyze_vs_weightwatcher.py --quick
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def rss_mib(field: str = "VmRSS:") -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:  # pragma: no cover - not Linux / not permitted
        pass


def measured(fn):
    gc.collect()
    reset_peak()
    base = rss_mib()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    return out, dt, rss_mib("VmHWM:") - base


def best_of(repeats: int, fn):
    """``measured(fn)`` repeated: the result and peak memory of the first run, the smallest time."""
    out, t, mem = measured(fn)
    for _ in range(repeats - 1):
        t = min(t, measured(fn)[1])
    return out, t, mem


def matmul_rate(dtype: torch.dtype, n: int = 1536) -> float:
    """Measured GEMM FLOP/s (best of 3) for an n x n product."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(3))
    return 2 * n ** 3 / best


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def floor_flops(df) -> float:
    """Sum over layers of B * (n m^2 + 4/3 m^3); n, m from the rows (rf = number of slices B)."""
    flops = 0.0
    for rec in df.to_dict(orient="records"):
        shape = [int(s) for s in str(rec["shape"]).split("x")]
        B = int(rec["rf"])
        if len(shape) >= 3 and B > 1:
            n, m = max(shape[:2]), min(shape[:2])
        else:
            n, m = int(rec["N"]), int(rec["M"])
        flops += B * (1.0 * n * m * m + 4.0 / 3.0 * m ** 3)
    return flops


def kernel_floor(model, layers, dtype: torch.dtype) -> tuple[float, float]:
    """Measured floor of our method: each analysed layer's Gram (syrk) and eigensolve (dsyevd)
    timed alone on one core with one BLAS thread (best of 2), summed, over the number of cores.
    No schedule of these kernels on this machine can beat it. Returns (floor s, eigensolve share)."""
    from spectralens.analyze import _layer_gram, lapack, select_refs
    from spectralens.analyze.spectra import GramBatch
    from spectralens.models import open_source

    total = eig = 0.0
    src = open_source(model)
    with lapack.one_blas_thread():
        for ref in select_refs(src.refs, layers):
            if ref.tie is not None and any(r.tie == ref.tie for r in src.refs[:src.refs.index(ref)]):
                continue  # tied weights are computed once
            t_gram = t_eig = float("inf")
            for _ in range(2):
                t0 = time.perf_counter()
                C, scale, status = _layer_gram(ref, "slices", dtype, True)
                t1 = time.perf_counter()
                if C is None:
                    break
                batch = GramBatch(int(C.shape[-1]))
                batch.add(0, C, scale)
                batch.solve(parallel=False)
                t_gram, t_eig = min(t_gram, t1 - t0), min(t_eig, time.perf_counter() - t1)
            if C is not None:
                total += t_gram + t_eig
                eig += t_eig
    return total / lapack.cpu_count(), eig / max(total, 1e-12)


def build_models(quick: bool):
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if quick:
        bert = BertModel(BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=256, vocab_size=1000, max_position_embeddings=128))
        gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=96, n_head=4, vocab_size=2000, n_positions=128,
                                          bos_token_id=0, eos_token_id=0))
        return {"bert-tiny": bert, "gpt2-tiny": gpt2}
    def bert(layers):
        return BertModel(BertConfig(hidden_size=384, num_hidden_layers=layers, num_attention_heads=12,
                                    intermediate_size=1536))

    return {"bert-22m": bert(6), "gpt2-124m": GPT2LMHeadModel(GPT2Config()), "bert-33m": bert(12)}


_RSS_CHILD = r"""
import gc, json, sys
from spectralens.analyze import run_analysis
def rss(f):
    for line in open("/proc/self/status"):
        if line.startswith(f): return int(line.split()[1]) / 1024
import torch, pandas  # baseline: the interpreter with the libraries loaded
from spectralens.analyze import run_analysis
run_analysis({"w.weight": torch.randn(256, 128)})
gc.collect(); open("/proc/self/clear_refs", "w").write("5"); base = rss("VmRSS:")
df = run_analysis(sys.argv[1], mp_fit=False).layers
print(json.dumps({"extra_mib": rss("VmHWM:") - base, "layers": len(df)}))
"""


def safetensors_rss(model, name: str) -> dict:
    from safetensors.torch import save_file

    sd, seen = {}, set()
    for k, v in model.state_dict().items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:  # tied weights are stored once (as save_pretrained does)
            continue
        seen.add(ptr)
        sd[k] = v.contiguous()
    largest = max(v.numel() * v.element_size() for v in sd.values()) / 2**20
    total = sum(v.numel() * v.element_size() for v in sd.values()) / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.safetensors"
        save_file(sd, str(path))
        out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path)], capture_output=True, text=True)
        if out.returncode != 0:
            return {"error": out.stderr.strip().splitlines()[-1]}
        info = json.loads(out.stdout.strip().splitlines()[-1])
    return {"file_mib": total, "largest_tensor_mib": largest, "peak_extra_mib": info["extra_mib"],
            "peak_over_largest": info["extra_mib"] / largest, "layers": info["layers"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny models: check that the script runs")
    ap.add_argument("--models", nargs="+", default=None, help="subset of model names to run")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--no-ww", action="store_true", help="skip WeightWatcher (ours only)")
    ap.add_argument("--repeats", type=int, default=1, help="time each tool this many times, keep the best")
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    from spectralens.analyze import run_analysis

    rate64, rate32 = matmul_rate(torch.float64), matmul_rate(torch.float32)
    print(f"threads={torch.get_num_threads()}  matmul float64 {rate64 / 1e9:.1f} GFLOP/s, "
          f"float32 {rate32 / 1e9:.1f} GFLOP/s")
    models = build_models(args.quick)
    if not args.models and not args.quick:
        models.pop("bert-33m")  # the two models by default
    if not args.no_ww:  # WeightWatcher's first analyze() pays one-time imports/initialisation: not timed
        import weightwatcher as ww

        ww.WeightWatcher(model=torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Linear(32, 16))).analyze()
    results = []
    for name, model in models.items():
        if args.models and name not in args.models:
            continue
        model.eval()
        nparams = sum(p.numel() for p in model.parameters()) / 1e6
        run_analysis({"warm.weight": torch.randn(64, 32)})  # imports
        ww_df, layers = None, None
        if not args.no_ww:
            import weightwatcher as ww

            ww_df, t_ww, m_ww = best_of(args.repeats, lambda: ww.WeightWatcher(model=model).analyze())
            layers = ["^" + n.replace(".", r"\.") + "$" for n in ww_df["longname"]]
            results.append(dict(model=name, tool="weightwatcher", layers=len(ww_df), seconds=t_ww, peak_mib=m_ww))
        runs = [("spectralens (WW's layers)", dict(layers=layers, mp_fit=False), torch.float64),
                ("spectralens (WW's layers, --dtype float32)", dict(layers=layers, mp_fit=False, dtype=torch.float32),
                 torch.float32),
                ("spectralens (all layers, +MP fit)", dict(), torch.float64)]
        for label, kw, dt in runs:
            res, t, m = best_of(args.repeats, lambda: run_analysis(model, **kw))
            df = res.layers
            flops = floor_flops(df[df.status == "ok"])
            floor = flops / (rate64 if dt == torch.float64 else rate32)
            kfloor, eig_share = kernel_floor(model, kw.get("layers"), dt)
            row = dict(model=name, tool=label, layers=len(df), seconds=t, peak_mib=m, floor_s=floor,
                       time_over_floor=t / floor if floor > 0 else float("nan"), kernel_floor_s=kfloor,
                       time_over_kernel_floor=t / kfloor if kfloor > 0 else float("nan"), eig_share=eig_share)
            if ww_df is not None and layers is not None:
                ours = df.set_index("name")
                common = [n for n in ww_df["longname"] if n in ours.index]
                diffs = [abs(float(ours.loc[n, "alpha"]) - float(a)) / abs(float(a))
                         for n, a in zip(ww_df["longname"], ww_df["alpha"]) if n in ours.index]
                row["max_rel_alpha_diff"] = max(diffs) if diffs else float("nan")
                row["n_alpha_diff_gt_1e-3"] = int(sum(d > 1e-3 for d in diffs))
                row["common_layers"] = len(common)
            results.append(row)
        ww_rows = [r for r in results if r["model"] == name and r["tool"] == "weightwatcher"]
        for r in results:
            if r["model"] == name and r["tool"] != "weightwatcher" and ww_rows:
                r["speedup_vs_ww"] = ww_rows[0]["seconds"] / r["seconds"]
        st = safetensors_rss(model, name)
        results.append(dict(model=name, tool="spectralens on .safetensors (subprocess)", **st))
        print(f"\n{name}: {nparams:.1f}M parameters")
        _print(results, name)
        if ww_rows:
            best = min(r.get("kernel_floor_s", float("inf")) for r in results
                       if r["model"] == name and "WW's layers" in str(r["tool"]))
            print(f"  10x WeightWatcher would need {ww_rows[0]['seconds'] / 10:.3f} s; the lowest kernel floor "
                  f"above is {best:.3f} s, so at most {ww_rows[0]['seconds'] / best:.1f}x on this machine")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    return 0


def _print(results, name) -> None:
    cols = [("tool", 42, "{}"), ("layers", 6, "{}"), ("seconds", 8, "{:.2f}"), ("speedup_vs_ww", 8, "{:.1f}x"),
            ("peak_mib", 8, "{:.0f}"), ("floor_s", 7, "{:.2f}"), ("time_over_floor", 7, "{:.1f}"),
            ("kernel_floor_s", 7, "{:.2f}"), ("time_over_kernel_floor", 7, "{:.2f}"), ("eig_share", 5, "{:.2f}"),
            ("max_rel_alpha_diff", 9, "{:.1e}")]
    cols = [(c, max(w, len(c)), fmt) for c, w, fmt in cols]
    print("  ".join(f"{c:>{w}}" if c != "tool" else f"{c:<{w}}" for c, w, _ in cols))
    for r in results:
        if r["model"] != name:
            continue
        if "file_mib" in r or "error" in r:
            if "error" in r:
                print(f"  safetensors RSS check failed: {r['error']}")
            else:
                print(f"  {r['tool']}: file {r['file_mib']:.0f} MiB, largest tensor {r['largest_tensor_mib']:.0f} MiB, "
                      f"peak RSS above baseline {r['peak_extra_mib']:.0f} MiB "
                      f"({r['peak_over_largest']:.2f}x the largest tensor)")
            continue
        cells = []
        for c, w, fmt in cols:
            v = r.get(c)
            s = "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)
            cells.append(f"{s:<{w}}" if c == "tool" else f"{s:>{w}}")
        print("  ".join(cells))


if __name__ == "__main__":
    sys.exit(main())
