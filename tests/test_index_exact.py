"""Index (Python layer over the C++ shards) against a naive scan of the corpus, incl. multi-shard splits."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _oracles import naive_occurrences
from retrieval import Index, IndexFormatError, InputError

ALPHABETS = [
    st.sampled_from("ab"),
    st.sampled_from("a"),
    st.characters(min_codepoint=0, max_codepoint=0x2FF, exclude_categories=("Cs",)),
    st.sampled_from(["é", "ß", "中", "🙂", "a", " ", "\n", "\x00"]),
]


def build(docs: list[str], directory: Path, **kw) -> Index:
    corpus = directory / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs), encoding="utf-8")
    return Index.build([corpus], directory / "idx", dense=False, **kw)


corpora = st.integers(0, len(ALPHABETS) - 1).flatmap(
    lambda a: st.lists(st.text(ALPHABETS[a], min_size=1, max_size=60), min_size=1, max_size=12)
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=corpora, data=st.data(), shard_size=st.sampled_from([16, 64, 1 << 20]), sample=st.sampled_from([1, 3, 32]))
def test_queries_match_naive_scan(docs, data, shard_size, sample):
    encoded = [d.encode("utf-8") for d in docs]
    with tempfile.TemporaryDirectory() as tmp:
        idx = build(docs, Path(tmp), shard_size=shard_size, sa_sample=sample, isa_sample=sample)
        assert idx.n_documents == len(docs)
        # patterns: substrings of documents (so many hit) and random strings (mostly miss)
        doc = data.draw(st.integers(0, len(docs) - 1))
        a = data.draw(st.integers(0, len(encoded[doc]) - 1))
        b = data.draw(st.integers(a + 1, len(encoded[doc])))
        patterns = [encoded[doc][a:b], data.draw(st.text(min_size=1, max_size=4)).encode(), b"\xff", b"a\xffa"]
        for p in patterns:
            expected = naive_occurrences(encoded, p)
            assert idx.count(p) == len(expected)
            docs_found, offsets = idx.find(p, limit=10**9)
            assert sorted(zip(docs_found.tolist(), offsets.tolist())) == expected
            assert idx.docs(p).tolist() == sorted({d for d, _ in expected})
            # paging: pages are disjoint and together give every occurrence
            pages, offset = [], 0
            while True:
                d, o = idx.find(p, offset=offset, limit=3)
                if not len(d):
                    break
                pages += list(zip(d.tolist(), o.tolist()))
                offset += 3
            assert sorted(pages) == expected
        q1, q2 = patterns[0], patterns[1]
        expected_cnf = sorted(d for d, t in enumerate(encoded) if (q1 in t or q2 in t) and q1 in t)
        assert idx.cnf([[q1, q2], [q1]]).tolist() == expected_cnf
        for d, text in enumerate(encoded):
            assert idx.exact.extract(d) == text
        off = data.draw(st.integers(0, len(encoded[doc])))
        width = data.draw(st.integers(0, 20))
        assert idx.exact.snippet(doc, off, width) == encoded[doc][off:off + width]
        # batched ranges across shards, in input order, ends clipped to each document
        n = data.draw(st.integers(0, 10))
        ds = [data.draw(st.integers(0, len(docs) - 1)) for _ in range(n)]
        starts = [data.draw(st.integers(0, len(encoded[d]))) for d in ds]
        ends = [s + data.draw(st.integers(0, 80)) for s in starts]
        got = idx.exact.extract_ranges(ds, starts, ends)
        assert got == [encoded[d][s:e] for d, s, e in zip(ds, starts, ends)]
        assert idx.snippets(ds, starts, ends) == [idx.snippet(d, s, e - s) for d, s, e in zip(ds, starts, ends)]


def test_count_windows_matches_naive(tmp_path):
    docs = ["the quick brown fox jumps over the lazy dog", "lazy dogs sleep", "quick quick quick"]
    idx = build(docs, tmp_path, shard_size=20)
    text = "a quick brown dog sleeps; lazy dogs sleep quick quick".encode()
    starts = np.array([i for i in range(len(text) - 5)], dtype=np.int64)
    lengths = np.full(len(starts), 6, dtype=np.int64)
    expected = [len(naive_occurrences([t.encode() for t in docs], text[s:s + 6])) for s in starts]
    assert idx.count_windows(text, starts, lengths).tolist() == expected
    assert idx.count_windows(text, starts, lengths, existence_only=True).tolist() == [min(1, e) for e in expected]


def test_extract_ranges_errors(tmp_path):
    idx = build(["hello", "world!"], tmp_path, shard_size=8)
    assert len(idx.exact.shards) == 2
    assert idx.exact.extract_ranges([1, 0, 1], [0, 1, 6], [99, 3, 6]) == [b"world!", b"el", b""]
    assert idx.exact.extract_ranges([], [], []) == []
    for args, match in [(([2], [0], [1]), "out of range"), (([-1], [0], [1]), "out of range"),
                        (([0], [6], [7]), "beyond the end"), (([0], [-1], [1]), ">= 0"),
                        (([0], [3], [2]), ">= 0"), (([0, 1], [0], [1]), "differ in length")]:
        with pytest.raises(InputError, match=match):
            idx.exact.extract_ranges(*args)


def test_empty_and_invalid_patterns(tmp_path):
    idx = build(["hello"], tmp_path)
    with pytest.raises(InputError):
        idx.count("")
    with pytest.raises(InputError):
        idx.extract(5)


def test_open_detects_damage(tmp_path):
    idx = build(["hello world", "another document"], tmp_path)
    idx.close()
    path = tmp_path / "idx"
    shard = next((path / "gen-000001" / "exact").glob("*.fmi"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x55
    shard.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError):
        Index.open(path)
    shard.write_bytes(bytes(data[:-7]))
    with pytest.raises(IndexFormatError, match="truncated"):
        Index.open(path)


def test_newer_format_is_refused(tmp_path):
    build(["hello"], tmp_path)
    manifest = tmp_path / "idx" / "gen-000001" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["format_version"] = 99
    manifest.write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="newer rtv"):
        Index.open(tmp_path / "idx")


def test_failed_build_leaves_nothing(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "ok"}\n{"body": "no text field"}\n')
    with pytest.raises(InputError, match="line 2"):
        Index.build([corpus], tmp_path / "idx", dense=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]
