"""LRP attributions per second: spectralens.lrp vs Zennit 0.5.1 vs Captum 0.9, in one run.

Every tool explains the same model (same weights, eval mode) for the same batch and
targets; the output relevance is the target logit (``onehot(target) * logits``) in all three.
Rules, applied to every Conv2d and Linear layer (average pooling: epsilon/Norm, max pooling:
winner takes all in ours and Zennit, Captum's epsilon rule on max pooling, ReLU: pass):

* ``epsilon`` (eps = 1e-6): ours ``rule="epsilon"``, Zennit ``Epsilon``, Captum ``EpsilonRule``;
* ``zplus``: ours ``rule="zplus"``, Zennit ``ZPlus``, Captum ``Alpha1_Beta0_Rule``;
* ``alpha2_beta1``: ours ``rule="alpha_beta", alpha=2, beta=1``, Zennit ``AlphaBeta(2, 1)``;
  Captum has no alpha-beta rule with beta > 0 (n/a).

Each call is one-shot, as a user calls it: hooks are registered and removed inside the call
(``lrp.attribute``; Zennit's ``Gradient`` attributor entered per call; Captum's ``LRP.attribute``
registers its own). The row ``zennit (hooks once)`` keeps Zennit's hooks registered for the
whole timing block, its steady state. ``gradient`` is one plain autograd input gradient, the
floor any modified-gradient implementation pays.

Timing: after two untimed warm-up calls per tool, ``--rounds`` rounds; in each round every
tool runs a block of calls lasting ~``--block`` seconds (calls per block calibrated from the
warm-up), tools interleaved so drift hits all alike; reported: the median per-call time over
rounds. attributions/s = batch size / per-call time. ``max rel diff`` = max |ours - peer| /
max |peer| on that batch (a sanity check, not the parity test; Captum differs on max pooling).

Models: ``digits-cnn`` (spectralens.nets.digits_cnn.DigitsCNN, 1 x 8 x 8 input, ~14k
parameters, random weights) and ``cifar-cnn`` (4 conv + 2 linear layers on 3 x 32 x 32,
~1.1M parameters), so both the call-overhead and the compute-bound regime are covered.

    python benchmarks/lrp_throughput.py --quick        # digits-cnn, batches 1 and 8: seconds
    python benchmarks/lrp_throughput.py                # both models, batches 1, 16, 128
    python benchmarks/lrp_throughput.py --json out.json --threads 1
"""
from __future__ import annotations

import argparse
import copy
import importlib.metadata
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from spectralens.nets.digits_cnn import DigitsCNN

EPS = 1e-6
RULES = ("epsilon", "zplus", "alpha2_beta1")


def _import_zennit():
    """zennit via the tests' shim (it stubs torchvision, whose PyPI wheels need a CUDA torch)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from zennit_shim import load_zennit

    return load_zennit()


def cifar_cnn() -> nn.Sequential:
    """VGG-like: 2 x (conv3x3 32) -> maxpool -> 2 x (conv3x3 64) -> avgpool -> linear 256 -> linear 10."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 256), nn.ReLU(), nn.Linear(256, 10))


MODELS = {"digits-cnn": (lambda: DigitsCNN(), (1, 8, 8)), "cifar-cnn": (cifar_cnn, (3, 32, 32))}


# ---------------------------------------------------------------- the three tools, one call each
def ours_fn(model, rule):
    try:
        from spectralens import lrp
    except ImportError:
        return None
    kwargs = {"epsilon": dict(rule="epsilon", epsilon=EPS), "zplus": dict(rule="zplus"),
              "alpha2_beta1": dict(rule="alpha_beta", alpha=2.0, beta=1.0)}[rule]
    return lambda x, t: lrp.attribute(model, x, t, **kwargs)


def zennit_fns(zennit, model, rule):
    """(one-shot call, (enter, call, exit) for the hooks-once variant) or None."""
    if zennit is None:
        return None
    R, T = zennit.rules, zennit.types
    layer_rule = {"epsilon": lambda: R.Epsilon(epsilon=EPS), "zplus": lambda: R.ZPlus(stabilizer=EPS),
                  "alpha2_beta1": lambda: R.AlphaBeta(alpha=2.0, beta=1.0, stabilizer=EPS)}[rule]

    def composite():
        return zennit.composites.LayerMapComposite(layer_map=[
            (T.Activation, R.Pass()), (T.AvgPool, R.Norm(stabilizer=EPS)),
            (T.Convolution, layer_rule()), (nn.Linear, layer_rule())])

    def out_fn(t):
        return lambda out: out * nn.functional.one_hot(t, out.shape[1]).to(out.dtype)

    def one_shot(x, t):
        with zennit.attribution.Gradient(model, composite()) as attributor:
            return attributor(x, out_fn(t))[1]

    class Held:
        def __enter__(self):
            self.ctx = zennit.attribution.Gradient(model, composite())
            self.attributor = self.ctx.__enter__()
            return lambda x, t: self.attributor(x, out_fn(t))[1]

        def __exit__(self, *exc):
            self.ctx.__exit__(*exc)

    return one_shot, Held


class _FlattenInForward(nn.Module):
    """The same layers with ``nn.Flatten`` done in ``forward``: Captum's IdentityRule returns the
    output-shaped relevance from its input hook, which autograd rejects for a shape-changing module."""

    def __init__(self, seq: nn.Sequential):
        super().__init__()
        layers = list(seq.children())
        cut = next(i for i, m in enumerate(layers) if isinstance(m, nn.Flatten))
        self.features, self.classifier = nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut + 1:])

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def captum_fn(model, rule):
    if importlib.util.find_spec("captum") is None or rule == "alpha2_beta1":
        return None
    from captum.attr import LRP
    from captum.attr._utils import lrp_rules as C

    m = _FlattenInForward(copy.deepcopy(model))  # Captum sets ``module.rule``: keep it off the shared model
    make = {"epsilon": lambda: C.EpsilonRule(epsilon=EPS), "zplus": lambda: C.Alpha1_Beta0_Rule()}[rule]
    for layer in m.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            layer.rule = make()
        elif isinstance(layer, (nn.AvgPool2d, nn.MaxPool2d)):
            layer.rule = C.EpsilonRule(epsilon=EPS)
    lrp_captum = LRP(m)
    return lambda x, t: lrp_captum.attribute(x.clone().requires_grad_(True), target=t).detach()


def gradient_fn(model):
    def call(x, t):
        x = x.clone().requires_grad_(True)
        out = model(x)
        (g,) = torch.autograd.grad(out.gather(1, t[:, None]).sum(), x)
        return g
    return call


# ---------------------------------------------------------------- timing
class _Plain:
    def __init__(self, fn):
        self.fn = fn

    def __enter__(self):
        return self.fn

    def __exit__(self, *exc):
        pass


def _time_block(ctx_factory, x, t, n: int) -> float:
    with ctx_factory() as fn:
        t0 = time.perf_counter()
        for _ in range(n):
            fn(x, t)
        return (time.perf_counter() - t0) / n


def bench_case(model, x, t, rule, zennit, rounds: int, block: float) -> list[dict]:
    tools: dict[str, object] = {}
    ours = ours_fn(model, rule)
    if ours is not None:
        tools["ours"] = lambda f=ours: _Plain(f)
    z = zennit_fns(zennit, model, rule)
    if z is not None:
        tools["zennit"] = lambda f=z[0]: _Plain(f)
        tools["zennit (hooks once)"] = z[1]
    cap = captum_fn(model, rule)
    if cap is not None:
        tools["captum"] = lambda f=cap: _Plain(f)
    tools["gradient"] = lambda f=gradient_fn(model): _Plain(f)

    outputs, per_call = {}, {}
    for name, factory in tools.items():  # warm-up, result for the sanity check, calibration
        with factory() as fn:
            outputs[name] = fn(x, t).detach()
            fn(x, t)
        once = _time_block(factory, x, t, 1)
        per_call[name] = (max(1, min(10_000, int(block / max(once, 1e-6)))), [])
    for _ in range(rounds):
        for name, factory in tools.items():
            per_call[name][1].append(_time_block(factory, x, t, per_call[name][0]))

    rows = []
    ref = outputs.get("ours")
    for name in tools:
        sec = statistics.median(per_call[name][1])
        diff = None
        if ref is not None and name in ("zennit", "captum"):
            diff = float((ref - outputs[name]).abs().max() / outputs[name].abs().max().clamp_min(1e-30))
        rows.append({"tool": name, "seconds_per_call": sec, "attributions_per_s": x.shape[0] / sec,
                     "calls_per_block": per_call[name][0], "max_rel_diff_vs_ours": diff})
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="digits-cnn, batches 1 and 8, short blocks: checks it runs")
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=None)
    ap.add_argument("--batches", nargs="+", type=int, default=None, help="batch sizes (default 1 16 128; quick 1 8)")
    ap.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per tool (default 3; quick 2)")
    ap.add_argument("--block", type=float, default=None, help="seconds per timed block (default 0.3; quick 0.05)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args(argv)
    models = a.models or (["digits-cnn"] if a.quick else ["digits-cnn", "cifar-cnn"])
    batches = a.batches or ([1, 8] if a.quick else [1, 16, 128])
    rounds = a.rounds or (2 if a.quick else 3)
    block = a.block or (0.05 if a.quick else 0.3)
    if min(batches) < 1 or rounds < 1 or block <= 0 or a.threads < 1:
        ap.error("batch sizes, --rounds and --threads must be >= 1 and --block > 0")
    torch.set_num_threads(a.threads)
    zennit = _import_zennit()
    try:
        from spectralens import lrp  # noqa: F401
        have_ours = True
    except ImportError as exc:
        have_ours = False
        print(f"spectralens.lrp not importable ({exc}): timing the peers only", file=sys.stderr)

    results = []
    t_start = time.perf_counter()
    for model_name in models:
        make, shape = MODELS[model_name]
        torch.manual_seed(a.seed)
        model = make().eval()
        for p in model.parameters():
            p.requires_grad_(False)
        gen = torch.Generator().manual_seed(a.seed)
        for batch in batches:
            x = torch.rand(batch, *shape, generator=gen)
            t = torch.randint(0, 10, (batch,), generator=gen)
            for rule in a.rules:
                for row in bench_case(model, x, t, rule, zennit, rounds, block):
                    results.append({"model": model_name, "batch": batch, "rule": rule, **row})
    seconds = time.perf_counter() - t_start
    _print_table(results)
    info = {"torch": torch.__version__, "threads": a.threads, "rounds": rounds, "block_s": block,
            "zennit": importlib.metadata.version("zennit") if zennit else None, "ours": have_ours,
            "total_seconds": seconds, "argv": sys.argv[1:] if argv is None else list(argv)}
    print(f"\n{info}")
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump({"info": info, "results": results}, f, indent=1)
    return {"info": info, "results": results}


def _print_table(results: list[dict]) -> None:
    print("| model | batch | rule | ours att/s | zennit att/s | zennit (hooks once) att/s | captum att/s | "
          "gradient att/s | ours / zennit | ours / captum | max rel diff zennit | max rel diff captum |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["model"], r["batch"], r["rule"]) for r in results},
                  key=lambda k: (k[0], k[1], RULES.index(k[2])))
    for key in keys:
        by = {r["tool"]: r for r in results if (r["model"], r["batch"], r["rule"]) == key}
        rate = lambda tool: by[tool]["attributions_per_s"] if tool in by else None
        cell = lambda v: "n/a" if v is None else f"{v:,.0f}"
        ratio = lambda a, b: "n/a" if a is None or b is None else f"{a / b:.2f}x"
        diff = lambda tool: "n/a" if tool not in by or by[tool]["max_rel_diff_vs_ours"] is None \
            else f"{by[tool]['max_rel_diff_vs_ours']:.1e}"
        print(f"| {key[0]} | {key[1]} | {key[2]} | {cell(rate('ours'))} | {cell(rate('zennit'))} | "
              f"{cell(rate('zennit (hooks once)'))} | {cell(rate('captum'))} | {cell(rate('gradient'))} | "
              f"{ratio(rate('ours'), rate('zennit'))} | {ratio(rate('ours'), rate('captum'))} | "
              f"{diff('zennit')} | {diff('captum')} |")


if __name__ == "__main__":
    main()
