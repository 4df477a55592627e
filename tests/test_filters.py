"""Metadata filters (--where) and tombstones in every stage (issue 10).

Oracles: a pure-Python evaluator of the where language over the documents' metadata (checked
against hand-written answers, then the SQL is checked against it on generated expressions); a
fresh index built from only the allowed documents (counts, finds, documents, windows); naive
substring counting; brute-force inner products over the allowed vectors; the unfiltered BM25
ranking restricted to the allowed passages."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.errors import InputError
from retrieval.filters import evaluate, parse_where

WORDS = "alpha beta gamma delta the cat sat on mat ab ba abab zeta eta".split()
LANGS = ["en", "de", "fr"]


def _meta(rng: random.Random, i: int) -> dict:
    m = {"year": 2000 + i % 9, "lang": rng.choice(LANGS), "score": round(rng.uniform(-1, 2), 3),
         "ok": rng.random() < 0.5, "nested": {"x": rng.randint(0, 5), "tag": rng.choice(["p", "q", "é", "Z"])}}
    if i % 4 == 0:
        m["mixed"] = str(rng.randint(0, 9))  # a string in some documents, a number in others
    elif i % 4 == 1:
        m["mixed"] = rng.randint(0, 9)
    if i % 5 == 0:
        m["note"] = None
    if i % 7 == 0:
        del m["year"]
    return m


def _docs(n: int = 80, seed: int = 3) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"d{i:03d}", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 70))), **_meta(rng, i)}
            for i in range(n)]


def _write(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path


def _row(doc: dict, i: int, source: str = "c.jsonl") -> dict:
    """A documents-table row as the store holds it, for the Python evaluator."""
    meta = {k: v for k, v in doc.items() if k not in ("id", "text")}
    return {"id": i, "ext_id": doc["id"], "source": source, "length": len(doc["text"].encode()), "metadata": meta}


# -- the language ------------------------------------------------------------------------------------
ROW = {"id": 3, "ext_id": "d3", "source": "a.jsonl", "length": 10,
       "metadata": {"year": 2021, "lang": "en", "score": 0.5, "ok": True, "nested": {"x": 2, "tag": "é"},
                    "mixed": "7", "note": None}}
CASES = [
    ("year >= 2020", True), ("year > 2021", False), ("year = 2021.0", True), ("lang = 'en'", True),
    ('lang == "en"', True), ("lang != 'en'", False), ("lang <> 'de'", True), ("year = '2021'", False),
    ("mixed = 7", False), ("mixed = '7'", True), ("mixed > 5", False), ("missing = 1", False),
    ("missing != 1", True), ("missing IS NULL", True), ("note IS NULL", True), ("note = null", True),
    ("note IS NOT NULL", False), ("year IS NOT NULL", True), ("ok = true", True), ("ok = false", False),
    ("ok != false", True), ("ok = 1", False), ("nested.x = 2", True), ("nested.tag = 'é'", True),
    ("nested.missing.deeper = 1", False), ("nested = 2", False), ("year IN (1999, 2021)", True),
    ("lang NOT IN ('en', 'de')", False), ("score BETWEEN 0 AND 0.5", True), ("score NOT BETWEEN 0 AND 0.4", True),
    ("year BETWEEN 2022 AND 2030", False), ("NOT (lang = 'en' AND ok = true)", False),
    ("lang = 'de' OR year < 2022 AND ok = true", True), ("(lang = 'de' OR year < 2022) AND ok = false", False),
    ("id = 'd3'", True), ("source = 'a.jsonl'", True), ("doc_id = 3", True), ("length > 5", True),
    ("metadata.lang = 'en'", True), ("`lang` = 'en'", True), ("lang > 'EN'", True), ("lang >= 'en '", False),
    ("not not year = 2021", True), ("YEAR = 2021", False), ("year = 2021 and lang = 'en' and ok = true", True),
]


@pytest.mark.parametrize("text,want", CASES)
def test_evaluator_hand_written(text, want):
    assert evaluate(text, ROW) is want


BAD = [
    ("year >= ", "character 9", "a value"), ("(lang = 'en'", "character 13", "')'"),
    ("lang = 'en' ok", "character 13", "AND, OR"), ("id = 5", "character 6", "string"),
    ("ok < true", "character 6", "number or a string"), ("lang = 'en", "character 8", "unterminated"),
    ("lang = 'en'; drop table documents", "character 12", "does not use"), ("and = 1", "character 1", "field name"),
    ("year IN (1, 2", "character 14", "',' or ')'"), ("year BETWEEN 1 2", "character 16", "AND"),
    ("year BETWEEN 1 AND 'x'", "character 20", "same kind"), ("`a\"b` = 1", "character 1", "double quotes"),
    ("year", "character 5", "comparison"), ("year NOT = 1", "character 10", "IN or BETWEEN"),
]


@pytest.mark.parametrize("text,at,what", BAD)
def test_parse_errors_name_the_position(text, at, what):
    with pytest.raises(InputError) as err:
        parse_where(text)
    msg = str(err.value)
    assert "\n" not in msg and at in msg and what in msg and msg.startswith("--where")


def test_store_without_the_deleted_table_opens_read_only(tmp_path):
    """A format-3 store (migrations 1-3, no `deleted` table) opens read-only with no tombstones;
    one with a later schema than this rtv knows is refused."""
    from retrieval.errors import IndexFormatError
    from retrieval.store import Store

    path = tmp_path / "meta.sqlite"
    Store(path, create=True).close()
    conn = sqlite3.connect(path)
    conn.execute("drop table deleted")
    conn.execute("delete from _migrations where version = 4")
    conn.commit()
    conn.close()
    old = Store(path)
    assert old.deleted_doc_ids().tolist() == [] and old.deleted_doc_ids().dtype == np.int64
    old.close()
    conn = sqlite3.connect(path)
    conn.execute("insert into _migrations (version) values (99)")
    conn.commit()
    conn.close()
    with pytest.raises(IndexFormatError, match="newer rtv"):
        Store(path)


def test_empty_and_too_deep():
    with pytest.raises(InputError, match="empty"):
        parse_where("  ")
    with pytest.raises(InputError, match="levels"):
        parse_where("(" * 100 + "a = 1" + ")" * 100)


def test_values_are_bound_never_pasted():
    w = parse_where("lang = 'x'' OR 1=1 --' AND `weird key` = \"a\\\"b\"")
    assert "1=1" not in w.sql and "weird" not in w.sql and "x'" not in w.sql
    assert "x' OR 1=1 --" not in w.sql and w.sql.count("?") == len(w.params)


# -- SQL against the Python evaluator, on generated expressions --------------------------------------
FIELDS = ["year", "lang", "score", "ok", "mixed", "note", "missing", "nested.x", "nested.tag", "id", "doc_id", "length"]
LITERALS = st.one_of(st.integers(-3, 2010), st.floats(-2, 2.5, allow_nan=False).map(lambda f: round(f, 2)),
                     st.sampled_from(["en", "de", "fr", "p", "q", "é", "Z", "7", "3", "d003", "", "O'Reilly"]),
                     st.booleans(), st.none())


def _lit(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(v)


@st.composite
def atoms(draw):
    field = draw(st.sampled_from(FIELDS))
    kind = draw(st.sampled_from(["cmp", "in", "between", "null"]))
    text_builtin = field == "id"
    num_builtin = field in ("doc_id", "length")
    lit = (st.sampled_from(["d003", "d010", "x"]) if text_builtin else st.integers(-1, 90) if num_builtin else LITERALS)
    if kind == "cmp":
        op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">=", "==", "<>"]))
        v = draw(lit)
        if op in ("<", "<=", ">", ">=") and (v is None or isinstance(v, bool)):
            op = "="
        return f"{field} {op} {_lit(v)}"
    if kind == "in":
        vs = draw(st.lists(lit, min_size=1, max_size=4))
        return f"{field} {draw(st.sampled_from(['', 'NOT ']))}IN ({', '.join(_lit(v) for v in vs)})"
    if kind == "between":
        lo = draw(st.integers(-2, 2010) if not text_builtin else st.sampled_from(["d", "d005"]))
        hi = draw(st.integers(-2, 2010) if not text_builtin else st.sampled_from(["d009", "e"]))
        return f"{field} {draw(st.sampled_from(['', 'NOT ']))}BETWEEN {_lit(lo)} AND {_lit(hi)}"
    return f"{field} IS {draw(st.sampled_from(['', 'NOT ']))}NULL"


def expressions():
    return st.recursive(atoms(), lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" AND ", " OR ", " and ", " or "]), inner).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
        inner.map(lambda e: f"NOT {e}")), max_leaves=8)


@pytest.fixture(scope="module")
def store_docs(tmp_path_factory):
    from retrieval.store import Store

    docs = _docs()
    store = Store(tmp_path_factory.mktemp("st") / "meta.sqlite", create=True)
    rows = [_row(d, i) for i, d in enumerate(docs)]
    store.add_documents(rows)
    store.db.conn.commit()
    return store, rows


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expr=expressions())
def test_sql_matches_the_evaluator(store_docs, expr):
    store, rows = store_docs
    w = parse_where(expr)
    got = store.matching_doc_ids(w.sql, w.params).tolist()
    want = [r["id"] for r in rows if evaluate(w, r)]
    assert got == want, expr


def test_injection_attempts_are_literals(store_docs):
    store, rows = store_docs
    for expr in ["lang = 'en'' OR 1=1 --'", "lang = 'x\\'); drop table documents; --'", "lang = \"en\\\" OR \\\"1\\\"=\\\"1\""]:
        w = parse_where(expr)
        assert store.matching_doc_ids(w.sql, w.params).tolist() == []
    assert "documents" in store.db.table_names() and store.db["documents"].count == len(rows)


# -- every stage against a fresh index of the allowed documents --------------------------------------
WHERES = ["lang = 'en'", "year >= 2004 AND ok = true", "NOT (nested.tag IN ('p', 'é'))", "mixed = 3 OR note IS NULL",
          "id = 'd005'", "year = 1900"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from retrieval import Index

    tmp = tmp_path_factory.mktemp("flt")
    docs = _docs()
    idx = Index.build([_write(tmp / "c.jsonl", docs)], tmp / "idx", parts="exact,lexical", dense=False,
                      id_field="id", shard_size=900)  # several shards
    assert len(idx.exact.shards) > 1
    return tmp, docs, idx


def _fresh(tmp: Path, docs: list[dict], name: str, **kw):
    from retrieval import Index

    d = tmp / name
    if (d / "idx").exists():
        return Index.open(d / "idx", verify=False)
    d.mkdir()
    return Index.build([_write(d / "c.jsonl", docs)], d / "idx", id_field="id", **kw)


def _ext(idx, doc_ids) -> list[str]:
    rows = {r["id"]: r["ext_id"] for r in idx.store.documents(set(int(d) for d in doc_ids))}
    return [rows[int(d)] for d in doc_ids]


def _naive(texts: list[str], p: str) -> int:
    n = 0
    for t in texts:
        b, pb = t.encode(), p.encode()
        i = b.find(pb)
        while i >= 0:
            n += 1
            i = b.find(pb, i + 1)
    return n


PATTERNS = ["a", "ab", "abab", "the cat", "t", "zeta eta", "nope", "a b", "ba"]


@pytest.mark.parametrize("where", WHERES)
def test_exact_stages_equal_a_fresh_index(built, where):
    tmp, docs, idx = built
    rows = [_row(d, i) for i, d in enumerate(docs)]
    allowed = [d for d, r in zip(docs, rows) if evaluate(where, {**r, "source": str(tmp / "c.jsonl")})]
    if not allowed:
        assert idx.count("a", where=where) == 0 and len(idx.find("a", where=where)[0]) == 0
        assert len(idx.docs("a", where=where)) == 0
        return
    fresh = _fresh(tmp, allowed, f"fresh-{abs(hash(where))}", parts="exact", dense=False)
    assert idx.count_many(PATTERNS, where=where).tolist() == fresh.count_many(PATTERNS).tolist() == \
        [_naive([d["text"] for d in allowed], p) for p in PATTERNS]
    for p in PATTERNS:
        assert idx.count(p, where=where) == fresh.count(p)
        d, o = idx.find(p, 0, 10**6, where=where)
        fd, fo = fresh.find(p, 0, 10**6)
        assert sorted(zip(_ext(idx, d), o.tolist())) == sorted(zip(_ext(fresh, fd), fo.tolist()))
        # pages of 7 make up the whole answer, each sorted by (doc, offset)
        pages = []
        for off in range(0, len(d), 7):
            pd, po = idx.find(p, off, 7, where=where)
            assert list(zip(pd.tolist(), po.tolist())) == sorted(zip(pd.tolist(), po.tolist()))
            pages += list(zip(pd.tolist(), po.tolist()))
        assert sorted(pages) == sorted(zip(d.tolist(), o.tolist()))
        assert _ext(idx, idx.docs(p, where=where)) == _ext(fresh, fresh.docs(p))
    assert _ext(idx, idx.cnf([["cat", "zeta"], ["the"]], where=where)) == _ext(fresh, fresh.cnf([["cat", "zeta"], ["the"]]))
    text = "the cat sat on the mat abab zeta eta gamma"
    for unit, n in (("tokens", 2), ("chars", 5)):
        assert idx.ngram_counts(text, n, unit, where=where).tolist() == fresh.ngram_counts(text, n, unit).tolist()
    data = text.encode()
    starts, lengths = np.arange(0, 30), np.full(30, 4)
    assert idx.count_windows(data, starts, lengths, True, where=where).tolist() == \
        fresh.count_windows(data, starts, lengths, True).tolist()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(expr=expressions())
def test_generated_where_counts_equal_naive_counts(built, expr):
    """Counts and documents under generated expressions: a naive scan of the documents the
    Python evaluator selects."""
    tmp, docs, idx = built
    rows = [{**_row(d, i), "source": str(tmp / "c.jsonl")} for i, d in enumerate(docs)]
    texts = [d["text"] for d, r in zip(docs, rows) if evaluate(expr, r)]
    assert idx.count_many(PATTERNS, where=expr).tolist() == [_naive(texts, p) for p in PATTERNS]
    want_docs = [i for i, (d, r) in enumerate(zip(docs, rows)) if evaluate(expr, r) and "abab" in d["text"]]
    assert idx.docs("abab", where=expr).tolist() == want_docs


@pytest.mark.parametrize("strategy", ["locate", "excluded", "allowed", "none"])
def test_each_counting_strategy(built, monkeypatch, strategy):
    """The three ways FilteredExact counts (locate, side index of the excluded or the allowed
    documents) agree with naive counting."""
    from retrieval import exact_filtered
    from retrieval.exact_filtered import FilteredExact

    tmp, docs, idx = built
    monkeypatch.setattr(exact_filtered, "SIDE_MAX_BYTES", 0 if strategy == "none" else 1 << 30)
    # the side index always pays off, or never does
    monkeypatch.setattr(exact_filtered, "BUILD_US_PER_BYTE", 1e9 if strategy == "locate" else 0.0)
    for where in ("lang = 'en'", "lang != 'fr' AND ok = true", "lang IN ('en', 'de')"):
        flt = idx.doc_filter(where)
        view = FilteredExact(idx.exact, flt)
        if strategy in ("excluded", "allowed"):
            # pick the side by making the other one look large
            view.side_kind = strategy
        texts = [docs[i]["text"] for i in flt.allowed_ids]
        assert view.count_many(PATTERNS).tolist() == [_naive(texts, p) for p in PATTERNS]
        data = b"the cat sat on the mat abab"
        s, ln = np.arange(0, 20), np.full(20, 5)
        want = [_naive(texts, data[a:a + 5].decode()) for a in range(20)]
        assert view.count_windows(data, s, ln).tolist() == want
        assert view.count_windows(data, s, ln, existence_only=True).tolist() == [min(1, w) for w in want]
        d, o = view.find("ab", 0, 10**6)
        assert len(d) == _naive(texts, "ab") and flt.allows(d).all()
        assert (view._side is not None) == (strategy in ("excluded", "allowed"))


def test_lexical_is_the_unfiltered_ranking_of_allowed_passages(built):
    """BM25 under a filter ranks the allowed passages as the unfiltered ranking does (the
    statistics, idf and average length, stay the whole index's, as in Lucene's filtered search),
    and returns k of them whenever k match, and the same passages as a fresh index holds."""
    from retrieval.hybrid.lexical import bm25

    tmp, docs, idx = built
    everything = bm25(idx.store, "cat zeta gamma", 10**6)
    for where in WHERES:
        flt = idx.doc_filter(where)
        if flt is None:  # it matches every document: the unfiltered search itself
            assert all(evaluate(where, {**_row(d, i), "source": ""}) for i, d in enumerate(docs))
            continue
        pdocs = idx.passage_docs
        want = [pid for pid, _ in everything if flt.mask[pdocs[pid]]]
        got = bm25(idx.store, "cat zeta gamma", 5, flt)
        assert [p for p, _ in got] == want[:5]
        allowed = [d for i, d in enumerate(docs) if flt.mask[i]]
        if allowed:
            fresh = _fresh(tmp, allowed, f"lex-{abs(hash(where))}", parts="exact,lexical", dense=False)
            all_got = bm25(idx.store, "cat zeta gamma", 10**6, flt)
            keys = lambda ix, ids: sorted((r["ext_id"], r["start"], r["end"]) for r in _passage_rows(ix, ids))  # noqa: E731
            assert keys(idx, [p for p, _ in all_got]) == keys(fresh, [p for p, _ in bm25(fresh.store, "cat zeta gamma", 10**6)])


def _passage_rows(idx, ids):
    rows = idx.store.passages(ids)
    ext = {d["id"]: d["ext_id"] for d in idx.store.documents({r["doc_id"] for r in rows})}
    return [{**r, "ext_id": ext[r["doc_id"]]} for r in rows]


# -- tombstones: rows in `deleted` (a test copy) leave documents out everywhere -----------------------
def tombstone(index_dir: Path, doc_ids) -> None:
    """Insert tombstones into a copy's store and re-seal its manifest (what a delete publishes)."""
    from retrieval.manifest import file_entry, live_generation, read_manifest, write_manifest

    gen = live_generation(index_dir)
    m = read_manifest(gen)
    conn = sqlite3.connect(gen / "meta.sqlite")
    conn.executemany("insert into deleted (doc_id) values (?)", [(int(d),) for d in doc_ids])
    conn.commit()
    conn.close()
    m["files"].update(file_entry(gen, "meta.sqlite"))
    write_manifest(gen, m)


def test_tombstones_leave_documents_out_of_every_exact_stage(built):
    from retrieval import Index

    tmp, docs, idx = built
    copy = tmp / "tomb"
    if not copy.exists():
        shutil.copytree(tmp / "idx", copy)
        tombstone(copy, [0, 1, 5, 17, 40, 79])
    t = Index.open(copy)
    assert t.store.deleted_doc_ids().tolist() == [0, 1, 5, 17, 40, 79]
    live = [d for i, d in enumerate(docs) if i not in {0, 1, 5, 17, 40, 79}]
    fresh = _fresh(tmp, live, "fresh-live", parts="exact,lexical", dense=False)
    assert t.doc_filter() is not None and idx.doc_filter() is None
    assert t.count_many(PATTERNS).tolist() == fresh.count_many(PATTERNS).tolist()
    for p in PATTERNS:
        d, o = t.find(p, 0, 10**6)
        fd, fo = fresh.find(p, 0, 10**6)
        assert sorted(zip(_ext(t, d), o.tolist())) == sorted(zip(_ext(fresh, fd), fo.tolist()))
        assert _ext(t, t.docs(p)) == _ext(fresh, fresh.docs(p))
    # with a where too: both apply
    assert t.count("ab", where="lang = 'en'") == _naive([d["text"] for d in live if d["lang"] == "en"], "ab")
    hits = t.search("cat zeta", k=50, mode="lexical")
    assert hits and all(h.doc_id not in {0, 1, 5, 17, 40, 79} for h in hits)
    assert {h.ext_id for h in hits} <= {d["id"] for d in live}
    hits = t.search('"the cat"', k=20, mode="exact")
    assert hits and all(h.doc_id not in {0, 1, 5, 17, 40, 79} for h in hits)


def test_contamination_counts_only_allowed_documents(built, tmp_path):
    from retrieval.contamination import ContaminationConfig, check_benchmark

    tmp, docs, idx = built
    target = docs[2]["text"]  # one document's text as a benchmark entry
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"id": "e1", "text": target}) + "\n")
    results, _ = check_benchmark(idx, bench, config=ContaminationConfig(window=20))
    assert results[0].bucket == "dirty"
    where = f"id != '{docs[2]['id']}'"
    results, summary = check_benchmark(idx, bench, config=ContaminationConfig(window=20, where=where))
    view = idx.exact_view(where)
    from retrieval.windows import char_window_ranges, encode

    data = encode(target)
    s, ln = char_window_ranges(data, 20, n_chars=len(target))
    found = view.count_windows(data, s, ln, existence_only=True)
    assert results[0].found == int(found.sum()) and summary.to_json()["where"] == where
    assert all(m["doc_id"] != 2 for m in results[0].matches)


# -- dense: filtered search equals brute force over the allowed vectors ------------------------------
def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute(vecs, q, ids, k):
    s = q @ vecs[ids].T
    order = np.lexsort((np.broadcast_to(ids, s.shape), -s), axis=1)[:, :k]
    return ids[order]


def test_dense_flat_filtered_equals_brute_force(tmp_path):
    from retrieval.dense.index import DenseIndex, build_from_vectors

    rng = np.random.default_rng(0)
    x = _unit(rng.standard_normal((3000, 24)))
    sec = build_from_vectors(x, tmp_path, "flat", quiet=True)
    q = _unit(rng.standard_normal((6, 24)))
    for engine in ("faiss", "torch"):  # FAISS's selector; the torch engine's mask (its CPU run)
        d = DenseIndex.open(tmp_path, sec, device="cpu", exact=engine)
        assert (d.engine is not None) == (engine == "torch")
        for frac in (0.002, 0.05, 0.5, 1.0):
            allowed = np.random.default_rng(int(frac * 1000)).random(3000) < frac
            ids = np.flatnonzero(allowed)
            s, i = d.search(q, 10, allowed=allowed)
            want = _brute(x, q, ids, 10)
            assert (i[:, :want.shape[1]] == want).all() and (i[:, want.shape[1]:] == -1).all()
        none = np.zeros(3000, bool)
        assert (d.search(q, 5, allowed=none)[1] == -1).all()


def test_ivf_selective_filter_comes_back_full(tmp_path, monkeypatch):
    """An IVF index probing one list finds fewer than k allowed passages under a selective filter;
    the filtered search still returns the k best allowed ones (exact over the rescoring store)."""
    from retrieval.dense import index as dense_index
    from retrieval.dense.index import DenseIndex, build_from_vectors

    rng = np.random.default_rng(1)
    x = _unit(rng.standard_normal((12000, 16)))
    sec = build_from_vectors(x, tmp_path, "pq", quiet=True)
    assert sec["factory"].startswith("IVF")
    d = DenseIndex.open(tmp_path, sec, device="cpu")
    d.set_params(nprobe=1)
    q = _unit(rng.standard_normal((8, 16)))
    allowed = rng.random(12000) < 0.01
    ids = np.flatnonzero(allowed)
    monkeypatch.setattr(dense_index, "BRUTE_FORCE_MAX", 0)  # take the FAISS IDSelector path
    _, raw = d._faiss_allowed(q, 10, True, allowed)
    assert ((raw >= 0).sum(axis=1) < 10).any()  # the short case happens without the fallback
    assert allowed[raw[raw >= 0]].all()  # and the selector only let allowed passages through
    _, got = d.search(q, 10, allowed=allowed)
    want = _brute(d.store.dequantize(np.arange(12000)), q, ids, 10)
    assert (got == want).all()
    monkeypatch.setattr(dense_index, "BRUTE_FORCE_MAX", 16384)  # the small-set path gives the same
    assert (d.search(q, 10, allowed=allowed)[1] == want).all()
    # an index on the GPU takes no IDSelector: oversampled candidates, the excluded ones dropped,
    # short queries scored exactly (the logic run here on the CPU index, as the GPU one would be)
    monkeypatch.setattr(dense_index, "BRUTE_FORCE_MAX", 0)
    d.on_gpu = True
    _, raw = d._faiss_allowed(q, 10, True, allowed)
    assert allowed[raw[raw >= 0]].all()
    assert (d.search(q, 10, allowed=allowed)[1] == want).all()


@pytest.fixture(scope="module")
def dense_built(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("faiss")
    from retrieval import Index

    tmp = tmp_path_factory.mktemp("fltd")
    docs = _docs(60, seed=5)
    idx = Index.build([_write(tmp / "c.jsonl", docs)], tmp / "idx", id_field="id", dense=True, recipe="flat")
    return tmp, docs, idx


def test_dense_and_hybrid_search_with_where(dense_built):
    tmp, docs, idx = dense_built
    where = "lang = 'de'"
    allowed = [d for d in docs if d["lang"] == "de"]
    fresh = _fresh(tmp, allowed, "fresh-de", dense=True, recipe="flat")
    key = lambda h: (h.ext_id, h.start, h.end)  # noqa: E731
    got = idx.search("cat on the mat", k=8, mode="dense", where=where)
    want = fresh.search("cat on the mat", k=8, mode="dense")
    assert [key(h) for h in got] == [key(h) for h in want]
    assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
    for mode in ("hybrid", "lexical", "exact"):
        hits = idx.search("cat zeta \"the cat\"", k=5, mode=mode, where=where, rerank=False)
        assert hits and all(h.metadata["lang"] == "de" for h in hits)
    n_allowed = sum(1 for p in range(idx.n_passages) if docs[idx.passage_docs[p]]["lang"] == "de")
    hits = idx.search("cat", k=min(n_allowed, idx.n_passages), mode="dense", where=where)
    assert len(hits) == n_allowed  # every allowed passage comes back when k asks for them all


def test_retriever_and_server_where(dense_built):
    from retrieval import Retriever

    tmp, docs, idx = dense_built
    with Retriever(idx, mode="lexical", k=4, rerank=False, where="year < 2003") as r:
        hits = r.retrieve("cat")
        assert hits and all(h.metadata.get("year", 9999) < 2003 for h in hits)
        assert all(h.metadata["lang"] == "fr" for h in r.retrieve("cat", where="lang = 'fr'"))
    pytest.importorskip("langchain_core")
    from retrieval.integrations.langchain import RtvRetriever

    lc = RtvRetriever.from_path(tmp / "idx", mode="lexical", k=3, rerank=False, where="lang = 'de'")
    got = lc.invoke("cat")
    assert got and all(d.metadata["document"]["lang"] == "de" for d in got)
    lc.retriever.close()
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from retrieval.serve.app import ServeConfig, create_app, open_state

    state = open_state(ServeConfig(indexes=[("i", str(tmp / "idx"))], rerank=False, warm_up=False))
    with TestClient(create_app(state)) as c:
        r = c.post("/v1/i/count", json={"query": "ab", "where": "lang = 'en'"}).json()
        assert r["count"] == idx.count("ab", where="lang = 'en'")
        r = c.post("/v1/i/query", json={"query": "cat", "mode": "lexical", "k": 3, "where": "lang = 'en'"}).json()
        assert r["results"] and all(h["metadata"]["lang"] == "en" for h in r["results"])
        bad = c.post("/v1/i/count", json={"query": "ab", "where": "lang ="})
        assert bad.status_code in (400, 422) and "character 7" in bad.json()["error"]["message"]


def test_cli_where(built):
    tmp, docs, idx = built
    rtv = [sys.executable, "-m", "rtv_cli.main"]
    out = subprocess.run(rtv + ["count", str(tmp / "idx"), "ab", "--where", "lang = 'en'", "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["count"] == idx.count("ab", where="lang = 'en'")
    bench = tmp / "bench.jsonl"
    bench.write_text(json.dumps({"id": "e", "text": docs[2]["text"]}) + "\n")
    out = subprocess.run(rtv + ["contamination", str(tmp / "idx"), str(bench), "--window", "20", "--json",
                                "--where", f"id != '{docs[2]['id']}'"], capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines[-1]["where"] == f"id != '{docs[2]['id']}'" and all(m["doc_id"] != 2 for m in lines[0].get("matches", []))
    for cmd in (["contamination", str(tmp / "idx"), str(bench)], ["count", str(tmp / "idx"), "ab"], ["find", str(tmp / "idx"), "ab"], ["cnf", str(tmp / "idx"), "ab"],
                ["query", str(tmp / "idx"), "cat", "--mode", "lexical"]):
        bad = subprocess.run(rtv + cmd + ["--where", "year >= AND"], capture_output=True, text=True)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr
        assert bad.stderr.strip().count("\n") == 0 and "--where 'year >= AND': at character 9" in bad.stderr


def test_where_on_metadata_with_nan_and_infinity(tmp_path):
    """Python's json reads NaN and Infinity, json.dumps writes them back, SQLite's json_extract
    rejects them as malformed JSON: the store keeps them as null, so --where works on such an index
    (built or added to) and the values read back as None."""
    from retrieval import Index
    from retrieval.update import add

    lines = ['{"id": "a", "text": "cat one", "score": NaN, "lang": "en"}',
             '{"id": "b", "text": "cat two", "score": 1.5, "lang": "de", "v": [Infinity, 2.0]}',
             '{"id": "c", "text": "cat three", "score": -Infinity, "nested": {"x": NaN, "y": 1}}']
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "more.jsonl").write_text('{"id": "d", "text": "cat four", "score": NaN, "lang": "en"}\n', encoding="utf-8")
    Index.build([tmp_path / "c.jsonl"], tmp_path / "idx", id_field="id", dense=False).close()
    add(tmp_path / "idx", [tmp_path / "more.jsonl"], id_field="id")
    idx = Index.open(tmp_path / "idx")
    try:
        assert idx.count("cat", where="score > 1") == 1  # b only: null is no number
        assert idx.count("cat", where="score IS NULL") == 3  # a, c and the added d
        assert idx.count("cat", where="lang = 'en'") == 2
        assert idx.count("cat", where="nested.y = 1 AND nested.x IS NULL") == 1
        meta = {d["ext_id"]: d["metadata"] for d in idx.store.documents(range(4))}
        assert meta["a"]["score"] is None and meta["b"]["v"] == [None, 2.0] and meta["c"]["nested"] == {"x": None, "y": 1}
        assert meta["d"] == {"score": None, "lang": "en"}
        raw = idx.store.db.execute("select count(*) from documents where json_valid(metadata)").fetchone()[0]
        assert raw == 4
    finally:
        idx.close()
