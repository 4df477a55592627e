"""The text part: each shard's documents compressed with zstd in fixed-size blocks, so that
extract, snippets and passage texts decompress a block or two instead of walking the FM-index
(one LF step, ~5 dependent cache misses, per byte).

The FM-index stays the index's only required copy of the text: this part is optional
(`--parts ...,text`) and answers with the same bytes. A shard's file `text/shard-NNNNN.zst`
(docs/formats.md has the layout) holds the shard's documents' bytes back to back, without
separators, cut into blocks of BLOCK_SIZE bytes, each one zstd frame compressed with a dictionary
trained on that shard's own blocks; a document or range is found by two offset arrays (where
each document starts in the uncompressed stream, where each block starts in the file).

Everything read from the file is checked before use: sizes against the file's length, offsets
monotone and ending where they must, document lengths against the FM-index shard's own, every
frame's content size, and the frames carry zstd's checksum of their content; damage is an
IndexFormatError naming the file.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .cores import usable_cores
from .errors import IndexFormatError

# Chosen on the 200 MB real corpus (eval/bench_exact.py --extract-only --text-store: bytes per text
# byte, MB/s, single-snippet latency for 8-64 KiB blocks): 16 KiB blocks with a 112 KiB dictionary
# at level 9 keep the part near 0.21 bytes per text byte while a snippet decompresses 16 KiB
# (~20 us); 64 KiB blocks save ~0.01 x and cost 2-3x the latency of one snippet.
BLOCK_SIZE = 16 << 10
DICT_SIZE = 112 << 10
LEVEL = 9
MIN_DICT_TEXT = 8 * DICT_SIZE  # below this a dictionary costs more than it saves (and training can fail)
MAX_TRAINING_BYTES = 100 * DICT_SIZE  # blocks sampled evenly across the shard, for a training of seconds
MULTI_THREAD_BLOCKS = 32  # a request for this many blocks or more decompresses on several threads

MAGIC = b"RTVTEXT\0"
VERSION = 1
_HEADER = struct.Struct("<8sIIQQQQQQ")  # magic, version, level, n_docs, text_bytes, block_size, n_blocks, dict_bytes, 0


def store_file(shard_file: str) -> str:
    """The text part's file for an FM-index shard file (exact/shard-00003.fmi -> text/shard-00003.zst)."""
    return "text/" + Path(shard_file).with_suffix(".zst").name


def _zstd():
    import zstandard

    return zstandard


def write_text_store(text: bytes | bytearray, lengths: Sequence[int], directory: Path, rel: str,
                     block_size: int = BLOCK_SIZE, dict_size: int = DICT_SIZE, level: int = LEVEL) -> dict:
    """Write the text part of one shard at directory/rel: `text` is the shard's text as the
    FM-index gets it (each document's bytes followed by 0xFF), `lengths` its documents' byte
    lengths. Returns the entry for the shard's manifest record. dict_size 0: no dictionary."""
    zstd = _zstd()
    lengths = np.asarray(lengths, dtype=np.uint64)
    stream = bytes(text).replace(b"\xff", b"")  # 0xFF is never in a document (it separates them)
    if len(stream) + len(lengths) != len(text) or int(lengths.sum()) != len(stream):
        raise ValueError(f"{rel}: the shard's text does not match its documents' lengths")
    starts = np.zeros(len(lengths) + 1, dtype=np.uint64)
    np.cumsum(lengths, out=starts[1:])
    view = memoryview(stream)
    blocks = [view[i:i + block_size] for i in range(0, len(stream), block_size)]
    dictionary = _train(blocks, block_size, dict_size) if dict_size and len(stream) >= MIN_DICT_TEXT else None
    cctx = zstd.ZstdCompressor(level=level, dict_data=dictionary, write_checksum=True, write_content_size=True,
                               write_dict_id=False)
    frames = [cctx.compress(b) for b in blocks]
    offsets = np.zeros(len(frames) + 1, dtype=np.uint64)
    np.cumsum([len(f) for f in frames], out=offsets[1:])
    dict_bytes = dictionary.as_bytes() if dictionary is not None else b""
    path = directory / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(_HEADER.pack(MAGIC, VERSION, level, len(lengths), len(stream), block_size, len(frames),
                             len(dict_bytes), 0))
        f.write(starts.astype("<u8").tobytes())
        f.write(offsets.astype("<u8").tobytes())
        f.write(dict_bytes)
        for frame in frames:
            f.write(frame)
    return {"file": rel, "bytes": path.stat().st_size, "block_size": block_size, "blocks": len(frames),
            "dict_bytes": len(dict_bytes), "level": level}


def _train(blocks: list, block_size: int, dict_size: int):
    """A dictionary trained on blocks sampled evenly across the shard (deterministic: fixed fastcover
    parameters, one thread), or None where zstd finds too little to train on."""
    zstd = _zstd()
    step = max(1, len(blocks) * block_size // MAX_TRAINING_BYTES)
    samples = [bytes(b) for b in blocks[::step]]
    try:
        return zstd.train_dictionary(dict_size, samples, k=1024, d=8, threads=1)
    except zstd.ZstdError:
        return None


class TextStore:
    """One shard's text part, memory-mapped read-only. Documents are the shard's local ids;
    `ranges` returns the same bytes as the FM-index shard's extract_ranges."""

    def __init__(self, path: Path, doc_lengths: np.ndarray):
        zstd = _zstd()
        self.path = path
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < _HEADER.size:
                    self._bad(f"{size} bytes, shorter than its header")
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise IndexFormatError(f"{path}: cannot open the text part ({exc.strerror or exc}); rebuild the index") from None
        magic, version, _, n_docs, text_bytes, block_size, n_blocks, dict_bytes, _ = _HEADER.unpack_from(self._map, 0)
        if magic != MAGIC:
            self._bad("not an rtv text-part file")
        if version != VERSION:
            self._bad(f"text-part version {version}, this rtv reads {VERSION}")
        if n_docs != len(doc_lengths):
            self._bad(f"holds {n_docs} documents, its FM-index shard {len(doc_lengths)}")
        if not 1 <= block_size <= 1 << 30 or n_blocks != -(-text_bytes // block_size):
            self._bad(f"{n_blocks} blocks of {block_size} bytes cannot hold {text_bytes} bytes")
        at = _HEADER.size
        tables = 8 * (n_docs + 1) + 8 * (n_blocks + 1)
        if at + tables + dict_bytes > size:
            self._bad(f"{size} bytes, its tables need {at + tables + dict_bytes}")
        self.starts = np.frombuffer(self._map, dtype="<u8", count=n_docs + 1, offset=at).astype(np.int64)
        at += 8 * (n_docs + 1)
        offsets = np.frombuffer(self._map, dtype="<u8", count=n_blocks + 1, offset=at).astype(np.int64)
        at += 8 * (n_blocks + 1)
        self.dict_bytes = dict_bytes
        dictionary = zstd.ZstdCompressionDict(self._map[at:at + dict_bytes]) if dict_bytes else None
        at += dict_bytes
        if self.starts[0] != 0 or self.starts[-1] != text_bytes or \
                not np.array_equal(np.diff(self.starts), np.asarray(doc_lengths, dtype=np.int64)):
            self._bad("its documents' lengths differ from its FM-index shard's")
        if offsets[0] != 0 or (np.diff(offsets) <= 0).any() or at + offsets[-1] != size:
            self._bad("its block offsets do not cover its data")
        self.offsets = (offsets + at).tolist()  # file positions of the frames
        self.block_size, self.n_blocks, self.text_bytes = block_size, n_blocks, text_bytes
        self._dictionary = dictionary
        self._local = threading.local()  # a decompression context per thread (they are not thread-safe)

    def _bad(self, what: str):
        raise IndexFormatError(f"{self.path}: {what}; the text part is damaged or from another build, rebuild the index")

    def _dctx(self):
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = _zstd().ZstdDecompressor(dict_data=self._dictionary)
        return dctx

    def close(self) -> None:
        self._map.close()

    @property
    def bytes(self) -> int:
        return len(self._map)

    def doc_length(self, doc: int) -> int:
        return int(self.starts[doc + 1] - self.starts[doc])

    def _block_size(self, b: int) -> int:
        return min(self.block_size, self.text_bytes - b * self.block_size)

    def _blocks(self, wanted: list[int]) -> dict[int, bytes]:
        """The decompressed blocks `wanted` (sorted, unique), each checked."""
        zstd = _zstd()
        frames = [self._map[self.offsets[b]:self.offsets[b + 1]] for b in wanted]
        sizes = [self._block_size(b) for b in wanted]
        out: dict[int, bytes] = {}
        try:
            for b, frame, n in zip(wanted, frames, sizes):
                if zstd.frame_content_size(frame) != n:
                    raise zstd.ZstdError(f"block {b}: its frame says {zstd.frame_content_size(frame)} bytes, not {n}")
            if len(frames) >= MULTI_THREAD_BLOCKS and zstd.backend == "cext":  # the C backend's threads
                got = self._dctx().multi_decompress_to_buffer(
                    frames, decompressed_sizes=np.asarray(sizes, dtype=np.uint64).tobytes(), threads=usable_cores())
                blocks = [got[i].tobytes() for i in range(len(frames))]
            else:
                dctx = self._dctx()
                blocks = [dctx.decompress(frame) for frame in frames]
        except zstd.ZstdError as exc:
            self._bad(f"a corrupt block ({exc})")
        for b, data, n in zip(wanted, blocks, sizes):
            if len(data) != n:
                self._bad(f"block {b} decompresses to {len(data)} bytes, not {n}")
            out[b] = data
        return out

    def ranges(self, docs: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> list[bytes]:
        """Bytes [starts[i], ends[i]) of local documents docs[i], ends clipped to the document; a
        start beyond its document's end is an IndexError (as the FM-index shard's extract_ranges)."""
        docs = np.asarray(docs, dtype=np.int64)
        if len(docs) and (docs.min() < 0 or docs.max() >= len(self.starts) - 1):
            raise IndexError(f"document {int(docs[(docs < 0) | (docs >= len(self.starts) - 1)][0])} is not in this shard")
        starts = np.asarray(starts, dtype=np.int64)
        lens = self.starts[docs + 1] - self.starts[docs]
        beyond = np.flatnonzero(starts > lens)
        if len(beyond):
            i = beyond[0]
            raise IndexError(f"offset {int(starts[i])} is beyond the end of document {int(docs[i])} ({int(lens[i])} bytes)")
        a = self.starts[docs] + starts
        b = self.starts[docs] + np.minimum(np.asarray(ends, dtype=np.int64), lens)
        nonempty = b > a
        first = a // self.block_size
        last = np.where(nonempty, (b - 1) // self.block_size, first)
        if not nonempty.any():
            return [b""] * len(docs)
        spans = last - first + 1
        # sorted(set()), not np.unique: that imports numpy.ma (tens of ms in a cold command)
        if int(spans.max()) == 1:
            wanted = sorted(set(first[nonempty].tolist()))
        else:
            wanted = sorted({k for i in np.flatnonzero(nonempty).tolist() for k in range(int(first[i]), int(last[i]) + 1)})
        blocks = self._blocks(wanted)
        bs = self.block_size
        out: list[bytes] = []
        for lo, hi, fb, lb, ok in zip(a.tolist(), b.tolist(), first.tolist(), last.tolist(), nonempty.tolist()):
            if not ok:
                out.append(b"")
            elif fb == lb:
                out.append(blocks[fb][lo - fb * bs:hi - fb * bs])
            else:
                out.append(b"".join([blocks[fb][lo - fb * bs:]] + [blocks[k] for k in range(fb + 1, lb)]
                                    + [blocks[lb][:hi - lb * bs]]))
        return out


