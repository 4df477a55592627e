"""The public Index: build an index directory from a corpus, open it, query it."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import IndexFormatError, InputError
from .exact import ExactIndex
from .hits import Hit
from .manifest import MANIFEST, live_generation, read_manifest, segments
from .manifest import check_store, verify_files  # cross-checks and checksums (issue 11.6, 11.7)
from .store import Store


def _trim_partial_utf8(data: bytes) -> bytes:
    """Drop a character cut in two at either end of a byte window (continuation bytes are 10xxxxxx)."""
    start = 0
    while start < len(data) and start < 3 and data[start] & 0xC0 == 0x80:
        start += 1
    end = len(data)
    for back in range(1, min(4, end - start) + 1):  # last lead byte: is its sequence complete?
        byte = data[end - back]
        if byte & 0xC0 != 0x80:
            need = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            if need > back:
                end -= back
            break
    return data[start:end]


class Index:
    """An rtv index directory: exact FM-index shards, meta.sqlite, and optionally a dense part."""

    def __init__(self, path: Path, root: Path, manifest: dict, exact: ExactIndex, store: Store, device: str = "auto"):
        self.path = path  # the index directory, as the user named it
        self.root = root  # its generation that this Index reads (path/gen-NNNNNN)
        self.manifest = manifest
        self.exact = exact
        self.store = store
        self._device = device
        self._dense = None
        self._filters: dict = {}  # where text (None: tombstones only) -> (DocFilter | None, FilteredExact | None)
        self._filters_lock = threading.Lock()
        self._passage_docs = None

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, sources: Iterable[str | Path], path: str | Path, *, overwrite: bool = False,
              device: str = "auto", **settings) -> "Index":
        """Build an index at `path` from corpus files/directories and open it. `settings` are the
        fields of retrieval.build.BuildSettings (text_field, id_field, errors, shard_size, sa_sample,
        isa_sample, dense, recipe, model, passage_tokens, passage_overlap). `dense=None` builds the
        dense part when its dependencies are installed. Nothing appears at `path` unless the build
        completes."""
        from .build import BuildSettings, build_index

        unknown = set(settings) - set(BuildSettings.__dataclass_fields__)
        if unknown:
            raise TypeError(f"Index.build() got unexpected arguments {sorted(unknown)}")
        build_index(sources, path, BuildSettings(device=device, **settings), overwrite=overwrite)
        return cls.open(path, verify=False, device=device)

    # -- changing (retrieval.update: each change publishes a new generation) ----------------------
    def add(self, sources: Iterable[str | Path], *, replace: bool = False, **options) -> "Index":
        """Add the documents of `sources` as a new segment and return the index reopened on the new
        generation (this Index keeps reading the one it opened). `options`: those of
        retrieval.update.add (text_field, id_field, errors, workers, max_memory, device)."""
        from .update import add

        add(self.path, sources, replace=replace, **options)
        return type(self).open(self.path, verify=False, device=self._device)

    def delete(self, ids: Sequence[str] = (), where: str | None = None) -> "Index":
        """Tombstone documents by external id (and/or a filter expression); returns the reopened index."""
        from .update import delete

        delete(self.path, ids, where=where)
        return type(self).open(self.path, verify=False, device=self._device)

    def compact(self, **options) -> "Index":
        """Merge segments and drop deleted documents' text (a fresh build of the live documents);
        returns the reopened index."""
        from .update import compact

        compact(self.path, device=self._device, **options)
        return type(self).open(self.path, verify=False, device=self._device)

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, verify: bool = True, device: str = "auto") -> "Index":
        """Open the live generation of an index directory; checks the manifest, file sizes and (with
        verify) shard checksums. Every file is opened from one generation, so a rebuild publishing
        meanwhile is seen whole or not at all."""
        path = Path(path)
        for attempt in range(3):
            gen = live_generation(path)
            try:
                manifest = read_manifest(gen)
                verify_files(gen, manifest, verify)  # checksums of every file but the shards (theirs: below)
                if not manifest.get("exact"):
                    raise IndexFormatError(f"{path}: has no exact part; rebuild it with `rtv index`")
                exact = ExactIndex(gen, manifest["exact"], verify=verify)
                store = Store(gen / "meta.sqlite")
                check_store(gen, manifest, store)  # the store's documents/passages match the manifest
                if manifest.get("lexical"):  # postings files (retrieval.postings); else FTS5 in the store
                    from .postings import Postings, check_section

                    try:
                        check_section(gen, manifest)
                        store.postings = Postings(gen, manifest["lexical"], manifest["corpus"]["passages"], store)
                    except IndexFormatError:
                        store.close()
                        raise
                return cls(path, gen, manifest, exact, store, device)
            except IndexFormatError:
                # a rebuild may have published and removed this generation while we opened it
                if attempt == 2 or live_generation(path) == gen:
                    raise
        raise AssertionError("unreachable")

    @property
    def n_documents(self) -> int:
        return self.exact.n_docs

    # -- parts and passages ---------------------------------------------------------------------------
    @property
    def parts(self) -> tuple[str, ...]:
        """The parts this index was built with: "exact" always, "lexical" and "dense" when chosen."""
        return tuple(self.manifest["parts"])

    def require(self, part: str, for_what: str) -> None:
        """An InputError saying how to get `part` when this index was built without it."""
        if part == "passages":
            if not {"lexical", "dense"} & set(self.parts):
                raise InputError(f"{self.path}: {for_what} needs passages, and this index has only the exact part "
                                 f"(built with --parts {','.join(self.parts)}); rebuild with --parts exact,lexical "
                                 "(or exact,lexical,dense), or use count/find/cnf")
        elif part not in self.parts:
            raise InputError(f"{self.path}: {for_what} needs the {part} part, which this index was built without "
                             f"(--parts {','.join(self.parts)}); rebuild with --parts {','.join(self.parts + (part,))}")

    @property
    def n_passages(self) -> int:
        return self.store.n_passages

    def passages(self, ids: Sequence[int]) -> list[dict]:
        """Passage rows (id, doc_id, start, end, text) for the given ids, in order: the store's byte
        spans with their text rebuilt from the FM-index (one batched extract for all of them)."""
        rows = self.store.passages(ids)
        return self._with_text(rows)

    def iter_passages(self, batch: int = 2048) -> Iterator[dict]:
        """Every passage row with its text, in id order."""
        rows: list[dict] = []
        for row in self.store.iter_passages():
            rows.append(row)
            if len(rows) >= batch:
                yield from self._with_text(rows)
                rows = []
        yield from self._with_text(rows)

    def _with_text(self, rows: list[dict]) -> list[dict]:
        if not rows:
            return rows
        texts = self.exact.extract_ranges([r["doc_id"] for r in rows], [r["start"] for r in rows],
                                          [r["end"] for r in rows])
        for r, t in zip(rows, texts):
            r["text"] = t.decode("utf-8", errors="replace")
        return rows

    # -- filters: tombstones and --where (retrieval.filters) -----------------------------------------
    FILTER_CACHE = 16  # where expressions whose allowed documents an open index keeps

    def doc_filter(self, where: str | None = None):
        """The documents a query may return, as a retrieval.filters.DocFilter: the live ones
        (tombstones left out) that match `where`; None when nothing is excluded, so unfiltered
        queries keep their fast paths. The allowed set is materialised once (one SQL scan of
        documents) and kept for the FILTER_CACHE most recent expressions."""
        return self._filter_entry(where)[0]

    def exact_view(self, where: str | None = None):
        """The exact part as queries under `where` see it: the ExactIndex itself when nothing is
        excluded, else a retrieval.exact_filtered.FilteredExact (same methods)."""
        flt, view = self._filter_entry(where)
        return self.exact if flt is None else view

    def _filter_entry(self, where: str | None):
        from .filters import combine, parse_where

        key = None if where is None or (isinstance(where, str) and not where.strip()) else where
        with self._filters_lock:
            entry = self._filters.pop(key, None)
            if entry is not None:
                self._filters[key] = entry  # most recently used last
                return entry
        compiled = parse_where(key) if key is not None else None
        matching = self.store.matching_doc_ids(compiled.sql, compiled.params) if compiled else None
        flt = combine(self.n_documents, self.store.deleted_doc_ids(), matching, compiled)
        view = None
        if flt is not None:
            from .exact_filtered import FilteredExact

            view = FilteredExact(self.exact, flt)
        with self._filters_lock:
            self._filters[key] = (flt, view)
            while len(self._filters) > self.FILTER_CACHE:  # the oldest expression goes; tombstones' stays
                self._filters.pop(next(k for k in self._filters if k is not None))
        return flt, view

    @property
    def passage_docs(self) -> np.ndarray:
        """The document id of every passage (indexed by passage id), read once from the store."""
        if self._passage_docs is None:
            self._passage_docs = self.store.passage_doc_ids()
        return self._passage_docs

    def allowed_passages(self, flt) -> np.ndarray | None:
        """Boolean mask over passage ids allowed by a DocFilter (None: every passage), as long as
        the dense part has vectors (a vector whose passage row is gone is never allowed)."""
        if flt is None:
            return None
        n = self.dense.n if self.dense is not None else len(self.passage_docs)
        return flt.passage_mask(self.passage_docs, n)

    # -- exact search (`where`: a retrieval.filters expression; tombstones are always left out) ----
    def count(self, pattern: str | bytes, where: str | None = None) -> int:
        return self.exact_view(where).count(pattern)

    def count_many(self, patterns: Sequence[str | bytes], where: str | None = None) -> np.ndarray:
        return self.exact_view(where).count_many(patterns)

    def find(self, pattern: str | bytes, offset: int = 0, limit: int = 100,
             where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.exact_view(where).find(pattern, offset, limit)

    def docs(self, pattern: str | bytes, where: str | None = None) -> np.ndarray:
        return self.exact_view(where).docs(pattern)

    def cnf(self, clauses: Sequence[Sequence[str | bytes]], where: str | None = None) -> np.ndarray:
        return self.exact_view(where).cnf(clauses)

    def count_windows(self, text: bytes, starts, lengths, existence_only: bool = False,
                      where: str | None = None) -> np.ndarray:
        return self.exact_view(where).count_windows(text, starts, lengths, existence_only)

    def ngram_counts(self, text: str, n: int, unit: str = "tokens", where: str | None = None) -> np.ndarray:
        """Occurrences in the corpus of every n-gram of `text` (unit: bytes, chars or whitespace tokens)."""
        from .windows import windows

        data, starts, lengths = windows(text, n, unit)
        return self.exact_view(where).count_windows(data, starts, lengths)

    def extract(self, doc: int) -> str:
        return self.exact.extract(doc).decode("utf-8", errors="replace")

    def snippet(self, doc: int, offset: int, width: int) -> str:
        """Text of bytes [offset, offset + width) of a document, less characters cut at either edge."""
        return _trim_partial_utf8(self.exact.snippet(doc, offset, width)).decode("utf-8", errors="replace")

    def snippets(self, docs: Sequence[int], starts: Sequence[int], ends: Sequence[int]) -> list[str]:
        """snippet() of many byte ranges [starts[i], ends[i]) of documents docs[i] at once (one
        batched extract per shard)."""
        return [_trim_partial_utf8(b).decode("utf-8", errors="replace") for b in self.exact.extract_ranges(docs, starts, ends)]

    # -- dense search -------------------------------------------------------------------------------
    @property
    def dense(self):
        """The dense part (retrieval.dense.DenseIndex), or None when built with --no-dense."""
        if self._dense is None and self.manifest.get("dense"):
            from .dense import DenseIndex

            if not self.root.is_dir():  # opened lazily: the generation must still be there
                raise self._generation_gone()

            self._dense = DenseIndex.open(self.root / "dense", self.manifest["dense"], device=self._device)
        return self._dense

    def search(self, query: str, k: int | None = None, mode: str = "hybrid", **options) -> list[Hit]:
        """Passages for one query; options as retrieval.hybrid.search (rerank="auto", fusion,
        where="lang = 'en'", ...)."""
        return self.search_batch([query], k, mode, **options)[0]

    def search_batch(self, queries: Sequence[str], k: int | None = None, mode: str = "hybrid",
                     **options) -> list[list[Hit]]:
        from .hybrid import search

        if isinstance(queries, (str, bytes)):  # list("text") would be one query per character
            raise TypeError("search_batch: expected a list of queries, got one string; use search() or pass [query]")
        return search(self, list(queries), mode=mode, k=k, **options)

    def _generation_gone(self) -> IndexFormatError:
        return IndexFormatError(f"{self.path}: changed twice since it was opened (rebuilt, or rtv add/delete/"
                                f"compact; its generation {self.root.name} is gone); open it again")

    def info(self) -> dict:
        m = self.manifest
        try:
            parts = self.part_bytes()  # stats this generation's files
        except FileNotFoundError:
            raise self._generation_gone() from None
        corpus = max(1, m["corpus"]["bytes"])
        return {
            "path": str(self.path), "generation": self.root.name, "format_version": m["format_version"],
            "rtv_version": m["rtv_version"],
            "documents": m["corpus"]["documents"] - m["corpus"].get("deleted", 0),
            "deleted_documents": m["corpus"].get("deleted", 0), "corpus_bytes": m["corpus"]["bytes"],
            "passages": m["corpus"]["passages"], "index_bytes": sum(parts.values()),
            "index_ratio": round(sum(parts.values()) / corpus, 4),
            "parts": {name: {"bytes": b, "per_corpus_byte": round(b / corpus, 4)} for name, b in parts.items()},
            "exact_bytes": self.exact.index_bytes,
            "exact_ratio": round(self.exact.index_bytes / max(1, self.exact.text_bytes), 4),
            "sa_sample": m["exact"]["sa_sample"], "isa_sample": m["exact"]["isa_sample"],
            "shards": [{k: s[k] for k in ("file", "first_doc", "n_docs", "text_bytes", "bytes")} for s in m["exact"]["shards"]],
            "segments": segments(m),
            "dense": m.get("dense"),
        }

    def part_bytes(self) -> dict[str, int]:
        """Bytes on disk of each part of this generation, summing to all of its files: exact (shards,
        the documents table, the manifest), passages (their byte spans, when lexical or dense is
        built), lexical (the full-text index), dense (the FAISS index and rescoring store), text (the
        compressed documents, retrieval/text_store.py)."""
        files = self.manifest["files"]
        store = self.store.part_bytes()
        if not {"lexical", "dense"} & set(self.parts):
            store["exact"] += store.pop("passages")  # the empty tables of parts not built: overhead
        if "lexical" not in self.parts:
            store["exact"] += store.pop("lexical")
        out = {"exact": sum(f["bytes"] for rel, f in files.items() if rel.startswith("exact/"))
               + store.pop("exact") + (self.root / MANIFEST).stat().st_size, **store}
        if "lexical" in self.parts:  # postings files, where the lexical part is not FTS5's tables alone
            out["lexical"] += sum(f["bytes"] for rel, f in files.items() if rel.startswith("lexical/"))
        if "dense" in self.parts:
            out["dense"] = sum(f["bytes"] for rel, f in files.items() if rel.startswith("dense/"))
        if "text" in self.parts:
            out["text"] = sum(f["bytes"] for rel, f in files.items() if rel.startswith("text/"))
        return out

    def close(self) -> None:
        self.exact.close()  # the shard fan-out threads
        if self.store.postings is not None:
            self.store.postings.close()
        self.store.close()
