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
