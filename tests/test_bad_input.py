"""Bad input gives a status or a clear one-line error, never a crash deep inside."""
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from spectralens.analyze import run_analysis
from spectralens.cli import main
from spectralens.models import SourceError, SourceNotFound


def _status(sd, **kw):
    df = run_analysis(sd, **kw).layers.set_index("name")
    return {n: s for n, s in df["status"].items()}, df


def test_nan_and_inf_weights_get_a_status_row():
    W = torch.randn(30, 20)
    W[3, 4] = float("nan")
    V = torch.randn(30, 20)
    V[0, 0] = float("inf")
    st, df = _status({"a.weight": W, "b.weight": V, "c.weight": torch.randn(30, 20)})
    assert st["a"] == "non-finite weights: 1 NaN/Inf entries"
    assert st["b"] == "non-finite weights: 1 NaN/Inf entries"
    assert st["c"] == "ok"
    assert df.loc["a", "alpha"] != df.loc["a", "alpha"]  # NaN


def test_zero_rank1_and_tiny_matrices():
    u, v = torch.randn(40, 1), torch.randn(1, 25)
    st, _ = _status({"zero.weight": torch.zeros(40, 25), "r1.weight": u @ v, "tiny.weight": torch.randn(5, 3),
                     "ok.weight": torch.randn(40, 25)})
    assert st["zero"] == "zero matrix"
    assert st["r1"].startswith("rank-1")
    assert st["tiny"].startswith("too few eigenvalues (3 < min_evals=8)")
    assert st["ok"] == "ok"


def test_integer_and_quantised_dtypes_are_skipped_with_reason(tmp_path):
    sd = {"q.weight": torch.randint(-128, 127, (32, 16), dtype=torch.int8),
          "u.weight": torch.randint(0, 255, (32, 16), dtype=torch.uint8),
          "h.weight": torch.randn(32, 16).half(), "b.weight": torch.randn(32, 16).bfloat16()}
    if hasattr(torch, "float8_e4m3fn"):
        sd["f8.weight"] = torch.randn(32, 16).to(torch.float8_e4m3fn)
    save_file(sd, str(tmp_path / "q.safetensors"))
    st, _ = _status(tmp_path / "q.safetensors")
    assert st["q"] == "skipped: integer/quantised dtype int8"
    assert st["u"] == "skipped: integer/quantised dtype uint8"
    assert st["h"] == "ok" and st["b"] == "ok"  # half precision is upcast chunk by chunk
    if "f8" in st:
        assert st["f8"].startswith("skipped: quantised dtype float8_e4m3fn")


def test_corrupt_safetensors_one_line_error_naming_the_file(tmp_path):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(SourceError) as err:
        run_analysis(bad)
    msg = str(err.value)
    assert str(bad) in msg and "\n" not in msg


def test_truncated_safetensors_one_line_error(tmp_path):
    good = tmp_path / "good.safetensors"
    save_file({"w.weight": torch.randn(64, 64)}, str(good))
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError) as err:
        run_analysis(cut)
    assert str(cut) in str(err.value) and "\n" not in str(err.value)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"w.weight": torch.randn(4, 4), "x": _Evil()}, fh)
    with pytest.raises(SourceError, match="refused"):
        run_analysis(path)
    torch.save({"w.weight": torch.randn(4, 4), "x": _Evil()}, tmp_path / "evil2.pt")
    with pytest.raises(SourceError, match="refused"):
        run_analysis(tmp_path / "evil2.pt")


def test_missing_path_raises_and_cli_exits_2(tmp_path, capsys):
    with pytest.raises(SourceNotFound):
        run_analysis(tmp_path / "nope.safetensors")
    assert main(["analyze", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no such file or folder" in err and "nope.safetensors" in err


def test_cli_corrupt_file_exits_1_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    assert main(["analyze", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.safetensors" in err


def test_empty_folder_and_unknown_object(tmp_path):
    with pytest.raises(SourceError, match="no \\*.safetensors"):
        run_analysis(tmp_path)
    with pytest.raises(SourceError, match="cannot analyse"):
        run_analysis(12345)


def test_invalid_options_raise_value_error():
    sd = {"w.weight": torch.randn(20, 10)}
    for kw in (dict(fit="mle"), dict(fix_fingers="yes"), dict(conv="fft"), dict(dtype="float16"),
               dict(types=["dense"])):
        with pytest.raises(ValueError):
            run_analysis(sd, **kw)
