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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..progress import note
from .formats import Decoding, detect, iter_records, read_text
from .walk import looks_binary, walk

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


@dataclass
class ReadOptions:
    text_field: str = "text"
    id_field: str | None = None  # None: the first of ID_FIELDS in each file's first record
    errors: str = "strict"  # or "replace"


def read_documents(sources: Iterable[str | Path], opts: ReadOptions | None = None) -> Iterator[Document]:
    """Documents of all sources in order. Empty documents are skipped (with a notice)."""
    opts = opts or ReadOptions()
    if opts.errors not in ("strict", "replace"):
        raise InputError(f"--errors {opts.errors!r}: use 'strict' or 'replace'")
    sources = [Path(s) for s in sources]
    if not sources:
        raise InputError("no corpus given; pass one or more files or directories")
    skipped = {"empty": 0, "binary": 0}
    for source in sources:
        if not source.exists():
            raise InputError(f"{source}: no such file or directory")
        noted: set[str] = set()
        for path, name in _files(source, skipped):
            for doc in _file_documents(path, name, opts):
                if opts.id_field is None and doc.id_field is not None and doc.id_field not in noted:
                    noted.add(doc.id_field)  # a folder of files that share a field: one notice
                    note(f"{source}: document ids from field {doc.id_field!r}")
                if doc.text:
                    yield doc
                else:
                    skipped["empty"] += 1
    if skipped["empty"]:
        note(f"skipped {skipped['empty']} empty document(s)")
    if skipped["binary"]:
        note(f"skipped {skipped['binary']} binary file(s) found in directories")


def _files(source: Path, skipped: dict) -> Iterator[tuple[Path, str]]:
    """(path, name for ids) of the files of one source; a file given by name is never skipped."""
    if not source.is_dir():
        yield source, source.name
        return
    for path in walk(source):
        fmt, compression = detect(path)
        if fmt is None and looks_binary(path, compression):
            skipped["binary"] += 1
            continue
        yield path, path.relative_to(source).as_posix()


def _file_documents(path: Path, name: str, opts: ReadOptions) -> Iterator[Document]:
    fmt, compression = detect(path)
    decoding = Decoding(opts.errors, UTF8_HINT)
    if fmt is None:
        text = read_text(path, compression, decoding)
        yield Document(name, _check_text(text, path, "text", opts), str(path), {})
        return
    id_field, decided = opts.id_field, opts.id_field is not None
    records = iter_records(path, fmt, compression, decoding, record_fields=(opts.text_field,),
                           on_schema=lambda columns: _check_columns(path, columns, opts))
    for rec in records:
        record, where = rec.data, rec.where
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
        yield Document(ext_id, _check_text(text, path, where, opts), str(path), metadata, id_field)


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


def _check_text(text: str, path: Path, where: str, opts: ReadOptions) -> str:
    """Strings from JSON/parquet may hold lone surrogates that have no UTF-8 form."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        if opts.errors == "replace":
            return text.encode("utf-8", errors="replace").decode("utf-8")
        raise InputError(f"{path}: {where}: text is not valid Unicode (lone surrogate); fix it or pass --errors replace") from None
