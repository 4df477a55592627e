"""Queries fanned out over shards on the ExactIndex's thread pool equal the serial loop and a naive scan."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _oracles import naive_occurrences
from retrieval import Index

alphabet = st.sampled_from(["a", "b", "ab", "ba", " ", "é", "\n"])
doc_text = st.lists(alphabet, min_size=1, max_size=30).map("".join)
corpora = st.lists(doc_text, min_size=2, max_size=25)
patterns = st.lists(st.sampled_from(["a", "b", " ", "é"]), min_size=1, max_size=4).map("".join)


def _build(tmp_path, docs, name, shard_size):
    src = tmp_path / f"{name}.txt.jsonl"
    import json

    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    return Index.build([src], tmp_path / name, parts="exact", shard_size=shard_size, workers=1, overwrite=True)


def _answers(exact, pats, offset, limit, clauses, text, starts, lengths):
    return {
        "count": [exact.count(p) for p in pats],
        "count_many": exact.count_many(pats).tolist(),
        "shard_counts": [exact.shard_counts(p) for p in pats],
        "find": [tuple(a.tolist() for a in exact.find(p, offset, limit)) for p in pats],
        "find_all": [tuple(a.tolist() for a in exact.find(p, 0, 10_000)) for p in pats],
        "docs": [exact.docs(p).tolist() for p in pats],
        "cnf": exact.cnf(clauses).tolist(),
        "windows": exact.count_windows(text, starts, lengths).tolist(),
        "exists": exact.count_windows(text, starts, lengths, existence_only=True).tolist(),
        "locate_in": [exact.locate_in(p.encode(), exact.shard_counts(p), limit, p.encode()[:1]) for p in pats],
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(corpora, st.lists(patterns, min_size=1, max_size=5), st.integers(0, 40), st.integers(0, 40),
       st.lists(st.lists(patterns, min_size=1, max_size=3), min_size=1, max_size=3))
def test_fan_out_equals_the_serial_loop_and_a_naive_scan(tmp_path, docs, pats, offset, limit, clauses):
    total = sum(len(t.encode()) + 1 for t in docs)
    idx = _build(tmp_path, docs, "many", max(2, -(-total // 3)))  # two shards or more
    try:
        exact = exact_parallel = idx.exact
        assert len(exact.shards) >= 2
        data = [t.encode() for t in docs]
        text = " ".join(pats).encode()
        starts = np.array([i for i in range(len(text)) for _ in (1, 2)], dtype=np.int64)
        lengths = np.array([n for i in range(len(text)) for n in (1, 3)], dtype=np.int64)
        keep = starts + lengths <= len(text)
        starts, lengths = starts[keep], lengths[keep]

        exact_parallel.threads = 4  # more threads than cores: the pool is used whatever the machine
        parallel = _answers(exact_parallel, pats, offset, limit, clauses, text, starts, lengths)
        assert exact_parallel._pool is not None
        exact.threads = 1
        serial = _answers(exact, pats, offset, limit, clauses, text, starts, lengths)
        assert parallel == serial
        exact_parallel.threads = 4

        for p, n, docs_p, (fd, fo) in zip(pats, parallel["count"], parallel["docs"], parallel["find_all"]):
            occ = naive_occurrences(data, p.encode())
            assert n == len(occ)
            assert sorted(zip(fd, fo)) == sorted(occ)
            assert docs_p == sorted({d for d, _ in occ})
        for p, n, (pd, po) in zip(pats, parallel["count"], parallel["find"]):
            occ = set(naive_occurrences(data, p.encode()))
            assert len(pd) == min(limit, max(0, n - offset)) and set(zip(pd, po)) <= occ
            if limit:  # consecutive pages hold every occurrence once
                pages = [exact_parallel.find(p, k, limit) for k in range(0, n, limit)]
                seen = [(d, o) for pg in pages for d, o in zip(pg[0].tolist(), pg[1].tolist())]
                assert sorted(seen) == sorted(occ)
        expect_cnf = [d for d, t in enumerate(data) if all(any(p.encode() in t for p in cl) for cl in clauses)]
        assert parallel["cnf"] == expect_cnf
        for i, (s, n) in enumerate(zip(starts.tolist(), lengths.tolist())):
            assert parallel["windows"][i] == len(naive_occurrences(data, text[s:s + n]))
            assert parallel["exists"][i] == int(parallel["windows"][i] > 0)
    finally:
        idx.close()


def test_one_shard_stays_on_the_calling_thread(tmp_path):
    idx = _build(tmp_path, ["abc abd", "abe"], "one", 1 << 20)
    try:
        assert len(idx.exact.shards) == 1 and idx.exact.threads == 1
        assert idx.count("ab") == 3 and idx.exact.docs("ab").tolist() == [0, 1]
        assert idx.exact.find("ab", 0, 10)[0].tolist() == [0, 0, 1]
        assert idx.exact._pool is None  # no pool was started
    finally:
        idx.close()


def test_concurrent_callers_share_the_pool(tmp_path):
    """Many threads querying one multi-shard index at once through its one pool: every answer
    equals the serial one."""
    docs = [f"doc {i} " + "xy" * (i % 9) + " z" * (i % 4) for i in range(200)]
    idx = _build(tmp_path, docs, "shared", 300)
    try:
        exact = idx.exact
        assert len(exact.shards) >= 8
        pats = ["xy", "xyxy", "doc 1", " z", "y x", "doc", "q"]
        exact.threads = 1
        serial = [(exact.count(p), exact.docs(p).tolist(), [a.tolist() for a in exact.find(p, 3, 20)]) for p in pats]
        exact.threads = 4

        def ask(k):
            p = pats[k % len(pats)]
            return k % len(pats), (exact.count(p), exact.docs(p).tolist(), [a.tolist() for a in exact.find(p, 3, 20)])

        with ThreadPoolExecutor(8) as callers:
            for k, got in callers.map(ask, range(200)):
                assert got == serial[k]
        exact.close()
        assert exact._pool is None and exact.count("xy") == serial[0][0]  # a new pool after close
    finally:
        idx.close()


def test_empty_pattern_is_refused_before_fanning_out(tmp_path):
    from retrieval.errors import InputError

    idx = _build(tmp_path, [f"doc {i} abc" for i in range(50)], "err", 100)
    try:
        idx.exact.threads = 4
        with pytest.raises(InputError, match="empty"):
            idx.exact.count("")
    finally:
        idx.close()


@pytest.mark.parametrize("fan_out_min", [1, 10**9])
def test_find_pages_located_on_the_pool_or_inline_equal_the_serial_loop(tmp_path, monkeypatch, fan_out_min):
    """find and locate_in take the pool only for a large page over several shards
    (LOCATE_FAN_OUT_MIN): both ways give the serial answers and every occurrence of a naive scan."""
    import retrieval.exact as exact_module

    docs = [f"doc {i} " + "ab " * (i % 7) + "c" * (i % 3) for i in range(300)]
    idx = _build(tmp_path, docs, "pages", 400)
    try:
        exact = idx.exact
        assert len(exact.shards) >= 8
        pats = ["ab", "ab ab", "doc 1", "c", "zz"]
        pages = [(0, 5), (7, 40), (100, 1000), (0, 10_000)]
        exact.threads = 1
        serial = [[[a.tolist() for a in exact.find(p, o, n)] for o, n in pages] for p in pats]
        serial_in = [exact.locate_in(p.encode(), exact.shard_counts(p), 500) for p in pats]
        monkeypatch.setattr(exact_module, "LOCATE_FAN_OUT_MIN", fan_out_min)
        exact.threads = 4
        assert [[[a.tolist() for a in exact.find(p, o, n)] for o, n in pages] for p in pats] == serial
        assert (exact._pool is not None) == (fan_out_min == 1)  # find alone starts the pool only for large pages
        assert [exact.locate_in(p.encode(), exact.shard_counts(p), 500) for p in pats] == serial_in
        data = [t.encode() for t in docs]
        for p, per_page in zip(pats, serial):
            d, o = per_page[-1]
            assert sorted(zip(d, o)) == sorted(naive_occurrences(data, p.encode()))
    finally:
        idx.close()
