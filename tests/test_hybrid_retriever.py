"""End to end on a real Index (FM-index + FTS5 + dense with the shipped MiniLM model): hybrid
fusion against ranx over the stages' own lists, exact phrases outranking paraphrases, the
Retriever API, and the LangChain / LlamaIndex adapters against the real packages."""

import json

import pytest

from _hybrid_fixtures import train_tiny_cross_encoder
from retrieval.errors import InputError

DOCS = [
    ("cats", "The domestic cat is a small carnivorous mammal that people keep as a pet."),
    ("dogs", "Dogs were the first species to be domesticated and are kept as companions."),
    ("paraphrase", "A backup copy of the database is written to disk every night by the scheduler."),
    ("exact", "Nightly the cron job runs: write database backup to disk, then rotate the old logs."),
    ("rivers", "The Nile and the Amazon are the two longest rivers on Earth."),
    ("code", "Set ERR_CONN_RESET_42 when the peer closes the socket before the handshake ends."),
    ("sql", "SQLite stores a whole database in a single file on disk."),
    ("ocean", "The Pacific is the largest and deepest of the Earth's oceans."),
]


@pytest.fixture(scope="module")
def index_path(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("faiss")
    from retrieval import Index

    tmp = tmp_path_factory.mktemp("hyb")
    src = tmp / "c.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": t, "topic": i}) + "\n" for i, t in DOCS))
    Index.build([src], tmp / "idx", id_field="id", dense=True, recipe="flat").close()
    return tmp / "idx"


@pytest.fixture(scope="module")
def retriever(index_path):
    from retrieval import Retriever

    r = Retriever(index_path, mode="hybrid", k=5, rerank=False)
    yield r
    r.close()


def test_hybrid_is_rrf_of_the_stages(retriever):
    """The hybrid ranking equals ranx's RRF (k=60) over the dense, lexical and exact lists that
    the single-stage modes return for the same query."""
    from ranx import Run, fuse

    from retrieval.hybrid import search
    from retrieval.hybrid.lexical import exact_candidates, parse_query

    q = "pet animals kept at home"
    idx = retriever.index
    runs = []
    for mode in ("dense", "lexical"):
        hits = search(idx, [q], mode=mode, k=100)[0]
        runs.append(Run({"q": {str(h.passage_id): h.score for h in hits}}, name=mode))
    ex = exact_candidates(idx, parse_query(q), k=100)  # the rare terms' exact matches (hybrid's third list)
    if ex.ranked:
        runs.append(Run({"q": {str(p): s for p, s in ex.ranked}}, name="exact"))
    expected = fuse(runs, method="rrf", params={"k": 60})["q"]
    hits = search(idx, [q], mode="hybrid", k=100)[0]
    assert {h.passage_id for h in hits} == {int(p) for p in expected}
    for h in hits:
        assert h.score == pytest.approx(expected[str(h.passage_id)])
        assert h.stages["fused"]["score"] == pytest.approx(h.score)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].ext_id == "cats" or hits[0].ext_id == "dogs"
    assert {"dense", "lexical"} <= set(hits[0].stages)


def test_exact_phrase_outranks_paraphrase(retriever):
    plain = retriever.retrieve("database backup written to disk nightly")
    assert {plain[0].ext_id, plain[1].ext_id} == {"paraphrase", "exact"}
    hits = retriever.retrieve('"write database backup to disk" nightly')
    assert hits[0].ext_id == "exact"
    assert "exact" in hits[0].stages
    data = hits[0].text.encode()
    assert [data[s:e] for s, e in hits[0].spans] == [b"write database backup to disk"]


def test_rare_identifier_found_exactly(retriever):
    hits = retriever.retrieve("what does ERR_CONN_RESET_42 mean")
    assert hits[0].ext_id == "code"
    assert "exact" in hits[0].stages


def test_retriever_hits_and_batch(retriever):
    qs = ["longest river", "largest ocean", "single file database"]
    many = retriever.batch(qs)
    assert [h[0].ext_id for h in many] == ["rivers", "ocean", "sql"]
    for q, hits in zip(qs, many):
        one = retriever.retrieve(q)
        assert [(h.passage_id, h.score) for h in one] == [(h.passage_id, h.score) for h in hits]
        assert len(hits) == 5
        for h in hits:
            assert h.metadata["topic"] == h.ext_id
            assert h.text == dict(DOCS)[h.ext_id][h.start:h.end]
    assert len(retriever.retrieve("river", k=2)) == 2
    assert retriever("longest river")[0].ext_id == "rivers"


def test_retriever_errors(index_path, retriever):
    from retrieval import Retriever

    with pytest.raises(InputError, match="mode"):
        Retriever(index_path, mode="nope", rerank=False)
    with pytest.raises(InputError, match="k "):
        Retriever(index_path, k=0, rerank=False)
    with pytest.raises(InputError, match="list of queries"):
        retriever.batch("one string")
    with pytest.raises(InputError, match="empty query"):
        retriever.retrieve("   ")


def test_retriever_with_reranker(index_path, tmp_path):
    """rerank=True loads the cross-encoder once and every returned hit carries its rerank stage."""
    from retrieval import Retriever

    ce = train_tiny_cross_encoder(tmp_path / "ce", steps=30)
    with Retriever(index_path, k=4, rerank=True, reranker=str(ce), rerank_top_n=6) as r:
        assert r.rerank
        hits = r.retrieve("longest river")
        assert len(hits) == 4
        assert [h.stages["rerank"]["rank"] for h in hits] == [1, 2, 3, 4]
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_langchain_adapter(retriever):
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from retrieval.integrations.langchain import RtvRetriever

    lc = RtvRetriever(retriever=retriever, k=3)
    assert isinstance(lc, BaseRetriever)
    docs = lc.invoke("largest ocean")
    hits = retriever.retrieve("largest ocean", k=3)
    assert len(docs) == 3 and all(isinstance(d, Document) for d in docs)
    assert [d.page_content for d in docs] == [h.text for h in hits]
    assert [d.metadata["passage_id"] for d in docs] == [h.passage_id for h in hits]
    assert docs[0].metadata["document"] == {"topic": "ocean"}
    assert docs[0].metadata["score"] == pytest.approx(hits[0].score)
    assert [d.id for d in lc.batch(["longest river"])[0]] == [str(h.passage_id) for h in
                                                               retriever.retrieve("longest river", k=3)]


def test_langchain_from_path(index_path):
    from retrieval.integrations.langchain import RtvRetriever

    lc = RtvRetriever.from_path(index_path, k=2, rerank=False)
    docs = lc.invoke("single file database")
    assert docs[0].metadata["ext_id"] == "sql" and len(docs) == 2
    lc.retriever.close()


def test_llamaindex_adapter(retriever, index_path):
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle

    from retrieval.integrations.llamaindex import RtvRetriever

    li = RtvRetriever(retriever, k=3)
    assert isinstance(li, BaseRetriever)
    nodes = li.retrieve("longest river")
    hits = retriever.retrieve("longest river", k=3)
    assert all(isinstance(n, NodeWithScore) for n in nodes)
    assert [n.node.get_content() for n in nodes] == [h.text for h in hits]
    assert [n.score for n in nodes] == pytest.approx([h.score for h in hits])
    assert nodes[0].node.node_id == f"rtv-{hits[0].passage_id}"
    assert nodes[0].node.metadata["document"] == {"topic": "rivers"}
    assert li.retrieve(QueryBundle("largest ocean"))[0].node.metadata["ext_id"] == "ocean"
    other = RtvRetriever.from_path(index_path, k=1, rerank=False)
    assert len(other.retrieve("largest ocean")) == 1
