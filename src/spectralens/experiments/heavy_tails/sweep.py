"""The learning-rate sweep: for each repeat, optimizer and learning rate, ``steps`` full-batch
steps from the same initialisation, with the metrics of ``metrics.py`` after every step.

Returns plain records (lists of dicts) so results.json is a direct dump.
"""
from __future__ import annotations

import math
import time

import torch

from .metrics import ks_alpha, ridge_refit_test_mse, spectrum, thin_svd, update_overlaps
from .setup import HeavyTailsConfig, Problem, make_problem, train_steps

__all__ = ["run_sweep", "step_metrics"]


def step_metrics(W: torch.Tensor, problem: Problem, cfg: HeavyTailsConfig, init_edge: float, *, ks: bool) -> dict:
    """All scalar metrics of one weight matrix; NaN entries (and ``finite=False``) if W blew up."""
    if not bool(torch.isfinite(W).all()):
        nan = float("nan")
        return {"finite": False, "hill_alpha": nan, "ks_alpha": nan, "lambda_max": nan, "spike_ratio": nan,
                "n_above_init_edge": -1, "beta_alignment": nan, "kta": nan, "test_mse": nan, "probe_mse": nan}
    spec = spectrum(W)
    test, probe, kta = ridge_refit_test_mse(W, problem.X_probe, problem.y_probe, problem.X_test, problem.y_test,
                                            cfg.ridge_lambda)
    return {
        "finite": True,
        "hill_alpha": spec.hill_alpha(),
        "ks_alpha": ks_alpha(spec.evals) if ks else float("nan"),
        "lambda_max": float(spec.evals[-1]),
        "spike_ratio": spec.spike_ratio,
        "n_above_init_edge": spec.n_above(init_edge),
        "beta_alignment": spec.alignment(problem.beta),
        "kta": kta,
        "test_mse": test,
        "probe_mse": probe,
        "_evals": spec.evals,  # dropped before JSON; kept for the ESD figures
    }


def _overlap_record(W_prev: torch.Tensor, W_next: torch.Tensor, k: int, svd_prev) -> tuple[dict, tuple]:
    """Overlaps of M = W_next - W_prev with W_prev and W_next; returns W_next's SVD for reuse."""
    M = W_next - W_prev
    svd_prev = svd_prev if svd_prev is not None else thin_svd(W_prev)
    svd_next, svd_m = thin_svd(W_next), thin_svd(M)
    before = update_overlaps(W_prev, M, k, svd_w=svd_prev, svd_m=svd_m)
    after = update_overlaps(W_next, M, k, svd_w=svd_next, svd_m=svd_m)
    s = after.m_singular_values.double()
    rec = {
        "m_top_singular_values": s[:k].tolist(),
        "m_stable_rank": float(s.square().sum() / s[0].square()) if s[0] > 0 else float("nan"),
        "overlap_v1W_prev_v1M": before.top_right(),
        "overlap_v1W_next_v1M": after.top_right(),
        "max_overlap_topk_W_prev_v1M": before.max_right_for_m1(),
        "_right_prev": before.right, "_right_next": after.right,
        "_left_prev": before.left, "_left_next": after.left,
    }
    return rec, svd_next


def run_sweep(cfg: HeavyTailsConfig, seed: int, *, log=print) -> dict:
    """{"runs": [...], "overlaps": {...}, "seconds": float}.

    Each run: {"repeat", "seed", "optimizer", "lr", "steps": [metrics at 0 and each of cfg.metric_steps]}.
    Overlaps only for ``cfg.featured`` runs of repeat 0 (two SVDs per step).
    """
    t0 = time.time()
    runs, overlaps = [], {}
    ks_available = not math.isnan(ks_alpha(torch.linspace(1.0, 100.0, 64, dtype=torch.float64)))
    for rep in range(cfg.repeats):
        problem = make_problem(cfg, seed + rep)
        W0 = problem.init_state["first.weight"]
        init = step_metrics(W0, problem, cfg, init_edge=float("inf"), ks=ks_available)
        edge = init["lambda_max"]
        for opt in cfg.optimizers:
            for lr in cfg.lrs:
                featured = rep == 0 and (opt, float(lr)) in {(o, float(l)) for o, l in cfg.featured}
                steps, ov, prev, svd_prev = [dict(init, step=0)], [], None, None
                for step, W in train_steps(cfg, problem, opt, lr):
                    if step > 0 and step in cfg.metric_steps:
                        steps.append(dict(step_metrics(W, problem, cfg, edge, ks=ks_available), step=step))
                    if step > 0 and featured and bool(torch.isfinite(W).all()):
                        rec, svd_prev = _overlap_record(prev, W, cfg.overlap_k, svd_prev)
                        ov.append(dict(rec, step=step - 1))
                    prev = W
                runs.append({"repeat": rep, "seed": seed + rep, "optimizer": opt, "lr": float(lr), "steps": steps})
                if featured:
                    overlaps[f"{opt}_lr{lr:g}"] = ov
                last = steps[-1]
                log(f"[heavy-tails] rep {rep} {opt:4s} lr {lr:<7g} hill {last['hill_alpha']:.2f} "
                    f"spike {last['spike_ratio']:.1f} |<v1,b>| {last['beta_alignment']:.2f} "
                    f"test {last['test_mse']:.4f} ({time.time() - t0:.0f}s)")
    return {"runs": runs, "overlaps": overlaps, "ks_available": ks_available, "seconds": time.time() - t0}
