"""Records of JSONL, JSON, CSV/TSV and parquet files, and the text of plain text files.

Nothing is loaded whole that need not be: JSONL and CSV are read line by line, a top-level JSON
array one element at a time, parquet in record batches. Only a top-level JSON *object* is
parsed whole (it has no streaming form here), and a plain text file, which is one document.
Bytes are decoded as UTF-8 with the line and byte offset of the first invalid byte in the error.
"""

from __future__ import annotations

import codecs
import csv
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .compression import COMPRESSIONS, compression_of, open_binary

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
           ".parquet": "parquet", ".pq": "parquet"}
JSON_CHUNK_BYTES = 1 << 20  # bytes read at a time when streaming a JSON array
# A top-level JSON object is parsed whole; above this size we ask for JSONL instead.
MAX_JSON_OBJECT_BYTES = 512 * 1024 * 1024
JSON_SPACE = " \t\r\n"
BOM = "\ufeff"
TOO_DEEP = "JSON nested deeper than the parser allows (about 1000 levels); flatten it"


@dataclass
class Record:
    data: object  # a dict for well-formed input; callers check
    where: str  # "line 3", "item 0", "row 5", "key 'k1'": names it in messages, after "<file>: "
    position: str  # its place for an id of last resort: line (JSONL, CSV), index (JSON, parquet), key
    span: tuple[int, int] | None = None  # JSONL: the bytes [start, end) of its line in the file


@dataclass(frozen=True)
class Decoding:
    errors: str = "strict"  # or "replace": invalid UTF-8 becomes U+FFFD
    hint: str = "fix the file or pass --errors replace"  # the fix named by an invalid UTF-8 error


def detect(path: Path) -> tuple[str | None, str | None]:
    """(format, compression suffix) from a name like corpus.jsonl.zst; format None: plain text."""
    compression = compression_of(path)
    suffixes = path.suffixes[:-1] if compression else path.suffixes
    return (FORMATS.get(suffixes[-1].lower()) if suffixes else None), compression


def base_name(path: Path) -> str:
    """The file name without its format and compression suffixes (bench.jsonl.gz -> bench)."""
    name = path.name
    for s in reversed(path.suffixes):
        if s.lower() not in COMPRESSIONS and s.lower() not in FORMATS:
            break
        name = name[: -len(s)]
    return name or path.name


# -- UTF-8 ------------------------------------------------------------------------------------------
def _utf8_error(path: Path, line: int, offset: int, decoding: Decoding) -> InputError:
    return InputError(f"{path}: invalid UTF-8 at line {line}, byte offset {offset}; {decoding.hint}")


def decode(data: bytes, path: Path, decoding: Decoding, line_base: int = 0, offset_base: int = 0) -> str:
    """`data` as text; line_base/offset_base place it in the file for the error message."""
    try:
        return data.decode("utf-8", errors=decoding.errors)
    except UnicodeDecodeError as exc:
        line = line_base + data.count(b"\n", 0, exc.start) + 1
        raise _utf8_error(path, line, offset_base + exc.start, decoding) from None


def _decoded_lines(stream, path: Path, decoding: Decoding, first_line: int = 1,
                   first_offset: int = 0) -> Iterator[tuple[int, str]]:
    """(line number, text with its line end, its bytes [start, end) in the file) of each line; a
    leading BOM is dropped. A stream that starts inside the file (a byte range) starts at line
    `first_line`, byte `first_offset`."""
    offset = first_offset
    for lineno, line in enumerate(stream, start=first_line):
        text = decode(line, path, decoding, lineno - 1, offset)
        yield lineno, (text.removeprefix(BOM) if lineno == 1 else text), (offset, offset + len(line))
        offset += len(line)


def _decoded_chunks(stream, path: Path, decoding: Decoding) -> Iterator[str]:
    """The stream's text in pieces as they arrive (read1: a pipe yields what it has)."""
    decoder = codecs.getincrementaldecoder("utf-8")(decoding.errors)
    fed = lines = 0  # bytes fed to the decoder so far; newlines decoded so far
    first = True
    while True:
        data = stream.read1(JSON_CHUNK_BYTES)
        pending = len(decoder.getstate()[0])  # bytes of a character split across reads
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:  # exc.object is the pending bytes followed by data
            line = lines + exc.object.count(b"\n", 0, exc.start) + 1
            raise _utf8_error(path, line, fed - pending + exc.start, decoding) from None
        fed += len(data)
        lines += text.count("\n")
        if first and text:
            text, first = text.removeprefix(BOM), False
        if text:
            yield text
        if not data:
            return


# -- formats ----------------------------------------------------------------------------------------
def iter_records(
    path: Path,
    fmt: str,
    compression: str | None,
    decoding: Decoding = Decoding(),
    *,
    record_fields: Sequence[str] = (),
    on_schema: Callable[[list[str]], list[str] | None] | None = None,
) -> Iterator[Record]:
    """The records of a structured file (fmt: a value of FORMATS).

    record_fields: top-level fields a record has; a top-level JSON object holding all of them is
    one record rather than a container of records. on_schema(column names) is called once on
    a parquet file before any row (to check fields early) and returns the columns to read (None:
    all).
    """
    if fmt == "jsonl":
        return _jsonl(path, compression, decoding)
    if fmt == "json":
        return _json(path, compression, decoding, record_fields)
    if fmt in ("csv", "tsv"):
        return _csv(path, compression, decoding, "\t" if fmt == "tsv" else ",")
    if fmt == "parquet":
        return _parquet(path, compression, on_schema)
    raise ValueError(f"not a structured format: {fmt!r}")


def read_text(path: Path, compression: str | None, decoding: Decoding = Decoding()) -> str:
    """The whole text of a plain text file (one document), without a leading BOM."""
    with open_binary(path, compression) as stream:
        return decode(stream.read(), path, decoding).removeprefix(BOM)


def _jsonl(path: Path, compression: str | None, decoding: Decoding) -> Iterator[Record]:
    with open_binary(path, compression) as stream:
        yield from jsonl_records(stream, path, decoding)


def jsonl_records(stream, path: Path, decoding: Decoding, first_line: int = 1, first_offset: int = 0) -> Iterator[Record]:
    """The records of JSONL lines from `stream` (binary), which starts at line `first_line`, byte
    `first_offset` of `path` (a byte range of the file, cut at a line end: readers/ranges.py)."""
    for lineno, text, span in _decoded_lines(stream, path, decoding, first_line, first_offset):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {lineno}: invalid JSON ({exc.msg}); fix or remove the line") from None
        except RecursionError:
            raise InputError(f"{path}: line {lineno}: {TOO_DEEP}") from None
        yield Record(obj, f"line {lineno}", str(lineno), span)


def _csv(path: Path, compression: str | None, decoding: Decoding, delimiter: str) -> Iterator[Record]:
    csv.field_size_limit(sys.maxsize)  # one cell may hold a whole document
    with open_binary(path, compression) as stream:
        # csv wants lines with their line ends (newline="" semantics), which binary lines keep
        # strict: a quote that is never closed is an error, not the rest of the file as one cell
        reader = csv.DictReader((text for _, text, _ in _decoded_lines(stream, path, decoding)), delimiter=delimiter,
                                strict=True)
        last = 1  # the last line of the previous row
        try:
            for row in reader:
                # line_num: the row's last line (1-based; the header is line 1)
                yield Record(row, f"line {reader.line_num}", str(reader.line_num))
                last = reader.line_num
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise InputError(f"{path}: line {last + 1}: a quoted field is never closed (the file ends inside it); "
                                 "close the quote or escape it as \"\"") from None
            raise InputError(f"{path}: line {reader.line_num}: invalid CSV ({exc}); fix the file") from None


def _json(path: Path, compression: str | None, decoding: Decoding, record_fields: Sequence[str]) -> Iterator[Record]:
    with open_binary(path, compression) as stream:
        chunks = _decoded_chunks(stream, path, decoding)
        head = ""
        for chunk in chunks:
            head = chunk.lstrip(JSON_SPACE)
            if head:
                break
        if not head:
            raise InputError(f"{path}: empty JSON file; it has no records")
        if head[0] == "[":
            yield from _json_array(path, head[1:], chunks)
            return
        if head[0] != "{":
            raise InputError(f"{path}: JSON must be an array of entries or an object; use JSONL for other layouts")
        size = path.stat().st_size
        if size > MAX_JSON_OBJECT_BYTES:
            raise InputError(f"{path}: a {size >> 20} MB JSON object cannot be streamed; convert it to JSONL (one record per line)")
        text = head + "".join(chunks)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg}); fix the file") from None
    except RecursionError:
        raise InputError(f"{path}: {TOO_DEEP}") from None
    yield from _object_records(obj, record_fields)


def _object_records(obj: dict, record_fields: Sequence[str]) -> Iterator[Record]:
    """A top-level object is one record, a container ({"data": [...]}), or keyed records ({"id": {...}})."""
    if record_fields and all(f in obj for f in record_fields):
        yield Record(obj, "the top-level object", "0")
        return
    lists = [(k, v) for k, v in obj.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
    if lists:
        key, items = max(lists, key=lambda kv: len(kv[1]))
        for i, item in enumerate(items):
            yield Record(item, f"[{key!r}] item {i}", str(i))
    elif obj and all(isinstance(v, dict) for v in obj.values()):
        for key, item in obj.items():  # the key is the record's id of last resort
            yield Record(item, f"key {key!r}", str(key))
    else:
        yield Record(obj, "the top-level object", "0")


def _json_array(path: Path, buf: str, chunks: Iterator[str]) -> Iterator[Record]:
    """The elements of a top-level JSON array (its "[" already read), decoded one at a time."""
    decoder = json.JSONDecoder()
    pos, i, eof = 0, 0, False

    def fill(want: int) -> None:
        """Drop what was parsed; read until `want` characters are buffered or the input ends."""
        nonlocal buf, pos, eof
        parts, have = [buf[pos:]], len(buf) - pos
        while have < want and not eof:
            more = next(chunks, None)
            if more is None:
                eof = True
            else:
                parts.append(more)
                have += len(more)
        buf, pos = "".join(parts), 0

    while True:
        failures = 0  # parse attempts of this element that needed more input
        while True:  # skip the space and commas between elements
            while pos < len(buf) and (buf[pos] in JSON_SPACE or buf[pos] == ","):
                pos += 1
            if pos < len(buf) or eof:
                break
            fill(1)
        if pos >= len(buf):
            raise InputError(f"{path}: JSON array is not closed (truncated file?); fix the file")
        if buf[pos] == "]":
            rest = buf[pos + 1:]
            while not rest.strip(JSON_SPACE):
                rest = next(chunks, None)
                if rest is None:
                    return
            raise InputError(f"{path}: content after the closing ] of the JSON array; one array per file, or use JSONL")
        while True:
            try:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                except RecursionError:
                    raise InputError(f"{path}: item {i}: {TOO_DEEP}") from None
                if end == len(buf) and not eof:  # a number at the end may go on in the next chunk
                    raise json.JSONDecodeError("need more", buf, end)
                break
            except json.JSONDecodeError as exc:
                # Only an error at the end of what is buffered can be cured by reading more; one
                # before it is bad JSON, reported now rather than after reading the whole rest.
                at_end = exc.msg.startswith("Unterminated string") or exc.pos >= len(buf) - 16
                if eof and at_end:
                    raise InputError(f"{path}: JSON array is not closed: item {i} is cut off (truncated file?); fix the file")
                if not at_end:
                    raise InputError(f"{path}: item {i}: invalid JSON ({exc.msg}); fix the file") from None
                # Read one more piece; for an element that spans several, at least double the
                # buffer, so that a long element is re-parsed O(1) times on average. (Not from the
                # start: a pipe's writer may pause after an element, and the reader must not wait.)
                failures += 1
                have = len(buf) - pos
                fill(have + 1 if failures < 3 else 2 * have)
        pos = end
        yield Record(obj, f"item {i}", str(i))
        i += 1


def _parquet(path: Path, compression: str | None, on_schema) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with tempfile.TemporaryFile(suffix=".parquet") if compression else nullcontext() as spool:
        if compression:  # parquet needs a seekable file: spool the decompressed bytes
            with open_binary(path, compression) as stream:
                shutil.copyfileobj(stream, spool, 1 << 22)
            spool.seek(0)
        try:
            pf = pq.ParquetFile(spool if compression else str(path))
            columns = on_schema(pf.schema_arrow.names) if on_schema else None
            row = 0
            for batch in pf.iter_batches(batch_size=4096, columns=columns):
                for record in batch.to_pylist():
                    yield Record(record, f"row {row}", str(row))
                    row += 1
        except (pa.ArrowException, OSError) as exc:  # pyarrow raises several types for a bad file
            raise InputError(f"{path}: not a readable parquet file ({' '.join(str(exc).split())}); check the file") from None
