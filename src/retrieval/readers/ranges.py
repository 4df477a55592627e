"""Uncompressed JSONL files cut into byte ranges that worker processes parse, for `rtv index`.

`read_documents_parallel` gives the documents of `read_documents`, in the same order, but its
process does not parse an uncompressed JSONL file: `read_documents(..., defer_jsonl=True)` gives
the whole file as one `FileRange` (with the id field its first record decides, as the reader
would), `cut` splits it at line ends into ranges of about PARSE_BYTES (one sequential scan that
finds the cuts and counts the lines, so each range knows its first line number for ids and
errors), and a pool of worker processes parses the ranges (`documents.range_documents`) while this
process takes their documents back in order. Compressed files, JSON, CSV (a quoted cell may hold
a line end), parquet and plain text cannot be cut like this and are read here as before.

The shard plan is made from the documents as before (by their text's size), so an index is the
same whichever reader made it; only the parsing moved off the build's driver process. A build
whose shards are built elsewhere (`rtv index --workers N`, `--ray`) reads with text=False: the
parse tasks send back each document without its text, with the text's length and the document's
line (`Document.span`); the driver plans the shards by those lengths, and each shard's worker
parses its lines again for the text (`build.ShardInput.read`), so no text passes through the
driver (parsing twice costs the workers a few percent: JSON parsing is ~5 ms a MB, a shard's
build ~150). The parse tasks run on the build's own shard workers (`executor`).
"""

from __future__ import annotations

import mmap
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InputError
from .formats import detect

PARSE_BYTES = 8 << 20  # input bytes a parse task takes: spreads a file over the workers, a cheap hand-off each


@dataclass(frozen=True)
class FileRange:
    """Bytes [start, end) of a JSONL file, cut at line ends; its first line is `first_line`."""

    path: Path
    name: str  # the file's name for ids of last resort ("<name>:<line>")
    start: int
    end: int
    first_line: int
    id_field: str | None  # the file's id field, decided by its first record (as the reader decides)
    decided: bool  # False: the first record could not decide (range 0 then fails on it, as the reader does)
    # the range's bytes, read ahead where its reader cannot open the file (a Ray task on another node)
    data: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        return self.end - self.start

    def read(self) -> bytes:
        """The range's bytes (a file that changed since it was cut is an error)."""
        if self.data is not None:
            return self.data
        try:
            with open(self.path, "rb") as f:
                f.seek(self.start)
                data = f.read(self.size)
        except OSError as exc:
            raise InputError(f"{self.path}: cannot be read ({exc.strerror or exc}); check the file") from None
        if len(data) != self.size:
            raise InputError(f"{self.path}: changed while being indexed (shorter than when the build started); "
                             "run the build again on a file that does not change")
        return data


def splittable(path: Path) -> bool:
    """An uncompressed JSONL regular file (a pipe or a compressed file is read from the start)."""
    if detect(path) != ("jsonl", None):
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def cut(whole: FileRange, size: int) -> Iterator[FileRange]:
    """`whole` (a file from byte 0) as ranges of at most `size` bytes, each ending at a line end
    (a line longer than `size` is a range of its own), with their first line numbers."""
    n = whole.end
    if n <= size:
        yield whole
        return
    try:
        with open(whole.path, "rb") as f:
            mm = mmap.mmap(f.fileno(), n, access=mmap.ACCESS_READ)  # stays valid once the file is closed
    except (OSError, ValueError) as exc:  # ValueError: the file shrank since its size was taken
        raise InputError(f"{whole.path}: cannot be read ({getattr(exc, 'strerror', None) or exc}); check the file") from None
    with mm:
        start, line = 0, 1
        while start < n:
            end = start + size
            if end >= n:
                end = n
            else:
                last = mm.rfind(b"\n", start, end)
                if last >= 0:
                    end = last + 1
                else:  # one line longer than `size`: the range runs to its end
                    nl = mm.find(b"\n", end)
                    end = n if nl < 0 else nl + 1
            yield replace(whole, start=start, end=end, first_line=line)
            line += _newlines(mm, start, end)
            start = end


def _newlines(mm: mmap.mmap, start: int, end: int, chunk: int = 1 << 22) -> int:
    """Line ends in mm[start:end], counted a chunk at a time (no copy of a whole range; a chunk
    that stays in the cache counts 3-4x faster than one of 64 MiB)."""
    return sum(mm[at:min(at + chunk, end)].count(b"\n") for at in range(start, end, chunk))


def read_documents_parallel(sources, opts, workers: int, parse_bytes: int | None = None, *, text: bool = True,
                            executor: Callable[[], Executor] | None = None) -> Iterator:
    """The documents of read_documents(sources, opts), in the same order and with the same
    notices and errors (the first in document order), the uncompressed JSONL files parsed by
    `workers` spawned processes in tasks of about `parse_bytes` (PARSE_BYTES). The pool starts
    only once there are two tasks to run at once; workers <= 1 is read_documents itself.

    text=False: the documents of those JSONL files come without their text, with its length and
    their line (`Document.span`) instead: a build's shard workers read the text themselves, so
    this process never holds it. executor: where to run the parse tasks instead of a pool of our
    own (called once, when the first two tasks are there; the build's shard pool, whose workers
    are then started once for both); it is left running, only our tasks still queued cancelled."""
    from .documents import note_skipped, read_documents

    if workers <= 1:
        yield from read_documents(sources, opts)
        return
    size = parse_bytes or PARSE_BYTES
    skipped = {"empty": 0, "binary": 0}
    items = read_documents(sources, opts, defer_jsonl=True, skipped=skipped)
    pool = None
    pending: deque = deque()  # futures of parse tasks, in document order
    held: list[list[FileRange]] = []  # a task kept back until a second one shows the pool is worth starting
    batch: list[FileRange] = []
    error: BaseException | None = None

    def take() -> Iterator:
        from concurrent.futures.process import BrokenProcessPool

        try:
            docs, empty = pending.popleft().result()
        except BrokenProcessPool:
            raise InputError("a JSONL-parsing worker process died (out of memory? lower --workers; a script that "
                             "builds with workers > 1 needs an `if __name__ == '__main__':` guard, as workers are "
                             "spawned)") from None
        skipped["empty"] += empty
        yield from docs

    def submit(task: list[FileRange]) -> None:
        nonlocal pool
        if pool is None and not held:
            held.append(task)
            return
        if pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            pool = executor() if executor is not None else ProcessPoolExecutor(
                workers, mp_context=mp.get_context("spawn"), initializer=_quiet_worker)
            pending.extend(pool.submit(_parse, t, opts, text) for t in held)
            held.clear()
        pending.append(pool.submit(_parse, task, opts, text))

    def flush() -> Iterator:
        """Everything cut so far, parsed, in order."""
        if batch:
            submit(batch.copy())
            batch.clear()
        for task in held:  # one task alone: parsed here, no pool
            docs, empty = _parse(task, opts, text)
            skipped["empty"] += empty
            yield from docs
        held.clear()
        while pending:
            yield from take()

    try:
        while True:
            try:
                item = next(items)
            except StopIteration:
                break
            except Exception as exc:  # raised after what comes before it in document order
                error = exc
                break
            if not isinstance(item, FileRange):
                yield from flush()
                yield item
                continue
            for piece in cut(item, size):
                if batch and sum(p.size for p in batch) + piece.size > size:
                    submit(batch.copy())
                    batch.clear()
                batch.append(piece)
                while len(pending) > workers + 2:  # bound the parsed documents waiting here
                    yield from take()
        yield from flush()
        if error is not None:
            raise error
        note_skipped(skipped)
    finally:
        if pool is not None and executor is not None:
            for fut in pending:
                fut.cancel()
        elif pool is not None:
            from ..build import _stop_workers

            _stop_workers(pool)


def _parse(pieces: Iterable[FileRange], opts, text: bool = True) -> tuple[list, int]:
    """A parse task: the non-empty documents of `pieces` (text=False: without their texts, see
    range_documents), and how many empty ones were left out."""
    from .documents import range_documents

    docs, empty = [], 0
    for piece in pieces:
        for doc in range_documents(piece, opts, text):
            if doc.text or doc.span is not None:
                docs.append(doc)
            else:
                empty += 1
    return docs, empty


def _quiet_worker() -> None:
    from ..progress import set_silent

    set_silent(True)
