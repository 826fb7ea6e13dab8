"""In-memory CPU models are analysed one layer per core; files layer by layer. Same rows either way."""
import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from spectralens.analyze import _in_memory_cpu, run_analysis


def _state_dict():
    g = torch.Generator().manual_seed(0)
    sd = {f"blocks.{i}.w.weight": torch.randn(96 + 8 * i, 48, generator=g) for i in range(7)}
    sd["bad.weight"] = torch.randn(40, 20, generator=g)
    sd["bad.weight"][3, 4] = float("nan")
    sd["huge.weight"] = torch.randn(40, 20, generator=g) * 1e20  # float32 Gram overflows
    sd["conv.weight"] = torch.randn(16, 8, 3, 3, generator=g)
    sd["tiny.weight"] = torch.randn(3, 2, generator=g)
    return sd


def test_parallel_and_sequential_paths_agree(tmp_path):
    sd = _state_dict()
    assert _in_memory_cpu(sd) and not _in_memory_cpu(str(tmp_path))
    path = tmp_path / "m.safetensors"
    save_file(sd, str(path))
    for dtype in ("float64", "float32"):
        seen = []
        mem = run_analysis(sd, dtype=dtype, progress=lambda d, t, n: seen.append(d)).layers
        disk = run_analysis(path, dtype=dtype).layers
        assert seen == list(range(1, len(sd) + 1))
        names = [k.removesuffix(".weight") for k in sd]
        assert list(mem["name"]) == names  # model order (a safetensors file stores names sorted)
        pd.testing.assert_frame_equal(mem.sort_values("name").reset_index(drop=True),
                                      disk.sort_values("name").reset_index(drop=True))
        status = mem.set_index("name")["status"]
        assert status["bad"].startswith("non-finite weights")
        assert status["huge"] == "ok" and status["tiny"].startswith("too few")
        assert np.isfinite(mem.set_index("name").loc["blocks.6.w", "alpha"])


def test_parallel_path_leaves_blas_threads_as_they_were():
    threadpoolctl = __import__("pytest").importorskip("threadpoolctl")
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    run_analysis(_state_dict())
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert after[:len(before)] == before


def test_per_core_and_batched_paths_agree_with_refinement_and_esd(monkeypatch):
    """The per-core pool (>= 2 cores) and the batched path (1 core) give the same rows and ESDs,
    also for a float32 layer refined in float64 (a long heavy tail: small xmin / lambda_max)."""
    from spectralens.analyze import lapack

    sd = _state_dict()
    g = torch.Generator().manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(300, 120, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(120, 120, generator=g, dtype=torch.float64))
    s = torch.arange(1, 121, dtype=torch.float64) ** -1.2 * 1e3
    sd["tail.weight"] = ((U * s) @ V.T).float()
    results = {}
    for cores in (2, 1):
        monkeypatch.setattr(lapack, "cpu_count", lambda cores=cores: cores)
        for dtype in ("float64", "float32"):
            results[cores, dtype] = run_analysis(sd, dtype=dtype, keep_esd=True)
    for dtype, eps in (("float64", 1e-12), ("float32", float(np.finfo(np.float32).eps))):
        # numpy's and scipy's syrk sum in different orders: equal to the Gram's rounding
        a, b = results[2, dtype], results[1, dtype]
        pd.testing.assert_frame_equal(a.layers, b.layers)
        assert a.esd.keys() == b.esd.keys()
        for name in a.esd:
            np.testing.assert_allclose(a.esd[name], b.esd[name], rtol=0, atol=eps * a.esd[name].max())
    assert "refined in float64" in results[2, "float32"].layers.set_index("name").loc["tail", "dtype"]


def test_an_error_in_one_layer_propagates_and_leaves_no_worker_threads(monkeypatch):
    import threading

    import pytest

    import spectralens.analyze as analyze_module

    original = analyze_module._layer_gram

    def failing(ref, *args):
        if ref.name == "blocks.3.w":
            raise RuntimeError("disk on fire")
        return original(ref, *args)

    monkeypatch.setattr(analyze_module, "_layer_gram", failing)
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_analysis(_state_dict())
    assert threading.active_count() == before


def test_esds_per_core_starts_largest_first_and_resubmits():
    from spectralens.analyze.per_core import esds_per_core, task_flops

    costs = {0: 1.0, 1: 5.0, 2: 3.0}
    seen = []

    def layer_esd(i, dt):
        seen.append((i, dt))
        return np.array([float(i)]), None

    out = []
    for i, dt, (ev, status), resubmit in esds_per_core(costs, costs.get, layer_esd, torch.float32, workers=1):
        out.append((i, dt))
        if i == 0 and dt == torch.float32:
            resubmit(i, torch.float64)
    assert seen == [(1, torch.float32), (2, torch.float32), (0, torch.float32), (0, torch.float64)]
    assert sorted(out, key=str) == sorted(seen, key=str)  # yielded as they finish, each once
    assert task_flops((30, 10, 1)) == 30 * 100 + 4 / 3 * 1000
    assert task_flops((30, 10, 9)) == 9 * task_flops((30, 10, 1))


def test_byte_budget_bounds_what_is_held_at_once():
    import threading
    import time

    from spectralens.analyze.per_core import ByteBudget

    budget = ByteBudget(100)
    held, peak, lock = [0], [0], threading.Lock()

    def work(n):
        with budget.hold(n):
            with lock:
                held[0] += min(n, 100)
                peak[0] = max(peak[0], held[0])
            time.sleep(0.01)
            with lock:
                held[0] -= min(n, 100)

    threads = [threading.Thread(target=work, args=(n,)) for n in (60, 30, 30, 250, 10, 90)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= 100 and budget.used == 0


def test_file_layers_load_within_the_largest_tensor(tmp_path, monkeypatch):
    """Files go through the per-core pool, but the tensors loaded at once total at most the
    largest selected tensor."""
    import spectralens.analyze as analyze_module
    from spectralens.analyze import lapack

    monkeypatch.setattr(lapack, "cpu_count", lambda: 2)
    sd = _state_dict()
    path = tmp_path / "m.safetensors"
    save_file(sd, str(path))
    budgets = []
    real = analyze_module.ByteBudget

    class Recording(real):
        def __init__(self, capacity):
            super().__init__(capacity)
            self.peak = 0
            budgets.append(self)

        def hold(self, nbytes):
            outer = super().hold(nbytes)
            budget = self

            class _Ctx:
                def __enter__(self):
                    outer.__enter__()
                    budget.peak = max(budget.peak, budget.used)

                def __exit__(self, *exc):
                    return outer.__exit__(*exc)

            return _Ctx()

    monkeypatch.setattr(analyze_module, "ByteBudget", Recording)
    df = run_analysis(path).layers
    largest = max(v.numel() * v.element_size() for k, v in sd.items() if v.shape[-1] * v.shape[0] >= 8)
    assert len(budgets) == 1 and budgets[0].capacity == largest
    assert 0 < budgets[0].peak <= largest
    assert (df["status"] == "ok").sum() >= 8


def test_conv_slices_are_solved_in_the_pool_thread_without_a_nested_pool(monkeypatch):
    """A conv layer's kh*kw eigensolves run in its per-core task, not in a second pool."""
    import concurrent.futures

    from spectralens.analyze import lapack

    monkeypatch.setattr(lapack, "cpu_count", lambda: 2)
    sd = {"conv.weight": torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(3))}
    expected = run_analysis(sd).layers  # the per-core pool

    class NoNestedPool:
        def __init__(self, *args, **kwargs):
            raise AssertionError("nested ThreadPoolExecutor inside the per-core pool")

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", NoNestedPool)
    again = run_analysis(sd).layers
    pd.testing.assert_frame_equal(expected, again)
    assert expected.loc[0, "num_evals"] == 9 * 16 and expected.loc[0, "status"] == "ok"
