"""The public Index: build an index directory from a corpus, open it, query it."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from . import __version__
from .corpus import ReadOptions, read_documents
from .errors import IndexFormatError, InputError
from .exact import ExactIndex, ShardWriter
from .hits import Hit, join_hits
from .manifest import FORMAT_NAME, FORMAT_VERSION, file_entry, read_manifest, write_manifest
from .progress import bar, note
from .store import Store

DEFAULT_SHARD_SIZE = 1 << 30


def dense_available() -> bool:
    try:
        import faiss  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def _prepare_target(path: Path, overwrite: bool) -> Path:
    """The temporary sibling directory a build writes into before it is renamed to `path`."""
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists; choose another -o or pass --force to replace it")
    if path.exists() and not (path / "manifest.json").is_file() and any(path.iterdir()):
        raise InputError(f"{path}: exists and is not an rtv index; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _move_into_place(tmp: Path, path: Path) -> None:
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)


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

    def __init__(self, path: Path, manifest: dict, exact: ExactIndex, store: Store, device: str = "auto"):
        self.path = path
        self.manifest = manifest
        self.exact = exact
        self.store = store
        self._device = device
        self._dense = None

    # -- building ---------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        sources: Iterable[str | Path],
        path: str | Path,
        *,
        text_field: str = "text",
        id_field: str | None = None,
        errors: str = "strict",
        shard_size: int = DEFAULT_SHARD_SIZE,
        sa_sample: int = 32,
        isa_sample: int = 32,
        dense: bool | None = None,
        recipe: str | None = None,
        model: str | None = None,
        device: str = "auto",
        passage_tokens: int = 256,
        passage_overlap: int = 32,
        overwrite: bool = False,
    ) -> "Index":
        """Build an index at `path` from corpus files/directories. `dense=None` builds the dense part
        when its dependencies are installed. Nothing appears at `path` unless the build completes."""
        from .chunking import chunk_spans

        path = Path(path)
        if errors not in ("strict", "replace"):
            raise InputError(f"--errors {errors!r}: use 'strict' or 'replace'")
        for name, value in (("--sa-sample", sa_sample), ("--isa-sample", isa_sample)):
            if value < 1:
                raise InputError(f"{name} {value}: must be >= 1")
        if dense is None:
            dense = dense_available()
        embedder = None
        if dense:
            from .dense import load_embedder, load_recipe

            if recipe is not None:
                load_recipe(recipe)  # fail on an unknown recipe before reading the corpus
            embedder = load_embedder(model, device)
            passage_tokens = min(passage_tokens, embedder.max_tokens)
        sources = [Path(s) for s in sources]
        tmp = _prepare_target(path, overwrite)
        started = time.time()
        try:
            store = Store(tmp / "meta.sqlite", create=True)
            writer = ShardWriter(tmp, shard_size, sa_sample, isa_sample)
            opts = ReadOptions(text_field=text_field, id_field=id_field, errors=errors)
            tokenizer = embedder.tokenizer if embedder else None
            n_docs = n_bytes = 0
            seen_ids: set[str] = set()
            docs_batch: list[dict] = []
            passages_batch: list[tuple] = []
            progress = bar(desc="reading corpus", unit="doc")
            for doc in read_documents(sources, opts):
                if id_field is not None:
                    if doc.ext_id in seen_ids:
                        raise InputError(f"{doc.source}: duplicate id {doc.ext_id!r} in field {id_field!r}; ids must be unique")
                    seen_ids.add(doc.ext_id)
                data = doc.text.encode("utf-8")
                writer.add(data)
                docs_batch.append({"id": n_docs, "ext_id": doc.ext_id, "source": doc.source,
                                   "length": len(data), "metadata": doc.metadata})
                for start, end in chunk_spans(doc.text, passage_tokens, passage_overlap, tokenizer):
                    passages_batch.append((n_docs, start, end, data[start:end].decode("utf-8", errors="replace")))
                n_docs += 1
                n_bytes += len(data)
                progress.update()
                if len(docs_batch) >= 2000:
                    store.add_documents(docs_batch)
                    store.add_passages(passages_batch)
                    docs_batch, passages_batch = [], []
            store.add_documents(docs_batch)
            store.add_passages(passages_batch)
            progress.close()
            if n_docs == 0:
                raise InputError(f"{', '.join(map(str, sources))}: the corpus has no non-empty documents; nothing to index")
            exact_section = writer.finish()
            store.index_passages_fts()
            n_passages = store.n_passages
            manifest = {
                "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "rtv_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "corpus": {"sources": [str(s) for s in sources], "documents": n_docs, "bytes": n_bytes,
                           "passages": n_passages, "text_field": text_field, "id_field": id_field, "errors": errors},
                "passages": {"max_tokens": passage_tokens, "overlap": passage_overlap,
                             "tokenizer": embedder.model_id if embedder else "words"},
                "exact": exact_section,
                "dense": None,
            }
            if embedder is not None:
                from .dense import build_dense

                texts = (row["text"] for row in store.iter_passages())
                manifest["dense"] = build_dense(texts, n_passages, tmp / "dense", embedder, recipe)
            store.close()
            files: dict = {}
            for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
                files.update(file_entry(tmp, str(f.relative_to(tmp))))
            manifest["files"] = files
            manifest["build_seconds"] = round(time.time() - started, 3)
            write_manifest(tmp, manifest)
            _move_into_place(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(path, verify=False)

    # -- opening ----------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, verify: bool = True, device: str = "auto") -> "Index":
        """Open an index directory; checks the manifest, file sizes and (with verify) shard checksums."""
        path = Path(path)
        manifest = read_manifest(path)
        if not manifest.get("exact"):
            raise IndexFormatError(f"{path}: has no exact part; rebuild it with `rtv index`")
        exact = ExactIndex(path, manifest["exact"], verify=verify)
        store = Store(path / "meta.sqlite")
        return cls(path, manifest, exact, store, device)

    @property
    def n_documents(self) -> int:
        return self.exact.n_docs

    # -- exact search -------------------------------------------------------------------------------
    def count(self, pattern: str | bytes) -> int:
        return self.exact.count(pattern)

    def count_many(self, patterns: Sequence[str | bytes]) -> np.ndarray:
        return self.exact.count_many(patterns)

    def find(self, pattern: str | bytes, offset: int = 0, limit: int = 100) -> tuple[np.ndarray, np.ndarray]:
        return self.exact.find(pattern, offset, limit)

    def docs(self, pattern: str | bytes) -> np.ndarray:
        return self.exact.docs(pattern)

    def cnf(self, clauses: Sequence[Sequence[str | bytes]]) -> np.ndarray:
        return self.exact.cnf(clauses)

    def count_windows(self, text: bytes, starts, lengths, existence_only: bool = False) -> np.ndarray:
        return self.exact.count_windows(text, starts, lengths, existence_only)

    def ngram_counts(self, text: str, n: int, unit: str = "tokens") -> np.ndarray:
        """Occurrences in the corpus of every n-gram of `text` (unit: bytes, chars or whitespace tokens)."""
        from .windows import windows

        data, starts, lengths = windows(text, n, unit)
        return self.exact.count_windows(data, starts, lengths)

    def extract(self, doc: int) -> str:
        return self.exact.extract(doc).decode("utf-8", errors="replace")

    def snippet(self, doc: int, offset: int, width: int) -> str:
        """Text of bytes [offset, offset + width) of a document, less characters cut at either edge."""
        return _trim_partial_utf8(self.exact.snippet(doc, offset, width)).decode("utf-8", errors="replace")

    # -- dense search -------------------------------------------------------------------------------
    @property
    def dense(self):
        """The dense part (retrieval.dense.DenseIndex), or None when built with --no-dense."""
        if self._dense is None and self.manifest.get("dense"):
            from .dense import DenseIndex

            self._dense = DenseIndex.open(self.path / "dense", self.manifest["dense"], device=self._device)
        return self._dense

    def hits(self, passage_ids: Sequence[int], scores: Sequence[float], stage: str) -> list[Hit]:
        """Hits for passage ids (in order) found by one stage, joined with their passage and document rows."""
        stages = [{stage: {"rank": rank, "score": float(score)}} for rank, score in enumerate(scores, start=1)]
        return join_hits(self.store, passage_ids, scores, stages)

    def search_dense(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        if self.dense is None:
            raise InputError(f"{self.path}: built without a dense part; rebuild with `rtv index --dense` or use --mode exact/lexical")
        _check_k(k, self.store.n_passages)
        scores, ids = self.dense.search(list(queries), k)
        return [self.hits([i for i in row_ids if i >= 0], row_scores[: (row_ids >= 0).sum()], "dense")
                for row_scores, row_ids in zip(scores, ids)]

    def search(self, query: str, k: int = 10, mode: str = "hybrid", **options) -> list[Hit]:
        return self.search_batch([query], k, mode, **options)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, mode: str = "hybrid", **options) -> list[list[Hit]]:
        queries = list(queries)
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise InputError("empty query; give some text to search for")
        _check_k(k, self.store.n_passages)
        if mode == "dense" and not options:
            return self.search_dense(queries, k)
        from .hybrid import search

        return search(self, queries, mode=mode, k=k, **options)

    def info(self) -> dict:
        m = self.manifest
        return {
            "path": str(self.path), "format_version": m["format_version"], "rtv_version": m["rtv_version"],
            "documents": m["corpus"]["documents"], "corpus_bytes": m["corpus"]["bytes"],
            "passages": m["corpus"]["passages"], "index_bytes": sum(f["bytes"] for f in m["files"].values()),
            "exact_bytes": self.exact.index_bytes,
            "exact_ratio": round(self.exact.index_bytes / max(1, self.exact.text_bytes), 4),
            "sa_sample": m["exact"]["sa_sample"], "isa_sample": m["exact"]["isa_sample"],
            "shards": [{k: s[k] for k in ("file", "first_doc", "n_docs", "text_bytes", "bytes")} for s in m["exact"]["shards"]],
            "dense": m.get("dense"),
        }

    def close(self) -> None:
        self.store.close()


def _check_k(k: int, n_passages: int) -> None:
    if k <= 0:
        raise InputError(f"-k {k}: must be >= 1")
    if k > n_passages:
        raise InputError(f"-k {k}: the index holds only {n_passages} passages; ask for at most {n_passages}")
