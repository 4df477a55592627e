"""Corpus readers: every format yields the same documents; bad input names file, line and fix."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from retrieval.corpus import ReadOptions, read_documents
from retrieval.errors import InputError

RECORDS = [{"id": "a", "text": "héllo wörld", "lang": "de"}, {"id": "b", "text": "second 🙂 doc", "lang": "en"}]


def write_all_formats(tmp_path):
    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS).encode()
    paths = {
        "jsonl": tmp_path / "c.jsonl", "json": tmp_path / "c.json", "gz": tmp_path / "c.jsonl.gz",
        "zst": tmp_path / "c.jsonl.zst", "parquet": tmp_path / "c.parquet",
    }
    paths["jsonl"].write_bytes(jsonl)
    paths["json"].write_text(json.dumps(RECORDS, ensure_ascii=False), encoding="utf-8")
    paths["gz"].write_bytes(gzip.compress(jsonl))
    paths["zst"].write_bytes(zstandard.ZstdCompressor().compress(jsonl))
    pq.write_table(pa.Table.from_pylist(RECORDS), paths["parquet"])
    return paths


@pytest.mark.parametrize("fmt", ["jsonl", "json", "gz", "zst", "parquet"])
def test_structured_formats(tmp_path, fmt):
    path = write_all_formats(tmp_path)[fmt]
    docs = list(read_documents([path], ReadOptions(id_field="id")))
    assert [(d.ext_id, d.text, d.metadata) for d in docs] == [(r["id"], r["text"], {"lang": r["lang"]}) for r in RECORDS]


def test_directory_of_text_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.md").write_text("# title\nbody")
    (tmp_path / "sub" / "a.txt").write_text("inner")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01binary")
    (tmp_path / "z.txt.gz").write_bytes(gzip.compress("zipped text".encode()))
    docs = list(read_documents([tmp_path]))
    assert [(d.ext_id, d.text) for d in docs] == [("b.md", "# title\nbody"), ("z.txt.gz", "zipped text"), ("sub/a.txt", "inner")]


def test_invalid_utf8_names_line_and_offset(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "bro\xffken"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl: invalid UTF-8 at line 2, byte offset 30; .*--errors replace"):
        list(read_documents([path]))
    docs = list(read_documents([path], ReadOptions(errors="replace")))
    assert docs[1].text == "bro\ufffdken"


def test_invalid_utf8_text_file(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"line one\nline \xc3\x28 two\n")
    with pytest.raises(InputError, match="line 2, byte offset 14"):
        list(read_documents([path]))


@pytest.mark.parametrize("content,message", [
    ('{"body": "x"}\n', "no field 'text' \\(fields: body\\); choose one with --text-field"),
    ('{"text": 3}\n', "is int, not a string"),
    ("not json\n", "line 1: invalid JSON"),
    ("[1, 2]\n", "expected a JSON object"),
])
def test_bad_records(tmp_path, content, message):
    path = tmp_path / "c.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        list(read_documents([path]))


def test_missing_source(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(read_documents([tmp_path / "nope.jsonl"]))


def test_truncated_gzip(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "abc"}\n' * 1000)[:50])
    with pytest.raises(InputError, match="c.jsonl.gz: truncated: the compressed stream ends early"):
        list(read_documents([path]))
