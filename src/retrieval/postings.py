"""The compact lexical part: an inverted index of term frequencies without positions, and BM25 over it.

FTS5 (rtv's earlier lexical part) keeps every token's position, which BM25 over terms never reads;
this keeps, per term, the passages that hold it (Elias-Fano) and how often (unary), with a
front-coded vocabulary and bit-packed passage lengths (docs/formats.md, "lexical/"; issue 8).

- Tokens are SQLite's own: texts and queries are tokenized by an FTS5 table with the same
  tokenizer ('porter unicode61') and read back through fts5vocab, so a term here is exactly a
  term of FTS5, without a second implementation of porter and unicode61 to drift apart.
- Ranking is FTS5's bm25() (k1 1.2, b 0.75, idf log((N - n + 0.5) / (n + 0.5)), 1e-6 where that is
  <= 0; the same arithmetic in float64, phrase by phrase in query order), over the live passages:
  tombstoned passages are neither returned nor counted in N, the average length or a term's n, so
  the scores equal those of a fresh build of the live documents (what FTS5's 'delete' gave).
- A quoted token that the tokenizer turns into several tokens is an FTS5 phrase, which needs
  positions: it is left out of BM25 here (its words are OR terms of the query anyway; quoted
  phrases are matched byte for byte by the exact stage, which ranks passages holding them first).
- One file per shard (`lexical/shard-NNNNN.lex`), written by the shard's build step beside its
  FM-index shard, with passage ids local to the shard; the manifest's `lexical.segments` give
  each file's first global passage id. Statistics are summed over the files.
"""

from __future__ import annotations

import mmap
import math
import re
import sqlite3
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import IndexFormatError

TOKENIZER = "porter unicode61"
MAGIC = b"RTVLEX\x00\x01"
VERSION = 2  # 1: passage-id gaps and tfs bit-packed in blocks of 128 (never released)
BUCKET = 16  # vocabulary terms per front-coded bucket
K1, B = 1.2, 0.75  # FTS5's bm25() constants
# magic, version, flags, n_passages, n_terms, total_tokens, then (offset, size) of the four sections
_HEADER = struct.Struct("<8sII3Q8Q")
HEADER_BYTES = _HEADER.size


# -- tokenizing through SQLite's FTS5 ---------------------------------------------------------------
def _fts_db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", check_same_thread=False)
    db.execute(f"create virtual table t using fts5(text, content='', tokenize='{TOKENIZER}')")
    db.execute("create virtual table v using fts5vocab(t, 'instance')")
    return db


_local = threading.local()


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """Each text's FTS5 tokens in order (the terms FTS5 indexes or searches it by)."""
    db = getattr(_local, "db", None)
    if db is None:
        db = _local.db = _fts_db()
    with db:
        db.executemany("insert into t (rowid, text) values (?, ?)", enumerate(texts))
        rows = db.execute("select doc, offset, term from v").fetchall()
        db.execute("insert into t (t) values ('delete-all')")
    out: list[list[str]] = [[] for _ in texts]
    for doc, _, term in sorted(rows):
        out[doc].append(term)
    return out


# -- bit packing ------------------------------------------------------------------------------------
def _widths(values: np.ndarray) -> np.ndarray:
    """Bits needed by each value (0 for 0)."""
    out = np.zeros(len(values), dtype=np.int64)
    nz = values > 0
    out[nz] = np.floor(np.log2(values[nz].astype(np.float64))).astype(np.int64) + 1
    # log2 of a float may round up just below a power of two: fix by checking the bound
    over = nz & ((np.int64(1) << np.maximum(out - 1, 0)) > values)
    out[over] -= 1
    return out


def _pack(values: np.ndarray, widths: np.ndarray) -> bytes:
    """values[i] in widths[i] bits, LSB first, one bit stream padded to whole bytes."""
    if len(values) == 0 or widths.max(initial=0) == 0:
        return b"\x00" * ((int(widths.sum()) + 7) // 8)
    maxw = int(widths.max())
    shifts = np.arange(maxw, dtype=np.uint64)
    bits = ((values.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    bits = bits[shifts[None, :] < widths.astype(np.uint64)[:, None]]
    return np.packbits(bits, bitorder="little").tobytes()


def _unpack(buf: np.ndarray, widths: np.ndarray, start_bit: int = 0) -> np.ndarray:
    """The values of `widths` bits each read in order from bit `start_bit` of `buf` (uint8, with at
    least 8 bytes after the last value's first byte)."""
    if len(widths) == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = start_bit + np.concatenate(([0], np.cumsum(widths[:-1])))
    idx = (offsets >> 3)[:, None] + np.arange(8)
    words = buf[idx].view("<u8").ravel()
    mask = (np.uint64(1) << widths.astype(np.uint64)) - np.uint64(1)
    return ((words >> (offsets & 7).astype(np.uint64)) & mask).astype(np.int64)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _read_varint(data, pos: int, end: int, where: str) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise IndexFormatError(f"{where}: a damaged number in the postings file; rebuild the index")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7


def _low_bits(n_docs: int, df: int) -> int:
    """Elias-Fano's low-bit width for `df` ids below `n_docs`: floor(log2(n_docs / df)), at least 0."""
    return max(0, (n_docs // df).bit_length() - 1)


def _encode_list(docs: np.ndarray, tfs: np.ndarray, n_docs: int) -> bytes:
    """One term's postings as one bit stream (LSB first, padded to a byte): the passage ids in
    Elias-Fano form (`low` bits of each id, then the high parts as a unary bit vector: id i sets bit
    (id >> low) + i), then each tf in unary (tf - 1 ones and a zero). A single posting: two varints."""
    if len(docs) == 1:
        return _varint(int(docs[0])) + _varint(int(tfs[0]) - 1)
    n = len(docs)
    low = _low_bits(n_docs, n)
    high_bits = n + (n_docs >> low) + 1
    low_part = np.zeros(n * low, dtype=np.uint8)
    if low:
        low_part = ((docs[:, None] >> np.arange(low)) & 1).astype(np.uint8).ravel()
    high_part = np.zeros(high_bits, dtype=np.uint8)
    high_part[(docs >> low) + np.arange(n)] = 1
    tf_part = np.ones(int(tfs.sum()), dtype=np.uint8)
    tf_part[np.cumsum(tfs) - 1] = 0
    return np.packbits(np.concatenate((low_part, high_part, tf_part)), bitorder="little").tobytes()


# -- writing a segment ------------------------------------------------------------------------------
def segment_bytes(texts: Sequence[str]) -> bytes:
    """The postings file of passages `texts` (local passage ids 0..len-1)."""
    db = _fts_db()
    with db:
        db.executemany("insert into t (rowid, text) values (?, ?)", enumerate(texts))
    rows = db.execute("select term, doc, count(*) from v group by term, doc order by term, doc").fetchall()
    db.close()
    n = len(texts)
    lengths = np.zeros(n, dtype=np.int64)
    vocab, postings, heads = bytearray(), bytearray(), bytearray()
    n_terms, prev = 0, b""
    i = 0
    total = len(rows)
    if total:
        docs_all = np.fromiter((r[1] for r in rows), dtype=np.int64, count=total)
        tfs_all = np.fromiter((r[2] for r in rows), dtype=np.int64, count=total)
        np.add.at(lengths, docs_all, tfs_all)
    while i < total:
        term = rows[i][0]
        j = i + 1
        while j < total and rows[j][0] == term:
            j += 1
        data = term.encode("utf-8")
        if n_terms % BUCKET == 0:
            heads += struct.pack("<II", len(vocab), len(postings))
            common = 0
        else:
            common = 0
            limit = min(len(prev), len(data))
            while common < limit and prev[common] == data[common]:
                common += 1
        plist = _encode_list(docs_all[i:j], tfs_all[i:j], n)
        vocab += _varint(common) + _varint(len(data) - common) + data[common:] + _varint(j - i) + _varint(len(plist))
        postings += plist
        prev, n_terms, i = data, n_terms + 1, j
    lw = int(_widths(lengths).max(initial=0))
    lengths_sec = bytes([lw]) + _pack(lengths, np.full(n, lw, dtype=np.int64))
    sections = [lengths_sec, bytes(heads), bytes(vocab), bytes(postings)]
    offsets, at = [], HEADER_BYTES
    for sec in sections:
        offsets += [at, len(sec)]
        at += len(sec)
    header = _HEADER.pack(MAGIC, VERSION, 0, n, n_terms, int(lengths.sum()), *offsets)
    return header + b"".join(sections)


def write_segment(path: Path, texts: Sequence[str]) -> int:
    """Write the postings file of `texts` at `path`; returns its size in bytes."""
    data = segment_bytes(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


# -- reading ----------------------------------------------------------------------------------------
class Segment:
    """One postings file, memory-mapped; every offset and count read from it is checked against
    its size and its header before use (a damaged file is an IndexFormatError naming it)."""

    def __init__(self, path: Path, first_passage: int, n_passages: int):
        self.path = path
        self.first = first_passage
        try:
            with open(path, "rb") as f:
                size = f.seek(0, 2)
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        except OSError as exc:
            raise IndexFormatError(f"{path}: cannot be read ({exc.strerror}); rebuild the index") from None
        if size < HEADER_BYTES:
            self._fail("shorter than its header")
        magic, version, _, n, self.n_terms, self.total_tokens, *secs = _HEADER.unpack_from(self._map, 0)
        if magic != MAGIC:
            self._fail("not an rtv postings file (bad magic)")
        if version != VERSION:
            raise IndexFormatError(f"{path}: postings format {version}, this rtv reads {VERSION}; "
                                   "rebuild the index with this version")
        if n != n_passages:
            self._fail(f"holds {n} passages, the manifest says {n_passages}")
        self.n = n
        self.sections = []
        expect = HEADER_BYTES
        for off, sz in zip(secs[::2], secs[1::2]):
            if off != expect or off + sz > size:
                self._fail("its sections do not fit the file")
            self.sections.append((off, off + sz))
            expect = off + sz
        if expect != size:
            self._fail("has bytes after its last section")
        self.n_buckets = (self.n_terms + BUCKET - 1) // BUCKET
        h0, h1 = self.sections[1]
        if h1 - h0 != 8 * self.n_buckets:
            self._fail("its vocabulary table has the wrong size")
        self._heads = np.frombuffer(self._map, dtype="<u4", count=2 * self.n_buckets, offset=h0).reshape(-1, 2) \
            if self.n_buckets else np.zeros((0, 2), dtype=np.uint32)
        v0, v1 = self.sections[2]
        p0, p1 = self.sections[3]
        if self.n_buckets and (np.any(np.diff(self._heads[:, 0].astype(np.int64)) <= 0)
                               or np.any(np.diff(self._heads[:, 1].astype(np.int64)) < 0)
                               or int(self._heads[-1, 0]) >= v1 - v0 or int(self._heads[-1, 1]) > p1 - p0
                               or int(self._heads[0, 0]) != 0 or int(self._heads[0, 1]) != 0):
            self._fail("its vocabulary table is out of order")
        self._lengths = None
        self._heads_cache: dict[int, bytes] = {}

    def _fail(self, what: str):
        raise IndexFormatError(f"{self.path}: damaged postings file ({what}); rebuild the index")

    @property
    def lengths(self) -> np.ndarray:
        """Tokens of each passage (its FTS5 column size), int64."""
        if self._lengths is None:
            l0, l1 = self.sections[0]
            if l1 - l0 < 1:
                self._fail("no passage lengths")
            w = self._map[l0]
            if w > 32 or l1 - l0 != 1 + (self.n * w + 7) // 8:
                self._fail("its passage lengths have the wrong size")
            buf = np.concatenate((np.frombuffer(self._map, dtype=np.uint8, count=l1 - l0 - 1, offset=l0 + 1),
                                  np.zeros(8, dtype=np.uint8)))
            self._lengths = _unpack(buf, np.full(self.n, w, dtype=np.int64))
            if int(self._lengths.sum()) != self.total_tokens:
                self._fail("its passage lengths do not sum to its token count")
        return self._lengths

    def _entry(self, pos: int, prev: bytes) -> tuple[bytes, int, int, int]:
        """(term, n postings, postings bytes, next pos) of the vocabulary entry at `pos`."""
        v0, v1 = self.sections[2]
        where = str(self.path)
        common, pos = _read_varint(self._map, pos, v1, where)
        suffix, pos = _read_varint(self._map, pos, v1, where)
        if common > len(prev) or pos + suffix > v1:
            self._fail("a vocabulary entry runs past its section")
        term = prev[:common] + self._map[pos:pos + suffix]
        pos += suffix
        df, pos = _read_varint(self._map, pos, v1, where)
        nbytes, pos = _read_varint(self._map, pos, v1, where)
        return term, df, nbytes, pos

    def _head(self, b: int) -> bytes:
        term = self._heads_cache.get(b)
        if term is None:
            term = self._entry(self.sections[2][0] + int(self._heads[b, 0]), b"")[0]
            self._heads_cache[b] = term
        return term

    def find(self, term: bytes) -> tuple[np.ndarray, np.ndarray] | None:
        """(global passage ids, term frequencies) of `term`, or None when the segment lacks it."""
        lo, hi = 0, self.n_buckets
        while lo < hi:  # the last bucket whose first term is <= term
            mid = (lo + hi) // 2
            if self._head(mid) <= term:
                lo = mid + 1
            else:
                hi = mid
        b = lo - 1
        if b < 0:
            return None
        v0, v1 = self.sections[2]
        p0, p1 = self.sections[3]
        pos, ppos, prev = v0 + int(self._heads[b, 0]), p0 + int(self._heads[b, 1]), b""
        for _ in range(min(BUCKET, self.n_terms - b * BUCKET)):
            got, df, nbytes, pos = self._entry(pos, prev)
            if ppos + nbytes > p1 or df == 0 or df > self.n:
                self._fail("a term's postings run past their section")
            if got == term:
                docs, tfs = self._decode(ppos, nbytes, df)
                return docs + self.first, tfs
            if got > term:
                return None
            prev, ppos = got, ppos + nbytes
        return None

    def _decode(self, pos: int, nbytes: int, df: int) -> tuple[np.ndarray, np.ndarray]:
        where = str(self.path)
        if df == 1:
            d, p = _read_varint(self._map, pos, pos + nbytes, where)
            f, p = _read_varint(self._map, p, pos + nbytes, where)
            if p != pos + nbytes or d >= self.n:
                self._fail("a single posting is damaged")
            return np.array([d], dtype=np.int64), np.array([f + 1], dtype=np.int64)
        raw = np.frombuffer(self._map, dtype=np.uint8, count=nbytes, offset=pos)
        bits = np.unpackbits(raw, bitorder="little")
        low = _low_bits(self.n, df)
        high_end = df * low + df + (self.n >> low) + 1
        if len(bits) < high_end:
            self._fail("a postings list is shorter than its passage ids")
        ones = np.flatnonzero(bits[df * low:high_end])
        zeros = np.flatnonzero(bits[high_end:] == 0)
        if len(ones) != df or len(zeros) < df or (len(bits) - high_end - 1 - zeros[df - 1]) >= 8:
            self._fail("a postings list does not hold as many passages as its term's count")
        docs = (ones - np.arange(df)) << low
        if low:
            docs |= bits[:df * low].reshape(df, low).astype(np.int64) @ (np.int64(1) << np.arange(low, dtype=np.int64))
        tfs = np.diff(zeros[:df], prepend=-1)
        if docs[-1] >= self.n or np.any(np.diff(docs) <= 0):
            self._fail("its passage ids are out of order or beyond the segment's passages")
        return docs, tfs

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._heads = None
            try:
                self._map.close()
            except BufferError:  # a decoded array still views it; the map goes with it
                pass


def match_phrases(match: str) -> list[str]:
    """The phrases of an FTS5 expression of quoted strings joined with OR (lexical.fts_query's
    form; "" inside a string is a quote); bare words count as phrases of their own."""
    phrases = [m.replace('""', '"') for m in _QUOTED.findall(match)]
    rest = _QUOTED.sub(" ", match)
    return phrases + [w for w in rest.split() if w != "OR"]


_QUOTED = re.compile(r'"((?:[^"]|"")*)"')


class Postings:
    """The lexical part of an index: its postings files, searched as one BM25 index over the
    live passages. `store`: the index's Store, for the passages' documents and the tombstones
    (read once, on the first search that needs them); None: every passage is live."""

    def __init__(self, root: Path, spec: dict, n_passages: int, store=None):
        segs, at = [], 0
        for entry in spec.get("segments") or []:
            if entry.get("first_passage") != at:
                raise IndexFormatError(f"{root / 'manifest.json'}: lexical segment {entry.get('file')} starts at "
                                       f"passage {entry.get('first_passage')}, not {at}; rebuild the index")
            segs.append(Segment(root / entry["file"], at, int(entry["n_passages"])))
            at += int(entry["n_passages"])
        if at != n_passages:
            raise IndexFormatError(f"{root / 'manifest.json'}: the lexical segments hold {at} passages, the index "
                                   f"{n_passages}; rebuild the index")
        self.segments = segs
        self.n_passages = n_passages
        self._store = store
        self._passage_docs = None
        self._live: np.ndarray | None | bool = False  # False: not read yet
        self._stats = None

    def passage_docs(self) -> np.ndarray:
        """The document id of every passage (from the store, read once)."""
        if self._passage_docs is None:
            self._passage_docs = self._store.passage_doc_ids()
        return self._passage_docs

    @property
    def live(self) -> np.ndarray | None:
        """Boolean mask of the passages whose documents are not deleted; None when none is."""
        if self._live is False:
            deleted = self._store.deleted_doc_ids() if self._store is not None else np.zeros(0, dtype=np.int64)
            if len(deleted) == 0:
                self._live = None
            else:
                docs = self.passage_docs()
                live = np.zeros(self.n_passages, dtype=bool)
                live[:len(docs)] = (docs >= 0) & ~np.isin(docs, deleted)
                self._live = live
        return self._live

    @property
    def lengths(self) -> np.ndarray:
        if not self.segments:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([s.lengths for s in self.segments])

    def stats(self) -> tuple[np.ndarray, int, float]:
        """(passage lengths, live passages N, average live length) as FTS5 counts them."""
        if self._stats is None:
            lengths = self.lengths
            if self.live is None:
                n, tokens = self.n_passages, int(lengths.sum())
            else:
                n, tokens = int(self.live.sum()), int(lengths[self.live].sum())
            self._stats = (lengths, n, tokens / n if n else 0.0)
        return self._stats

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """(passage ids, tfs) of a term over every segment, live passages only."""
        key = term.encode("utf-8")
        docs, tfs = [], []
        for seg in self.segments:
            got = seg.find(key)
            if got is not None:
                docs.append(got[0])
                tfs.append(got[1])
        if not docs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        d, f = (docs[0], tfs[0]) if len(docs) == 1 else (np.concatenate(docs), np.concatenate(tfs))
        if self.live is not None:
            keep = self.live[d]
            d, f = d[keep], f[keep]
        return d, f

    def search(self, phrases: Sequence[str], k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top-k passages for FTS5 phrases joined with OR (each one of fts_query's quoted strings) as
        (passage id, bm25 score), higher is better, ties by passage id; `allowed`: a boolean mask
        over passage ids a result must be in (a filter; the statistics stay the live passages')."""
        lengths, n_live, avgdl = self.stats()
        if k <= 0 or n_live == 0:
            return []
        scores = np.zeros(self.n_passages, dtype=np.float64)
        matched = np.zeros(self.n_passages, dtype=bool)
        cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for tokens in tokenize(list(phrases)):
            if len(tokens) != 1:  # an FTS5 phrase of several tokens needs positions (module doc)
                continue
            term = tokens[0]
            if term not in cache:
                cache[term] = self.postings(term)
            d, f = cache[term]
            hits = len(d)
            if hits == 0:
                continue
            idf = math.log((n_live - hits + 0.5) / (hits + 0.5))
            if idf <= 0.0:
                idf = 1e-6
            freq = f.astype(np.float64)
            scores[d] += idf * ((freq * (K1 + 1.0)) / (freq + K1 * (1 - B + B * lengths[d].astype(np.float64) / avgdl)))
            matched[d] = True
        if allowed is not None:
            matched[:len(allowed)] &= allowed[:self.n_passages]
            matched[len(allowed):] = False
        cand = np.flatnonzero(matched)
        if len(cand) == 0:
            return []
        s = scores[cand]
        if len(cand) > k:
            kth = np.partition(s, len(s) - k)[len(s) - k]
            keep = s >= kth
            cand, s = cand[keep], s[keep]
        order = np.lexsort((cand, -s))[:k]
        return [(int(p), float(v)) for p, v in zip(cand[order], s[order])]

    def close(self) -> None:
        for seg in self.segments:
            seg.close()


def manifest_section(segments: list[dict]) -> dict:
    """The manifest's `lexical` section for postings files {file, first_passage, n_passages}."""
    return {"format": "postings", "version": VERSION, "tokenizer": TOKENIZER, "segments": list(segments)}


def check_section(root: Path, manifest: dict) -> None:
    """The manifest's lexical section names postings files it lists in `files`, in passage order,
    covering every passage (else an IndexFormatError: the manifest and the files disagree)."""
    spec = manifest.get("lexical")
    where = root / "manifest.json"
    if not isinstance(spec, dict) or spec.get("format") != "postings" or not isinstance(spec.get("segments"), list):
        raise IndexFormatError(f"{where}: its lexical section is not one this rtv reads; rebuild the index with this version")
    if spec.get("version") != VERSION:
        raise IndexFormatError(f"{where}: lexical postings format {spec.get('version')}, this rtv reads {VERSION}; "
                               "rebuild the index with this version")
    for entry in spec["segments"]:
        if not isinstance(entry, dict) or entry.get("file") not in manifest.get("files", {}):
            raise IndexFormatError(f"{where}: lexical segment {entry!r} is not among its files; rebuild the index")
