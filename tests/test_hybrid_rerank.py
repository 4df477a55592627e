"""Cross-encoder stage: loading (local path, missing model offline), scoring, reranking in search()."""

import random

import numpy as np

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


# -- one rerank policy ("auto") for the CLI, Index.search and Retriever ------------------------------
def _lexical_index(tmp_path):
    import json

    from retrieval import Index

    rng = random.Random(5)
    docs = [{"id": f"d{i}", "text": f"list {topic_passage(rng, ['animals', 'colors', 'tools'][i % 3])}"}
            for i in range(30)]
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return Index.build([src], tmp_path / "idx", dense=False)


def _offline_cache(monkeypatch, tmp_path, default_model=None):
    """An offline Hugging Face cache, empty or holding `default_model` as the default reranker's id
    (the cache layout huggingface_hub reads: models--ORG--NAME/{refs/main, snapshots/REV/})."""
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read at import otherwise
    if default_model is not None:
        import shutil

        repo = cache / ("models--" + DEFAULT_RERANKER.replace("/", "--"))
        shutil.copytree(default_model, repo / "snapshots" / "0123abcd")
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("0123abcd")
    import retrieval.hybrid.rerank as rerank_module

    monkeypatch.setattr(rerank_module, "_told_missing", False)


def test_auto_without_the_default_model_ranks_without_it_and_says_so_once(monkeypatch, tmp_path, capsys):
    from retrieval import Retriever, progress
    from retrieval.hybrid.rerank import resolve_reranker

    _offline_cache(monkeypatch, tmp_path)
    monkeypatch.setattr(progress, "_silent", False)
    index = _lexical_index(tmp_path)
    try:
        r = Retriever(index, k=5)  # the default policy must not raise offline (it used to: ModelError)
        assert r.rerank is False
        hits = index.search("list tools", k=5)
        assert hits and all("rerank" not in h.stages for h in hits)
        err = capsys.readouterr().err
        assert err.count("ranking without a cross-encoder") == 1 and DEFAULT_RERANKER in err
        with pytest.raises(ModelError):  # asked for explicitly: must load
            resolve_reranker(True)
        with pytest.raises(ModelError, match="no such directory"):
            resolve_reranker("auto", reranker=str(tmp_path / "nope"))
        assert resolve_reranker("auto", mode="dense") is None and resolve_reranker(False) is None
    finally:
        index.close()


def test_auto_uses_the_default_model_when_it_is_on_disk_everywhere(monkeypatch, tmp_path, tiny_ce):
    """With the default cross-encoder in the local cache, Index.search, Retriever and `rtv query`
    all rerank hybrid results by default, and agree with an explicit reranker."""
    import json

    from click.testing import CliRunner

    from retrieval import Retriever
    from rtv_cli.main import cli

    _offline_cache(monkeypatch, tmp_path, default_model=tiny_ce)
    index = _lexical_index(tmp_path)
    try:
        explicit = index.search("list tools", k=5, reranker=Reranker(str(tiny_ce), max_length=256))
        by_default = index.search("list tools", k=5)
        retrieved = Retriever(index, k=5).retrieve("list tools")
        out = CliRunner().invoke(cli, ["query", str(index.path), "list tools", "-k", "5", "--json"])
        assert out.exit_code == 0, out.output
        cli_ids = [json.loads(line)["passage_id"] for line in out.stdout.splitlines()]
        assert all("rerank" in h.stages for h in by_default + retrieved)
        want = [h.passage_id for h in explicit]
        assert [h.passage_id for h in by_default] == want == [h.passage_id for h in retrieved] == cli_ids
        assert index.search("list tools", k=5, rerank=False)[0].stages.get("rerank") is None
        with pytest.raises(Exception, match="rerank 'yes'"):
            index.search("list tools", k=5, rerank="yes")
    finally:
        index.close()


def _blas_threads(threadpoolctl) -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


class _BlasRecordingIndex:
    """An index whose dense search records the BLAS thread counts it runs under."""

    def __init__(self, threadpoolctl):
        self.seen, self.n_passages = [], 10
        index = self

        class Dense:
            def search(self, queries, k, allowed=None):
                index.seen.append(_blas_threads(threadpoolctl))
                return np.full((len(queries), 1), 0.5), np.full((len(queries), 1), 3)

        self.dense = Dense()


def test_dense_stage_runs_blas_on_one_thread_and_restores_it():
    """The dense stage's numpy products run on one BLAS thread (OpenBLAS workers otherwise spin
    after it on the cores the cross-encoder needs next); the caller's setting is back afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from retrieval.hybrid import _dense_lists

    before = _blas_threads(threadpoolctl)
    if not before:
        pytest.skip("numpy has no BLAS threadpoolctl can see")
    index = _BlasRecordingIndex(threadpoolctl)
    assert _dense_lists(index, ["q"], 5, None) == [[(3, 0.5)]]
    assert index.seen == [[1] * len(before)] and _blas_threads(threadpoolctl) == before


def test_dense_stage_keeps_blas_threads_for_a_large_batch():
    """A batch larger than ONE_BLAS_THREAD_MAX_QUERIES (FAISS's flat search multiplies it by BLAS)
    keeps the caller's BLAS threads."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from retrieval.hybrid import ONE_BLAS_THREAD_MAX_QUERIES, _dense_lists

    if not _blas_threads(threadpoolctl):
        pytest.skip("numpy has no BLAS threadpoolctl can see")
    n = ONE_BLAS_THREAD_MAX_QUERIES + 1
    index = _BlasRecordingIndex(threadpoolctl)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        two = _blas_threads(threadpoolctl)
        assert len(_dense_lists(index, ["q"] * n, 5, None)) == n
        assert index.seen == [two]
