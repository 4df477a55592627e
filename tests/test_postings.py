"""The compact lexical part (retrieval.postings) against its oracle, SQLite's FTS5 bm25() over the
same passages: the same passages match, with the same scores and order, over one file or several,
with tombstones (equal to FTS5 over the live passages alone) and filters; damaged files are errors
that name the file, never a crash or a read outside the file."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.errors import IndexFormatError
from retrieval.hybrid.lexical import fts_query
from retrieval.postings import Postings, match_phrases, segment_bytes, tokenize, write_segment

# stems that porter folds together, case, diacritics, digits, CJK, and words FTS5 cuts in two
WORDS = ["run", "running", "runs", "Runner", "fox", "FOX", "foxes", "café", "cafe", "naïve", "東京", "x1",
         "data-set", "dog's", "42", "the", "a", "über", "ÜBER", "quick", "quickly", "jump"]
text = st.lists(st.sampled_from(WORDS), min_size=0, max_size=30).map(" ".join)
corpus = st.lists(text, min_size=1, max_size=40)
query = st.lists(st.sampled_from(WORDS + ["absent", '"run fox"']), min_size=1, max_size=6).map(" ".join)


def fts5(texts: list[str]) -> sqlite3.Connection:
    """The oracle: rtv's earlier lexical part, a contentless FTS5 table over the passages."""
    db = sqlite3.connect(":memory:")
    db.execute("create virtual table f using fts5(text, content='', tokenize='porter unicode61')")
    db.executemany("insert into f (rowid, text) values (?, ?)", enumerate(texts))
    return db


def fts5_top(db, q: str, k: int) -> list[tuple[int, float]]:
    match = fts_query(q)
    if not match:
        return []
    return [(pid, -rank) for pid, rank in
            db.execute("select rowid, rank from f where f match ? order by rank limit ?", [match, k])]


class FakeStore:
    """What Postings reads from a Store: the passages' documents and the tombstones."""

    def __init__(self, passage_docs, deleted=()):
        self.docs = np.asarray(passage_docs, dtype=np.int64)
        self.deleted = np.asarray(sorted(deleted), dtype=np.int64)

    def passage_doc_ids(self):
        return self.docs

    def deleted_doc_ids(self):
        return self.deleted


def open_postings(tmp_path, texts: list[str], cuts=(), store=None) -> Postings:
    """Postings over `texts` written as one file per run between `cuts` (passage ids)."""
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(texts))), len(texts)]
    segs = []
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        rel = f"lexical/shard-{i:05d}.lex"
        write_segment(tmp_path / rel, texts[lo:hi])
        segs.append({"file": rel, "first_passage": lo, "n_passages": hi - lo})
    return Postings(tmp_path, {"segments": segs}, len(texts), store)


def term_only(q: str) -> bool:
    """No phrase of several tokens in the query's FTS5 expression (those need positions)."""
    return all(len(t) <= 1 for t in tokenize(match_phrases(fts_query(q))))


def assert_same(got, want):
    assert [p for p, _ in got] == [p for p, _ in want] or _same_up_to_ties(got, want)
    for (p, s), (_, w) in zip(got, want):
        assert s == pytest.approx(w, rel=1e-12, abs=1e-15)


def _same_up_to_ties(got, want) -> bool:
    """Equal scores may come in another order (FTS5 orders ties as its sorter does)."""
    if len(got) != len(want):
        return False
    g = sorted(((round(s, 9), p) for p, s in got), key=lambda x: (-x[0], x[1]))
    w = sorted(((round(s, 9), p) for p, s in want), key=lambda x: (-x[0], x[1]))
    last = round(want[-1][1], 9) if want else None
    return [x for x in g if x[0] != last] == [x for x in w if x[0] != last] and \
        [x[0] for x in g] == [x[0] for x in w]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(texts=corpus, queries=st.lists(query, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 40), max_size=3),
       k=st.integers(1, 50))
def test_bm25_equals_fts5(tmp_path_factory, texts, queries, cuts, k):
    tmp = tmp_path_factory.mktemp("p")
    db = fts5(texts)
    one, many = open_postings(tmp / "one", texts), open_postings(tmp / "many", texts, cuts)
    for q in queries:
        if not term_only(q):
            continue
        want = fts5_top(db, q, k)
        phrases = match_phrases(fts_query(q)) if fts_query(q) else []
        assert_same(one.search(phrases, k), want)
        assert_same(many.search(phrases, k), want)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(texts=st.lists(text, min_size=2, max_size=30), data=st.data())
def test_tombstones_equal_fts5_over_the_live_passages(tmp_path_factory, texts, data):
    """A deleted document's passages are neither found nor counted: the same scores as FTS5 over the
    live passages alone (what FTS5's 'delete' gave), and filters narrow the results, not the statistics."""
    tmp = tmp_path_factory.mktemp("t")
    docs = sorted(data.draw(st.lists(st.integers(0, 5), min_size=len(texts), max_size=len(texts)), label="docs"))
    deleted = set(data.draw(st.lists(st.sampled_from(sorted(set(docs))), max_size=3), label="deleted"))
    allowed_docs = set(data.draw(st.lists(st.integers(0, 5), max_size=6), label="where"))
    got = open_postings(tmp, texts, cuts=[len(texts) // 2], store=FakeStore(docs, deleted))
    live = [i for i, d in enumerate(docs) if d not in deleted]
    db = fts5([texts[i] for i in live])  # rowids 0.. over the live passages: mapped back below
    for q in ("run fox", "café 東京 quick", "the a", "FOX foxes x1 über"):
        want = [(live[p], s) for p, s in fts5_top(db, q, 100)]
        assert_same(got.search(match_phrases(fts_query(q)), 100), want)
        mask = np.array([d in allowed_docs and d not in deleted for d in docs])
        want_f = [(p, s) for p, s in want if mask[p]]
        assert_same(got.search(match_phrases(fts_query(q)), 100, mask), want_f)


def test_tokens_are_fts5s(tmp_path):
    assert tokenize(["Running FOXES über", "", "data-set"]) == [["run", "fox", "uber"], [], ["data", "set"]]
    assert match_phrases('"big fox" OR "a""b" OR "x"') == ["big fox", 'a"b', "x"]


def test_a_phrase_of_several_tokens_is_left_out_of_bm25(tmp_path):
    """FTS5 scores "big fox" as a phrase (positions); postings score its words alone, as the query's
    other OR terms."""
    texts = ["big fox", "fox big", "big dog"]
    p = open_postings(tmp_path, texts)
    assert p.search(["big fox"], 10) == []
    assert {pid for pid, _ in p.search(["big fox", "big", "fox"], 10)} == {0, 1, 2}


def test_empty_and_tokenless_passages(tmp_path):
    texts = ["", "!!!", "fox", "..."]
    p = open_postings(tmp_path, texts)
    assert_same(p.search(["fox"], 5), fts5_top(fts5(texts), "fox", 5))
    assert list(p.lengths) == [0, 0, 1, 0]


def test_long_lists_cross_blocks(tmp_path):
    """Lists longer than a block of 128, gaps and frequencies of many widths."""
    rng = np.random.default_rng(3)
    texts = [" ".join(["fox"] * int(rng.integers(1, 300)) + ["dog"] * int(rng.integers(0, 3))) if rng.random() < 0.7
             else "cat" for _ in range(1000)]
    p = open_postings(tmp_path, texts, cuts=[400])
    db = fts5(texts)
    for q in ("fox", "dog", "cat fox", "dog cat"):
        assert_same(p.search(match_phrases(fts_query(q)), 1000), fts5_top(db, q, 1000))


# -- damaged files ---------------------------------------------------------------------------------
def _one_file(tmp_path, texts):
    write_segment(tmp_path / "lexical/shard-00000.lex", texts)
    return tmp_path / "lexical/shard-00000.lex"


def _open(tmp_path, n):
    return Postings(tmp_path, {"segments": [{"file": "lexical/shard-00000.lex", "first_passage": 0,
                                             "n_passages": n}]}, n)


def test_truncated_or_foreign_file_is_a_clear_error(tmp_path):
    texts = ["red fox", "blue fox jumps", "red sun"] * 20
    f = _one_file(tmp_path, texts)
    data = f.read_bytes()
    for bad in (data[:10], data[:-1], b"X" * len(data), data + b"\0"):
        f.write_bytes(bad)
        with pytest.raises(IndexFormatError, match="shard-00000.lex"):
            _open(tmp_path, len(texts)).search(["fox"], 5)
    f.write_bytes(data)
    with pytest.raises(IndexFormatError, match="holds 60 passages, the manifest says 61"):
        _open(tmp_path, 61)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(pos=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_a_flipped_bit_is_an_error_or_an_answer_never_a_crash(tmp_path_factory, pos, bit):
    tmp = tmp_path_factory.mktemp("f")
    texts = [" ".join(WORDS[i % len(WORDS):] + WORDS[:i % 5]) for i in range(300)]
    f = _one_file(tmp, texts)
    data = bytearray(f.read_bytes())
    data[int(pos * len(data))] ^= 1 << bit
    f.write_bytes(bytes(data))
    try:
        p = _open(tmp, len(texts))
        for q in WORDS:
            for pid, _ in p.search(match_phrases(fts_query(q)) or [q], 1000):
                assert 0 <= pid < len(texts)
    except IndexFormatError as exc:
        assert "shard-00000.lex" in str(exc)


def test_segment_is_deterministic():
    texts = ["a b c", "b c d", "東京 café"]
    assert segment_bytes(texts) == segment_bytes(list(texts))
