"""Counts over texts large enough to span many 512-bit rank blocks, against a naive scan.

The wavelet tree's rank walk reads each level's block once when a suffix-array range's two ends
share it (one decode for both) and prefetches the next level's blocks from the directory alone;
these texts put range ends on both sides of block borders, in all-zero / all-one, run-coded and
plain blocks, with deep Huffman codes (skewed counts) and all 256 symbols. Every count goes
through count() (rank_pair), count_many (the lockstep walks) and count_windows with existence
only, so all the count paths are checked against the same scan.
"""

import itertools
import os
import random

import numpy as np
import pytest

from _oracles import naive_occurrences

fm = pytest.importorskip("retrieval._fm_index")

SEP = b"\xff"


def build(tmp_path, docs, name="shard.fm"):
    path = os.path.join(tmp_path, name)
    fm.build_shard(b"".join(d + SEP for d in docs), path, sa_sample=8, isa_sample=8)
    return fm.Shard(path)


def expected_count(docs, p):
    return 0 if SEP in p else len(naive_occurrences(docs, p))


def check_counts(shard, docs, patterns):
    want = [expected_count(docs, p) for p in patterns]
    assert [shard.count(p) for p in patterns] == want
    assert shard.count_many(patterns).tolist() == want  # lockstep walks (walk_level)
    assert shard.count_many(patterns, 1, 1).tolist() == want
    text = b"".join(patterns)
    starts = np.cumsum([0] + [len(p) for p in patterns[:-1]]).astype(np.int64)
    lengths = np.array([len(p) for p in patterns], dtype=np.int64)
    assert shard.count_windows(text, starts, lengths, True).tolist() == [min(c, 1) for c in want]


def substrings(rng, docs, n, max_len):
    out = []
    for _ in range(n):
        d = rng.choice([d for d in docs if d])
        i = rng.randrange(len(d))
        out.append(d[i : i + rng.randint(1, max_len)])
    return out


def runs_text(rng, n, alphabet, max_run):
    """Runs of random lengths (long runs make all-zero/all-one and run-coded blocks), with noisy
    stretches (plain blocks) in between."""
    out = bytearray()
    while len(out) < n:
        if rng.random() < 0.3:
            out += bytes(rng.choice(alphabet) for _ in range(rng.randint(50, 400)))
        else:
            out += bytes([rng.choice(alphabet)]) * rng.randint(1, max_run)
    return bytes(out[:n])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_small_alphabet_every_short_string(tmp_path, seed):
    rng = random.Random(seed)
    alphabet = b"abcd"
    docs = [runs_text(rng, rng.randint(3000, 30000), alphabet, rng.choice([3, 40, 2000])) for _ in range(4)]
    shard = build(tmp_path, docs)
    every = [bytes(t) for k in (1, 2, 3, 4) for t in itertools.product(alphabet, repeat=k)]
    check_counts(shard, docs, every + substrings(rng, docs, 200, 40) + [b"abcde", b"e", b"a" * 3000])


@pytest.mark.parametrize("lengths", [[511], [512], [513], [1023, 1024, 1025], [4097, 1, 64], [20000]])
def test_all_same_byte(tmp_path, lengths):
    docs = [b"a" * n for n in lengths]
    shard = build(tmp_path, docs)
    ks = sorted({1, 2, 63, 64, 65, 511, 512, 513, *lengths, max(lengths) + 1})
    patterns = [b"a" * k for k in ks] + [b"b", b"ab", b"aab"]
    for k in ks:  # the count is known in closed form too, not only by the scan
        assert shard.count(b"a" * k) == sum(max(0, n - k + 1) for n in lengths)
    check_counts(shard, docs, patterns)


@pytest.mark.parametrize("seed", [0, 1])
def test_all_256_symbols(tmp_path, seed):
    """Every byte value (0xFF as the separator): uniform and Zipf-skewed, so codes are both short
    and ~20 levels deep."""
    rng = random.Random(seed)
    uniform = bytes(rng.randrange(255) for _ in range(40000))
    weights = [1.0 / (k + 1) ** 1.3 for k in range(255)]
    skewed = bytes(rng.choices(range(255), weights, k=60000))
    docs = [uniform, skewed, bytes(range(255)), b""]
    shard = build(tmp_path, docs)
    singles = [bytes([c]) for c in range(256)]
    check_counts(shard, docs, singles + substrings(rng, docs, 300, 12) + [bytes([rng.randrange(255) for _ in range(3)]) for _ in range(100)])


def test_fibonacci_counts_give_deep_codes(tmp_path):
    """Symbol counts growing like Fibonacci numbers make the deepest Huffman tree for the
    alphabet: every level of the rank walk is one more border to cross."""
    fib = [1, 1]
    while len(fib) < 22:
        fib.append(fib[-1] + fib[-2])
    rng = random.Random(5)
    symbols = [c for c, n in enumerate(fib) for _ in range(n)]
    rng.shuffle(symbols)
    text = bytes(symbols)
    docs = [text[i : i + 5000] for i in range(0, len(text), 5000)]
    shard = build(tmp_path, docs)
    check_counts(shard, docs, [bytes([c]) for c in range(23)] + substrings(rng, docs, 300, 8))
