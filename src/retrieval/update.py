"""Living indexes: `rtv add`, `rtv delete`, `rtv compact`, the way Lucene does it (write-once
segments, tombstones, merged later).

Every change writes a new generation (manifest.py) under the build lock and publishes it with one
atomic replace of CURRENT: readers see the index before or after the change, never between, and a
change that fails or is killed (even by SIGKILL) leaves the index as it was (the next writer removes
its half-written generation).

- add: the new generation hard-links every file of the live one that it keeps as it is (the shards,
  the dense files until they are rewritten), copies meta.sqlite and appends the new documents'
  rows, passages and full-text rows to it, builds exact shard(s) for the new text with the same
  per-shard step and runner as `rtv index` (build.ShardStep), and appends the new vectors to the
  dense part (dense.index.append_vectors). The dense part stays one FAISS index with its existing
  training, not a segment searched beside the old one: vector ids stay passage ids, and dense
  search, filters and rescoring need no merge of per-segment results; the cost is that index.faiss
  and the rescoring store are rewritten (a copy of their bytes) on each add, and that IVF centroids
  and the rescoring store's ranges, PCA axes or PQ codebook are those fitted at the first build
  until `rtv compact` fits them again.
- delete: tombstones: the store's `deleted` table, which every query stage honours through
  Index.doc_filter; the deleted passages also leave the full-text index (FTS5's 'delete' with the
  text they were indexed with, rebuilt from the FM-index), so BM25 statistics are those of the live
  documents. The text stays in the shards until compaction.
- compact: a fresh build of the live documents, in id order, from the index's own content (text
  extracted from the FM-index; external ids, sources and metadata from the store) with the index's
  own settings (shard size, sample rates, passage sizes, model, recipe): byte-identical shards to
  `rtv index` over the same documents, one segment, no tombstones.

A segment (manifest.segments) records what one build or add contributed: its generation, shards,
and document and passage ranges (vector ids are passage ids); `rtv info` shows each one's live and
deleted documents.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import InputError
from .manifest import file_entry, segments, write_manifest

_SHARD_NUMBER = re.compile(r"exact/shard-(\d+)\.fmi")


@contextmanager
def _new_generation(path: Path, verify: bool = False) -> Iterator[tuple]:
    """(live Index, build.Target) for one change of the index at `path`: under the build lock (so
    the generation it starts from stays the live one), published on success, removed on any error.
    verify: check every file's checksum first (compact, which rewrites everything); add and delete
    check the files they rewrite (`_check_rewritten`), as linked files keep their checksums."""
    from .build import Target, _output_errors, _sigterm_as_exit, build_lock
    from .index import Index
    from .manifest import live_generation

    live_generation(path)  # not an index: say so before taking a lock beside it
    with _sigterm_as_exit(), _output_errors(path, change=True), build_lock(path):
        live = Index.open(path, verify=verify)
        try:
            target = Target(path, overwrite=True)
            try:
                yield live, target
                target.publish()
            except BaseException:
                target.abandon()
                raise
        finally:
            live.close()


def _settings(manifest: dict, **overrides):
    """The BuildSettings an index was built with, as far as they shape its files (`overrides`: the
    ones an add may choose per call, such as text_field; None keeps the index's)."""
    from .build import DEFAULT_SHARD_SIZE, BuildSettings

    corpus, passages, dense = manifest["corpus"], manifest.get("passages") or {}, manifest.get("dense") or {}
    s = BuildSettings(text_field=corpus.get("text_field") or "text", errors=corpus.get("errors") or "strict",
                      shard_size=manifest["exact"].get("shard_size", DEFAULT_SHARD_SIZE),
                      sa_sample=manifest["exact"]["sa_sample"], isa_sample=manifest["exact"]["isa_sample"],
                      parts=tuple(manifest["parts"]), model=dense.get("model"), recipe=dense.get("requested_recipe"),
                      passage_tokens=passages.get("max_tokens", 256), passage_overlap=passages.get("overlap", 32),
                      lexical="postings" if manifest.get("lexical") else "fts5")
    for name, value in overrides.items():
        if value is not None:
            setattr(s, name, value)
    s.check()
    return s


def _embedder(manifest: dict, device: str):
    """The index's own embedding model when it has a dense part (its tokenizer also cuts passages)."""
    if "dense" not in manifest["parts"]:
        return None
    from .dense import check_model, load_embedder

    embedder = load_embedder(manifest["dense"]["model"], device)
    check_model(manifest["dense"], embedder)
    return embedder


def _link_files(live: Path, work: Path, files: Iterable[str], copy: Iterable[str] = ()) -> None:
    """Hard-link each file of the live generation into the new one (a copy where linking fails,
    across file systems), and copy the files in `copy`, which the change writes."""
    copy = set(copy)
    for rel in files:
        dst = work / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel in copy:
            shutil.copyfile(live / rel, dst)
            continue
        try:
            os.link(live / rel, dst)
        except OSError:
            shutil.copy2(live / rel, dst)


def _file_entries(live: Path, work: Path, old: dict) -> tuple[dict, int]:
    """The manifest's `files` of the new generation and the bytes it wrote: a file that is still
    the live one's (a hard link) keeps its entry, any other gets a new size and checksum."""
    files, written = {}, 0
    for f in sorted(p for p in work.rglob("*") if p.is_file()):
        rel = str(f.relative_to(work))
        same = rel in old and (live / rel).exists() and os.path.samefile(f, live / rel)
        if same:
            files[rel] = old[rel]
        else:
            files.update(file_entry(work, rel))
            written += files[rel]["bytes"]
    return files, written


def _tombstone(live, store, doc_ids: Sequence[int]) -> None:
    """Tombstones for `doc_ids`, and their passages out of the full-text index (with the text each
    was indexed with: the same bytes rebuilt from the live generation's FM-index)."""
    fts_rows: list[tuple[int, str]] = []
    # postings files need nothing: their statistics leave tombstoned passages out at query time
    if "lexical" in live.parts and doc_ids and not live.manifest.get("lexical"):
        spans = [(pid, doc, s, e) for doc, rows in store.passage_spans(doc_ids).items() for pid, s, e in rows]
        for lo in range(0, len(spans), 4096):
            part = spans[lo:lo + 4096]
            texts = live.exact.extract_ranges([p[1] for p in part], [p[2] for p in part], [p[3] for p in part])
            fts_rows += [(p[0], t.decode("utf-8", errors="replace")) for p, t in zip(part, texts)]
    store.tombstone(doc_ids, fts_rows)


def _finish_manifest(live, target, manifest: dict, store) -> dict:
    """Counts, per-segment live/deleted documents and files of the new generation; written, sealed.
    Returns a summary of the change for the CLI."""
    deleted = sorted(store.deleted_doc_ids())
    n_docs = manifest["corpus"]["documents"]
    manifest["corpus"]["deleted"] = len(deleted)
    manifest["corpus"]["live_documents"] = n_docs - len(deleted)
    for seg in manifest["segments"]:
        lo, hi = seg["first_doc"], seg["first_doc"] + seg["n_docs"]
        seg["deleted"] = bisect.bisect_left(deleted, hi) - bisect.bisect_left(deleted, lo)
    store.finish(merge=False)
    store.close()
    manifest["generation"] = target.number
    manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest["files"], written = _file_entries(live.root, target.work, live.manifest["files"])
    write_manifest(target.work, manifest)
    return {"path": str(live.path), "generation": target.name, "live_documents": n_docs - len(deleted),
            "deleted_documents": len(deleted), "segments": len(manifest["segments"]),
            "bytes_written": written + (target.work / "manifest.json").stat().st_size}


def _check_rewritten(live, rels: Iterable[str]) -> None:
    """A file the change rewrites gets a new checksum, so damage in the live one must be found
    before it is carried over under a fresh seal: its checksum is checked against the manifest."""
    from .errors import IndexFormatError
    from .manifest import file_checksum

    for rel in rels:
        want = live.manifest["files"].get(rel, {}).get("checksum")
        if want is not None and file_checksum(live.root / rel) != want:
            raise IndexFormatError(f"{live.root / rel}: corrupted (its checksum does not match manifest.json); "
                                   "nothing was changed; rebuild the index")


def _open_copy(live, target):
    """The new generation's files: links to the live one's, but meta.sqlite copied (the dense files
    an add rewrites stay links until append_vectors renames new files over them); its Store, writable."""
    from .store import Store

    _check_rewritten(live, ["meta.sqlite"])
    _link_files(live.root, target.work, live.manifest["files"], copy=["meta.sqlite"])
    return Store(target.work / "meta.sqlite", create=True)


# -- add ----------------------------------------------------------------------------------------------
def add(path: str | Path, sources, *, replace: bool = False, text_field: str | None = None,
        id_field: str | None = None, errors: str | None = None, workers: int | None = 1,
        max_memory: int | None = None, device: str = "auto", runner=None) -> dict:
    """Add the documents of `sources` (files or directories, as `rtv index` reads them) to the index
    at `path` as a new segment. A document whose id is already live is refused (an InputError naming
    the id and its file), or with `replace` the old one is tombstoned. Returns a summary."""
    from .build import DEFAULT_SHARD_SIZE, ShardStep, collect_outputs, default_runner, plan_shards
    from .readers.documents import ReadOptions, as_paths, read_documents
    from .progress import bar

    path = Path(path)
    sources = as_paths(sources)
    with _new_generation(path) as (live, target):
        m = live.manifest
        s = _settings(m, text_field=text_field, id_field=id_field, errors=errors, workers=workers,
                      max_memory=max_memory)
        parts = tuple(m["parts"])
        embedder = _embedder(m, device)
        store = _open_copy(live, target)
        live_ids = store.live_ext_ids()
        replaced: list[int] = []
        progress = bar(desc="reading new documents", unit="doc")

        def documents():
            for doc in read_documents(sources, ReadOptions(text_field=s.text_field, id_field=s.id_field,
                                                           errors=s.errors)):
                old = live_ids.pop(doc.ext_id, None)
                if old is not None:
                    if not replace:
                        raise InputError(f"{doc.source}: document id {doc.ext_id!r} is already in {path}; pass "
                                         "--replace to replace it, or choose another --id-field")
                    replaced.append(old)
                progress.update()
                yield doc

        first_number = 1 + max(int(_SHARD_NUMBER.fullmatch(sh["file"]).group(1)) for sh in m["exact"]["shards"])
        first_doc, first_passage = live.n_documents, store.n_passages
        step = ShardStep(target.work, s, parts, embedder)
        got = collect_outputs((runner or default_runner(s))(step, plan_shards(documents(), s.shard_size, first_number,
                                                                              first_doc)), store, first_number)
        progress.close()
        if got.n_docs == 0:
            raise InputError(f"{', '.join(map(str, sources))}: no non-empty documents to add")
        _tombstone(live, store, replaced)
        n_passages = store.n_passages - first_passage
        manifest = {**m, "corpus": dict(m["corpus"]), "exact": dict(m["exact"])}
        manifest["exact"]["shard_size"] = m["exact"].get("shard_size", DEFAULT_SHARD_SIZE)
        manifest["exact"]["shards"] = m["exact"]["shards"] + got.shards
        corpus = manifest["corpus"]
        corpus["documents"] += got.n_docs
        corpus["bytes"] += got.n_bytes
        corpus["passages"] = store.n_passages
        corpus["sources"] = list(corpus.get("sources") or []) + [str(p) for p in sources]
        manifest["segments"] = [dict(seg) for seg in segments(m)] + [{
            "generation": target.number, "kind": "add", "first_doc": first_doc, "n_docs": got.n_docs,
            "first_passage": first_passage, "n_passages": n_passages, "shards": [sh["file"] for sh in got.shards],
            "sources": [str(p) for p in sources]}]
        if manifest.get("lexical"):
            manifest["lexical"] = {**m["lexical"], "segments": m["lexical"]["segments"] + got.lexical}
        if embedder is not None and n_passages:
            from .dense.index import append_vectors

            _check_rewritten(live, [f"dense/{name}" for name in m["dense"]["files"]])
            manifest["dense"] = append_vectors(target.work / "dense", m["dense"], np.concatenate(got.vectors))
        return _finish_manifest(live, target, manifest, store) | {"added": got.n_docs, "replaced": len(replaced)}


# -- delete -------------------------------------------------------------------------------------------
def delete(path: str | Path, ids: Sequence[str] = (), where: str | None = None) -> dict:
    """Tombstone the live documents with external ids `ids` (and, with `where`, those matching the
    filter expression): a new generation. An id that names no live document is an InputError, and
    nothing changes. Returns a summary."""
    path = Path(path)
    ids = list(ids)
    if not ids and where is None:
        raise InputError("rtv delete: give the documents to delete with --id ID (repeatable) or --where EXPR")
    with _new_generation(path) as (live, target):
        store = _open_copy(live, target)
        live_ids = store.live_ext_ids()
        unknown = [x for x in ids if x not in live_ids]
        if unknown:
            raise InputError(f"--id {unknown[0]!r}: no live document of {path} has this id "
                             f"({len(unknown)} unknown id(s)); `rtv find` shows documents' ids")
        doc_ids = {live_ids[x] for x in ids}
        if where is not None:
            doc_ids |= set(_matching(live, where))
        if not doc_ids:
            raise InputError(f"--where {where!r}: matches no live document of {path}; nothing deleted")
        _tombstone(live, store, sorted(doc_ids))
        manifest = {**live.manifest, "corpus": dict(live.manifest["corpus"]),
                    "segments": [dict(seg) for seg in segments(live.manifest)]}
        return _finish_manifest(live, target, manifest, store) | {"deleted_now": len(doc_ids)}


def _matching(live, where: str) -> list[int]:
    """Live document ids that the filter expression `where` selects (retrieval.filters)."""
    flt = live.doc_filter(where)  # None: nothing excluded, every document matches
    return live.store.live_doc_ids() if flt is None else flt.allowed_ids.tolist()


# -- compact ------------------------------------------------------------------------------------------
def live_documents(index, batch: int = 1024) -> Iterator:
    """The live documents of an open Index in id order, rebuilt from its own content: the text from
    the FM-index, external id, source and metadata from the store."""
    from .readers.documents import Document

    ids = index.store.live_doc_ids()
    for lo in range(0, len(ids), batch):
        for row in index.store.documents(ids[lo:lo + batch]):
            text = index.exact.extract(row["id"]).decode("utf-8")
            yield Document(row["ext_id"], text, row["source"], row["metadata"])


def compact(path: str | Path, *, workers: int | None = 1, max_memory: int | None = None,
            device: str = "auto", runner=None) -> dict:
    """Merge the segments of the index at `path` into one and drop the tombstoned documents' text:
    a fresh build of the live documents in id order with the index's own settings (new document
    and passage ids, 0..live-1). Returns a summary."""
    from .build import _build_into, default_runner

    path = Path(path)
    with _new_generation(path, verify=True) as (live, target):
        m = live.manifest
        s = _settings(m, workers=workers, max_memory=max_memory)
        n_live = len(live.store.live_doc_ids())
        if n_live == 0:
            raise InputError(f"{path}: every document is deleted, so compacting would leave an empty index; "
                             "add documents first (rtv add) or build a new index")
        embedder = _embedder(m, device)
        if embedder is not None:
            s.passage_tokens = min(s.passage_tokens, embedder.max_tokens)
        started = time.time()
        manifest = _build_into(target.work, [], s, tuple(m["parts"]), embedder, runner or default_runner(s),
                               documents=live_documents(live))
        manifest["corpus"]["sources"] = m["corpus"].get("sources")
        manifest["corpus"]["id_field"] = m["corpus"].get("id_field")
        manifest["corpus"].update(deleted=0, live_documents=manifest["corpus"]["documents"])
        manifest["generation"] = target.number
        manifest["build_seconds"] = round(time.time() - started, 3)
        manifest["segments"] = [{"generation": target.number, "kind": "compact", "first_doc": 0,
                                 "n_docs": manifest["corpus"]["documents"], "first_passage": 0,
                                 "n_passages": manifest["corpus"]["passages"], "deleted": 0,
                                 "shards": [sh["file"] for sh in manifest["exact"]["shards"]]}]
        write_manifest(target.work, manifest)
        written = sum(f.stat().st_size for f in target.work.rglob("*") if f.is_file())
        return {"path": str(path), "generation": target.name, "live_documents": manifest["corpus"]["documents"],
                "deleted_documents": 0, "segments": 1, "bytes_written": written,
                "dropped": live.n_documents - n_live, "merged_segments": len(segments(m))}
