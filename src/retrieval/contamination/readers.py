"""Streaming readers for benchmark files: JSONL, JSON, CSV/TSV, parquet (optionally .gz/.zst/.bz2/.xz).

A benchmark is never loaded whole: JSONL and CSV are read line by line, a JSON top-level array
is decoded one element at a time, parquet is read in record batches. Each entry comes out as a
`BenchmarkEntry(id, segments)` where `segments` lists the texts to check, one per field (a field
holding a list of strings gives one segment per element). Windows never span two segments.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

DEFAULT_ID_FIELDS = ("id", "task_id", "_id", "uid", "qid", "question_id", "idx")
DEFAULT_TEXT_FIELDS = ("text", "question", "prompt", "problem", "input", "query", "content", "sentence")
COMPRESSIONS = (".gz", ".zst", ".zstd", ".bz2", ".xz")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet", ".pq": "parquet"}
# A top-level JSON *object* (not array) cannot be streamed without a streaming parser; above
# this size we ask for JSONL instead of loading it.
MAX_JSON_OBJECT_BYTES = 512 * 1024 * 1024
JSON_CHUNK_CHARS = 1 << 20  # characters read at a time when streaming a JSON array


@dataclass
class BenchmarkEntry:
    id: str
    segments: list[tuple[str, str]]  # (field name, text)
    missing: list[str] = field(default_factory=list)  # checked fields absent from this entry


def detect_format(path: Path) -> tuple[str, str | None]:
    """(format, compression) from the file name."""
    suffixes = [s.lower() for s in path.suffixes]
    comp = None
    if suffixes and suffixes[-1] in COMPRESSIONS:
        comp = suffixes.pop()
    fmt = FORMATS.get(suffixes[-1]) if suffixes else None
    if fmt is None:
        raise InputError(
            f"{path}: unknown benchmark format; name it .jsonl, .json, .csv, .tsv or .parquet "
            f"(optionally .gz/.zst)"
        )
    return fmt, comp


def _open_binary(path: Path, comp: str | None):
    try:
        if comp is None:
            return open(path, "rb")
        if comp == ".gz":
            return gzip.open(path, "rb")
        if comp == ".bz2":
            return bz2.open(path, "rb")
        if comp == ".xz":
            return lzma.open(path, "rb")
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc}); check the path and permissions") from None


def _open_text(path: Path, comp: str | None):
    return io.TextIOWrapper(_open_binary(path, comp), encoding="utf-8", errors="strict", newline="")


def get_field(obj, name: str):
    """Value of `name` in a dict entry; dotted names reach into nested objects ("a.b")."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    if "." in name:
        cur = obj
        for part in name.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
                cur = cur[int(part)]
            else:
                return None
        return cur
    return None


def _has_field(obj, name: str) -> bool:
    if not isinstance(obj, dict):
        return False
    if name in obj:
        return True
    return "." in name and get_field(obj, name) is not None


def _texts(value) -> list[str]:
    """The texts of one field value: a string, a scalar, or a (nested) list of them."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for v in value:
            out.extend(_texts(v))
        return out
    if isinstance(value, dict):
        return [json.dumps(value, ensure_ascii=False)]
    if hasattr(value, "tolist"):  # numpy / arrow arrays from parquet
        return _texts(value.tolist())
    return [str(value)]


class BenchmarkReader:
    """Iterates over a benchmark file's entries without loading it whole.

    fields: names of the fields to check (None: the first of DEFAULT_TEXT_FIELDS present).
    id_field: field holding the entry id (None: the first of DEFAULT_ID_FIELDS present, else the
    line number for JSONL / CSV and the 0-based position for JSON arrays and parquet).
    Unknown fields raise InputError on the first entry, naming the fields that exist.
    """

    def __init__(self, path: str | os.PathLike, fields: Sequence[str] | None = None, id_field: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such benchmark file; check the path")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a directory; pass a benchmark file (.jsonl, .json, .csv, .parquet)")
        if not os.access(self.path, os.R_OK):
            raise InputError(f"{self.path}: cannot be read (permission denied); fix its permissions")
        self.format, self.compression = detect_format(self.path)
        self.fields = list(fields) if fields else None
        self.id_field = id_field
        self._resolved = False
        self.n_missing_field = 0

    @property
    def name(self) -> str:
        n = self.path.name
        for s in reversed(self.path.suffixes):
            if s.lower() in COMPRESSIONS or s.lower() in FORMATS:
                n = n[: -len(s)]
        return n or self.path.name

    # -- field resolution on the first entry --------------------------------------------------
    def _resolve(self, first: dict, where: str) -> None:
        if not isinstance(first, dict):
            raise InputError(f"{where}: entries must be objects with named fields, got {type(first).__name__}")
        keys = list(first.keys())
        shown = ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else "")
        if self.fields is None:
            found = [f for f in DEFAULT_TEXT_FIELDS if isinstance(first.get(f), str)]
            if not found:
                raise InputError(
                    f"{where}: no field to check was named and none of {', '.join(DEFAULT_TEXT_FIELDS)} exists; "
                    f"pass --field with one of: {shown}"
                )
            self.fields = [found[0]]
        for f in self.fields:
            if not _has_field(first, f):
                raise InputError(f"{where}: unknown field {f!r}; fields present: {shown}; fix --field")
        if self.id_field is not None:
            if not _has_field(first, self.id_field):
                raise InputError(f"{where}: unknown id field {self.id_field!r}; fields present: {shown}; fix --id-field")
        else:
            self.id_field = next((f for f in DEFAULT_ID_FIELDS if f in first), None)
        self._resolved = True

    def _entry(self, obj, fallback_id: str, where: str) -> BenchmarkEntry:
        if not self._resolved:
            self._resolve(obj, where)
        if not isinstance(obj, dict):
            raise InputError(f"{where}: entry is a {type(obj).__name__}, not an object with named fields")
        if self.id_field is not None:
            raw = get_field(obj, self.id_field)
            eid = fallback_id if raw is None else str(raw)
        else:
            eid = fallback_id
        segments: list[tuple[str, str]] = []
        missing: list[str] = []
        for f in self.fields:
            if not _has_field(obj, f):
                missing.append(f)
                continue
            for t in _texts(get_field(obj, f)):
                segments.append((f, t))
        if missing:
            self.n_missing_field += 1
        return BenchmarkEntry(eid, segments, missing)

    def check(self) -> None:
        """Read the first entry only, so that a bad field or an unreadable file fails before any work."""
        it = iter(self)
        try:
            next(it, None)
        finally:
            it.close()
        self.n_missing_field = 0

    # -- formats -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[BenchmarkEntry]:
        try:
            if self.format == "jsonl":
                yield from self._jsonl()
            elif self.format == "json":
                yield from self._json()
            elif self.format in ("csv", "tsv"):
                yield from self._csv()
            else:
                yield from self._parquet()
        except UnicodeDecodeError as exc:
            raise InputError(f"{self.path}: not valid UTF-8 ({exc.reason} at byte {exc.start}); re-encode it as UTF-8") from None
        except (OSError, EOFError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{self.path}: cannot be read ({exc}); check that the file is complete and not corrupt") from None

    def _jsonl(self):
        with _open_text(self.path, self.compression) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InputError(f"{self.path}:{lineno}: invalid JSON ({exc.msg}); fix or remove the line") from None
                yield self._entry(obj, str(lineno), f"{self.path}:{lineno}")

    def _json(self):
        with _open_text(self.path, self.compression) as fh:
            head = ""
            while True:
                chunk = fh.read(1)
                if not chunk:
                    raise InputError(f"{self.path}: empty JSON file; it has no entries")
                if not chunk.isspace():
                    head = chunk
                    break
            if head == "[":
                yield from self._json_array(fh)
                return
            if head != "{":
                raise InputError(f"{self.path}: JSON must be an array of entries or an object; use JSONL for other layouts")
        # A top-level object: {"data": [...]} / {"id": {...}, ...}. Needs a full parse.
        size = self.path.stat().st_size
        if size > MAX_JSON_OBJECT_BYTES:
            raise InputError(
                f"{self.path}: a {size >> 20} MB JSON object cannot be streamed; convert it to JSONL (one entry per line)"
            )
        with _open_text(self.path, self.compression) as fh:
            try:
                doc = json.load(fh)
            except json.JSONDecodeError as exc:
                raise InputError(f"{self.path}: invalid JSON ({exc.msg} at line {exc.lineno}); fix the file") from None
        lists = [(k, v) for k, v in doc.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if lists:
            key, items = max(lists, key=lambda kv: len(kv[1]))
            for i, obj in enumerate(items):
                yield self._entry(obj, str(i), f"{self.path}[{key!r}][{i}]")
        elif doc and all(isinstance(v, dict) for v in doc.values()):
            for k, obj in doc.items():  # {"id": {...}}: the key is the id
                yield self._entry(obj, str(k), f"{self.path}[{k!r}]")
        else:
            raise InputError(f"{self.path}: JSON object holds no list of entries; use an array or JSONL")

    def _json_array(self, fh):
        """Decode the elements of a top-level JSON array one at a time (chunked raw_decode)."""
        dec = json.JSONDecoder()
        buf, pos, i, eof = "", 0, 0, False

        def fill():
            nonlocal buf, pos, eof
            more = fh.read(JSON_CHUNK_CHARS)
            if not more:
                eof = True
            buf = buf[pos:] + more
            pos = 0

        while True:
            # skip whitespace and commas between elements
            while True:
                while pos < len(buf) and (buf[pos].isspace() or buf[pos] == ","):
                    pos += 1
                if pos < len(buf) or eof:
                    break
                fill()
            if pos >= len(buf):
                raise InputError(f"{self.path}: JSON array is not closed (truncated file?); fix the file")
            if buf[pos] == "]":
                return
            while True:
                try:
                    obj, end = dec.raw_decode(buf, pos)
                    # a number at the buffer end may continue in the next chunk
                    if end == len(buf) and not eof:
                        raise json.JSONDecodeError("need more", buf, end)
                    break
                except json.JSONDecodeError as exc:
                    if eof:
                        raise InputError(f"{self.path}: invalid JSON in element {i} ({exc.msg}); fix the file") from None
                    fill()
            pos = end
            yield self._entry(obj, str(i), f"{self.path}[{i}]")
            i += 1

    def _csv(self):
        csv.field_size_limit(sys.maxsize)
        with _open_text(self.path, self.compression) as fh:
            reader = csv.DictReader(fh, delimiter="\t" if self.format == "tsv" else ",")
            if reader.fieldnames is None:
                return
            for row in reader:
                # line number of the row's last line (1-based, header is line 1)
                yield self._entry(row, str(reader.line_num), f"{self.path}:{reader.line_num}")

    def _parquet(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        tmp = None
        try:
            src = self.path
            if self.compression is not None:  # parquet needs a seekable file: spool it
                tmp = tempfile.NamedTemporaryFile(suffix=".parquet", delete=False)
                with _open_binary(self.path, self.compression) as fin:
                    shutil.copyfileobj(fin, tmp, 1 << 22)
                tmp.close()
                src = Path(tmp.name)
            try:
                pf = pq.ParquetFile(src)
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"{self.path}: not a readable parquet file ({exc}); check the file") from None
            names = pf.schema_arrow.names
            top = lambda f: f.split(".")[0]  # noqa: E731
            first = {n: "" for n in names}  # field check against the schema, before any row
            self._resolve_parquet(first)
            cols = sorted({top(f) for f in self.fields} | ({top(self.id_field)} if self.id_field else set()))
            i = 0
            for batch in pf.iter_batches(batch_size=4096, columns=cols):
                for row in batch.to_pylist():
                    yield self._entry(row, str(i), f"{self.path}[row {i}]")
                    i += 1
        finally:
            if tmp is not None:
                os.unlink(tmp.name)

    def _resolve_parquet(self, schema_row: dict) -> None:
        keys = list(schema_row)
        shown = ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else "")
        where = str(self.path)
        if self.fields is None:
            found = [f for f in DEFAULT_TEXT_FIELDS if f in schema_row]
            if not found:
                raise InputError(f"{where}: no field to check was named; pass --field with one of: {shown}")
            self.fields = [found[0]]
        for f in self.fields:
            if f.split(".")[0] not in schema_row:
                raise InputError(f"{where}: unknown field {f!r}; fields present: {shown}; fix --field")
        if self.id_field is not None:
            if self.id_field.split(".")[0] not in schema_row:
                raise InputError(f"{where}: unknown id field {self.id_field!r}; fields present: {shown}; fix --id-field")
        else:
            self.id_field = next((f for f in DEFAULT_ID_FIELDS if f in schema_row), None)
        self._resolved = True
