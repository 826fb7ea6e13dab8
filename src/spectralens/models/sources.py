"""Where weights come from: a model, a state dict, or files, read lazily tensor by tensor.

``open_source(source)`` returns a ``WeightSource`` listing ``TensorRef`` s (name, shape, dtype,
layer type) without reading any tensor data; ``ref.load()`` reads one tensor. Accepted:

* ``nn.Module``: every >= 2-D parameter, named by its module path (``h.0.attn.c_attn``);
  the layer type comes from the module class.
* a state dict (``Mapping[str, Tensor]``): keys without the trailing ``.weight``.
* ``*.safetensors``: opened with ``safetensors.safe_open``; shapes and dtypes come from the
  header, each tensor is read only when analysed, so peak memory follows the largest tensor.
* a folder: ``model.safetensors.index.json`` (sharded Hugging Face checkpoint), else every
  ``*.safetensors`` in it, else ``pytorch_model.bin.index.json`` / ``*.bin`` / ``*.pt``.
* ``*.pt`` / ``*.pth`` / ``*.bin`` / ``*.ckpt``: ``torch.load(weights_only=True, mmap=True)``;
  a pickle that needs code to load is refused. A Lightning-style ``{"state_dict": ...}`` or
  ``{"model": ...}`` wrapper is unwrapped.

Errors about the source itself (missing path, corrupt file, refused pickle) raise
``SourceError`` (``SourceNotFound`` for a missing path) with a one-line message naming the file.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .layers import infer_layer_type, is_matrix_candidate, module_layer_type

__all__ = ["SourceError", "SourceNotFound", "TensorRef", "WeightSource", "open_source"]

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        _ST_DTYPES[_name] = getattr(torch, _attr)


class SourceError(Exception):
    """The source cannot be read (corrupt or truncated file, refused pickle, unknown format)."""


class SourceNotFound(SourceError, FileNotFoundError):
    """The path does not exist."""


@dataclass(frozen=True)
class TensorRef:
    """One matrix-candidate tensor, not yet loaded.

    ``tie`` identifies the storage for in-memory tensors (tied weights such as GPT-2's LM head
    and token embedding share it), so their spectrum is computed once.
    """

    name: str
    key: str
    shape: tuple[int, ...]
    dtype: Any  # torch.dtype, or a str for a dtype torch does not know
    layer_type: str
    load: Callable[[], torch.Tensor] = field(repr=False, compare=False)
    file: str | None = None
    tie: Any = None

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= int(s)
        return n


@dataclass
class WeightSource:
    """The tensors of a source and a ``close()`` for open file handles (also a context manager)."""

    refs: list[TensorRef]
    description: str
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for c in self._closers:
            c()
        self._closers.clear()

    def __enter__(self) -> "WeightSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _layer_name(key: str) -> str:
    return key[: -len(".weight")] if key.endswith(".weight") else key


def _from_module(model: torch.nn.Module) -> WeightSource:
    refs = []
    for path, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p is None or p.dim() < 2:
                continue
            key = f"{path}.{pname}" if path else pname
            if not is_matrix_candidate(key, tuple(p.shape)):
                continue
            name = path if (pname == "weight" and path) else key
            t = p.detach()
            refs.append(TensorRef(name, key, tuple(t.shape), t.dtype, module_layer_type(module, pname, t.dim()),
                                  load=(lambda t=t: t), tie=(t.untyped_storage().data_ptr(), t.storage_offset(),
                                                             tuple(t.shape), tuple(t.stride()))))
    return WeightSource(refs, f"{type(model).__name__} (nn.Module)")


def _from_state_dict(sd: Mapping[str, Any], description: str, file: str | None = None) -> WeightSource:
    refs = []
    for key, t in sd.items():
        if not isinstance(t, torch.Tensor) or not is_matrix_candidate(str(key), tuple(t.shape)):
            continue
        t = t.detach()
        tie = None
        if t.device.type != "meta":
            tie = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        refs.append(TensorRef(_layer_name(str(key)), str(key), tuple(t.shape), t.dtype,
                              infer_layer_type(str(key), tuple(t.shape)), load=(lambda t=t: t), file=file, tie=tie))
    return WeightSource(refs, description)


def _open_safetensors(path: Path) -> tuple[list[TensorRef], Callable[[], None]]:
    from safetensors import safe_open

    size = path.stat().st_size
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metas = []
            for key in handle.keys():
                sl = handle.get_slice(key)
                metas.append((key, tuple(int(s) for s in sl.get_shape()), sl.get_dtype()))
    except Exception as exc:  # SafetensorError, OSError, ... -> one line naming the file
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"{path}: not a readable safetensors file ({size} bytes): {msg}") from None

    def load(key: str) -> torch.Tensor:
        # A fresh handle per tensor: safe_open memory-maps the file, and pages read through a
        # handle that stays open stay resident (RSS grows by every tensor read). Closing it after
        # each tensor keeps peak memory at about one tensor.
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                return handle.get_tensor(key)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceError(f"{path}: cannot read tensor {key!r}: {msg}") from None

    refs = []
    for key, shape, dt in metas:
        if not is_matrix_candidate(key, shape):
            continue
        refs.append(TensorRef(_layer_name(key), key, shape, _ST_DTYPES.get(dt, dt), infer_layer_type(key, shape),
                              load=(lambda key=key: load(key)), file=str(path)))
    return refs, (lambda: None)


def _load_pickle(path: Path) -> Mapping[str, Any]:
    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # not a zip archive (legacy format) -> no mmap
            if "mmap" not in str(exc) and "zip" not in str(exc).lower():
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise SourceError(
            f"{path}: refused to load: the pickle needs code or objects beyond plain tensors "
            f"(torch.load(weights_only=True) failed: {first[:200]}). Convert it to safetensors "
            f"or a plain state dict.") from None
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"{path}: not a readable PyTorch checkpoint: {msg[:300]}") from None
    if isinstance(obj, torch.nn.Module):  # pragma: no cover - weights_only never returns one
        return obj.state_dict()
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", "model_state_dict", "module"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        return obj
    raise SourceError(f"{path}: checkpoint holds a {type(obj).__name__}, not a state dict")


def natural_key(name: str) -> list:
    """Sort key that orders 'h.2' before 'h.10' (safetensors headers list keys alphabetically)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _from_files(files: list[Path], description: str) -> WeightSource:
    refs: list[TensorRef] = []
    closers = []
    for f in files:
        if f.suffix == ".safetensors" or f.suffix not in _PICKLE_SUFFIXES:
            r, c = _open_safetensors(f)
            refs += r
            closers.append(c)
        else:
            refs += _from_state_dict(_load_pickle(f), str(f), file=str(f)).refs
    if any(f.suffix not in _PICKLE_SUFFIXES for f in files):
        refs.sort(key=lambda r: natural_key(r.key))  # file order is alphabetical, not model order
    return WeightSource(refs, description, closers)


def _folder_files(folder: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except Exception as exc:
                raise SourceError(f"{index}: not a valid index file: {exc}") from None
            names = list(dict.fromkeys(weight_map.values()))  # shard order as first referenced
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise SourceError(f"{index}: shard file(s) missing: {', '.join(missing[:3])}")
            return [folder / n for n in names]
    st = sorted(folder.glob("*.safetensors"))
    if st:
        return st
    pk = sorted(p for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES and p.is_file())
    if pk:
        return pk
    raise SourceError(f"{folder}: no *.safetensors, *.bin, *.pt or index file found in this folder")


def open_source(source: Any) -> WeightSource:
    """A ``WeightSource`` for a model, state dict, file or folder (see the module docstring)."""
    if isinstance(source, WeightSource):
        return source
    if isinstance(source, torch.nn.Module):
        return _from_module(source)
    if isinstance(source, Mapping):
        return _from_state_dict(source, "state dict")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        if not path.exists():
            raise SourceNotFound(f"{path}: no such file or folder")
        if path.is_dir():
            return _from_files(_folder_files(path), str(path))
        if path.suffix == ".safetensors":
            return _from_files([path], str(path))
        if path.suffix in _PICKLE_SUFFIXES:
            return _from_files([path], str(path))
        # unknown suffix: sniff the content
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head[:2] == b"PK" or head[:1] == b"\x80":
            return _from_files([path], str(path))
        return _from_files([path], str(path))
    raise SourceError(f"cannot analyse a {type(source).__name__}: expected an nn.Module, a state dict, "
                      f"or a path to a .safetensors/.pt/.bin file or a model folder")


def iter_loaded(source: WeightSource) -> Iterator[tuple[TensorRef, torch.Tensor]]:
    """(ref, tensor) pairs in order, loading one tensor at a time."""
    for ref in source.refs:
        yield ref, ref.load()
