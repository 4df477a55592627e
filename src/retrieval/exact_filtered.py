"""The exact stage under a DocFilter: counts, finds, documents and window counts of the allowed
documents only, with the same methods as ExactIndex (a query layer swaps one for the other).

An FM-index counts a pattern's occurrences without saying in which documents they are, so a
count that leaves documents out needs more than one backward search. Three ways, chosen by cost:

- locate them all (each a walk to a suffix-array sample, ~40 us) and keep those whose document is
  allowed (a vectorised mask lookup). Nothing has to be prepared; the cost grows with the
  occurrences.
- a *side index*: an FM-index built in memory over the smaller side of the filter (at most
  SIDE_MAX_BYTES of text, extracted from the shards once per filter and cached with it). With
  few documents excluded (tombstones, a where that drops a little) the count is the total minus
  the side index's count; with few allowed, the side index's count itself. One backward search
  more per pattern, batched like the unfiltered ones, so contamination's thousands of windows
  stay one C++ call per shard. Building it costs ~1 us a byte of its text (extraction + SA-IS),
  so it pays off after about (its bytes / 40) occurrences.

A call uses the side index once it is built (one backward search: the cheapest), builds it when
that costs less than locating the call's occurrences (LOCATE_US a occurrence against
BUILD_US_PER_BYTE a byte of its text), and otherwise locates. So tombstones (a small excluded
side) cost one build per opened index and then nothing, while a one-off count of a rare pattern
under a broad filter locates a few occurrences. Either way the answer is the same.
`find` always scans the unfiltered occurrences in order (its page order must not depend on
what was built before it), with the count to say when the allowed ones are all found.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputError
from .exact import SEPARATOR, ExactIndex, as_pattern
from .filters import DocFilter

SIDE_MAX_BYTES = 64 << 20  # most text a side index is built over (its build takes ~5 bytes a byte)
# the cost model behind the choice, measured on the man-page index (sa_sample 32) on a loaded 2-core
# machine: locating 65,536 occurrences of "the " took 2.6-3.1 s (~40 us each: ~16 LF steps of
# random access), a 4.3 MB side index 4.5 s (3.1 s extracting, the rest SA-IS): ~1 us a byte.
# Only their ratio matters: an occurrence costs about 40 bytes of side index.
LOCATE_US = 40.0
BUILD_US_PER_BYTE = 1.0
FIND_CHUNK = 4096  # find() scans the unfiltered occurrences in chunks of this many


class _SideIndex:
    """An FM-index over some documents' text, built in a temporary file that is unlinked once it is
    mapped; `docs[local]` is the global id of its local document `local`."""

    def __init__(self, exact: ExactIndex, docs: np.ndarray, lengths: np.ndarray):
        from .exact import _fm

        self.docs = docs
        texts = exact.extract_ranges(docs, np.zeros(len(docs), np.int64), lengths[docs]) if len(docs) else []
        text = bytearray()
        for t in texts:
            text += t
            text += SEPARATOR
        if not text:
            text += SEPARATOR  # an empty document: the C++ builder wants at least one
        with tempfile.TemporaryDirectory(prefix="rtv-side-") as tmp:
            path = Path(tmp) / "side.fmi"
            _fm().build_shard(text, str(path), 32, 32, None)
            self.shard = _fm().Shard(str(path), False)  # mapped: the file can go
        self.text_bytes = len(text)


class FilteredExact:
    """ExactIndex's query methods, restricted to the documents a DocFilter allows."""

    def __init__(self, exact: ExactIndex, flt: DocFilter):
        self.exact = exact
        self.filter = flt
        lengths = flt.doc_lengths if flt.doc_lengths is not None else _doc_lengths(exact)
        self._lengths = lengths
        excluded_bytes = int(lengths[~flt.mask].sum()) + flt.n_docs - flt.n_allowed
        allowed_bytes = int(lengths[flt.mask].sum()) + flt.n_allowed
        # the side the side index covers: "excluded" (subtract), "allowed" (count there) or None
        if excluded_bytes <= min(allowed_bytes, SIDE_MAX_BYTES):
            self.side_kind, self.side_bytes = "excluded", excluded_bytes
        elif allowed_bytes <= SIDE_MAX_BYTES:
            self.side_kind, self.side_bytes = "allowed", allowed_bytes
        else:
            self.side_kind, self.side_bytes = None, 0
        self._side: _SideIndex | None = None
        self._lock = threading.Lock()
        self.n_docs = exact.n_docs
        self.nothing = flt.n_allowed == 0  # every answer is empty

    # -- the side index ---------------------------------------------------------------------------
    def side(self) -> _SideIndex | None:
        if self.side_kind is None:
            return None
        if self._side is None:
            with self._lock:
                if self._side is None:
                    docs = self.filter.excluded_ids if self.side_kind == "excluded" else self.filter.allowed_ids
                    self._side = _SideIndex(self.exact, docs, self._lengths)
        return self._side

    def _side_counts(self, patterns: list[bytes], totals: np.ndarray) -> np.ndarray:
        side = self.side()
        inside = np.asarray(side.shard.count_many(patterns), dtype=np.int64) if patterns else np.zeros(0, np.int64)
        return totals - inside if self.side_kind == "excluded" else inside

    # -- counting ---------------------------------------------------------------------------------
    def _allowed_occurrences(self, pattern: bytes, total: int, stop_at: int | None = None) -> int:
        """Occurrences of `pattern` in allowed documents, by locating all `total` of them (or until
        `stop_at` allowed ones are found)."""
        found = 0
        for lo in range(0, total, 1 << 16):
            docs, _ = self.exact.find(pattern, lo, 1 << 16)
            found += int(self.filter.allows(docs).sum())
            if stop_at is not None and found >= stop_at:
                break
        return found

    def use_side(self, occurrences: int) -> bool:
        """Count `occurrences` (not yet located) through the side index rather than locating them?"""
        if self.side_kind is None:
            return False
        return self._side is not None or occurrences * LOCATE_US >= self.side_bytes * BUILD_US_PER_BYTE

    def _filtered(self, patterns: list[bytes], totals: np.ndarray) -> np.ndarray:
        out = np.zeros(len(patterns), dtype=np.int64)
        if self.nothing:
            return out
        live = np.flatnonzero(totals > 0)
        if len(live) and self.use_side(int(totals[live].sum())):
            out[live] = self._side_counts([patterns[i] for i in live], totals[live])
            return out
        for i in live.tolist():
            out[i] = self._allowed_occurrences(patterns[i], int(totals[i]))
        return out

    def count(self, pattern: str | bytes) -> int:
        p = as_pattern(pattern)
        return int(self._filtered([p], np.asarray([self.exact.count(p)], dtype=np.int64))[0])

    def count_many(self, patterns: Sequence[str | bytes]) -> np.ndarray:
        if isinstance(patterns, (str, bytes)):
            raise TypeError("count_many: expected a list of patterns, got one string; use count() or pass [pattern]")
        ps = [as_pattern(p) for p in patterns]
        return self._filtered(ps, self.exact.count_many(ps))

    def count_windows(self, text: bytes, starts: np.ndarray, lengths: np.ndarray, existence_only: bool = False) -> np.ndarray:
        """Occurrences in allowed documents of each window (0/1 with existence_only)."""
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        totals = self.exact.count_windows(text, starts, lengths, existence_only=False)
        if self.nothing:
            return np.zeros(len(starts), dtype=np.int64)
        side = self.side() if self.use_side(int(totals.sum())) else None
        if side is not None:
            inside = np.asarray(side.shard.count_windows(text, starts, lengths, False), dtype=np.int64)
            out = totals - inside if self.side_kind == "excluded" else inside
        else:
            out = np.zeros(len(starts), dtype=np.int64)
            for i in np.flatnonzero(totals > 0).tolist():
                w = bytes(text[starts[i]:starts[i] + lengths[i]])
                out[i] = self._allowed_occurrences(w, int(totals[i]), 1 if existence_only else None)
        return np.minimum(out, 1) if existence_only else out

    def windows_present(self, text: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Whether each window occurs in an allowed document (windows in text order): only the
        windows the whole index holds (decided by maximal matches) are counted one by one."""
        starts = np.ascontiguousarray(starts, dtype=np.int64)
        lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        found = self.exact.windows_present(text, starts, lengths)
        live = np.flatnonzero(found)
        if len(live):
            found[live] = self.count_windows(text, starts[live], lengths[live], existence_only=True) > 0
        return found

    def count_windows_per_shard(self, text: bytes, starts: np.ndarray, lengths: np.ndarray,
                                existence_only: bool = False) -> np.ndarray:
        """count_windows as one row (the filtered index answers as one shard)."""
        return self.count_windows(text, starts, lengths, existence_only)[None, :]

    def shard_counts(self, pattern: str | bytes) -> list[int]:
        return [self.count(pattern)]

    # -- locating ---------------------------------------------------------------------------------
    def find(self, pattern: str | bytes, offset: int = 0, limit: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """Occurrences in allowed documents as (global doc ids, byte offsets), in the unfiltered
        order taken in chunks of FIND_CHUNK occurrences, each chunk's allowed ones sorted by (doc,
        offset); so a page deep in a pattern that is rare among the allowed documents costs a scan
        of the chunks before it (the filtered count stops the scan once all are found). Each page
        is sorted by (doc, offset)."""
        p = as_pattern(pattern)
        if offset < 0 or limit < 0:
            raise InputError("find: offset and limit must be >= 0")
        empty = np.zeros(0, np.int64), np.zeros(0, np.int64)
        if limit == 0 or self.nothing:
            return empty
        total = self.exact.count(p)
        remaining = int(self._filtered([p], np.asarray([total], dtype=np.int64))[0]) - offset
        if remaining <= 0:
            return empty
        want = min(limit, remaining)
        docs, offs = [], []
        skip, got = offset, 0
        for lo in range(0, total, FIND_CHUNK):
            d, o = self.exact.find(p, lo, FIND_CHUNK)  # one chunk, sorted by (doc, offset)
            keep = self.filter.allows(d)
            d, o = d[keep], o[keep]
            if skip >= len(d):
                skip -= len(d)
                continue
            d, o = d[skip:skip + want - got], o[skip:skip + want - got]
            skip = 0
            docs.append(d)
            offs.append(o)
            got += len(d)
            if got >= want:
                break
        if not docs:
            return empty
        d, o = np.concatenate(docs), np.concatenate(offs)
        order = np.lexsort((o, d))
        return d[order], o[order]

    def locate_in(self, pattern: bytes, counts: Sequence[int], limit: int,
                  prefix: bytes = b"") -> tuple[list[int], list[int]]:
        """The first `limit` allowed occurrences (contamination's matches; `counts`: shard_counts)."""
        if not sum(counts):
            return [], []
        d, o = self.find(pattern, 0, limit)
        return d.tolist(), o.tolist()

    def docs(self, pattern: str | bytes) -> np.ndarray:
        return self.filter.keep(self.exact.docs(pattern))

    def cnf(self, clauses: Sequence[Sequence[str | bytes]]) -> np.ndarray:
        return self.filter.keep(self.exact.cnf(clauses))

    # -- what does not depend on the filter is the unfiltered index's --------------------------------
    # (text back by document id, sizes); any other query method of ExactIndex is not offered, so
    # nothing reaches the unfiltered answers through this view by accident
    _SHARED = frozenset({"extract", "snippet", "extract_ranges", "text_bytes", "index_bytes", "shards",
                         "first_docs", "threads", "map_shards", "close"})

    def __getattr__(self, name: str):
        if name in FilteredExact._SHARED:
            return getattr(self.exact, name)
        raise AttributeError(f"{type(self).__name__} has no {name!r} (a query under a filter)")


def _doc_lengths(exact: ExactIndex) -> np.ndarray:
    """Bytes of text of every document (the shards know them)."""
    parts = [np.asarray(s.doc_lengths(), dtype=np.int64) for s in exact.shards]
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)
