"""Scoring benchmark entries against the exact index: windows, buckets, matches, summary.

Score of an entry = (windows found verbatim in the corpus) / (windows of the entry), pooled over
all its checked fields; windows never span two fields (or two elements of a list field). The
windows of many entries are packed into one buffer and decided in one batched C++ call
(`ExactIndex.windows_present`: overlapping windows by maximal matches, about one backward-search
step a byte of text that occurs, instead of one a byte and window).

Buckets follow infini-gram mini (Xu et al., 2025, "Infini-gram mini: Exact n-gram Search at the
Internet Scale with FM-Index", benchmark contamination section): with eta the fraction of an
entry's 50-character windows found in the corpus, an entry is
    clean       if eta <  0.2
    suspicious  if 0.2 <= eta < 0.8
    dirty       if eta >= 0.8
Both thresholds are configurable (`--thresholds 0.2,0.8`) and are written into every report.
Entries with no text in the checked fields are "empty", entries whose texts are all shorter than
one window are "too_short": both are counted and reported, never scored.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..exact import ExactIndex, page_plan
from ..windows import char_window_ranges, encode, token_window_ranges
from .readers import BenchmarkEntry, BenchmarkReader

BUCKETS = ("clean", "suspicious", "dirty")
UNSCORED = ("empty", "too_short")
DEFAULT_WINDOW = {"chars": 50, "tokens": 13}
HIST_BINS = 50


@dataclass(frozen=True)
class Thresholds:
    """Lower bounds of the suspicious and dirty buckets (fractions of windows found)."""

    suspicious: float = 0.2
    dirty: float = 0.8

    def __post_init__(self):
        if not (0.0 <= self.suspicious <= self.dirty <= 1.0):
            raise InputError(
                f"thresholds must satisfy 0 <= suspicious <= dirty <= 1, got {self.suspicious},{self.dirty}; "
                f"pass e.g. --thresholds 0.2,0.8"
            )

    @classmethod
    def parse(cls, text: str) -> Thresholds:
        parts = [p for p in text.replace(" ", ",").split(",") if p]
        try:
            vals = [float(p.rstrip("%")) / (100.0 if p.endswith("%") else 1.0) for p in parts]
        except ValueError:
            vals = []
        if len(vals) != 2:
            raise InputError(f"--thresholds needs two numbers SUSPICIOUS,DIRTY (e.g. 0.2,0.8), got {text!r}")
        return cls(vals[0], vals[1])

    def bucket(self, score: float) -> str:
        if score >= self.dirty:
            return "dirty"
        if score >= self.suspicious:
            return "suspicious"
        return "clean"

    def describe(self) -> str:
        s, d = self.suspicious, self.dirty
        return f"clean: score < {s:g}; suspicious: {s:g} <= score < {d:g}; dirty: score >= {d:g}"


@dataclass
class ContaminationConfig:
    unit: str = "chars"  # "chars" or "tokens"
    window: int | None = None  # default 50 chars / 13 tokens
    thresholds: Thresholds = field(default_factory=Thresholds)
    max_matches: int = 5  # documents listed per contaminated entry
    snippet_width: int = 200  # bytes of context around a match
    match_buckets: tuple[str, ...] = ("suspicious", "dirty")  # buckets that get documents + snippets
    worst: int = 20  # entries kept for the "worst entries" part of reports
    batch_bytes: int = 1 << 20  # text packed into one count_windows call
    max_span_bytes: int = 1000  # longest matched span searched with find()
    maximal_matches: bool = True  # False: every window counted on its own (the slow reference)
    snippet_context: int = 40  # bytes of context on each side of a match at least
    where: str | None = None  # count only documents matching this retrieval.filters expression (--where)

    def __post_init__(self):
        if self.unit not in DEFAULT_WINDOW:
            raise InputError(f"unknown unit {self.unit!r}; use --unit chars or --unit tokens")
        if self.window is None:
            self.window = DEFAULT_WINDOW[self.unit]
        if int(self.window) < 1:
            raise InputError(f"--window must be a positive integer, got {self.window}")

    def describe(self) -> str:
        return f"{self.window}-{'character' if self.unit == 'chars' else 'token'} windows"


@dataclass
class EntryResult:
    benchmark: str
    id: str
    bucket: str
    score: float | None
    windows: int
    found: int
    fields: dict[str, list[int]]  # field -> [windows, found]
    matched_text: str | None = None  # longest run of found windows (or its first window)
    matches: list[dict] = field(default_factory=list)  # documents: doc_id, ext_id, source, offset, snippet
    match_count: int | None = None  # occurrences of matched_text in the corpus
    missing_fields: list[str] = field(default_factory=list)
    semantic: dict | None = None

    def to_json(self) -> dict:
        d = {
            "type": "entry",
            "benchmark": self.benchmark,
            "id": self.id,
            "bucket": self.bucket,
            "score": None if self.score is None else round(self.score, 6),
            "windows": self.windows,
            "found": self.found,
            "fields": {k: {"windows": v[0], "found": v[1]} for k, v in self.fields.items()},
        }
        if self.matched_text is not None:
            d["matched_text"] = self.matched_text
            d["match_count"] = self.match_count
            d["matches"] = self.matches
        if self.missing_fields:
            d["missing_fields"] = self.missing_fields
        if self.semantic is not None:
            d["semantic"] = self.semantic
        return d


class Summary:
    """Streaming aggregate of one benchmark's results: counts, histogram, worst entries."""

    def __init__(self, benchmark: str, path: str, fields: list[str], config: ContaminationConfig):
        self.benchmark, self.path, self.fields, self.config = benchmark, path, fields, config
        self.counts = {b: 0 for b in BUCKETS + UNSCORED}
        self.hist = np.zeros(HIST_BINS, dtype=np.int64)
        self.sum_score = 0.0
        self.windows = 0
        self.found = 0
        self.missing_field_entries = 0
        self._worst: list = []  # min-heap of (score, seq, result)
        self._seq = 0
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self.semantic: dict | None = None  # filled by the semantic checker

    def add(self, r: EntryResult) -> None:
        self.counts[r.bucket] += 1
        if r.missing_fields:
            self.missing_field_entries += 1
        if r.score is None:
            return
        self.sum_score += r.score
        self.windows += r.windows
        self.found += r.found
        self.hist[min(int(r.score * HIST_BINS), HIST_BINS - 1)] += 1
        if r.score > 0 and self.config.worst > 0:
            self._seq += 1
            item = (r.score, -self._seq, r)
            if len(self._worst) < self.config.worst:
                heapq.heappush(self._worst, item)
            elif item > self._worst[0]:
                heapq.heapreplace(self._worst, item)

    def finish(self) -> None:
        self.elapsed = time.perf_counter() - self.started

    @property
    def entries(self) -> int:
        return sum(self.counts.values())

    @property
    def scored(self) -> int:
        return sum(self.counts[b] for b in BUCKETS)

    def worst(self) -> list[EntryResult]:
        return [r for _, _, r in sorted(self._worst, key=lambda t: (-t[0], -t[1]))]

    def rate(self, bucket: str) -> float:
        return self.counts[bucket] / self.scored if self.scored else 0.0

    def to_json(self) -> dict:
        t = self.config.thresholds
        return {
            "type": "summary",
            "benchmark": self.benchmark,
            "path": self.path,
            "fields": self.fields,
            "unit": self.config.unit,
            "window": self.config.window,
            **({"where": self.config.where} if self.config.where else {}),
            "thresholds": {"suspicious": t.suspicious, "dirty": t.dirty, "rule": t.describe()},
            "entries": self.entries,
            "scored": self.scored,
            "buckets": {b: self.counts[b] for b in BUCKETS},
            "rates": {b: round(self.rate(b), 6) for b in BUCKETS},
            "empty": self.counts["empty"],
            "too_short": self.counts["too_short"],
            "entries_missing_a_field": self.missing_field_entries,
            "mean_score": round(self.sum_score / self.scored, 6) if self.scored else None,
            "windows": self.windows,
            "windows_found": self.found,
            "histogram": {"bins": HIST_BINS, "counts": self.hist.tolist()},
            "elapsed_s": round(self.elapsed, 3),
            "entries_per_s": round(self.entries / self.elapsed, 1) if self.elapsed > 0 else None,
            **({"semantic": self.semantic} if self.semantic is not None else {}),
        }


def _runs(found: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run of True in `found` (first one on ties); (0, 0) if none."""
    if not found.any():
        return 0, 0
    f = np.concatenate(([False], found, [False])).astype(np.int8)
    d = np.diff(f)
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    k = int(np.argmax(ends - starts))
    return int(starts[k]), int(ends[k] - starts[k])


def _column(rows, k: int):
    """Window k's per-shard (lo, hi) rows out of (lo, hi) arrays of shape (shards, windows), or None."""
    return None if rows is None else (rows[0][:, k], rows[1][:, k])


def _cut_utf8(data: bytes, limit: int) -> bytes:
    """At most `limit` bytes of UTF-8 `data`, not cutting a character."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end]


class _Pending:
    """An entry whose windows sit in the current batch buffer."""

    __slots__ = ("entry", "segs")

    def __init__(self, entry: BenchmarkEntry):
        self.entry = entry
        self.segs: list[tuple[str, int, int, int]] = []  # (field, window index start, n windows, buffer base)


class Scorer:
    """Scores entries against `index` in batches; yields EntryResult in input order."""

    def __init__(self, index, config: ContaminationConfig, benchmark: str = "", semantic=None):
        if getattr(index, "count_windows", None) is None:
            raise InputError("the index has no exact part (count_windows); rebuild it with the exact index enabled")
        self.index, self.config, self.benchmark, self.semantic = index, config, benchmark, semantic
        # the exact part as the allowed documents see it: deleted ones (and those --where leaves
        # out) never count as a source of contamination
        self.exact = index.exact_view(config.where) if hasattr(index, "exact_view") else index.exact
        self._by_rows = isinstance(self.exact, ExactIndex)
        self._doc_cache: dict[int, tuple] = {}

    def score(self, entries: Iterable[BenchmarkEntry]) -> Iterator[EntryResult]:
        cfg = self.config
        buf = bytearray()
        starts: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        nwin = 0
        pending: list[_Pending] = []
        for entry in entries:
            p = _Pending(entry)
            for fname, text in entry.segments:
                if not text:
                    continue
                data = encode(text)
                if cfg.unit == "chars":
                    s, ln = char_window_ranges(data, cfg.window, n_chars=len(text))
                else:
                    s, ln = token_window_ranges(text, data, cfg.window)
                base = len(buf)
                buf += data
                p.segs.append((fname, nwin, len(s), base))
                if len(s):
                    starts.append(s + base)
                    lengths.append(ln)
                    nwin += len(s)
            pending.append(p)
            if len(buf) >= cfg.batch_bytes:
                yield from self._flush(buf, starts, lengths, pending)
                buf, starts, lengths, nwin, pending = bytearray(), [], [], 0, []
        if pending:
            yield from self._flush(buf, starts, lengths, pending)

    def _flush(self, buf, starts, lengths, pending) -> Iterator[EntryResult]:
        data = bytes(buf)
        self._known = {}
        self._found_spans = None  # exact.FoundSpans of this batch (maximal matches, unfiltered)
        if starts:
            s = np.concatenate(starts)
            ln = np.concatenate(lengths)
            found = self._existence(data, s, ln)
        else:
            s = ln = np.zeros(0, dtype=np.int64)
            found = np.zeros(0, dtype=bool)
        self._wanted: list[tuple[EntryResult, int, int, int]] = []
        results = [self._result(p, data, s, ln, found) for p in pending]
        self._fill_matches(data)
        self._known, self._found_spans = {}, None
        if self.semantic is not None:
            self.semantic.annotate(results, [p.entry for p in pending])
        yield from results

    def _existence(self, data: bytes, s: np.ndarray, ln: np.ndarray) -> np.ndarray:
        """found[i]: does window i occur in the corpus? The windows are in text order, so the
        index decides them by maximal matches; with maximal_matches off, each is counted alone.
        An unfiltered exact part also gives the rows of the strings its searches found, kept
        (`self._found_spans`) so that a match equal to one (a copied entry's text) is not
        searched again."""
        if not self.config.maximal_matches:
            return self.exact.count_windows(data, s, ln, existence_only=True) > 0
        if not self._by_rows:
            return self.exact.windows_present(data, s, ln)
        found, self._found_spans = self.exact.windows_present(data, s, ln, with_rows=True)
        return found

    def _result(self, p: _Pending, data: bytes, s, ln, found) -> EntryResult:
        cfg = self.config
        e = p.entry
        fields: dict[str, list[int]] = {}
        total = hit = 0
        has_text = False
        best = None  # (run length, segment, run start)
        for fname, w0, nw, base in p.segs:
            has_text = True
            f = found[w0 : w0 + nw]
            k = int(f.sum())
            st = fields.setdefault(fname, [0, 0])
            st[0] += nw
            st[1] += k
            total += nw
            hit += k
            if k:
                rs, rl = _runs(f)
                if best is None or rl > best[0]:
                    best = (rl, w0 + rs)
        if not has_text:
            return EntryResult(self.benchmark, e.id, "empty", None, 0, 0, fields, missing_fields=e.missing)
        if total == 0:
            return EntryResult(self.benchmark, e.id, "too_short", None, 0, 0, fields, missing_fields=e.missing)
        score = hit / total
        r = EntryResult(self.benchmark, e.id, cfg.thresholds.bucket(score), score, total, hit, fields,
                        missing_fields=e.missing)
        if best is not None and r.bucket in cfg.match_buckets:
            rl, w = best
            span_start = int(s[w])
            span_end = int(s[w + rl - 1] + ln[w + rl - 1])
            query = _cut_utf8(data[span_start:span_end], cfg.max_span_bytes)
            self._wanted.append((r, span_start, len(query), int(ln[w])))
        return r

    # -- matches: documents, offsets, snippets ---------------------------------------------------
    def _search(self, data: bytes, starts: np.ndarray, lengths: np.ndarray):
        """(per-shard counts of shape (shards, windows), (lo, hi) suffix-array rows of the same
        shape or None). An unfiltered exact part gives its rows, which locate the matches without
        searching again; a filtered view (tombstones, --where) counts allowed documents only."""
        if self._by_rows:
            lo, hi = self.exact.window_ranges(data, starts, lengths)
            return hi - lo, (lo, hi)
        return self.exact.count_windows_per_shard(data, starts, lengths, existence_only=False), None

    def _lookup(self, data: bytes, windows: list[tuple[int, int]]) -> list[tuple]:
        """(per-shard counts, rows or None) of each window (start, length) of data: the ones not
        searched yet in this batch in one batched call."""
        need = sorted({w for w in windows if w not in self._known})
        if need and self._found_spans is not None:
            known, lo, hi = self._found_spans.rows(np.array([w[0] for w in need], dtype=np.int64),
                                                   np.array([w[1] for w in need], dtype=np.int64))
            for k in np.flatnonzero(known).tolist():
                self._known[need[k]] = (hi[:, k] - lo[:, k], (lo[:, k], hi[:, k]))
            need = [w for w, k in zip(need, known.tolist()) if not k]
        if need:
            counts, rows = self._search(data, np.array([w[0] for w in need], dtype=np.int64),
                                        np.array([w[1] for w in need], dtype=np.int64))
            for k, w in enumerate(need):
                self._known[w] = (counts[:, k], _column(rows, k))
        return [self._known[w] for w in windows]

    def _occurrences(self, data: bytes, known: list[tuple]) -> list[list[tuple[int, int]]]:
        """The first max_matches occurrences (global doc id, offset) of each wanted match, sorted:
        through the suffix-array rows (the first rows in shard order, one batched call per shard
        for the whole batch), or the filtered view's locate_in."""
        cfg = self.config
        if not self._by_rows:
            out = []
            for (_, a, n, _), (counts, _) in zip(self._wanted, known):
                d, o = self.exact.locate_in(data[a:a + n], counts.tolist(), cfg.max_matches)
                out.append(sorted(zip(d, o)))
            return out
        rows: list[list[np.ndarray]] = [[] for _ in self.exact.shards]
        plans = []
        for counts, (lo, _) in known:
            plans.append(page_plan(counts.tolist(), 0, cfg.max_matches))
            for i, cut in enumerate(plans[-1]):
                if cut is not None:
                    rows[i].append(np.arange(lo[i], lo[i] + cut[1], dtype=np.int64))
        located = self.exact.locate_rows([np.concatenate(r) if r else np.zeros(0, np.int64) for r in rows])
        used = [0] * len(rows)
        out = []
        for plan in plans:
            occ = []
            for i, cut in enumerate(plan):
                if cut is not None:
                    d, o = located[i]
                    occ += zip(d[used[i]:used[i] + cut[1]].tolist(), o[used[i]:used[i] + cut[1]].tolist())
                    used[i] += cut[1]
            out.append(sorted(occ))
        return out

    def _fill_matches(self, data: bytes) -> None:
        """Matches of every entry of the batch that wants them: its longest run of found windows
        (cut to max_span_bytes), or its first window when the run does not occur as a whole (the
        union of overlapping found windows need not), with its first max_matches occurrences;
        documents come from the store in one query and snippets from one batched extract. A
        snippet is the match itself with context read on either side (the match is known)."""
        if not self._wanted:
            return
        cfg = self.config
        known = self._lookup(data, [(a, n) for _, a, n, _ in self._wanted])
        retry = [k for k, (counts, _) in enumerate(known) if counts.sum() == 0]
        for k, kn in zip(retry, self._lookup(data, [(self._wanted[k][1], self._wanted[k][3]) for k in retry])):
            r, a, _, first_len = self._wanted[k]
            self._wanted[k] = (r, a, first_len, first_len)
            known[k] = kn
        for (r, a, n, _), (counts, _) in zip(self._wanted, known):
            r.matched_text = data[a:a + n].decode("utf-8", "replace")
            r.match_count = int(counts.sum())
        found = self._occurrences(data, known)
        info = self._docs([d for occ in found for d, _ in occ])
        docs, starts, ends = [], [], []
        for (_, _, n, _), occ in zip(self._wanted, found):
            half = max((cfg.snippet_width - n) // 2, cfg.snippet_context)
            for d, off in occ:
                docs += [d, d]
                starts += [max(off - half, 0), off + n]
                ends += [off, off + n + half]
        try:
            pieces = self.index.snippets(docs, starts, ends) if docs else []
        except Exception:  # noqa: BLE001 - a snippet is a courtesy; never fail the report on it
            pieces = None
        k = 0
        for (r, _, _, _), occ in zip(self._wanted, found):
            for d, off in occ:
                ext_id, source = info.get(d, (None, None))
                snip = None if pieces is None else pieces[k] + r.matched_text + pieces[k + 1]
                k += 2
                r.matches.append({"doc_id": d, "ext_id": ext_id, "source": source, "offset": off, "snippet": snip})
        self._wanted = []

    def _docs(self, ids: list[int]) -> dict[int, tuple]:
        need = [i for i in dict.fromkeys(ids) if i not in self._doc_cache]
        if need:
            for row in self.index.store.documents(need):
                self._doc_cache[int(row["id"])] = (row.get("ext_id"), row.get("source"))
        if len(self._doc_cache) > 100_000:
            self._doc_cache.clear()
        return {i: self._doc_cache.get(i, (None, None)) for i in ids}


class BenchmarkRun:
    """Check one benchmark file: iterate for per-entry results; `.summary` aggregates them.

    Raises InputError at the end when the file held no entry with text in the checked fields.
    """

    def __init__(self, index, path, fields=None, id_field=None, config: ContaminationConfig | None = None,
                 semantic=None, name: str | None = None):
        self.config = config or ContaminationConfig()
        self.reader = BenchmarkReader(path, fields, id_field)
        self.name = name or self.reader.name
        self.index = index
        self.semantic = semantic
        self.summary: Summary | None = None

    def __iter__(self) -> Iterator[EntryResult]:
        scorer = Scorer(self.index, self.config, self.name, self.semantic)
        summary = Summary(self.name, str(self.reader.path), [], self.config)
        if self.semantic is not None:
            summary.semantic = self.semantic.new_summary()
        try:
            for r in scorer.score(iter(self.reader)):
                if not summary.fields:
                    summary.fields = list(self.reader.fields or [])
                summary.add(r)
                if self.semantic is not None:
                    self.semantic.count(summary.semantic, r)
                yield r
        finally:
            summary.finish()
            self.summary = summary
        if summary.entries == 0:
            raise InputError(f"{self.reader.path}: has no entries; check that the file is the benchmark you meant")
        if summary.counts["empty"] == summary.entries:
            raise InputError(
                f"{self.reader.path}: all {summary.entries} entries are empty in field(s) "
                f"{', '.join(summary.fields)}; name the text fields with --field"
            )


def check_benchmark(index, path, fields=None, id_field=None, config: ContaminationConfig | None = None,
                    semantic=None, name: str | None = None) -> tuple[list[EntryResult], Summary]:
    """Convenience: run a whole benchmark and return (results, summary). Keeps every result in memory."""
    run = BenchmarkRun(index, path, fields, id_field, config, semantic, name)
    results = list(run)
    return results, run.summary
