"""Benchmark entries (for `rtv contamination`): a benchmark file -> a stream of BenchmarkEntry.

Formats and compressions are those of retrieval.readers.formats (JSONL, JSON, CSV/TSV, parquet;
.gz/.zst/.bz2/.xz), streamed: a benchmark is never loaded whole. Each entry comes out as a
`BenchmarkEntry(id, segments)` where `segments` lists the texts to check, one per field (a field
holding a list of strings gives one segment per element). Windows never span two segments.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .formats import Decoding, base_name, detect, iter_records

DEFAULT_ID_FIELDS = ("id", "task_id", "_id", "uid", "qid", "question_id", "idx")
DEFAULT_TEXT_FIELDS = ("text", "question", "prompt", "problem", "input", "query", "content", "sentence")
UTF8 = Decoding("strict", "re-encode it as UTF-8")


@dataclass
class BenchmarkEntry:
    id: str
    segments: list[tuple[str, str]]  # (field name, text)
    missing: list[str] = field(default_factory=list)  # checked fields absent from this entry


def detect_format(path: Path) -> tuple[str, str | None]:
    """(format, compression) from the file name; plain text is no benchmark format."""
    fmt, compression = detect(path)
    if fmt is None:
        raise InputError(
            f"{path}: unknown benchmark format; name it .jsonl, .json, .csv, .tsv or .parquet "
            f"(optionally .gz/.zst/.bz2/.xz)"
        )
    return fmt, compression


def lookup_field(obj, name: str) -> tuple[bool, object]:
    """(whether the field exists, its value) in a dict entry; dotted names reach into nested
    objects and lists ("a.b", "tests.0"); a name holding a dot is tried whole first."""
    if not isinstance(obj, dict):
        return False, None
    if name in obj:
        return True, obj[name]
    if "." not in name:
        return False, None
    cur = obj
    for part in name.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return False, None
    return True, cur


def get_field(obj, name: str):
    """Value of `name` in a dict entry (None when absent); see lookup_field."""
    return lookup_field(obj, name)[1]


def has_field(obj, name: str) -> bool:
    """Whether the field exists (its value may be null)."""
    return lookup_field(obj, name)[0]


def field_texts(value) -> list[str]:
    """The texts of one field value: a string, a scalar, or a (nested) list of them."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for v in value:
            out.extend(field_texts(v))
        return out
    if isinstance(value, dict):
        return [json.dumps(value, ensure_ascii=False)]
    if hasattr(value, "tolist"):  # numpy / arrow arrays from parquet
        return field_texts(value.tolist())
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
        return base_name(self.path)

    # -- field resolution on the first entry --------------------------------------------------
    def _resolve(self, first: dict, where: str) -> None:
        if not isinstance(first, dict):
            raise InputError(f"{where}: entries must be objects with named fields, got {type(first).__name__}")
        keys = list(first.keys())
        shown = ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else "")
        if self.fields is None:
            # a field holding text; else one that is present (null or a number in the first entry)
            found = ([f for f in DEFAULT_TEXT_FIELDS if isinstance(first.get(f), str)]
                     or [f for f in DEFAULT_TEXT_FIELDS if f in first])
            if not found:
                raise InputError(
                    f"{where}: no field to check was named and none of {', '.join(DEFAULT_TEXT_FIELDS)} exists; "
                    f"pass --field with one of: {shown}"
                )
            self.fields = [found[0]]
        for f in self.fields:
            if not has_field(first, f):
                raise InputError(f"{where}: unknown field {f!r}; fields present: {shown}; fix --field")
        if self.id_field is not None:
            if not has_field(first, self.id_field):
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
            if not has_field(obj, f):
                missing.append(f)
                continue
            for t in field_texts(get_field(obj, f)):
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

    def __iter__(self) -> Iterator[BenchmarkEntry]:
        top = [f.split(".")[0] for f in self.fields or ()]
        records = iter_records(self.path, self.format, self.compression, UTF8,
                               record_fields=top, on_schema=self._resolve_parquet)
        for rec in records:
            yield self._entry(rec.data, rec.position, f"{self.path}: {rec.where}")

    def _resolve_parquet(self, names: list[str]) -> list[str]:
        """Check the fields against the parquet schema before any row; the columns to read."""
        schema_row = {n: "" for n in names}
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
        top = lambda f: f.split(".")[0]  # noqa: E731
        return sorted({top(f) for f in self.fields} | ({top(self.id_field)} if self.id_field else set()))
