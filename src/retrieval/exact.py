"""The exact part of an index: FM-index shards (C++), global document ids, sums over shards."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .cores import usable_cores
from .errors import IndexFormatError, InputError
from .progress import bar

SEPARATOR = b"\xff"
MAX_SHARD_BYTES = (1 << 31) - 1
# a page of find/locate_in with this many occurrences over several shards is located on the pool
LOCATE_FAN_OUT_MIN = 256


def _fm():
    from . import _fm_index

    return _fm_index


def as_pattern(pattern: str | bytes, what: str = "pattern") -> bytes:
    if isinstance(pattern, str):
        try:
            data = pattern.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError(f"{what} {pattern!r}: not valid Unicode (a lone surrogate); pass valid text or bytes") from None
    elif isinstance(pattern, (bytes, bytearray, memoryview)):
        data = bytes(pattern)
    else:  # bytes(5) would be five NUL bytes
        raise TypeError(f"{what}: expected str or bytes, got {type(pattern).__name__} ({pattern!r})")
    if not data:
        raise InputError(f"empty {what}; give a non-empty string")
    return data


def write_shard(text: bytearray, directory: Path, rel: str, sa_sample: int, isa_sample: int,
                desc: str = "shard", progress: bool = True) -> dict:
    """Build the FM-index shard of `text` (documents' bytes, each followed by 0xFF) at
    directory/rel, with a progress bar per build stage (unless progress=False); returns its
    manifest entry."""
    path = directory / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not progress:
        _fm().build_shard(text, str(path), sa_sample, isa_sample, None)
        return _shard_entry(path, rel, len(text))
    bar_ = bar(desc=desc, unit="B", unit_scale=True)
    stage = [None]

    def report(name: str, done: int, total: int) -> None:
        if stage[0] != name:
            stage[0] = name
            bar_.reset(total=total)
            bar_.set_description(f"{desc}: {name}")
        bar_.n = done
        bar_.refresh()

    _fm().build_shard(text, str(path), sa_sample, isa_sample, report)
    bar_.close()
    return _shard_entry(path, rel, len(text))


def _shard_entry(path: Path, rel: str, text_bytes: int) -> dict:
    shard = _fm().Shard(str(path), False)
    return {"file": rel, "n_docs": shard.n_docs, "text_bytes": text_bytes, "bytes": path.stat().st_size,
            "checksum": f"{shard.checksum:016x}"}


def page_plan(counts: Sequence[int], offset: int, limit: int) -> list[tuple[int, int] | None]:
    """Which slice (offset, limit) of each shard's occurrences makes the page [offset, offset +
    limit) of the occurrences in shard order; None for a shard the page does not reach."""
    plan: list[tuple[int, int] | None] = []
    for n in counts:
        if limit <= 0 or offset >= n:
            plan.append(None)
            offset -= min(offset, n)
            continue
        take = min(limit, n - offset)
        plan.append((offset, take))
        limit -= take
        offset = 0
    return plan


def _window_args(what: str, text: bytes, starts, lengths) -> tuple[np.ndarray, np.ndarray]:
    """starts and lengths as int64 arrays, checked to be non-empty windows of `text`."""
    starts = np.ascontiguousarray(starts, dtype=np.int64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if len(starts) != len(lengths):
        raise InputError(f"{what}: starts and lengths differ in length")
    if len(starts) and (starts.min() < 0 or (starts + lengths).max() > len(text) or lengths.min() <= 0):
        raise InputError(f"{what}: a window lies outside the text or is empty")
    return starts, lengths


def _locate(shard, pattern: bytes, first: int, cut):
    if cut is None:
        return None
    d, o = shard.locate(pattern, cut[0], cut[1])
    return np.asarray(d) + first, np.asarray(o)


class _CheckedShard:
    """A shard whose FormatError at query time (damage a shard opened without verify can hold)
    becomes the library's IndexFormatError naming the file."""

    __slots__ = ("_shard", "_path")

    def __init__(self, shard, path: Path):
        self._shard = shard
        self._path = path

    def __getattr__(self, name: str):
        attr = getattr(self._shard, name)
        if not callable(attr):
            return attr
        path, error = self._path, _fm().FormatError

        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except error as exc:
                raise IndexFormatError(f"{path}: {exc}") from None

        return call


def _open_text(directory: Path, info: dict, shard):
    """The shard's text part (a TextStore checked against the shard's document lengths), or None."""
    if not info.get("text"):
        return None
    from .text_store import TextStore

    return TextStore(directory / info["text"]["file"], np.asarray(shard.doc_lengths(), dtype=np.int64))


class FoundSpans:
    """Strings of a text that windows_present found to occur, with their suffix-array rows, by
    shard (int64 rows start, length, lo, hi), looked up in bulk (sorted keys, no dict per string)."""

    def __init__(self, text_bytes: int, per_shard: Sequence[np.ndarray]):
        self._base = text_bytes + 1  # key = start * base + length: distinct for strings of the text
        self._keys, self._rows = [], []
        for m in per_shard:
            key = m[:, 0] * self._base + m[:, 1]
            order = np.argsort(key, kind="stable")
            self._keys.append(key[order])
            self._rows.append(m[order, 2:4])

    def rows(self, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(known, lo, hi): known[i] when every shard found text[starts[i], +lengths[i]) to occur;
        lo, hi of shape (shards, n) its rows there (0 where not known)."""
        q = np.asarray(starts, dtype=np.int64) * self._base + np.asarray(lengths, dtype=np.int64)
        known = np.ones(len(q), dtype=bool)
        lo = np.zeros((len(self._keys), len(q)), dtype=np.int64)
        hi = np.zeros_like(lo)
        for i, (keys, rows) in enumerate(zip(self._keys, self._rows)):
            if not len(keys):
                known[:] = False
                continue
            at = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
            hit = keys[at] == q
            known &= hit
            lo[i] = np.where(hit, rows[at, 0], 0)
            hi[i] = np.where(hit, rows[at, 1], 0)
        return known, lo, hi


class ExactIndex:
    """Shards opened read-only (memory-mapped); doc ids are global, counts sum over shards.

    A query over several shards fans out on a thread pool that the index shares across its
    queries (`threads` of them, default: one per shard up to the usable cores; the C++ calls
    release the GIL, so the shards are searched at once) and merges in shard order, so answers
    equal the serial loop's. One shard, or threads=1, stays on the calling thread."""

    def __init__(self, directory: Path, section: dict, verify: bool | str = True, threads: int | None = None):
        from .manifest import FAST_VERIFY_BYTES

        fm = _fm()
        self.shards = []
        self.first_docs: list[int] = []
        # each shard's text part (retrieval.text_store) when the index has one, else None: the text
        # is then read from it instead of being rebuilt from the FM-index (the same bytes)
        self.texts: list = []
        for info in section["shards"]:
            path = directory / info["file"]
            try:
                # verify="fast": shards over FAST_VERIFY_BYTES are not hashed (manifest.verify_files says so)
                check = verify if isinstance(verify, bool) else path.stat().st_size <= FAST_VERIFY_BYTES
                shard = _CheckedShard(fm.Shard(str(path), check), path)
            except fm.FormatError as exc:
                raise IndexFormatError(f"{path}: {exc}") from None
            except (OSError, ValueError, RuntimeError) as exc:
                raise IndexFormatError(f"{path}: cannot open shard ({exc}); rebuild the index") from None
            if f"{shard.checksum:016x}" != info["checksum"] or shard.n_docs != info["n_docs"]:
                raise IndexFormatError(f"{path}: does not match manifest.json (checksum or document count); rebuild the index")
            self.shards.append(shard)
            self.first_docs.append(info["first_doc"])
            self.texts.append(_open_text(directory, info, shard))
        self.n_docs = sum(s.n_docs for s in self.shards)
        self.threads = min(len(self.shards), usable_cores()) if threads is None else max(1, int(threads))
        self._pool = None
        self._pool_lock = threading.Lock()

    # -- the fan-out --------------------------------------------------------------------------------
    def map_shards(self, fn: Callable, *columns: Sequence) -> list:
        """[fn(shard, *row) for each shard and its row of `columns`], in shard order: on the shared
        pool when there are several shards and threads > 1, else in this thread. The first error
        (in shard order) is raised."""
        rows = list(zip(self.shards, *columns)) if columns else [(s,) for s in self.shards]
        if self.threads <= 1 or len(rows) <= 1:
            return [fn(*row) for row in rows]
        pool = self._executor()
        futures = [pool.submit(fn, *row) for row in rows]
        return [f.result() for f in futures]

    def _locate_plan(self, fn: Callable, plan: Sequence, *columns: Sequence) -> list:
        """[fn(shard, *row)] for the shards whose cut in `plan` is not None, in shard order: on the
        pool only when the cuts span several shards and hold LOCATE_FAN_OUT_MIN occurrences or
        more, since locating a small page (a few microseconds an occurrence) costs less than the
        pool's hand-offs."""
        rows = [(s, *row) for s, cut, *row in zip(self.shards, plan, *columns) if cut is not None]
        if len(rows) > 1 and sum(cut[1] for cut in plan if cut is not None) >= LOCATE_FAN_OUT_MIN \
                and self.threads > 1:
            pool = self._executor()
            return [f.result() for f in [pool.submit(fn, *row) for row in rows]]
        return [fn(*row) for row in rows]

    def _executor(self):
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="rtv-shard")
        return self._pool

    def close(self) -> None:
        """Stop the fan-out threads (queries after this run them again on a new pool)."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    # -- counting ---------------------------------------------------------------------------------
    def count(self, pattern: str | bytes) -> int:
        p = as_pattern(pattern)
        return sum(s.count(p) for s in self.shards)

    def count_many(self, patterns: Sequence[str | bytes]) -> np.ndarray:
        if isinstance(patterns, (str, bytes)):
            raise TypeError("count_many: expected a list of patterns, got one string; use count() or pass [pattern]")
        ps = [as_pattern(p) for p in patterns]
        total = np.zeros(len(ps), dtype=np.int64)
        for s in self.shards:
            total += s.count_many(ps)
        return total

    def count_windows(self, text: bytes, starts: np.ndarray, lengths: np.ndarray, existence_only: bool = False) -> np.ndarray:
        counts = self.count_windows_per_shard(text, starts, lengths, existence_only)
        if not len(counts):
            return np.zeros(counts.shape[1], dtype=np.int64)
        return counts.max(axis=0) if existence_only else counts.sum(axis=0)

    def count_windows_per_shard(self, text: bytes, starts: np.ndarray, lengths: np.ndarray,
                                existence_only: bool = False) -> np.ndarray:
        """Counts (0/1 with existence_only) of each window text[start, start + length) in each
        shard, shape (shards, windows): one batched C++ call per shard."""
        starts, lengths = _window_args("count_windows", text, starts, lengths)
        if not self.shards:
            return np.zeros((0, len(starts)), dtype=np.int64)
        return np.stack(self.map_shards(lambda s: np.asarray(s.count_windows(text, starts, lengths, existence_only))))

    def windows_present(self, text: bytes, starts: np.ndarray, lengths: np.ndarray, with_rows: bool = False):
        """Whether each window text[start, start + length) occurs in some shard (bool), for windows
        in text order (starts and ends nondecreasing, as sliding windows are): the shards decide
        overlapping windows by maximal matches (Shard.windows_present), one batched call each.
        with_rows: (found, FoundSpans of the strings holding a window that the searches found to
        occur, with their suffix-array rows)."""
        starts, lengths = _window_args("windows_present", text, starts, lengths)
        if len(starts) > 1 and (np.any(np.diff(starts) < 0) or np.any(np.diff(starts + lengths) < 0)):
            raise InputError("windows_present: windows must be in text order (starts and ends nondecreasing)")
        found = np.zeros(len(starts), dtype=bool)
        per_shard = self.map_shards(lambda s: s.windows_present(text, starts, lengths))
        for present, _ in per_shard:
            found |= np.asarray(present)
        return (found, FoundSpans(len(text), [m for _, m in per_shard])) if with_rows else found

    def window_ranges(self, text: bytes, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Suffix-array rows [lo, hi) of each window text[start, start + length) in each shard,
        two arrays of shape (shards, windows): hi - lo are the counts, and locate_rows turns rows
        into occurrences without searching again."""
        starts, lengths = _window_args("window_ranges", text, starts, lengths)
        if not self.shards:
            return np.zeros((0, len(starts)), dtype=np.int64), np.zeros((0, len(starts)), dtype=np.int64)
        pairs = self.map_shards(lambda s: s.window_ranges(text, starts, lengths))
        return np.stack([lo for lo, _ in pairs]), np.stack([hi for _, hi in pairs])

    def locate_rows(self, rows: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(global doc ids, byte offsets) of the suffix-array rows rows[i] of shard i (one batched
        C++ call per shard that has any)."""
        if len(rows) != len(self.shards):
            raise InputError(f"locate_rows: rows for {len(rows)} shards, the index has {len(self.shards)}")

        def one(shard, first, r):
            if not len(r):
                return np.zeros(0, np.int64), np.zeros(0, np.int64)
            d, o = shard.locate_rows(np.ascontiguousarray(r, dtype=np.int64))
            return np.asarray(d) + first, np.asarray(o)

        return self.map_shards(one, self.first_docs, rows)

    def shard_counts(self, pattern: str | bytes) -> list[int]:
        """Occurrences of `pattern` in each shard (one backward search per shard)."""
        p = as_pattern(pattern)
        return self.map_shards(lambda s: int(s.count(p)))

    # -- locating ---------------------------------------------------------------------------------
    def find(self, pattern: str | bytes, offset: int = 0, limit: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """Occurrences as (global doc ids, byte offsets). Pages follow shard then suffix-array order,
        so page k costs O(limit); each page is sorted by (doc, offset)."""
        p = as_pattern(pattern)
        if offset < 0 or limit < 0:
            raise InputError("find: offset and limit must be >= 0")
        # Counts on this thread, shard after shard, only until the page is full: a count is a few
        # microseconds, less than a hand-off to the pool, and the page usually lies in the first
        # shard that has the pattern, so the shards after it are never counted.
        plan: list[tuple[int, int] | None] = []
        for shard in self.shards:
            if limit <= 0:
                break
            n = int(shard.count(p))
            cut = page_plan([n], offset, limit)[0]
            plan.append(cut)
            offset -= min(offset, n)
            limit -= cut[1] if cut else 0
        plan += [None] * (len(self.shards) - len(plan))
        found = self._locate_plan(lambda s, first, cut: _locate(s, p, first, cut), plan, self.first_docs, plan)
        docs = [d for d, _ in found]
        offs = [o for _, o in found]
        if not docs:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(docs), np.concatenate(offs)

    def locate_in(self, pattern: bytes, counts: Sequence[int], limit: int,
                  prefix: bytes = b"") -> tuple[list[int], list[int]]:
        """First `limit` occurrences of `pattern` as (global doc ids, byte offsets), given its
        per-shard `counts` (shard_counts): shards whose count is 0 are skipped, so nothing is
        counted again.

        A long pattern is located through `prefix` (e.g. its first window) in a shard where the
        prefix occurs exactly as often as the pattern: every occurrence of the pattern is one of
        the prefix at the same offset, so both have the same suffix-array range and the same
        occurrences, and the search is len(prefix) steps instead of len(pattern)."""
        if len(counts) != len(self.shards):
            raise InputError(f"locate_in: {len(counts)} counts for {len(self.shards)} shards")
        short = prefix and len(prefix) * 2 <= len(pattern) and pattern.startswith(prefix)

        def one(shard, first, c, cut):
            if cut is None:
                return [], []
            q = prefix if short and int(shard.count(prefix)) == c else pattern
            d, o = shard.locate(q, 0, cut[1])
            return [int(x) + first for x in np.asarray(d)], [int(x) for x in np.asarray(o)]

        plan = page_plan([int(c) for c in counts], 0, limit)
        found = self._locate_plan(one, plan, self.first_docs, counts, plan)
        docs: list[int] = []
        offs: list[int] = []
        for d, o in found:
            docs += d
            offs += o
        return docs, offs

    def docs(self, pattern: str | bytes) -> np.ndarray:
        p = as_pattern(pattern)
        return self._per_shard(lambda s: s.docs(p))

    def cnf(self, clauses: Sequence[Sequence[str | bytes]]) -> np.ndarray:
        if not clauses or any(not clause for clause in clauses):
            raise InputError("cnf: give at least one clause, each with at least one string")
        cl = [[as_pattern(p) for p in clause] for clause in clauses]
        return self._per_shard(lambda s: s.cnf(cl))

    def _per_shard(self, fn: Callable) -> np.ndarray:
        parts = self.map_shards(lambda s, first: np.asarray(fn(s)) + first, self.first_docs)
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    # -- text back ----------------------------------------------------------------------------------
    def _locate_doc(self, doc: int) -> tuple[int, int]:
        """(shard number, local document id) of a global document id."""
        if not 0 <= doc < self.n_docs:
            raise InputError(f"document id {doc} out of range (index has {self.n_docs} documents)")
        i = bisect.bisect_right(self.first_docs, doc) - 1
        return i, doc - self.first_docs[i]

    def extract(self, doc: int) -> bytes:
        i, local = self._locate_doc(doc)
        if self.texts[i] is not None:
            return self.texts[i].ranges([local], [0], [1 << 62])[0]
        return self.shards[i].extract(local)

    def snippet(self, doc: int, offset: int, width: int) -> bytes:
        i, local = self._locate_doc(doc)
        if offset < 0 or width < 0:
            raise InputError("snippet: offset and width must be >= 0")
        if self.texts[i] is not None:
            return self.texts[i].ranges([local], [offset], [offset + width])[0]
        return self.shards[i].snippet(local, offset, width)

    def extract_ranges(self, docs: Sequence[int], starts: Sequence[int], ends: Sequence[int]) -> list[bytes]:
        """Bytes [starts[i], ends[i]) of documents docs[i] (global ids; an end past the document is
        clipped to it), in one C++ call per shard that holds any of them (GIL released; large
        requests run as sorted batches of LF walks on all cores)."""
        docs = np.asarray(docs, dtype=np.int64).reshape(-1)
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        ends = np.asarray(ends, dtype=np.int64).reshape(-1)
        if not len(docs) == len(starts) == len(ends):
            raise InputError("extract_ranges: docs, starts and ends differ in length")
        if len(docs) == 0:
            return []
        if docs.min() < 0 or docs.max() >= self.n_docs:
            bad = int(docs[(docs < 0) | (docs >= self.n_docs)][0])
            raise InputError(f"document id {bad} out of range (index has {self.n_docs} documents)")
        if starts.min() < 0 or (ends < starts).any():
            raise InputError("extract_ranges: starts must be >= 0 and ends >= starts")
        shard_of = np.searchsorted(np.asarray(self.first_docs, dtype=np.int64), docs, side="right") - 1
        out: list[bytes] = [b""] * len(docs)
        for i in sorted(set(shard_of.tolist())):  # not np.unique: it imports numpy.ma (~10-40 ms a cold command)
            sel = np.flatnonzero(shard_of == i)
            if self.texts[i] is not None:
                try:
                    texts = self.texts[i].ranges(docs[sel] - self.first_docs[i], starts[sel], ends[sel])
                except IndexError as exc:
                    raise InputError(f"extract_ranges: {exc}") from None
                for j, t in zip(sel.tolist(), texts):
                    out[j] = t
                continue
            try:
                blob, offsets = self.shards[i].extract_ranges(docs[sel] - self.first_docs[i], starts[sel], ends[sel])
            except IndexError as exc:
                raise InputError(f"extract_ranges: {exc}") from None
            offsets = offsets.tolist()
            for k, j in enumerate(sel.tolist()):
                out[j] = blob[offsets[k]:offsets[k + 1]]
        return out

    @property
    def text_bytes(self) -> int:
        return sum(s.text_bytes for s in self.shards)

    @property
    def index_bytes(self) -> int:
        return sum(s.index_bytes for s in self.shards)
