"""Corpus readers: files and directories -> a stream of Documents.

Formats: JSONL, JSON arrays, parquet (one document per row, text in --text-field), and any
other text file (.txt, .md, source code, ...) as one document per file; each optionally
compressed with .gz or .zst. Directories are walked in sorted order; files in them that look
binary are skipped with a notice. Input that is not valid UTF-8 is refused with file, line and
byte offset, unless errors="replace".
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .progress import note

STRUCTURED = {".jsonl", ".ndjson", ".json", ".parquet"}
COMPRESSED = {".gz", ".zst"}


@dataclass
class Document:
    ext_id: str
    text: str
    source: str
    metadata: dict = field(default_factory=dict)


@dataclass
class ReadOptions:
    text_field: str = "text"
    id_field: str | None = None
    errors: str = "strict"  # or "replace"


def _format_of(path: Path) -> tuple[str, str | None]:
    """(format suffix, compression suffix) of a file name like corpus.jsonl.zst."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes[-1] if suffixes and suffixes[-1] in COMPRESSED else None
    if compression:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), compression


def _open_binary(path: Path, compression: str | None):
    if compression == ".gz":
        return gzip.open(path, "rb")
    if compression == ".zst":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    return open(path, "rb")


def _read_all(path: Path, compression: str | None) -> bytes:
    try:
        with _open_binary(path, compression) as f:
            return f.read()
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read ({exc}); check the file is complete and readable") from None


def _decode(data: bytes, path: Path, opts: ReadOptions, line_base: int = 0, offset_base: int = 0) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if opts.errors == "replace":
            return data.decode("utf-8", errors="replace")
        line = line_base + data.count(b"\n", 0, exc.start) + 1
        raise InputError(
            f"{path}: invalid UTF-8 at line {line}, byte offset {offset_base + exc.start}; "
            "fix the file or pass --errors replace"
        ) from None


def _check_text(text: str, path: Path, where: str, opts: ReadOptions) -> str:
    """Strings from JSON/parquet may hold lone surrogates that have no UTF-8 form."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        if opts.errors == "replace":
            return text.encode("utf-8", errors="replace").decode("utf-8")
        raise InputError(f"{path}: {where}: text is not valid Unicode (lone surrogate); fix it or pass --errors replace") from None


def _record_to_document(record, path: Path, where: str, index: int, opts: ReadOptions) -> Document:
    if not isinstance(record, dict):
        raise InputError(f"{path}: {where}: expected a JSON object, got {type(record).__name__}")
    if opts.text_field not in record:
        fields = ", ".join(sorted(map(str, record))) or "none"
        raise InputError(
            f"{path}: {where}: no field {opts.text_field!r} (fields: {fields}); choose one with --text-field"
        )
    text = record[opts.text_field]
    if not isinstance(text, str):
        raise InputError(f"{path}: {where}: field {opts.text_field!r} is {type(text).__name__}, not a string")
    if opts.id_field is not None:
        if opts.id_field not in record:
            raise InputError(f"{path}: {where}: no id field {opts.id_field!r}; fix --id-field")
        ext_id = str(record[opts.id_field])
    else:
        ext_id = f"{path.name}:{index}"
    metadata = {k: v for k, v in record.items() if k not in (opts.text_field, opts.id_field)}
    return Document(ext_id, _check_text(text, path, where, opts), str(path), metadata)


def _read_jsonl(path: Path, compression: str | None, opts: ReadOptions) -> Iterator[Document]:
    offset = 0
    try:
        with _open_binary(path, compression) as raw:
            for lineno, line in enumerate(io.BufferedReader(raw) if compression == ".zst" else raw, start=1):
                start = offset
                offset += len(line)
                if not line.strip():
                    continue
                text = _decode(line, path, opts, line_base=lineno - 1, offset_base=start)
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}: line {lineno}: invalid JSON ({exc.msg}); fix the line") from None
                yield _record_to_document(record, path, f"line {lineno}", lineno, opts)
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read ({exc}); check the file is complete and readable") from None


def _read_json(path: Path, compression: str | None, opts: ReadOptions) -> Iterator[Document]:
    text = _decode(_read_all(path, compression), path, opts)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg}); fix the file") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON array of objects")
    for i, record in enumerate(data):
        yield _record_to_document(record, path, f"item {i}", i, opts)


def _read_parquet(path: Path, compression: str | None, opts: ReadOptions) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        source = io.BytesIO(_read_all(path, compression)) if compression else str(path)
        pf = pq.ParquetFile(source)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise InputError(f"{path}: not a readable parquet file ({exc})") from None
    if opts.text_field not in pf.schema_arrow.names:
        raise InputError(
            f"{path}: no column {opts.text_field!r} (columns: {', '.join(pf.schema_arrow.names)}); choose one with --text-field"
        )
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            yield _record_to_document(record, path, f"row {row}", row, opts)
            row += 1


def _read_text_file(path: Path, compression: str | None, opts: ReadOptions, ext_id: str) -> Iterator[Document]:
    text = _decode(_read_all(path, compression), path, opts)
    yield Document(ext_id, text, str(path), {})


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def _iter_file(path: Path, opts: ReadOptions, ext_id: str) -> Iterator[Document]:
    fmt, compression = _format_of(path)
    if fmt in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path, compression, opts)
    elif fmt == ".json":
        yield from _read_json(path, compression, opts)
    elif fmt == ".parquet":
        yield from _read_parquet(path, compression, opts)
    else:
        yield from _read_text_file(path, compression, opts, ext_id)


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def read_documents(sources: Iterable[str | Path], opts: ReadOptions | None = None) -> Iterator[Document]:
    """Documents of all sources in order. Empty documents are skipped (with a notice)."""
    opts = opts or ReadOptions()
    sources = [Path(s) for s in sources]
    if not sources:
        raise InputError("no corpus given; pass one or more files or directories")
    skipped_empty = skipped_binary = 0
    for source in sources:
        if not source.exists():
            raise InputError(f"{source}: no such file or directory")
        if source.is_dir():
            files = []
            for path in _walk(source):
                fmt, compression = _format_of(path)
                if fmt not in STRUCTURED and compression is None and _looks_binary(path):
                    skipped_binary += 1
                    continue
                files.append((path, str(path.relative_to(source))))
        else:
            files = [(source, source.name)]
        for path, ext_id in files:
            for doc in _iter_file(path, opts, ext_id):
                if doc.text:
                    yield doc
                else:
                    skipped_empty += 1
    if skipped_empty:
        note(f"skipped {skipped_empty} empty document(s)")
    if skipped_binary:
        note(f"skipped {skipped_binary} binary file(s) found in directories")
