"""Lexical stage: FTS5 BM25 against bm25s, query escaping, exact phrase / rare-term candidates.

The exact stage is checked with a naive substring-scan stand-in for the FM-index (same
find/count/store interface); the end-to-end tests in test_hybrid_retriever.py use the real one.
"""

import random
import re

import numpy as np
import pytest

from retrieval.hybrid.lexical import (STOPWORDS, bm25, exact_candidates, fts_query, map_occurrences, parse_query,
                                      spans_in_text)
from retrieval.store import Store

WORDS = "red blue green fox cat dog sun moon tree rock lake bird fish wind rain snow star".split()


def make_store(path, docs, passage_bytes=None):
    """docs: list of texts; each doc is one passage, or split every `passage_bytes` bytes."""
    store = Store(path, create=True)
    store.add_documents([{"id": i, "ext_id": f"d{i}", "source": "mem", "length": len(t.encode()),
                          "metadata": {"n": i}} for i, t in enumerate(docs)])
    rows, texts = [], []
    for i, t in enumerate(docs):
        data = t.encode()
        step = passage_bytes or max(1, len(data))
        for s in range(0, len(data), step):
            rows.append((i, s, min(len(data), s + step)))
            texts.append(data[s:s + step].decode())
    store.add_passages(rows, texts)
    store.finish()
    return store


class NaiveIndex:
    """The FM-index interface (find/count/n_documents/store) by scanning bytes."""

    def __init__(self, docs, store):
        self.docs = [d.encode() for d in docs]
        self.store = store
        self.n_documents = len(docs)

    def _occ(self, pattern):
        pat = pattern.encode() if isinstance(pattern, str) else pattern
        for d, data in enumerate(self.docs):
            i = data.find(pat)
            while i >= 0:
                yield d, i
                i = data.find(pat, i + 1)

    def count(self, pattern):
        return sum(1 for _ in self._occ(pattern))

    def find(self, pattern, offset=0, limit=100):
        occ = list(self._occ(pattern))[offset:offset + limit]
        return (np.array([d for d, _ in occ], dtype=np.int64), np.array([o for _, o in occ], dtype=np.int64))


@pytest.fixture
def corpus(tmp_path):
    rng = random.Random(7)
    docs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(200)]
    return docs, make_store(tmp_path / "meta.sqlite", docs)


@pytest.mark.parametrize("query", ["fox", "red fox", "moon star lake", "snow bird fish wind"])
def test_bm25_matches_bm25s(corpus, query):
    import bm25s

    docs, store = corpus
    retriever = bm25s.BM25(method="robertson", k1=1.2, b=0.75)
    retriever.index(bm25s.tokenize(docs, stopwords=None, show_progress=False), show_progress=False)
    ref = retriever.get_scores(query.split())
    ours = dict(bm25(store, query, k=1000))
    matching = {i for i, d in enumerate(docs) if set(d.split()) & set(query.split())}
    assert set(ours) == matching
    for pid, score in ours.items():
        assert score == pytest.approx(float(ref[pid]), rel=1e-4, abs=1e-5)
    top = [p for p, _ in bm25(store, query, k=5)]
    assert top == sorted(top, key=lambda p: -ours[p])[:5]


def _bm25s_scores(docs, terms):
    import bm25s

    retriever = bm25s.BM25(method="robertson", k1=1.2, b=0.75)
    retriever.index(bm25s.tokenize(docs, stopwords=None, show_progress=False), show_progress=False)
    terms = [t for t in dict.fromkeys(terms) if t in retriever.vocab_dict]
    if not terms:
        return {}
    ref = retriever.get_scores(terms)
    return {i: float(ref[i]) for i, d in enumerate(docs) if set(d.split()) & set(terms)}


@pytest.mark.parametrize("query", ['"', 'NEAR(a b)', 'fox AND OR NOT', 'col:fox', '*', 'a"b"c', "(((", "fox^2 -cat",
                                   "'; drop table passages; --", "\u00e9t\u00e9 \u6771\u4eac", "!!!", "fox_cat",
                                   'NEAR(moon star)', '"red" "', 'lake* OR', "(((tree", "\u00e9t\u00e9 rock",
                                   'rain" AND "snow', "the and of", "-- bird --"])
def test_fts_query_is_always_safe(corpus, query):
    """Any text is searched as plain words: never an FTS5 syntax error, and the result is BM25 over
    the query's letter/digit runs (stop words left out unless nothing else), as bm25s scores them."""
    docs, store = corpus
    ours = dict(bm25(store, query, k=1000))
    words = [w.lower() for w in re.findall(r"[^\W_]+", query)]
    content = [w for w in words if w not in STOPWORDS]
    ref = _bm25s_scores(docs, content or words)
    assert set(ours) == set(ref)
    for pid, score in ours.items():
        assert score == pytest.approx(ref[pid], rel=1e-4, abs=1e-5)


def test_fts_query_shape():
    assert fts_query('red "big fox" x') == '"big fox" OR "red" OR "x" OR "big" OR "fox"'
    assert fts_query("!!!") == ""
    assert fts_query('say "hi"') == '"say" OR "hi"'


def test_parse_query():
    q = parse_query('find "exact phrase here" and ERR_CONN_RESET, please')
    assert q.phrases == ["exact phrase here"]
    assert q.terms == ["find", "and", "ERR_CONN_RESET", "please"]


def test_map_occurrences_overlapping_passages(tmp_path):
    store = Store(tmp_path / "m.sqlite", create=True)
    store.add_documents([{"id": 0, "ext_id": "a", "source": "m", "length": 20, "metadata": {}}])
    store.add_passages([(0, 0, 10), (0, 5, 15), (0, 10, 20)])
    got = map_occurrences(store, [0, 0], [6, 12], 3)  # "ghi" in 0 and 1; "mno" in 1 and 2
    assert got == {0: [(6, 9)], 1: [(1, 4), (7, 10)], 2: [(2, 5)]}


def test_exact_phrase_candidates_and_spans(tmp_path):
    docs = ["the quick brown fox jumps", "a fast brown fox leaps", "quick brown foxes everywhere, quick brown fox"]
    store = make_store(tmp_path / "m.sqlite", docs)
    idx = NaiveIndex(docs, store)
    ex = exact_candidates(idx, 'jumping "quick brown fox"')
    # doc 1 has "brown fox" but not the phrase; "jumping" occurs nowhere. Doc 2 holds the phrase
    # twice, doc 0 once: one phrase each, and the repeat bonus puts doc 2 first.
    assert [p for p, _ in ex.ranked] == [2, 0]
    assert ex.ranked[0][1] > ex.ranked[1][1] >= 2.0
    assert ex.phrases_matched == {0: 1, 2: 1}
    assert ex.spans[0] == [(4, 19)]
    assert ex.spans[2] == [(0, 15), (30, 45)]
    for pid, spans in ex.spans.items():
        data = docs[pid].encode()
        assert all(data[s:e] == b"quick brown fox" for s, e in spans)


def test_rare_terms_found_exactly(tmp_path):
    docs = ["error ERR_CONN_RESET seen in log", "error again", "the error is common", "x error y"]
    store = make_store(tmp_path / "m.sqlite", docs)
    ex = exact_candidates(NaiveIndex(docs, store), "why ERR_CONN_RESET error", rare_max=2)
    assert [p for p, _ in ex.ranked] == [0]  # "error" occurs 4 times: not rare
    assert ex.spans[0] == [(6, 20)]


def test_whole_query_mode(tmp_path):
    docs = ["alpha beta gamma", "beta gamma alpha"]
    store = make_store(tmp_path / "m.sqlite", docs)
    ex = exact_candidates(NaiveIndex(docs, store), "gamma alpha", whole_query=True)
    assert [p for p, _ in ex.ranked] == [1]


def test_spans_in_text_non_ascii():
    text = "caf\u00e9 au lait, caf\u00e9"
    assert spans_in_text(text, ["caf\u00e9"]) == [(0, 5), (15, 20)]


def test_fts_query_drops_stopwords_unless_nothing_else():
    assert fts_query("the fox and the dog") == '"fox" OR "dog"'
    assert fts_query("to be or not to be") == '"to" OR "be" OR "or" OR "not"'
    assert fts_query('"out of the box" thinking') == '"out of the box" OR "thinking" OR "out" OR "box"'


def test_occurrence_across_a_passage_cut_maps_to_the_passages_it_overlaps(tmp_path):
    store = Store(tmp_path / "m.sqlite", create=True)
    store.add_documents([{"id": 0, "ext_id": "a", "source": "m", "length": 20, "metadata": {}}])
    store.add_passages([(0, 0, 10), (0, 10, 20)])
    # "ijklm" (8..13) lies in no passage whole: both passages get their clipped part of it
    assert map_occurrences(store, [0], [8], 5) == {0: [(8, 10)], 1: [(0, 3)]}
    assert map_occurrences(store, [0], [2], 3) == {0: [(2, 5)]}  # held whole: only that passage


def test_exact_mode_finds_a_phrase_that_crosses_passages(tmp_path):
    """Regression (issue 11.4): `count` found a phrase that `query --mode exact` missed because
    the phrase straddled the cut between two passages (no overlap here to hide it)."""
    import json

    from retrieval import Index

    words = " ".join(f"w{i}" for i in range(60))
    src = tmp_path / "c.jsonl"
    src.write_text(json.dumps({"text": words}) + "\n")
    idx = Index.build([src], tmp_path / "idx", dense=False, passage_tokens=8, passage_overlap=0)
    try:
        passages = list(idx.iter_passages())
        assert len(passages) > 3
        cut = passages[1]["start"]  # a phrase from 6 bytes before the cut to 6 after it
        phrase = words.encode()[cut - 6:cut + 6].decode()
        assert idx.count(phrase) == 1
        hits = idx.search(f'"{phrase}"', k=5, mode="exact")
        assert {h.passage_id for h in hits} == {passages[0]["id"], passages[1]["id"]}
        for h in hits:
            for s, e in h.spans:  # each span is the part of the phrase inside that passage
                part = h.text.encode()[s:e].decode()
                assert part and part in phrase
    finally:
        idx.close()


def test_only_rare_terms_the_fts_tokenizer_splits_are_looked_up_exactly(tmp_path):
    docs = ["microglia respond to IL-10 here", "IL and 10 apart", "plain text"]
    store = make_store(tmp_path / "m.sqlite", docs)
    idx = NaiveIndex(docs, store)
    ex = exact_candidates(idx, "microglia IL-10", rare_max=5)
    # "microglia" is one FTS token (BM25 weighs it already); "IL-10" is split into IL, 10 by FTS,
    # so only the exact stage can ask for it whole: it finds doc 0 alone, at its byte span
    at = docs[0].index("IL-10")
    assert [p for p, _ in ex.ranked] == [0] and ex.spans[0] == [(at, at + 5)]
    old = exact_candidates(idx, "microglia", rare_max=5, split_terms_only=False)
    assert [p for p, _ in old.ranked] == [0]  # the former behaviour, kept for the fusion study
    assert exact_candidates(idx, "microglia", rare_max=5).ranked == []
