"""The pair table (the rows of every two-byte string, read instead of a search's first step)
against a naive scan and against plain backward search.

count() starts from the table; count_many and count_windows run their own lockstep walks from the
last byte's rows and never read it, so comparing them is table vs plain backward search on the
same shard. The patterns are every string of 1-3 bytes over the text's bytes and bytes it lacks
(0x00, 0xFE, 0xFF among them), on corpora with long runs, document boundaries and shards of 1-3
bytes. A shard written before the table (tests/data, made by rtv at commit ed2c670) must open and
count by backward search alone.
"""

import itertools
import os
import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _oracles import naive_occurrences

fm = pytest.importorskip("retrieval._fm_index")

SEP = b"\xff"
OLD_SHARD = os.path.join(os.path.dirname(__file__), "data", "shard-without-pair-table.fmi")


def old_shard_docs() -> list[bytes]:
    """The documents of OLD_SHARD (it was built from exactly these, with sa_sample = isa_sample = 4)."""
    rng = random.Random(7)
    docs = [b"", b"a", b"\x00", b"\xfe", b"ab", "héllo wörld €𝄞".encode()]
    for _ in range(40):
        alphabet = rng.choice([b"ab", b"abc\x00", bytes(range(255)), b"the quick brown fox "])
        docs.append(bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 200))))
    return docs


def expected_count(docs, p):
    return 0 if SEP in p else len(naive_occurrences(docs, p))


def short_patterns(docs, extra=b"\x00\xfe\xffz"):
    """Every string of 1-3 bytes over the corpus's bytes plus `extra` (when that stays small), and
    some of length 4."""
    alphabet = sorted(set(b"".join(docs)) | set(extra))[:12]
    out = [bytes(p) for n in (1, 2, 3) for p in itertools.product(alphabet, repeat=n)]
    rng = random.Random(len(out))
    out += [bytes(rng.choice(alphabet) for _ in range(4)) for _ in range(200)]
    return out


def check_shard(shard, docs, patterns):
    want = [expected_count(docs, p) for p in patterns]
    assert [shard.count(p) for p in patterns] == want
    assert shard.count_many(patterns, 1, 1).tolist() == want  # plain backward search, serial
    assert shard.count_many(patterns).tolist() == want  # plain backward search, lockstep
    for p in patterns[:: max(1, len(patterns) // 60)]:  # locate and docs start from search() too
        d, o = shard.locate(p, 0, 10**9)
        assert sorted(zip(d.tolist(), o.tolist())) == (sorted(naive_occurrences(docs, p)) if SEP not in p else [])


def build(tmp_path, docs, name="shard.fmi", rate=4):
    path = os.path.join(tmp_path, name)
    fm.build_shard(b"".join(d + SEP for d in docs), path, sa_sample=rate, isa_sample=rate)
    return fm.Shard(path)


docs_strategy = st.lists(
    st.one_of(
        st.binary(max_size=40).map(lambda b: bytes(b"a\x00\xfe"[x % 3] for x in b)),
        st.binary(max_size=40).map(lambda b: bytes(x % 255 for x in b)),
        st.binary(max_size=80).map(lambda b: b"b" * len(b)),  # long runs
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(docs_strategy)
def test_pair_table_matches_scan_and_backward_search(tmp_path, docs):
    shard = build(tmp_path, docs)
    assert shard.has_pair_table
    check_shard(shard, docs, short_patterns(docs))


@pytest.mark.parametrize("docs", [[b""], [b"a"], [b"ab"], [b"", b""], [b"\x00"], [b"\xfe"], [b"a", b""], [b"\x00\xfe"]])
def test_shards_of_one_to_three_bytes(tmp_path, docs):
    shard = build(tmp_path, docs, rate=1)
    assert shard.text_bytes == sum(len(d) + 1 for d in docs) <= 3
    check_shard(shard, docs, short_patterns(docs, b"\x00\x01a\xfe\xff"))


def test_pairs_across_document_boundaries(tmp_path):
    docs = [b"xa", b"by", b"ab", b"b", b"a"]
    shard = build(tmp_path, docs)
    assert shard.count(b"ab") == 1  # only inside document 2, not "a" + separator + "b"
    assert shard.count(b"ba") == 0 and shard.count(b"a") == 3 and shard.count(b"b") == 3
    check_shard(shard, docs, short_patterns(docs))


def test_all_byte_pairs_on_a_text_with_every_byte(tmp_path):
    rng = random.Random(3)
    docs = [bytes(rng.randrange(255) for _ in range(3000)) for _ in range(3)] + [bytes(range(255))]
    shard = build(tmp_path, docs, rate=32)
    pairs = [bytes([a, b]) for a in range(256) for b in range(256)]
    want = [expected_count(docs, p) for p in pairs]
    assert [shard.count(p) for p in pairs] == want
    assert shard.count_many(pairs).tolist() == want


def test_shard_without_pair_table_opens_and_counts(tmp_path):
    docs = old_shard_docs()
    old = fm.Shard(OLD_SHARD)
    assert not old.has_pair_table and old.format_version == 1
    assert old.n_docs == len(docs) and old.doc_lengths().tolist() == [len(d) for d in docs]
    assert [old.extract(d) for d in range(len(docs))] == docs
    patterns = short_patterns(docs)[:3000] + [d[i:i + n] for d in docs if d for i in range(0, len(d), 17) for n in (2, 5, 9)]
    check_shard(old, docs, patterns)
    new = build(tmp_path, docs)
    assert new.has_pair_table
    assert [new.count(p) for p in patterns] == [old.count(p) for p in patterns]


def pair_table_offset(path):
    """File offset of the pair table's first entry: the header, then the counts section (primary
    row, C as a length-prefixed array of 257 u64, the table's length)."""
    with open(path, "rb") as f:
        header = f.read(128)
    counts_begin = struct.unpack_from("<Q", header, 56)[0]  # section_begin[counts], body-relative
    return 128 + counts_begin + 8 + 8 + 257 * 8 + 8


def test_damaged_pair_table_is_refused(tmp_path):
    shard = build(tmp_path, [b"abcab", b"ba"])
    path = os.path.join(tmp_path, "shard.fmi")
    data = bytearray(open(path, "rb").read())
    at = pair_table_offset(path)
    assert struct.unpack_from("<Q", data, at - 8)[0] == 255 * 256
    text = b"abcab\xffba\xff"
    first_ab = 1 + sum(x < ord("a") for x in text) + sum(text[i] == ord("a") and text[i + 1] < ord("b") for i in range(len(text) - 1))
    assert struct.unpack_from("<I", data, at + 4 * (ord("a") * 256 + ord("b")))[0] == first_ab  # the row of "ab"
    struct.pack_into("<I", data, at, 0xFFFFFFFF)  # pairs[0] past every row
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(fm.FormatError, match="checksum"):
        fm.Shard(path)
    with pytest.raises(fm.FormatError, match="pair table"):
        fm.Shard(path, verify=False)


@pytest.mark.parametrize("width", [1, 2, 3, 5])
def test_sliding_windows_start_from_the_table(tmp_path, width):
    """count_windows over sliding windows (overlapping: the serial path, which starts each search
    from C or the pair table) and over the same windows scattered (the lockstep path), against
    the scan; the query text holds separators and bytes the corpus lacks."""
    rng = random.Random(width)
    docs = [bytes(rng.choice(b"abc\x00") for _ in range(rng.randint(0, 60))) for _ in range(12)] + [b"b" * 100]
    shard = build(tmp_path, docs)
    text = b"".join(docs[:6]) + b"\xffz\xfe" + docs[12][:20] + b"ab\xffba" + bytes(rng.choice(b"abcz") for _ in range(200))
    n = len(text) - width + 1
    starts = np.arange(n, dtype=np.int64)
    lengths = np.full(n, width, dtype=np.int64)
    want = [expected_count(docs, text[i:i + width]) for i in range(n)]
    assert shard.count_windows(text, starts, lengths).tolist() == want
    assert shard.count_windows(text, starts, lengths, True).tolist() == [min(c, 1) for c in want]
    order = np.array(rng.sample(range(n), n), dtype=np.int64)
    for group in (1, 16):
        assert shard.count_windows(text, starts[order], lengths[order], False, group, 1).tolist() == [want[i] for i in order]
