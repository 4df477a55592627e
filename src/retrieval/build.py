"""Building an index directory: a shard plan, a per-shard step, and the steps around them.

    sources -> documents (readers) -> shard plan: documents grouped into shards of <= shard_size
    bytes -> per shard (`build_shard`): the FM-index shard file, the shard's passages, their
    embeddings -> store (documents, passages, full-text index) and the dense index from every
    shard's vectors -> manifest -> the directory published at the target path

`build_shard` is a function of its `ShardInput` alone that writes only its own file, and the
driver assigns global passage ids when it collects the outputs in shard order. So a runner can
run shards one after another (`run_serial`, today's) or in worker processes or cluster tasks
without changing the step. Nothing appears at the target unless the whole build completes.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .corpus import ReadOptions, read_documents
from .errors import InputError
from .exact import MAX_SHARD_BYTES, SEPARATOR, write_shard
from .manifest import FORMAT_NAME, FORMAT_VERSION, file_entry, write_manifest
from .progress import bar
from .store import Store

DEFAULT_SHARD_SIZE = 1 << 30


def dense_available() -> bool:
    try:
        import faiss  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class BuildSettings:
    """Everything a build needs besides its sources and target (the `rtv index` options)."""

    text_field: str = "text"
    id_field: str | None = None  # None: the corpus's own id/_id/doc_id field when it has one
    errors: str = "strict"
    shard_size: int = DEFAULT_SHARD_SIZE
    sa_sample: int = 32
    isa_sample: int = 32
    dense: bool | None = None  # None: when faiss and sentence-transformers are installed
    recipe: str | None = None
    model: str | None = None
    device: str = "auto"
    passage_tokens: int = 256
    passage_overlap: int = 32

    def check(self) -> None:
        """Refuse bad settings before any corpus is read."""
        if self.errors not in ("strict", "replace"):
            raise InputError(f"--errors {self.errors!r}: use 'strict' or 'replace'")
        for name, value in (("--sa-sample", self.sa_sample), ("--isa-sample", self.isa_sample)):
            if value < 1:
                raise InputError(f"{name} {value}: must be >= 1")
        if not 0 < self.shard_size <= MAX_SHARD_BYTES:
            raise InputError(f"--shard-size {self.shard_size}: must be between 1 byte and 2 GiB")
        if self.passage_tokens < 8 or not 0 <= self.passage_overlap < self.passage_tokens:
            raise InputError(f"passage tokens {self.passage_tokens} / overlap {self.passage_overlap}: "
                             "need tokens >= 8 and 0 <= overlap < tokens")


@dataclass
class ShardInput:
    """One shard's documents: their UTF-8 bytes joined by 0xFF, and their rows for the store."""

    number: int
    first_doc: int
    text: bytearray
    docs: list[dict] = field(default_factory=list)  # ext_id, source, length, metadata

    @property
    def file(self) -> str:
        return f"exact/shard-{self.number:05d}.fmi"


@dataclass
class ShardOutput:
    number: int
    first_doc: int
    exact: dict  # the manifest's entry for the shard file
    docs: list[dict]
    passages: list[tuple[int, int, int, str]]  # (global doc id, start byte, end byte, text)
    vectors: np.ndarray | None  # (len(passages), dim) float32, in passage order; None without dense


def plan_shards(documents: Iterable, shard_size: int) -> Iterator[ShardInput]:
    """Group documents, in order, into shards of at most `shard_size` bytes (a document larger
    than that gets a shard of its own). Duplicate ids taken from a corpus field are refused."""
    seen_ids: set[str] = set()
    shard = ShardInput(0, 0, bytearray())
    n_docs = 0
    for doc in documents:
        if doc.id_field is not None:
            if doc.ext_id in seen_ids:
                raise InputError(f"{doc.source}: duplicate id {doc.ext_id!r} in field {doc.id_field!r}; "
                                 "ids must be unique (or pass --id-field to choose another field)")
            seen_ids.add(doc.ext_id)
        data = doc.text.encode("utf-8")
        if len(data) + 1 > MAX_SHARD_BYTES:
            raise InputError(f"{doc.source}: a document of {len(data)} bytes exceeds the 2 GiB shard limit; split it")
        if shard.docs and len(shard.text) + len(data) + 1 > shard_size:
            yield shard
            shard = ShardInput(shard.number + 1, n_docs, bytearray())
        shard.text += data
        shard.text += SEPARATOR
        shard.docs.append({"id": n_docs, "ext_id": doc.ext_id, "source": doc.source, "length": len(data),
                           "metadata": doc.metadata})
        n_docs += 1
    if shard.docs:
        yield shard


class ShardStep:
    """The per-shard step with what it shares across shards (the embedder, loaded once)."""

    def __init__(self, directory: Path, settings: BuildSettings, embedder=None):
        self.directory = directory
        self.settings = settings
        self.embedder = embedder

    def __call__(self, shard: ShardInput) -> ShardOutput:
        from .chunking import chunk_spans

        s = self.settings
        exact = write_shard(shard.text, self.directory, shard.file, s.sa_sample, s.isa_sample,
                            desc=f"shard {shard.number}")
        tokenizer = self.embedder.tokenizer if self.embedder is not None else None
        passages: list[tuple[int, int, int, str]] = []
        at = 0
        for row in shard.docs:  # the shard's text is the documents' bytes, each followed by 0xFF
            data = bytes(shard.text[at:at + row["length"]])
            at += row["length"] + 1
            text = data.decode("utf-8")
            for start, end in chunk_spans(text, s.passage_tokens, s.passage_overlap, tokenizer):
                passages.append((row["id"], start, end, data[start:end].decode("utf-8", errors="replace")))
        vectors = None
        if self.embedder is not None and passages:
            from .dense import embed_passages

            vectors = embed_passages((p[3] for p in passages), len(passages), self.embedder)
        return ShardOutput(shard.number, shard.first_doc, exact, shard.docs, passages, vectors)


Runner = Callable[[Callable[[ShardInput], ShardOutput], Iterable[ShardInput]], Iterator[ShardOutput]]


def run_serial(step: Callable[[ShardInput], ShardOutput], shards: Iterable[ShardInput]) -> Iterator[ShardOutput]:
    """One shard at a time in this process; the next shard is read only after the last is built,
    so memory holds one shard's text."""
    for shard in shards:
        yield step(shard)


def build_index(sources: Iterable[str | Path], path: str | Path, settings: BuildSettings | None = None,
                *, overwrite: bool = False, runner: Runner = run_serial) -> Path:
    """Build an index directory at `path`; returns `path`. Nothing appears there unless the build
    completes; a failed build leaves no temporary directory behind."""
    settings = settings or BuildSettings()
    settings.check()
    path = Path(path)
    sources = [Path(s) for s in sources]
    dense = dense_available() if settings.dense is None else settings.dense
    embedder = None
    if dense:
        from .dense import load_embedder, load_recipe

        if settings.recipe is not None:
            load_recipe(settings.recipe)  # fail on an unknown recipe before reading the corpus
        embedder = load_embedder(settings.model, settings.device)
        settings.passage_tokens = min(settings.passage_tokens, embedder.max_tokens)
    tmp = _prepare_target(path, overwrite)
    started = time.time()
    try:
        manifest = _build_into(tmp, sources, settings, embedder, runner)
        manifest["build_seconds"] = round(time.time() - started, 3)
        write_manifest(tmp, manifest)
        _move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _build_into(tmp: Path, sources: list[Path], s: BuildSettings, embedder, runner: Runner) -> dict:
    store = Store(tmp / "meta.sqlite", create=True)
    opts = ReadOptions(text_field=s.text_field, id_field=s.id_field, errors=s.errors)
    progress = bar(desc="reading corpus", unit="doc")

    def documents():
        for doc in read_documents(sources, opts):
            progress.update()
            yield doc

    shards, vectors = [], []
    n_docs = n_bytes = 0
    for out in runner(ShardStep(tmp, s, embedder), plan_shards(documents(), s.shard_size)):
        store.add_documents(out.docs)
        store.add_passages(out.passages)  # in shard order, so passage ids follow the shards
        shards.append({**out.exact, "first_doc": out.first_doc})
        if out.vectors is not None:
            vectors.append(out.vectors)
        n_docs += len(out.docs)
        n_bytes += sum(d["length"] for d in out.docs)
    progress.close()
    if n_docs == 0:
        raise InputError(f"{', '.join(map(str, sources))}: the corpus has no non-empty documents; nothing to index")
    store.index_passages_fts()
    n_passages = store.n_passages
    store.close()
    manifest = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "rtv_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "corpus": {"sources": [str(p) for p in sources], "documents": n_docs, "bytes": n_bytes,
                   "passages": n_passages, "text_field": s.text_field, "id_field": s.id_field, "errors": s.errors},
        "passages": {"max_tokens": s.passage_tokens, "overlap": s.passage_overlap,
                     "tokenizer": embedder.model_id if embedder else "words"},
        "exact": {"sa_sample": s.sa_sample, "isa_sample": s.isa_sample, "shards": shards},
        "dense": None,
    }
    if embedder is not None:
        from .dense import build_from_vectors

        if n_passages == 0:
            raise InputError("the corpus has no passages to embed (empty corpus or only empty documents)")
        manifest["dense"] = build_from_vectors(np.concatenate(vectors), tmp / "dense", s.recipe,
                                               model_id=embedder.model_id,
                                               device=getattr(embedder, "device", s.device))
        manifest["dense"]["embed_device"] = getattr(embedder, "device", "cpu")
    files: dict = {}
    for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
        files.update(file_entry(tmp, str(f.relative_to(tmp))))
    manifest["files"] = files
    return manifest


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
