"""Building an index directory: a shard plan, a per-shard step, and the steps around them.

    sources -> documents (readers) -> shard plan: documents grouped into shards of <= shard_size
    bytes -> per shard (`build_shard`): the FM-index shard file, the shard's passages, their
    embeddings -> store (documents, passages, full-text index) and the dense index from every
    shard's vectors -> manifest -> the directory published at the target path

The per-shard step (`ShardStep`) is a function of its `ShardInput` alone that writes only its own
file, and the driver assigns global passage ids when it collects the outputs in shard order. So a
runner can run shards one after another (`run_serial`, for --workers 1) or in worker processes
(`ProcessRunner`, for --workers N) or cluster tasks without changing the step. The step has two
halves: `ShardStep.build` (the exact shard file and the passages, chunked with the embedder's
tokenizer, which pickles) runs wherever the runner puts it; `ShardStep.embed` (the passages'
vectors) runs in the driver, which holds the model once (torch already uses every core there)
and embeds each shard's passages as its output comes back, while the workers build the next.
The driver need not hold the corpus's text: JSONL documents can be planned by their texts' lengths
alone, and a shard then names its documents' lines, which its worker reads (`ShardInput.read`).

Publishing (manifest.py describes the layout): one build per index path at a time (a lock that
names its holder); the build writes a new generation beside the live one and makes it live with
one atomic rename, so readers see the old index or the new one, never a mix, and a build that
fails or is killed leaves the path as it was.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import __version__
from .cores import usable_cores
from .corpus import ReadOptions
from .readers.documents import as_paths
from .readers.ranges import FileRange, read_documents_parallel
from .errors import InputError, RtvError
from .exact import MAX_SHARD_BYTES, SEPARATOR, write_shard
from .manifest import (CURRENT, FORMAT_NAME, FORMAT_VERSION, MANIFEST, file_entry, fsync_dir, generation_name,
                       generations, publish, write_manifest)
from .progress import bar
from .store import Store

DEFAULT_SHARD_SIZE = 1 << 30
# Peak memory of building one shard, in bytes per byte of the shard's text (the suffix array by
# SA-IS, the BWT, the wavelet tree and the samples, measured on the 200 MB real corpus; issue 12).
# The one place this figure lives: --max-memory divides by it, and `rtv index --help` quotes it.
BUILD_BYTES_PER_TEXT_BYTE = 8.6
MEMORY_FRACTION = 0.8  # the default --max-memory: this share of MemAvailable
MAX_SAMPLE_RATE = 1 << 20  # the shard format's limit (csrc/fm_index/build.cpp)
# exact always; lexical and dense need passages; text: the documents zstd-compressed beside the
# FM-index (retrieval/text_store.py), so extract and passage texts decompress instead of walking it
PARTS = ("exact", "lexical", "dense", "text")
# How the lexical part is stored: "postings" (retrieval.postings: term frequencies without positions,
# one file per shard) or "fts5" (a contentless FTS5 table in meta.sqlite, rtv's earlier layout)
LEXICAL_FORMATS = ("postings", "fts5")


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
    parts: Sequence[str] | None = None  # None: exact + lexical + dense when installed (see `dense`)
    lexical: str = "postings"  # LEXICAL_FORMATS
    # shards built at once in worker processes; None: the cores we may use (the CLI's default). The
    # library's default is 1: workers are spawned, which needs the caller's `__main__` guard
    workers: int | None = 1
    max_memory: int | None = None  # bytes for the shard builds at once; None: 80% of MemAvailable
    # build the shards as Ray tasks on this cluster ("auto" or an address; retrieval/build_ray.py);
    # the cluster's CPUs and memory then decide how many run at once, not workers / max_memory
    ray: str | None = None

    def resolve_workers(self) -> int:
        return self.workers if self.workers is not None else usable_cores()

    def resolve_max_memory(self) -> int:
        return self.max_memory if self.max_memory is not None else default_max_memory()

    def resolve_parts(self) -> tuple[str, ...]:
        """The parts to build: `parts`, or every part that is installed; `dense` True/False adds or
        removes the dense part (the --dense/--no-dense flags)."""
        if self.parts is not None:
            parts = [p.strip() for p in (self.parts.split(",") if isinstance(self.parts, str) else self.parts)]
            unknown = [p for p in parts if p not in PARTS]
            if unknown or not parts:
                raise InputError(f"--parts {','.join(parts)}: use a comma-separated list of {', '.join(PARTS)}")
            if "exact" not in parts:
                raise InputError(f"--parts {','.join(parts)}: every index has the exact part (it holds the text "
                                 "the other parts point into); add exact")
        else:
            parts = ["exact", "lexical"] + (["dense"] if self.dense or (self.dense is None and dense_available()) else [])
        if self.dense is False:
            parts = [p for p in parts if p != "dense"]
        elif self.dense and "dense" not in parts:
            parts.append("dense")
        return tuple(p for p in PARTS if p in parts)

    def check(self) -> None:
        """Refuse bad settings before any corpus is read."""
        if self.errors not in ("strict", "replace"):
            raise InputError(f"--errors {self.errors!r}: use 'strict' or 'replace'")
        if self.lexical not in LEXICAL_FORMATS:
            raise InputError(f"lexical={self.lexical!r}: use one of {', '.join(LEXICAL_FORMATS)}")
        for name, value in (("--sa-sample", self.sa_sample), ("--isa-sample", self.isa_sample)):
            if not 1 <= value <= MAX_SAMPLE_RATE:
                raise InputError(f"{name} {value}: must be between 1 and {MAX_SAMPLE_RATE}")
        if not 0 < self.shard_size <= MAX_SHARD_BYTES:
            raise InputError(f"--shard-size {self.shard_size}: must be between 1 byte and 2 GiB")
        if self.passage_tokens < 8 or not 0 <= self.passage_overlap < self.passage_tokens:
            raise InputError(f"passage tokens {self.passage_tokens} / overlap {self.passage_overlap}: "
                             "need tokens >= 8 and 0 <= overlap < tokens")
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):
            raise InputError(f"--workers {self.workers}: must be a whole number >= 1")
        if self.max_memory is not None and (isinstance(self.max_memory, bool) or self.max_memory <= 0):
            raise InputError(f"--max-memory {self.max_memory}: must be a positive size (e.g. 8G)")
        if self.ray is not None and (not isinstance(self.ray, str) or not self.ray.strip()):
            raise InputError(f"--ray {self.ray!r}: use auto or the cluster's address (HOST:PORT or ray://HOST:PORT)")


def default_max_memory() -> int:
    """MEMORY_FRACTION of MemAvailable (/proc/meminfo); 4 GiB where that cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * MEMORY_FRACTION)
    except (OSError, ValueError, IndexError):
        pass
    return 4 << 30


def shard_build_memory(text_bytes: int) -> int:
    """Bytes that building a shard of `text_bytes` needs at its peak (BUILD_BYTES_PER_TEXT_BYTE)."""
    return int(math.ceil(text_bytes * BUILD_BYTES_PER_TEXT_BYTE))


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@dataclass
class ShardInput:
    """One shard's documents: their rows for the store, and their text (UTF-8, each document
    followed by 0xFF) as `parts`, in document order: [bytearray, n] is the text of n documents read
    by the driver, [FileRange, n] the lines of a JSONL file whose n non-empty documents the shard's
    worker reads again (`read`), so a build's driver need not hold or send the corpus's text."""

    number: int
    first_doc: int
    parts: list[list] = field(default_factory=list)
    docs: list[dict] = field(default_factory=list)  # ext_id, source, length, metadata
    size: int = 0  # bytes of the shard's text (the documents' bytes and a separator each)
    # while planning: the range being extended ([its first line's span, documents, end byte])
    _open: list | None = field(default=None, repr=False, compare=False)

    @property
    def file(self) -> str:
        return f"exact/shard-{self.number:05d}.fmi"

    def add(self, data: bytes | None, span: FileRange | None, length: int) -> None:
        """Append a document: its UTF-8 `data`, or the `span` to read it from (`length` bytes)."""
        if span is not None:
            o = self._open
            if o is not None and o[2] == span.start and (o[0].path is span.path or o[0].path == span.path):
                o[1] += 1  # the next line of the same file
                o[2] = span.end
            else:
                self._close_range()
                self._open = [span, 1, span.end]
        else:
            self._close_range()
            last = self.parts[-1] if self.parts else None
            if not (last and isinstance(last[0], bytearray)):
                last = [bytearray(), 0]
                self.parts.append(last)
            last[0] += data
            last[0] += SEPARATOR
            last[1] += 1
        self.size += length + 1

    def _close_range(self) -> None:
        if self._open is not None:
            span, n, end = self._open
            self.parts.append([span if end == span.end else replace(span, end=end), n])
            self._open = None

    def close(self) -> "ShardInput":
        """The shard once planned (its last range in `parts`)."""
        self._close_range()
        return self

    @property
    def text(self) -> bytearray:
        """The text of a shard whose documents were all read by the driver (else `read`)."""
        if any(isinstance(part, FileRange) for part, _ in self.parts):
            raise RtvError(f"shard {self.number}: its text is in the corpus's files; read it with ShardInput.read")
        return self.parts[0][0] if len(self.parts) == 1 else bytearray().join(part for part, _ in self.parts)

    def read(self, opts: ReadOptions) -> bytearray:
        """The shard's text, its JSONL lines parsed again (with the options that planned it); a
        document whose text is not what the plan saw means the file changed since."""
        from .readers.documents import range_documents

        if not any(isinstance(part, FileRange) for part, _ in self.parts):
            return self.text
        text, rows = bytearray(), iter(self.docs)
        for part, n in self.parts:
            if not isinstance(part, FileRange):
                text += part
                for _ in range(n):
                    next(rows)
                continue
            got = 0
            try:
                for doc in range_documents(part, opts):
                    if not doc.text:
                        continue
                    data = doc.text.encode("utf-8")
                    row = next(rows, None) if got < n else None
                    if row is None or len(data) != row["length"]:
                        got = -1
                        break
                    got += 1
                    text += data
                    text += SEPARATOR
            except InputError:  # the lines parsed when the shards were planned: the file changed since
                got = -1
            if got != n:
                raise InputError(f"{part.path}: changed while being indexed (from line {part.first_line} on, the "
                                 "documents differ from those read before); run the build again on a file that does not change")
        return text

    def portable(self) -> "ShardInput":
        """The shard with its file ranges' bytes read into it, for a builder on another machine."""
        parts = [[replace(part, data=part.read()) if isinstance(part, FileRange) else part, n] for part, n in self.parts]
        return replace(self, parts=parts)


@dataclass
class ShardOutput:
    number: int
    first_doc: int
    exact: dict  # the manifest's entry for the shard file
    docs: list[dict]
    passages: list[tuple[int, int, int]]  # (global doc id, start byte, end byte); [] for exact-only
    texts: list[str] | None  # the passages' texts for the full-text index; None without a lexical part
    vectors: np.ndarray | None  # (len(passages), dim) float32, in passage order; None without dense
    lexical: dict | None = None  # the shard's postings file {file, n_passages} (lexical="postings")


def plan_shards(documents: Iterable, shard_size: int, first_number: int = 0,
                first_doc: int = 0) -> Iterator[ShardInput]:
    """Group documents, in order, into shards of at most `shard_size` bytes (a document larger
    than that gets a shard of its own). Duplicate ids taken from a corpus field are refused.
    `first_number` / `first_doc`: the first shard's number and document id (an `rtv add` continues
    the index's numbering)."""
    seen_ids: set[str] = set()
    n_docs = first_doc
    shard = ShardInput(first_number, n_docs)
    for doc in documents:
        if doc.id_field is not None:
            if doc.ext_id in seen_ids:
                raise InputError(f"{doc.source}: duplicate id {doc.ext_id!r} in field {doc.id_field!r}; "
                                 "ids must be unique (or pass --id-field to choose another field)")
            seen_ids.add(doc.ext_id)
        # a document without its text (read_documents_parallel(text=False)) is planned by its length
        data = doc.text.encode("utf-8") if doc.span is None else None
        length = len(data) if data is not None else doc.length
        if length + 1 > MAX_SHARD_BYTES:
            raise InputError(f"{doc.source}: a document of {length} bytes exceeds the 2 GiB shard limit; split it")
        if shard.docs and shard.size + length + 1 > shard_size:
            yield shard.close()
            shard = ShardInput(shard.number + 1, n_docs)
        shard.add(data, doc.span, length)
        shard.docs.append({"id": n_docs, "ext_id": doc.ext_id, "source": doc.source, "length": length,
                           "metadata": doc.metadata})
        n_docs += 1
    if shard.docs:
        yield shard.close()


class ShardStep:
    """The per-shard step with what it shares across shards (the parts, the embedder loaded once).

    `build` (exact shard + passages) needs no model, only the tokenizer that chunks passages, and
    `for_workers()` is a copy of the step without the embedder that pickles into worker processes;
    `embed` adds the vectors where the embedder is. Calling the step does both."""

    def __init__(self, directory: Path, settings: BuildSettings, parts: Sequence[str], embedder=None,
                 tokenizer=None, quiet: bool = False):
        self.directory = directory
        self.settings = settings
        self.parts = parts
        self.embedder = embedder
        self.tokenizer = tokenizer if tokenizer is not None else getattr(embedder, "tokenizer", None)
        self.quiet = quiet  # no per-shard progress bars (in worker processes: they would interleave)

    def for_workers(self) -> "ShardStep":
        return ShardStep(self.directory, self.settings, self.parts, None, self.tokenizer, quiet=True)

    def __call__(self, shard: ShardInput) -> ShardOutput:
        return self.embed(self.build(shard))

    def build(self, shard: ShardInput) -> ShardOutput:
        """The shard file and the shard's passages (with their texts whenever there are passages:
        `embed` needs them and drops them again when there is no lexical part)."""
        from .chunking import chunk_spans

        s = self.settings
        text = shard.read(ReadOptions(text_field=s.text_field, id_field=s.id_field, errors=s.errors))
        exact = write_shard(text, self.directory, shard.file, s.sa_sample, s.isa_sample,
                            desc=f"shard {shard.number}", progress=not self.quiet)
        if "text" in self.parts:
            from .text_store import store_file, write_text_store

            exact["text"] = write_text_store(text, [row["length"] for row in shard.docs], self.directory,
                                             store_file(shard.file))
        passages: list[tuple[int, int, int]] = []
        texts: list[str] = []
        if "lexical" in self.parts or "dense" in self.parts:
            at = 0
            for row in shard.docs:  # the shard's text is the documents' bytes, each followed by 0xFF
                data = bytes(text[at:at + row["length"]])
                at += row["length"] + 1
                for start, end in chunk_spans(data.decode("utf-8"), s.passage_tokens, s.passage_overlap,
                                              self.tokenizer):
                    passages.append((row["id"], start, end))
                    texts.append(data[start:end].decode("utf-8", errors="replace"))
        lexical = None
        if "lexical" in self.parts and s.lexical == "postings":
            from .postings import write_segment

            rel = f"lexical/shard-{shard.number:05d}.lex"
            write_segment(self.directory / rel, texts)
            lexical = {"file": rel, "n_passages": len(passages)}
        return ShardOutput(shard.number, shard.first_doc, exact, shard.docs, passages,
                           texts if passages or "lexical" in self.parts else None, None, lexical)

    def embed(self, out: ShardOutput) -> ShardOutput:
        """The vectors of a built shard's passages (with the embedder: in the driver)."""
        if self.embedder is not None and out.passages:
            from .dense import embed_passages

            out.vectors = embed_passages(out.texts, len(out.texts), self.embedder)
        if "lexical" not in self.parts or out.lexical is not None:  # no FTS5 rows to write
            out.texts = None
        return out


Runner = Callable[[Callable[[ShardInput], ShardOutput], Iterable[ShardInput]], Iterator[ShardOutput]]


def run_serial(step: Callable[[ShardInput], ShardOutput], shards: Iterable[ShardInput]) -> Iterator[ShardOutput]:
    """One shard at a time in this process; the next shard is read only after the last is built,
    so memory holds one shard's text."""
    for shard in shards:
        yield step(shard)


_WORKER_STEP: ShardStep | None = None


def _worker_init(step: ShardStep) -> None:
    global _WORKER_STEP
    from .progress import set_silent

    set_silent(True)  # the driver shows one bar for the shards
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker; the workers are the parallelism
    _WORKER_STEP = step


def _worker_build(shard: ShardInput) -> ShardOutput:
    return _WORKER_STEP.build(shard)


class ProcessRunner:
    """Shards built concurrently in `workers` worker processes (the 'spawn' context: the driver
    may hold torch, which must not be forked), at most as many at once as `max_memory` allows
    (`shard_build_memory` each), outputs yielded in shard order with their vectors added here by
    `step.embed`. `strict`: a shard that needs more than max_memory on its own is an error (an
    explicit --max-memory); otherwise it runs alone. A corpus of one shard is built in this process
    (no pool is started)."""

    reads_ranges = True  # its workers read shards' text from the corpus's files (ShardInput.read)

    def __init__(self, workers: int, max_memory: int, strict: bool = True):
        self.workers = workers
        self.max_memory = max_memory
        self.strict = strict
        self.peak_reserved = 0  # the most memory reserved by shard builds at once (tests, benchmarks)
        self._pool = None
        self._pool_step: ShardStep | None = None

    def executor(self, step: ShardStep):
        """The worker processes (started on the first call), for `step`'s shards and for the
        reader's parse tasks before them (read_documents_parallel(executor=)): one set of spawned
        interpreters per build. Stopped when the build's call ends."""
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                             initargs=(step.for_workers(),))
            self._pool_step = step
        elif self._pool_step is not step:
            raise RtvError("ProcessRunner: its workers were started for another build's step")
        return self._pool

    def close(self, ok: bool = False) -> None:
        """Stop the workers: wait for them after a build that completed, else terminate them."""
        pool, self._pool, self._pool_step = self._pool, None, None
        if pool is None:
            return
        if ok:
            pool.shutdown(wait=True)
        else:  # an error or an abandoned build: stop the workers before the directory goes
            _stop_workers(pool)

    def _need(self, shard: ShardInput) -> int:
        need = shard_build_memory(shard.size)
        if need > self.max_memory:
            if self.strict:
                raise InputError(f"--max-memory {_size(self.max_memory)}: shard {shard.number} ({_size(shard.size)} "
                                 f"of text) needs about {_size(need)} to build ({BUILD_BYTES_PER_TEXT_BYTE} bytes per "
                                 "text byte); raise --max-memory or lower --shard-size")
            return self.max_memory  # runs alone
        return need

    def __call__(self, step: ShardStep, shards: Iterable[ShardInput]) -> Iterator[ShardOutput]:
        ok = False
        try:
            yield from self._run(step, shards)
            ok = True
        finally:
            self.close(ok)

    def _run(self, step: ShardStep, shards: Iterable[ShardInput]) -> Iterator[ShardOutput]:
        from collections import deque
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        shards = iter(shards)
        first = next(shards, None)
        if first is None:
            return
        self._need(first)
        second = next(shards, None)
        if second is None:  # one shard: built here (no pool to start, unless the reader started it)
            yield step(first)
            return
        pool = self.executor(step)
        pending: deque = deque()  # (future, memory reserved), in shard order
        running: dict = {}  # future -> memory reserved, until it completes
        progress = bar(desc="shards built", unit="shard")

        def collect():
            fut, _ = pending.popleft()
            try:
                out = fut.result()
            except BrokenProcessPool:
                raise InputError("a shard-building worker process died (out of memory? lower --workers or "
                                 "--max-memory, or use a smaller --shard-size; a script that builds with workers > 1 "
                                 "needs an `if __name__ == '__main__':` guard, as workers are spawned)") from None
            progress.update()
            return step.embed(out)

        def wait_for_room(need: int) -> None:
            while running and (len(running) >= self.workers or sum(running.values()) + need > self.max_memory):
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for f in done:
                    running.pop(f)

        head = deque([first, second])
        del first, second  # the texts must go once built (the queue below drops them)

        def stream():
            while head:
                yield head.popleft()
            yield from shards

        try:
            for shard in stream():
                need = self._need(shard)
                wait_for_room(need)
                while pending and pending[0][0].done():
                    yield collect()
                fut = pool.submit(_worker_build, shard)
                del shard  # the pool's work item holds the text until the worker has it
                running[fut] = need
                self.peak_reserved = max(self.peak_reserved, sum(running.values()))
                pending.append((fut, need))
                # bound what waits in this process (finished outputs, queued texts) to ~2 x workers
                while len(pending) > 2 * self.workers:
                    yield collect()
            while pending:
                yield collect()
        finally:
            progress.close()


def _stop_workers(pool) -> None:
    """Cancel what is queued and terminate the worker processes (their shard files are in the
    build's temporary directory, which the caller removes next), then reap them."""
    processes = list(getattr(pool, "_processes", {}).values())  # no public API before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=30)


def default_runner(settings: BuildSettings) -> Runner:
    """A RayRunner for --ray, run_serial for --workers 1, else a ProcessRunner within --max-memory."""
    if settings.ray is not None:
        from .build_ray import RayRunner  # imports ray only for --ray

        return RayRunner(settings.ray)
    workers = settings.resolve_workers()
    if workers == 1 and settings.max_memory is None:
        return run_serial
    runner = ProcessRunner(workers, settings.resolve_max_memory(), strict=settings.max_memory is not None)
    if workers == 1:  # an explicit budget still refuses a shard that does not fit
        def serial_within(step, shards):
            for shard in shards:
                runner._need(shard)
                yield step(shard)
        return serial_within
    return runner


def build_index(sources: Iterable[str | Path], path: str | Path, settings: BuildSettings | None = None,
                *, overwrite: bool = False, runner: Runner | None = None) -> Path:
    """Build an index directory at `path` (a new generation of it, with overwrite=True); returns
    `path`. Nothing changes at `path` unless the whole build completes. `runner`: how shards are
    run (default: `default_runner(settings)`, from settings.workers and settings.max_memory)."""
    settings = settings or BuildSettings()
    settings.check()
    if runner is None:
        runner = default_runner(settings)
    path = Path(path)
    sources = as_paths(sources)  # one path or a list (a str is never iterated by character)
    parts = settings.resolve_parts()
    embedder = None
    if "dense" in parts:
        from .dense import load_embedder, load_recipe
        from .dense.embedder import prepare_query_encoder

        if settings.recipe is not None:
            load_recipe(settings.recipe)  # fail on an unknown recipe before reading the corpus
        embedder = load_embedder(settings.model, settings.device)
        settings.passage_tokens = min(settings.passage_tokens, embedder.max_tokens)
        prepare_query_encoder(embedder)  # exported now (torch is loaded): dense queries then need no torch
    started = time.time()
    with _sigterm_as_exit(), _output_errors(path), build_lock(path):
        target = Target(path, overwrite)
        try:
            manifest = _build_into(target.work, sources, settings, parts, embedder, runner)
            manifest["generation"] = target.number
            manifest["build_seconds"] = round(time.time() - started, 3)
            write_manifest(target.work, manifest)
            target.publish()
        except BaseException:
            target.abandon()
            raise
    return path


@dataclass
class Collected:
    """What the shard outputs of a build (or of an `rtv add`) added to the store."""

    shards: list[dict] = field(default_factory=list)  # the manifest's entries, in shard order
    vectors: list[np.ndarray] = field(default_factory=list)
    lexical: list[dict] = field(default_factory=list)  # postings files {file, first_passage, n_passages}
    n_docs: int = 0
    n_bytes: int = 0


STORE_WRITES_AHEAD = 2  # shard outputs waiting for the store's writer thread at most (their texts are held)


def collect_outputs(outputs: Iterator[ShardOutput], store: Store, first_number: int = 0) -> Collected:
    """Store each shard output's documents, passages and full-text rows as the runner yields them
    (in shard order, so passage ids follow the shards), keeping its manifest entry and vectors.

    The store is written by one thread of its own, in shard order, while this thread goes back to
    the runner: a runner that hands out the next shard only when asked for an output (the process
    pool) keeps its workers busy while SQLite indexes a shard's passages (FTS5's tokenizing, in C,
    runs without the GIL)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    def write(out: ShardOutput) -> None:
        store.add_documents(out.docs)
        store.add_passages(out.passages, out.texts)

    got = Collected()
    next_passage = store.n_passages  # passage ids continue the store's (its writes are queued below)
    writer = ThreadPoolExecutor(1, thread_name_prefix="rtv-store")
    writes: deque = deque()
    try:
        for out in outputs:
            if out.number != first_number + len(got.shards):
                raise RtvError(f"the runner returned shard {out.number} where shard "
                               f"{first_number + len(got.shards)} belongs")
            writes.append(writer.submit(write, out))
            got.shards.append({**out.exact, "first_doc": out.first_doc})
            if out.vectors is not None:
                got.vectors.append(out.vectors)
            if out.lexical is not None:
                got.lexical.append({"file": out.lexical["file"], "first_passage": next_passage,
                                    "n_passages": out.lexical["n_passages"]})
            next_passage += len(out.passages)
            got.n_docs += len(out.docs)
            got.n_bytes += sum(d["length"] for d in out.docs)
            del out
            while writes and (len(writes) > STORE_WRITES_AHEAD or writes[0].done()):
                writes.popleft().result()  # a failed write fails the build here
        while writes:
            writes.popleft().result()
    finally:
        writer.shutdown(wait=True, cancel_futures=True)  # the write under way ends before the store is closed
        close = getattr(outputs, "close", None)
        if close is not None:
            close()  # a runner's workers stop before the caller removes the directory they write in
    return got


def _build_into(tmp: Path, sources: list[Path], s: BuildSettings, parts: Sequence[str], embedder,
                runner: Runner, documents: Iterable | None = None) -> dict:
    """Build one generation's files in `tmp` and return its manifest (without the generation).
    `documents`: the documents to index instead of reading `sources` (rtv compact passes the live
    documents of an index; `sources` are then only recorded)."""
    store = Store(tmp / "meta.sqlite", create=True)
    opts = ReadOptions(text_field=s.text_field, id_field=s.id_field, errors=s.errors)
    progress = bar(desc="reading corpus", unit="doc")

    id_fields: set[str] = set()  # the fields ids came from (chosen per file when not given)
    step = ShardStep(tmp, s, parts, embedder)
    # A runner whose workers read their shards' text from the corpus's files (`reads_ranges`: the
    # process pool, Ray) gets JSONL documents without their text: the driver plans the shards by
    # the texts' lengths (the same plan) and never holds or sends the text. The process pool's
    # workers parse the JSONL for the plan too (`executor`), so they start once.
    reads_ranges = getattr(runner, "reads_ranges", False)
    executor = getattr(runner, "executor", None)

    def read():
        # JSONL files are parsed in worker processes (readers/ranges.py); the plan is the same
        corpus = documents if documents is not None else read_documents_parallel(
            sources, opts, s.resolve_workers(), text=not reads_ranges,
            executor=(lambda: executor(step)) if executor is not None else None)
        for doc in corpus:
            progress.update()
            if doc.id_field is not None:
                id_fields.add(doc.id_field)
            yield doc

    reader = read()
    try:
        got = collect_outputs(runner(step, plan_shards(reader, s.shard_size)), store)
    finally:
        reader.close()  # its parse workers stop now, on an error too
        if executor is not None:
            runner.close()  # where the runner never started (no shards), the pool the reader started
    shards, vectors, n_docs, n_bytes = got.shards, got.vectors, got.n_docs, got.n_bytes
    progress.close()
    if n_docs == 0:
        raise InputError(f"{', '.join(map(str, sources))}: the corpus has no non-empty documents; nothing to index")
    if "lexical" in parts and s.lexical == "postings":
        store.drop_fulltext()
    store.finish()
    n_passages = store.n_passages
    store.close()
    manifest = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "rtv_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "corpus": {"sources": [str(p) for p in sources], "documents": n_docs, "bytes": n_bytes,
                   "passages": n_passages, "text_field": s.text_field,
                   "id_field": s.id_field or (", ".join(sorted(id_fields)) or None), "errors": s.errors},
        "parts": list(parts),
        "passages": None if n_passages == 0 else {"max_tokens": s.passage_tokens, "overlap": s.passage_overlap,
                                                  "tokenizer": embedder.model_id if embedder else "words"},
        "exact": {"sa_sample": s.sa_sample, "isa_sample": s.isa_sample, "shard_size": s.shard_size, "shards": shards},
        "dense": None,
    }
    if "lexical" in parts and s.lexical == "postings":
        from .postings import manifest_section

        manifest["lexical"] = manifest_section(got.lexical)
    if "dense" in parts:
        from .dense import build_from_vectors

        if n_passages == 0:
            raise InputError("the corpus has no passages to embed (empty corpus or only empty documents)")
        manifest["dense"] = build_from_vectors(np.concatenate(vectors), tmp / "dense", s.recipe,
                                               model_id=embedder.model_id,
                                               device=getattr(embedder, "device", s.device))
        # where the vectors were computed: the runner's embedding actors (Ray GPU actors), else here
        manifest["dense"]["embed_device"] = getattr(runner, "embed_device", None) or getattr(embedder, "device", "cpu")
        manifest["dense"]["requested_recipe"] = s.recipe  # what `rtv compact` builds again (None: by size)
    files: dict = {}
    for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
        files.update(file_entry(tmp, str(f.relative_to(tmp))))
    manifest["files"] = files
    return manifest


# -- one build at a time, published in one step ------------------------------------------------------
@contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on a hidden sibling file `.NAME.lock` that names its holder: a second
    build of the same path fails at once, saying who holds it. The file goes when released."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode("utf-8", errors="replace").strip() or "another process"
            os.close(fd)
            raise InputError(f"{path}: another build is writing this index ({holder}); wait for it to finish, "
                             "or stop it") from None
        try:  # the holder before us may have removed the file between our open and our lock: retry
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.unlink(lock)
        os.close(fd)


@contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM during a build raises SystemExit(143) like Ctrl-C raises KeyboardInterrupt, so the
    build's temporary directory (and lock) are removed on the way out; then the process dies of the
    signal (only where SIGTERM has its default action and this is the main thread: a caller's own
    handler is left alone)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    terminated: list[int] = []

    def terminate(signum, frame):
        terminated.append(signum)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if terminated:
            # The build's own clean-up has run (callers enter this context first, so their generation
            # and lock are gone by now): die of the signal, as its default action would have. Exiting
            # the interpreter instead joins the worker pools' manager threads, and one can wait forever
            # on a reply that a terminated worker never finished sending (concurrent.futures).
            os.kill(os.getpid(), terminated[0])


_OUTPUT_FIXES = {errno.ENOSPC: "the disk is full; free space or write the index elsewhere with -o",
                 errno.EDQUOT: "the disk quota is used up; free space or write the index elsewhere with -o",
                 errno.EFBIG: "a file-size limit was hit (ulimit -f); raise it or use a smaller --shard-size",
                 errno.EROFS: "a read-only file system; choose another -o",
                 errno.EACCES: "permission denied; choose a writable -o or fix the permissions",
                 errno.EPERM: "not permitted; choose a writable -o or fix the permissions",
                 errno.ENOTDIR: "a path component is a file, not a directory; choose another -o",
                 errno.EEXIST: "it is a file, not a directory; choose another -o"}
# The same for a change of an existing index (rtv add / delete / compact write its new generation
# into the index directory itself): there is no -o to choose, the directory must take the write.
_CHANGE_FIXES = {errno.ENOSPC: "the disk is full; free space on it and run the change again",
                 errno.EDQUOT: "the disk quota is used up; free space and run the change again",
                 errno.EFBIG: "a file-size limit was hit (ulimit -f); raise it and run the change again",
                 errno.EROFS: "a read-only file system; remount it writable, or copy the index elsewhere and change the copy",
                 errno.EACCES: "permission denied; make the index directory writable (or run as its owner)",
                 errno.EPERM: "not permitted; make the index directory writable (or run as its owner)"}


@contextmanager
def _output_errors(path: Path, change: bool = False) -> Iterator[None]:
    """OS and SQLite write failures (disk full, permissions, read-only, a file in the way, /proc)
    as one InputError naming -o (or, for a change of the index at `path`, its directory) and the
    fix; the build has removed its temporary files by then."""
    import sqlite3

    where = f"index {path}" if change else f"-o {path}"
    default = "check the index directory and the disk" if change else "choose another -o"
    fixes = _CHANGE_FIXES if change else _OUTPUT_FIXES
    try:
        yield
    except OSError as exc:
        fix = fixes.get(exc.errno, default)
        if not change and Path(os.path.abspath(path)).parts[1:2] in (("proc",), ("sys",)):
            fix = "/proc and /sys are kernel file systems that hold no index; choose another -o"
        what = f"cannot write {exc.filename}" if exc.filename else "cannot write"
        raise InputError(f"{where}: {what} ({exc.strerror or exc}); {fix}") from None
    except sqlite3.Error as exc:
        fix = fixes[errno.ENOSPC] if "full" in str(exc) else default if change else "check the disk and choose another -o"
        raise InputError(f"{where}: cannot write meta.sqlite ({exc}); {fix}") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove_stale_siblings(path: Path) -> None:
    """Remove `.NAME.building-PID` siblings whose process is gone (a build killed by SIGKILL or
    a crash); one whose PID still runs is left alone."""
    prefix = f".{path.name}.building-"
    try:
        siblings = [p for p in path.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for p in siblings:
        pid = p.name[len(prefix):]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


_FORMAT1_FILES = (MANIFEST, "meta.sqlite", "exact", "dense")  # an index of format 1 kept these at the top


class Target:
    """Where a build writes (`work`) and how it is published.

    New path: a hidden sibling `.NAME.building-PID/` holding the first generation and CURRENT,
    renamed to NAME at the end (one atomic rename onto a path that does not exist).
    Existing index (with --force): the new generation is written inside it as
    `.gen-N.building-PID`, renamed to `gen-N`, then published by replacing CURRENT; generations
    older than the previous one are removed (and a format-1 index's top-level files)."""

    def __init__(self, path: Path, overwrite: bool):
        self.path = path
        _remove_stale_siblings(path)  # of builds killed before they could clean up (we hold the lock)
        self.fresh = not path.exists()
        if self.fresh:
            self.root = path.parent / f".{path.name}.building-{os.getpid()}"
            shutil.rmtree(self.root, ignore_errors=True)
            self.root.mkdir()
            self.number = 1
            self.work = self.root / generation_name(1)
        else:
            if not overwrite:
                raise InputError(f"{path}: already exists; choose another -o or pass --force to replace it")
            if not path.is_dir() or not ((path / CURRENT).is_file() or (path / MANIFEST).is_file()
                                         or not any(path.iterdir())):
                raise InputError(f"{path}: exists and is not an rtv index; refusing to replace it")
            for leftover in path.glob(".gen-*.building-*"):  # of killed builds (we hold the lock)
                shutil.rmtree(leftover, ignore_errors=True)
            self.root = path
            self.number = max(generations(path), default=0) + 1
            self.work = path / f".{generation_name(self.number)}.building-{os.getpid()}"
        self.name = generation_name(self.number)
        self.work.mkdir()

    def publish(self) -> None:
        if self.fresh:
            publish(self.root, self.name)
            try:
                os.rename(self.root, self.path)
            except OSError as exc:
                raise InputError(f"{self.path}: appeared during the build ({exc.strerror}); nothing was replaced") from None
            fsync_dir(self.path.parent)
            return
        os.rename(self.work, self.root / self.name)
        fsync_dir(self.root)
        publish(self.root, self.name)
        for n in generations(self.root):
            if n < self.number - 1:
                shutil.rmtree(self.root / generation_name(n), ignore_errors=True)
        for name in _FORMAT1_FILES:
            old = self.root / name
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            elif old.exists():
                old.unlink()

    def abandon(self) -> None:
        shutil.rmtree(self.root if self.fresh else self.work, ignore_errors=True)
