"""Subprocess side of tests/test_faults.py: corrupts a real shard many times and queries it.

Run as `python _fault_worker.py SHARD WORKDIR SEED FIRST LAST` (or `index INDEX WORKDIR SEED FIRST
LAST` for a whole index, see index_main). For each trial i in [FIRST, LAST)
it writes a corrupted copy of SHARD (the mutation is chosen by seed and i alone), opens it with
verify=False and runs every kind of query on it. It prints "start i <mutation>" before a trial
and "end i <outcome>" after, flushed, so that when a trial kills the process (a segfault) the
parent knows which one and can go on from the next. Outcomes: "ok" (every query answered),
"format" (FormatError at open or during a query), or "other <type>: <message>".
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

HEADER = 128  # RawHeader in csrc/fm_index/shard_file.cpp: fields below, then its own checksum
FIELDS = {  # name -> (offset, struct format)
    "version": (8, "<I"), "header_bytes": (12, "<I"), "text_bytes": (16, "<Q"), "n_docs": (24, "<Q"),
    "sa_sample": (32, "<I"), "isa_sample": (36, "<I"), "body_bytes": (40, "<Q"), "body_checksum": (48, "<Q"),
    **{f"section_{s}": (56 + 8 * s, "<Q") for s in range(8)},
}


def reseal(fm, data: bytearray) -> None:
    """Recompute the header checksum, so a header edit reaches the checks behind it."""
    struct.pack_into("<Q", data, HEADER - 8, fm.checksum64(bytes(data[:HEADER - 8])))


def section_starts(data: bytes) -> list[int]:
    return [HEADER + struct.unpack_from("<Q", data, 56 + 8 * s)[0] for s in range(8)]


def mutate(fm, original: bytes, rng: random.Random) -> tuple[bytearray, str]:
    data = bytearray(original)
    n = len(data)
    starts = section_starts(original)
    kind = rng.choice(["flip", "flip", "meta", "meta", "meta", "word", "zero_range", "header", "truncate"])
    if kind == "flip":  # random bit flips anywhere in the body
        where = [rng.randrange(HEADER, n) for _ in range(rng.randint(1, 8))]
        for p in where:
            data[p] ^= 1 << rng.randrange(8)
        return data, f"flip {where}"
    if kind == "meta":  # a length, count or offset near the start of a section (or its tables)
        s = rng.randrange(7)
        lo, hi = starts[s], min(starts[s + 1], starts[s] + rng.choice([64, 256, 4096]))
        if hi <= lo:
            return data, "noop"
        p = rng.randrange(lo, hi) & ~7 if rng.random() < 0.7 else rng.randrange(lo, hi)
        value = rng.choice([0, 1, 2, 255, 256, 1 << 31, 1 << 32, (1 << 64) - 1, rng.getrandbits(64),
                            struct.unpack_from("<Q", data, min(p, n - 8))[0] + rng.choice([-1, 1, 64])])
        value %= 1 << 64
        if p + 8 <= n and p % 8 == 0:
            struct.pack_into("<Q", data, p, value)
        else:
            data[p] ^= 1 << rng.randrange(8)
        return data, f"meta section {s} at {p} = {value}"
    if kind == "word":  # a random aligned word of the body set to a random value
        p = rng.randrange(HEADER, n - 8) & ~7
        value = rng.choice([0, rng.getrandbits(64), rng.getrandbits(16)])
        struct.pack_into("<Q", data, p, value)
        return data, f"word {p} = {value}"
    if kind == "zero_range":
        p = rng.randrange(HEADER, n)
        length = rng.choice([8, 64, 512, 4096])
        data[p:p + length] = bytes(len(data[p:p + length]))
        return data, f"zero {p}+{length}"
    if kind == "header":  # a header field changed, checksum recomputed
        name = rng.choice(list(FIELDS))
        off, fmt = FIELDS[name]
        old = struct.unpack_from(fmt, data, off)[0]
        bits = 8 * struct.calcsize(fmt)
        value = rng.choice([0, 1, old + 1, old - 1, old + 8, old * 2, rng.getrandbits(bits)]) % (1 << bits)
        struct.pack_into(fmt, data, off, value)
        reseal(fm, data)
        return data, f"header {name} {old} -> {value}"
    cut = rng.randrange(0, n)
    return data[:cut], f"truncate at {cut}"


def queries(fm, shard, patterns: list[bytes], text: bytes) -> None:
    import numpy as np

    n = shard.n_docs
    for p in patterns:
        shard.count(p)
        shard.locate(p, 0, 50)
        shard.docs(p)
    shard.count_many(patterns)
    shard.cnf([patterns[:2], patterns[2:4]])
    for d in {0, n - 1, n // 2}:
        shard.extract(d)
        shard.snippet(d, 0, 40)
    shard.doc_lengths()
    docs = np.arange(n, dtype=np.int64)
    shard.extract_ranges(docs, np.zeros(n, np.int64), np.full(n, 1 << 40, np.int64))
    shard.extract_ranges(docs, np.zeros(n, np.int64), np.full(n, 1 << 40, np.int64), group=1)
    starts = np.arange(0, len(text) - 12, 7, dtype=np.int64)
    lengths = np.full(len(starts), 12, np.int64)
    shard.count_windows(text, starts, lengths)
    shard.count_windows(text, starts, lengths, True, 16)
    shard.count_windows(text, starts, lengths, False, 1)


# -- whole indexes --------------------------------------------------------------------------------------
def index_answers(index, probe: dict) -> dict:
    """Every kind of answer of an index to the probe (patterns, documents, passages, vectors), as JSON."""
    import numpy as np

    out = {"count": [index.count(p) for p in probe["patterns"]],
           "find": [sorted(zip(*(a.tolist() for a in index.find(p, 0, 30)))) for p in probe["patterns"]],
           "cnf": index.cnf([probe["patterns"][:2], probe["patterns"][2:4]]).tolist(),
           "extract": [index.extract(d) for d in probe["docs"]],
           "bm25": [[list(r) for r in index.store.bm25(w, 5)] for w in probe["words"]]}
    rows = index.passages(probe["passages"]) if hasattr(index, "passages") else index.store.passages(probe["passages"])
    out["passages"] = [[r["doc_id"], r["start"], r["end"], r["text"]] for r in rows]
    if index.dense is not None:
        _, ids = index.dense.search(np.asarray(probe["vectors"], dtype=np.float32), 5)
        out["dense"] = ids.tolist()
    return out


def mutate_file(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    if not data:
        return "empty file"
    kind = rng.choice(["flip", "flip", "flip", "word", "zero_range", "truncate"])
    if kind == "flip":
        where = [rng.randrange(len(data)) for _ in range(rng.randint(1, 4))]
        for p in where:
            data[p] ^= 1 << rng.randrange(8)
        what = f"flip {where}"
    elif kind == "word":
        p = rng.randrange(len(data))
        data[p:p + 8] = rng.getrandbits(64).to_bytes(8, "little")[:len(data[p:p + 8])]
        what = f"word at {p}"
    elif kind == "zero_range":
        p = rng.randrange(len(data))
        data[p:p + 64] = bytes(len(data[p:p + 64]))
        what = f"zero {p}+64"
    else:
        cut = rng.randrange(len(data))
        data = data[:cut]
        what = f"truncate at {cut}"
    path.write_bytes(data)
    return what


def index_main(index_dir: Path, work: Path, seed: int, first: int, last: int) -> None:
    """Trials of random damage to one file of a copy of the index, opened with verify=True."""
    import json
    import shutil

    from retrieval import Index
    from retrieval.errors import IndexFormatError

    probe = json.loads((work / "probe.json").read_text())
    expected = json.loads((work / "expected.json").read_text())
    files = sorted(str(p.relative_to(index_dir)) for p in index_dir.rglob("*") if p.is_file())
    for i in range(first, last):
        rng = random.Random(seed * 1_000_003 + i)
        rel = files[i % len(files)]
        copy = work / f"trial-{i}"
        shutil.copytree(index_dir, copy)
        what = f"{rel}: {mutate_file(copy / rel, rng)}"
        print(f"start {i} {what}", flush=True)
        try:
            index = Index.open(copy, device="cpu")
            try:
                got = json.loads(json.dumps(index_answers(index, probe)))
            finally:
                index.close()
            wrong = [k for k in expected if got.get(k) != expected[k]]
            outcome = f"wrong: {wrong}" if wrong else "ok"
        except IndexFormatError as exc:
            outcome = "format" if "\n" not in str(exc) and str(exc) else f"other multi-line IndexFormatError: {exc!r}"
        except Exception as exc:
            outcome = f"other {type(exc).__name__}: {str(exc)[:200]}"
        shutil.rmtree(copy)
        print(f"end {i} {outcome}", flush=True)


def main() -> None:
    from retrieval import _fm_index as fm

    if sys.argv[1] == "index":
        index_main(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
        return
    shard_path, work, seed, first, last = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    original = Path(shard_path).read_bytes()
    text = Path(shard_path + ".text").read_bytes()
    rng0 = random.Random(seed)
    patterns = []
    for _ in range(6):
        a = rng0.randrange(len(text) - 8)
        patterns.append(text[a:a + rng0.randint(1, 6)].replace(b"\xff", b"a") or b"a")
    target = work / f"corrupt-{seed}.fmi"
    for i in range(first, last):
        rng = random.Random(seed * 1_000_003 + i)
        data, what = mutate(fm, original, rng)
        target.write_bytes(data)
        print(f"start {i} {what}", flush=True)
        try:
            shard = fm.Shard(str(target), False)
            queries(fm, shard, patterns, text)
            outcome = "ok"
        except fm.FormatError:
            outcome = "format"
        except Exception as exc:  # reported to the parent, which fails the test with it
            outcome = f"other {type(exc).__name__}: {str(exc)[:200]}"
        print(f"end {i} {outcome}", flush=True)


if __name__ == "__main__":
    main()
