"""Property tests of the C++ FM-index core against naive scans (CONVENTIONS.md rule 11)."""

import os
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from _oracles import naive_occurrences

fm = pytest.importorskip("retrieval._fm_index")

SEP = b"\xff"

# ---------------------------------------------------------------- corpora and oracle


def no_sep(alphabet):
    return st.binary(max_size=60).map(lambda b: bytes(alphabet[x % len(alphabet)] for x in b))


ALL_BUT_FF = bytes(range(255))
doc_strategies = st.one_of(
    no_sep(ALL_BUT_FF),  # any byte but the separator, 0x00 included
    no_sep(b"a"),  # one symbol: long runs
    no_sep(b"ab"),
    no_sep(b"\x00\x01"),
    st.text(alphabet="aé€𝄞 \n", max_size=30).map(lambda s: s.encode()),  # multi-byte UTF-8
)
corpora = st.lists(doc_strategies, min_size=1, max_size=8).flatmap(
    lambda docs: st.just(docs) if docs else st.just([b""])
)
rates = st.sampled_from([1, 2, 4, 32])


def make_text(docs):
    return b"".join(d + SEP for d in docs)


def build(docs, sa_sample=32, isa_sample=32, directory=None):
    path = os.path.join(directory, "shard.fm")
    fm.build_shard(make_text(docs), path, sa_sample=sa_sample, isa_sample=isa_sample)
    return fm.Shard(path)


@st.composite
def corpus_and_patterns(draw):
    docs = draw(corpora)
    patterns = []
    for _ in range(draw(st.integers(1, 6))):
        d = draw(st.sampled_from(docs))
        if d and draw(st.booleans()):
            i = draw(st.integers(0, len(d) - 1))
            j = draw(st.integers(i + 1, len(d)))
            patterns.append(d[i:j])  # a substring that occurs
        else:
            patterns.append(draw(st.binary(min_size=1, max_size=4)))
    return docs, patterns


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- queries


@SETTINGS
@given(corpus_and_patterns(), rates, rates)
def test_count_locate_docs(cp, sa_sample, isa_sample):
    docs, patterns = cp
    with tempfile.TemporaryDirectory() as tmp:
        shard = build(docs, sa_sample, isa_sample, tmp)
        assert shard.n_docs == len(docs)
        assert shard.text_bytes == len(make_text(docs))
        assert shard.doc_lengths().tolist() == [len(d) for d in docs]
        for p in patterns:
            expected = sorted(naive_occurrences(docs, p)) if SEP not in p else []
            assert shard.count(p) == len(expected)
            # Paging walks the suffix-array range; each page is sorted by (doc, offset).
            got, page = [], 3
            for offset in range(0, len(expected) + page, page):
                d, o = shard.locate(p, offset, page)
                pairs = list(zip(d.tolist(), o.tolist()))
                assert pairs == sorted(pairs)
                assert len(pairs) == max(0, min(page, len(expected) - offset))
                got += pairs
            assert sorted(got) == expected
            d, o = shard.locate(p, 0, 10**9)
            assert list(zip(d.tolist(), o.tolist())) == expected
            assert shard.docs(p).tolist() == sorted({d for d, _ in expected})
        assert shard.count_many(patterns).tolist() == [shard.count(p) for p in patterns]


@SETTINGS
@given(corpus_and_patterns(), st.data())
def test_cnf(cp, data):
    docs, patterns = cp
    clauses = data.draw(st.lists(st.lists(st.sampled_from(patterns), min_size=1, max_size=3), min_size=1, max_size=3))
    expected = [
        d for d, doc in enumerate(docs) if all(any(SEP not in t and t in doc for t in clause) for clause in clauses)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        assert build(docs, directory=tmp).cnf(clauses).tolist() == expected


@SETTINGS
@given(corpora, rates, st.data())
def test_extract_and_snippet(docs, isa_sample, data):
    with tempfile.TemporaryDirectory() as tmp:
        shard = build(docs, 4, isa_sample, tmp)
        for d, doc in enumerate(docs):
            assert shard.extract(d) == doc
            offset = data.draw(st.integers(0, len(doc)))
            width = data.draw(st.integers(0, len(doc) + 3))
            assert shard.snippet(d, offset, width) == doc[offset : offset + width]
        with pytest.raises(IndexError):
            shard.extract(len(docs))
        with pytest.raises(IndexError):
            shard.snippet(0, len(docs[0]) + 1, 1)


@SETTINGS
@given(corpora, st.data(), st.booleans())
def test_count_windows(docs, data, existence_only):
    text = data.draw(
        st.one_of(
            st.sampled_from(docs).map(lambda d: d + b"zq" + d[::-1]),  # mostly present
            st.binary(min_size=1, max_size=40),
        )
    )
    assume(len(text) > 0)
    n = data.draw(st.integers(1, 40))
    starts = np.array([data.draw(st.integers(0, len(text) - 1)) for _ in range(n)], dtype=np.int64)
    lengths = np.array([data.draw(st.integers(1, len(text) - s)) for s in starts], dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        shard = build(docs, directory=tmp)
        got = shard.count_windows(text, starts, lengths, existence_only).tolist()
    counts = [len(naive_occurrences(docs, text[s : s + n])) if SEP not in text[s : s + n] else 0 for s, n in zip(starts, lengths)]
    assert got == ([min(c, 1) for c in counts] if existence_only else counts)


@SETTINGS
@given(corpora, st.data(), st.booleans(), st.sampled_from([2, 3, 16, 0]))
def test_interleaved_count_windows_equals_serial_and_scan(docs, data, existence_only, group):
    """Lockstep searches (group > 1, or 0 = chosen by layout) give what the one-at-a-time path
    (group=1) and a naive scan give, on sliding, scattered and overlapping windows."""
    pieces = data.draw(st.lists(st.one_of(st.sampled_from(docs), st.binary(max_size=30)), min_size=1, max_size=6))
    text = b"zq".join(pieces) + b"\xff" * data.draw(st.integers(0, 1))
    assume(len(text) > 0)
    if data.draw(st.booleans()):  # sliding windows of one width
        width = data.draw(st.integers(1, min(12, len(text))))
        starts = np.arange(0, len(text) - width + 1, dtype=np.int64)
        lengths = np.full(len(starts), width, dtype=np.int64)
    else:
        n = data.draw(st.integers(1, 60))
        starts = np.array([data.draw(st.integers(0, len(text) - 1)) for _ in range(n)], dtype=np.int64)
        lengths = np.array([data.draw(st.integers(1, len(text) - s)) for s in starts], dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        shard = build(docs, directory=tmp)
        serial = shard.count_windows(text, starts, lengths, existence_only, 1).tolist()
        got = shard.count_windows(text, starts, lengths, existence_only, group).tolist()
        patterns = [text[s : s + n] for s, n in zip(starts, lengths)]
        many = shard.count_many(patterns, group).tolist()
        assert shard.count_many(patterns, 1).tolist() == many
    counts = [len(naive_occurrences(docs, p)) if SEP not in p else 0 for p in patterns]
    assert many == counts
    assert serial == got == ([min(c, 1) for c in counts] if existence_only else counts)


def test_sliding_windows_of_long_text(tmp_path):
    rng = np.random.default_rng(0)
    docs = [bytes(rng.choice(list(b"abcd"), size=int(rng.integers(0, 400))).astype(np.uint8)) for _ in range(40)]
    path = str(tmp_path / "s.fm")
    fm.build_shard(np.frombuffer(make_text(docs), dtype=np.uint8), path)
    shard = fm.Shard(path)
    text = docs[3][50:250] + b"dddddddddddd" + docs[7][:300]
    for w in (1, 5, 12, 50):
        starts = np.arange(0, len(text) - w + 1, dtype=np.int64)
        lengths = np.full(len(starts), w, dtype=np.int64)
        counts = shard.count_windows(text, starts, lengths)
        assert counts.tolist() == [len(naive_occurrences(docs, text[s : s + w])) for s in starts]
        assert shard.count_windows(text, starts, lengths, True).tolist() == [min(c, 1) for c in counts.tolist()]


# ---------------------------------------------------------------- argument errors


def test_invalid_arguments(tmp_path):
    path = str(tmp_path / "s.fm")
    with pytest.raises(ValueError):
        fm.build_shard(b"", path)
    with pytest.raises(ValueError):
        fm.build_shard(b"abc", path)  # no final separator
    fm.build_shard(b"abc\xff\xffxyz\xff", path)
    shard = fm.Shard(path)
    assert [shard.extract(i) for i in range(3)] == [b"abc", b"", b"xyz"]
    with pytest.raises(ValueError):
        shard.count(b"")
    assert shard.count(b"c\xffx") == 0
    with pytest.raises(ValueError):
        shard.count_windows(b"abc", np.array([2]), np.array([5]))
    with pytest.raises(ValueError):
        shard.count_windows(b"abc", np.array([0]), np.array([0]))
    with pytest.raises(ValueError):
        shard.cnf([])
    assert shard.cnf([[b"abc"], []]).tolist() == []


# ---------------------------------------------------------------- file format


@pytest.fixture
def shard_path(tmp_path):
    path = str(tmp_path / "s.fm")
    fm.build_shard(make_text([b"the quick brown fox", b"jumps over", b"the lazy dog"] * 50), path)
    return path


def test_round_trip_metadata(shard_path):
    s = fm.Shard(shard_path)
    assert s.format_version == fm.FORMAT_VERSION == 1
    assert s.index_bytes == os.path.getsize(shard_path)
    assert s.sa_sample == 32 and s.isa_sample == 32
    assert isinstance(s.checksum, int)
    assert s.count(b"the ") == 100
    assert fm.Shard(shard_path, verify=False).checksum == s.checksum


def test_truncated_file(shard_path):
    data = open(shard_path, "rb").read()
    for cut in (len(data) - 1, len(data) // 2, 100, 10, 0):
        with open(shard_path, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(fm.FormatError):
            fm.Shard(shard_path)


def test_flipped_byte(shard_path):
    data = bytearray(open(shard_path, "rb").read())
    data[len(data) // 2] ^= 0x10
    with open(shard_path, "wb") as f:
        f.write(data)
    with pytest.raises(fm.FormatError, match="checksum"):
        fm.Shard(shard_path)


def test_flipped_header_byte(shard_path):
    data = bytearray(open(shard_path, "rb").read())
    data[20] ^= 0x01  # inside the text size
    with open(shard_path, "wb") as f:
        f.write(data)
    with pytest.raises(fm.FormatError):
        fm.Shard(shard_path, verify=False)


def test_newer_version(shard_path):
    data = bytearray(open(shard_path, "rb").read())
    data[8:12] = struct.pack("<I", fm.FORMAT_VERSION + 1)
    with open(shard_path, "wb") as f:
        f.write(data)
    with pytest.raises(fm.FormatError, match="newer rtv"):
        fm.Shard(shard_path)


def test_not_a_shard_and_missing(tmp_path):
    p = tmp_path / "x.fm"
    p.write_bytes(b"hello world, not an index" * 10)
    with pytest.raises(fm.FormatError):
        fm.Shard(str(p))
    with pytest.raises(FileNotFoundError):
        fm.Shard(str(tmp_path / "missing.fm"))


@settings(max_examples=40, deadline=None)
@given(docs=corpora, rate=st.sampled_from([1, 3, 32]))
def test_libdivsufsort_suffix_array_gives_the_same_shard(docs, rate):
    """The shard built from libdivsufsort's suffix array (the ShardWriter path) is byte-identical
    to the one built with our SA-IS."""
    pytest.importorskip("pydivsufsort")
    from retrieval.exact import suffix_array

    text = bytearray(make_text(docs))
    with tempfile.TemporaryDirectory() as tmp:
        a, b = os.path.join(tmp, "a.fm"), os.path.join(tmp, "b.fm")
        fm.build_shard(bytes(text), a, sa_sample=rate, isa_sample=rate)
        fm.build_shard(text, b, sa_sample=rate, isa_sample=rate, suffix_array=suffix_array(text))
        assert open(a, "rb").read() == open(b, "rb").read()


def test_suffix_array_argument_is_checked(tmp_path):
    import numpy as np

    text = make_text([b"abc", b"abd"])
    with pytest.raises(TypeError, match="int32"):
        fm.build_shard(text, str(tmp_path / "a.fm"), suffix_array=np.zeros(len(text), np.int64))
    with pytest.raises(ValueError, match="as long as the text"):
        fm.build_shard(text, str(tmp_path / "a.fm"), suffix_array=np.zeros(len(text) - 1, np.int32))
    with pytest.raises(ValueError, match="out of range"):
        fm.build_shard(text, str(tmp_path / "a.fm"), suffix_array=np.full(len(text), 10**6, np.int32))
