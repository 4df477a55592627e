"""Cross-encoder stage: loading (local path, missing model offline), scoring, reranking in search()."""

import random

import pytest

from _hybrid_fixtures import TOPICS, topic_passage, train_tiny_cross_encoder
from retrieval.errors import ModelError
from retrieval.hybrid.rerank import DEFAULT_RERANKER, Reranker, get_reranker, resolve_model


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory):
    return train_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


def test_tiny_cross_encoder_scores_topics(tiny_ce):
    rr = Reranker(str(tiny_ce), batch_size=4, max_length=64)
    rng = random.Random(1)
    for topic in TOPICS:
        pos = [topic_passage(rng, topic) for _ in range(5)]
        neg = [topic_passage(rng, t) for t in TOPICS if t != topic for _ in range(5)]
        s = rr.score(topic, pos + neg)
        assert s.shape == (15,)
        assert s[:5].min() > s[5:].max()  # every relevant passage above every other one


def test_missing_model_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(ModelError) as err:
        get_reranker(None)
    msg = str(err.value)
    assert DEFAULT_RERANKER in msg and "--reranker" in msg and "--no-rerank" in msg
    with pytest.raises(ModelError, match="no such directory"):
        resolve_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_bad_top_n():
    from retrieval.errors import InputError

    with pytest.raises(InputError):
        Reranker(object(), top_n=0)


def test_rerank_reorders_fused_candidates(tiny_ce, tmp_path):
    """Real Index (exact + FTS, no dense part): lexical finds passages by the word 'list'; the
    cross-encoder moves the 'tools' passages to the top for the query 'tools'."""
    from retrieval import Index
    from retrieval.hybrid import search

    rng = random.Random(3)
    docs = []
    for i in range(30):
        topic = ["animals", "colors", "tools"][i % 3]
        docs.append({"id": f"d{i}", "text": f"list {topic_passage(rng, topic)}", "topic": topic})
    src = tmp_path / "c.jsonl"
    import json

    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    index = Index.build([src], tmp_path / "idx", id_field="id", dense=False)
    try:
        base = search(index, ["list tools"], mode="lexical", k=30)[0]
        hits = search(index, ["list tools"], mode="lexical", k=10, rerank=True,
                      reranker=Reranker(str(tiny_ce), max_length=64, top_n=30))[0]
        assert len(hits) == 10
        assert all(h.metadata["topic"] == "tools" for h in hits[:10])
        assert [h.stages["rerank"]["rank"] for h in hits] == list(range(1, 11))
        assert all("lexical" in h.stages for h in hits)
        assert hits[0].score >= hits[-1].score
        assert {h.passage_id for h in base} >= {h.passage_id for h in hits}
    finally:
        index.close()
