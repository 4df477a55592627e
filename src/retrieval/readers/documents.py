"""Corpus documents: files and directories -> a stream of Documents (for `rtv index`).

A structured file (JSONL, JSON, CSV/TSV, parquet) gives one document per record, its text in
ReadOptions.text_field and its other fields kept as metadata; any other file is one document.
Each may be compressed (.gz, .zst, .bz2, .xz). Directories are walked in sorted order and the
binary files in them skipped with a notice; empty documents are skipped with a notice.

Document ids: the record's ReadOptions.id_field, which every record must have; without one, the
first of ID_FIELDS that the file's first record has, which every later record of that file must
have too (one file, one id field); with none of them, "<file>:<line>" (the line of JSONL/CSV,
the index of a JSON array item or parquet row). A plain text file's id is its path.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..progress import note
from .formats import Decoding, detect, iter_records, jsonl_records, read_text
from .ranges import FileRange, splittable
from .walk import is_rtv_index, looks_binary, walk

ID_FIELDS = ("id", "_id", "doc_id")
UTF8_HINT = "fix the file or pass --errors replace"


@dataclass
class Document:
    ext_id: str
    text: str
    source: str
    metadata: dict = field(default_factory=dict)
    # The record field ext_id came from; None when ext_id is a file name or file:line. Ids from a
    # field are the corpus's own names for its documents, so a builder can refuse duplicates.
    id_field: str | None = None
    # A document whose text a shard's worker reads again (range_documents(..., text=False)): its
    # text is "", `length` the bytes of its UTF-8 text and `span` its line of the JSONL file.
    length: int | None = None
    span: FileRange | None = None


@dataclass
class ReadOptions:
    text_field: str = "text"
    id_field: str | None = None  # None: the first of ID_FIELDS in each file's first record
    errors: str = "strict"  # or "replace"
    exclude: tuple = ()  # folders a directory walk leaves out (the index being built)


def read_documents(sources: Iterable[str | Path] | str | Path, opts: ReadOptions | None = None, *,
                   defer_jsonl: bool = False, skipped: dict | None = None) -> Iterator[Document | FileRange]:
    """Documents of all sources in order (one path, or a list of them). Empty documents are
    skipped, and so is what a directory walk leaves out (walk.py), each with a notice.

    defer_jsonl: an uncompressed JSONL file is not read but given as one FileRange of the whole
    file (for shard workers to read: readers/ranges.py), with the id field its first record
    decides. skipped: a dict {"empty": n, "binary": n} to add the skipped counts to instead of
    noting them (the caller adds the workers' counts and calls note_skipped)."""
    opts = opts or ReadOptions()
    if opts.errors not in ("strict", "replace"):
        raise InputError(f"--errors {opts.errors!r}: use 'strict' or 'replace'")
    sources = as_paths(sources)
    if not sources:
        raise InputError("no corpus given; pass one or more files or directories")
    caller_counts = skipped is not None
    skipped = skipped if caller_counts else {"empty": 0, "binary": 0}
    for source in sources:
        _check_source(source)
        noted: set[str] = set()
        walked: dict[str, list[Path]] = {}
        for path, name, in_walk in _files(source, skipped, walked, opts):
            if defer_jsonl and splittable(path):
                whole = _whole_range(path, name, opts)
                if whole.size:
                    if opts.id_field is None and whole.id_field is not None and whole.id_field not in noted:
                        noted.add(whole.id_field)
                        note(f"{display(source)}: document ids from field {whole.id_field!r}")
                    yield whole
                continue
            for doc in _file_documents(path, name, opts, in_walk):
                if opts.id_field is None and doc.id_field is not None and doc.id_field not in noted:
                    noted.add(doc.id_field)  # a folder of files that share a field: one notice
                    note(f"{display(source)}: document ids from field {doc.id_field!r}")
                if doc.text:
                    yield doc
                else:
                    skipped["empty"] += 1
        for reason, paths in walked.items():
            shown = ", ".join(display(p) for p in paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
            note(f"{display(source)}: skipped {len(paths)} {'entry' if len(paths) == 1 else 'entries'}, {reason}: {shown}")
    if not caller_counts:
        note_skipped(skipped)


def note_skipped(skipped: dict) -> None:
    """The notices for the empty documents and binary files a read skipped."""
    if skipped["empty"]:
        note(f"skipped {skipped['empty']} empty document(s)")
    if skipped["binary"]:
        note(f"skipped {skipped['binary']} binary file(s) found in directories")


def as_paths(sources) -> list[Path]:
    """One path (str or os.PathLike) or an iterable of them, as a list; a string is never
    taken character by character."""
    if isinstance(sources, (str, os.PathLike)):
        return [Path(sources)]
    if isinstance(sources, bytes):
        return [Path(os.fsdecode(sources))]
    out = []
    for s in sources:
        if not isinstance(s, (str, os.PathLike, bytes)):
            raise TypeError(f"corpus sources: expected paths (str or os.PathLike), got {type(s).__name__}")
        out.append(Path(os.fsdecode(s) if isinstance(s, bytes) else s))
    return out


def display(path) -> str:
    """A path as printable text: bytes of a file name that are not UTF-8 become U+FFFD."""
    return os.fsencode(path).decode("utf-8", errors="replace")


def _check_source(source: Path) -> None:
    if source.is_symlink() and not source.exists():
        try:
            os.stat(source)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InputError(f"{display(source)}: symbolic link loop; point it at a file or directory") from None
        raise InputError(f"{display(source)}: dangling symbolic link (to {display(os.readlink(source))}); "
                         "fix the link or pass its target") from None
    if not source.exists():
        raise InputError(f"{display(source)}: no such file or directory")
    if source.is_dir() and is_rtv_index(source):
        raise InputError(f"{display(source)}: is an rtv index, not a corpus; pass the files it was built from")
    if source.is_dir() and not os.access(source, os.R_OK | os.X_OK):
        raise InputError(f"{display(source)}: directory cannot be read (permission denied); check its permissions")
    if not source.is_dir() and not os.access(source, os.R_OK):
        raise InputError(f"{display(source)}: cannot be read (permission denied); check its permissions")


def _files(source: Path, skipped: dict, walked: dict, opts: ReadOptions) -> Iterator[tuple[Path, str, bool]]:
    """(path, name for ids, found by a walk) of the files of one source; a file given by name is
    never skipped (a FIFO given by name is read: it is a pipe the user opened for us)."""
    if not source.is_dir():
        yield source, display(source.name), False
        return

    def skip(path: Path, reason: str) -> None:
        walked.setdefault(reason, []).append(path)

    for path in walk(source, skip, exclude=opts.exclude):
        fmt, compression = detect(path)
        if fmt is None and looks_binary(path, compression):
            skipped["binary"] += 1
            continue
        yield path, display(path.relative_to(source).as_posix()), True


def _file_documents(path: Path, name: str, opts: ReadOptions, in_walk: bool = False) -> Iterator[Document]:
    """The documents of one file. In a directory walk, a .json file whose first record is not a
    document (no text field: package.json, a config file) is read as one text document."""
    if in_walk and detect(path)[0] == "json":
        records = _records_documents(path, name, opts)
        try:
            first = next(records, None)
        except _NotACollection as exc:
            note(f"{display(path)}: {exc}; read as one text document")
            yield from _records_documents(path, name, opts, as_text=True)
            return
        if first is not None:
            yield first
            yield from records
        return
    yield from _records_documents(path, name, opts)


class _NotACollection(Exception):
    pass


def _records_documents(path: Path, name: str, opts: ReadOptions, as_text: bool = False) -> Iterator[Document]:
    fmt, compression = detect(path)
    decoding = Decoding(opts.errors, UTF8_HINT)
    if fmt is None or as_text:
        text = read_text(path, compression, decoding)
        yield Document(name, _check_text(text, path, "text", opts), display(path), {})
        return
    records = iter_records(path, fmt, compression, decoding, record_fields=(opts.text_field,),
                           on_schema=lambda columns: _check_columns(path, columns, opts))
    yield from _documents_of(records, path, name, fmt, opts, opts.id_field, opts.id_field is not None)


def _whole_range(path: Path, name: str, opts: ReadOptions) -> FileRange:
    """A JSONL file as one FileRange, its id field decided by its first record as
    _documents_of decides it (undecided when that record is bad: the range's reader then
    fails on it with the usual error)."""
    id_field, decided = opts.id_field, opts.id_field is not None
    if not decided:
        from contextlib import closing

        try:
            with closing(iter_records(path, "jsonl", None, Decoding(opts.errors, UTF8_HINT))) as records:
                first = next(records, None)
        except InputError:
            first = None
        if isinstance(first.data if first else None, dict):
            id_field, decided = next((f for f in ID_FIELDS if f in first.data), None), True
    return FileRange(path, name, 0, path.stat().st_size, 1, id_field, decided)


def range_documents(piece: FileRange, opts: ReadOptions, text: bool = True) -> Iterator[Document]:
    """The documents of a byte range of a JSONL file, empty ones included (the caller counts
    them), with the ids, metadata and errors (file: line N) that reading the whole file gives.
    text=False: a non-empty document comes without its text, with its `length` and its line as
    `span` instead (for the shard plan; the shard's worker reads the text again from the span)."""
    import io
    from dataclasses import replace

    records = jsonl_records(io.BytesIO(piece.read()), piece.path, Decoding(opts.errors, UTF8_HINT),
                            piece.first_line, piece.start)
    if text:
        yield from _documents_of(records, piece.path, piece.name, "jsonl", opts, piece.id_field, piece.decided)
        return
    last = [None]  # the record of the document just made (_documents_of makes one per record, in turn)

    def remembered():
        for rec in records:
            last[0] = rec
            yield rec

    for doc in _documents_of(remembered(), piece.path, piece.name, "jsonl", opts, piece.id_field, piece.decided):
        if doc.text:
            (start, end), line = last[0].span, int(last[0].position)
            doc.length, doc.text = len(doc.text.encode("utf-8")), ""
            doc.span = replace(piece, start=start, end=end, first_line=line, data=None)
        yield doc


def _documents_of(records: Iterator, path: Path, name: str, fmt: str, opts: ReadOptions,
                  id_field: str | None, decided: bool) -> Iterator[Document]:
    """Documents of a file's records; undecided: the first record decides the id field."""
    first = True
    for rec in records:
        record, where = rec.data, rec.where
        if first and fmt == "json" and (not isinstance(record, dict) or opts.text_field not in record):
            raise _NotACollection(f"{where} has no field {opts.text_field!r}, so it is not a document collection")
        first = False
        if not isinstance(record, dict):
            raise InputError(f"{path}: {where}: expected a JSON object, got {type(record).__name__}")
        if not decided:  # the file's first record decides for the whole file
            id_field, decided = next((f for f in ID_FIELDS if f in record), None), True
        if opts.text_field not in record:
            fields = ", ".join(sorted(map(str, record))) or "none"
            raise InputError(
                f"{path}: {where}: no field {opts.text_field!r} (fields: {fields}); choose one with --text-field"
            )
        text = record[opts.text_field]
        if not isinstance(text, str):
            raise InputError(f"{path}: {where}: field {opts.text_field!r} is {type(text).__name__}, not a string")
        if id_field is None:
            ext_id = f"{name}:{rec.position}"
        else:
            ext_id = _id_of(record, id_field, path, where, explicit=opts.id_field is not None)
        metadata = {k: v for k, v in record.items() if k != opts.text_field and k != id_field}
        ext_id = _check_text(ext_id, path, f"{where}: id field {id_field!r}", opts)
        metadata = _check_metadata(metadata, path, where, opts)
        yield Document(ext_id, _check_text(text, path, f"{where}: field {opts.text_field!r}", opts), display(path),
                       metadata, id_field)


def _id_of(record: dict, id_field: str, path: Path, where: str, explicit: bool) -> str:
    if id_field not in record:
        if explicit:
            raise InputError(f"{path}: {where}: no id field {id_field!r}; fix --id-field")
        raise InputError(
            f"{path}: {where}: no id field {id_field!r}, which the file's first record has; "
            "give every record one, or choose the id field with --id-field"
        )
    value = record[id_field]
    if value is None or value == "":
        raise InputError(f"{path}: {where}: id field {id_field!r} is {'null' if value is None else 'empty'}; give the record an id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{path}: {where}: id field {id_field!r} is {type(value).__name__}, not a string or integer")
    return str(value)


def _check_columns(path: Path, columns: list[str], opts: ReadOptions) -> None:
    """Parquet: refuse a missing text or id column before reading any row."""
    shown = ", ".join(columns)
    if opts.text_field not in columns:
        raise InputError(f"{path}: no column {opts.text_field!r} (columns: {shown}); choose one with --text-field")
    if opts.id_field is not None and opts.id_field not in columns:
        raise InputError(f"{path}: no id column {opts.id_field!r} (columns: {shown}); fix --id-field")
    return None  # read every column: the others are metadata


def _check_metadata(value, path: Path, where: str, opts: ReadOptions, field_name: str = ""):
    """Metadata strings (keys too) with lone surrogates: refused, or replaced with --errors replace."""
    if isinstance(value, str):
        return _check_text(value, path, f"{where}: metadata field {field_name!r}", opts)
    if isinstance(value, dict):
        return {_check_text(k, path, f"{where}: a metadata key", opts) if isinstance(k, str) else k:
                _check_metadata(v, path, where, opts, k if not field_name else f"{field_name}.{k}")
                for k, v in value.items()}
    if isinstance(value, list):
        return [_check_metadata(v, path, where, opts, field_name) for v in value]
    return value


def _check_text(text: str, path: Path, where: str, opts: ReadOptions) -> str:
    """Strings from JSON/parquet may hold lone surrogates that have no UTF-8 form."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        if opts.errors == "replace":
            return text.encode("utf-8", errors="replace").decode("utf-8")
        raise InputError(f"{display(path)}: {where}: not valid Unicode (a lone surrogate such as \\ud800); "
                         "fix it or pass --errors replace") from None
