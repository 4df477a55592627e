"""Windows (vs a naive character/token slicing oracle) and streaming benchmark readers."""

import csv
import gzip
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.contamination import BenchmarkReader, Thresholds
from retrieval.readers import formats as formats_mod
from retrieval.errors import InputError
from retrieval.windows import char_windows, token_windows, windows

TEXTS = st.text(st.sampled_from(list("ab c\n\té中🙂ß") + ["\u00a0", "\u2003"]), max_size=80)


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, n=st.integers(1, 12))
def test_char_windows_match_slicing(text, n):
    data, starts, lengths = char_windows(text, n)
    got = [data[s:s + ln].decode("utf-8") for s, ln in zip(starts.tolist(), lengths.tolist())]
    want = [text[i:i + n] for i in range(len(text) - n + 1)]
    assert got == want
    assert starts.dtype == np.int64 and lengths.dtype == np.int64


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, n=st.integers(1, 6))
def test_token_windows_are_verbatim_spans(text, n):
    data, starts, lengths = token_windows(text, n)
    got = [data[s:s + ln].decode("utf-8") for s, ln in zip(starts.tolist(), lengths.tolist())]
    toks = text.split()
    want = []
    for i in range(len(toks) - n + 1):  # naive: find token i's position by re-scanning
        pos, spans = 0, []
        for t in toks:
            pos = text.index(t, pos)
            spans.append((pos, pos + len(t)))
            pos += len(t)
        want.append(text[spans[i][0]:spans[i + n - 1][1]])
    assert got == want
    for w in got:
        assert len(w.split()) == n


def test_short_text_policy():
    assert len(char_windows("short", 50)[1]) == 0  # default: skipped
    data, s, ln = char_windows("short é", 50, short="whole")
    assert data[s[0]:s[0] + ln[0]].decode() == "short é"
    data, s, ln = token_windows("  two  words ", 13, short="whole")
    assert data[s[0]:s[0] + ln[0]] == b"two  words"
    assert len(char_windows("", 3, short="whole")[1]) == 0
    assert len(windows(b"abcdef", 3, unit="bytes")[1]) == 4
    with pytest.raises(InputError):
        char_windows("abc", 0)
    with pytest.raises(InputError):
        windows("abc", 3, unit="words")


def test_lone_surrogate_keeps_positions():
    data, s, ln = char_windows("ab\ud800cd", 2)
    assert [data[a:a + b] for a, b in zip(s, ln)] == [b"ab", b"b?", b"?c", b"cd"]


def test_thresholds_parse_and_bucket():
    t = Thresholds.parse("0.2,0.8")
    assert [t.bucket(x) for x in (0.0, 0.199, 0.2, 0.79, 0.8, 1.0)] == [
        "clean", "clean", "suspicious", "suspicious", "dirty", "dirty"]
    assert Thresholds.parse("10%,50%") == Thresholds(0.1, 0.5)
    for bad in ("0.8,0.2", "0.5", "a,b", "0.1,1.5"):
        with pytest.raises(InputError):
            Thresholds.parse(bad)


# -- readers -----------------------------------------------------------------------------------------
ROWS = [
    {"task_id": "T/0", "q": "first question", "a": ["x1", "x2"], "meta": {"src": "nested text"}},
    {"task_id": "T/1", "q": "second question", "a": ["y"], "meta": {"src": "more"}},
]


def _entries(path, fields, id_field=None):
    return [(e.id, e.segments) for e in BenchmarkReader(path, fields, id_field)]


def test_jsonl_ids_fields_lists_and_nesting(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n", encoding="utf-8")
    got = _entries(p, ["q", "a", "meta.src"])
    assert got[0] == ("T/0", [("q", "first question"), ("a", "x1"), ("a", "x2"), ("meta.src", "nested text")])
    assert got[1][0] == "T/1"
    # id by line number when no id field exists
    p2 = tmp_path / "c.jsonl"
    p2.write_text("\n" + json.dumps({"text": "a"}) + "\n" + json.dumps({"text": "b"}) + "\n")
    assert [i for i, _ in _entries(p2, None)] == ["2", "3"]


def test_json_array_streamed_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(formats_mod, "JSON_CHUNK_BYTES", 7)
    rows = [{"id": i, "text": f"entry {i} " + "é" * i, "n": 12345.5} for i in range(30)]
    p = tmp_path / "b.json"
    p.write_text(" [ " + " , ".join(json.dumps(r, ensure_ascii=False) for r in rows) + " ] ", encoding="utf-8")
    got = _entries(p, ["text"])
    assert got == [(str(r["id"]), [("text", r["text"])]) for r in rows]
    p.write_text(json.dumps(rows)[:-30])
    with pytest.raises(InputError, match="b.json"):
        _entries(p, ["text"])


def test_json_object_layouts(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"version": 1, "data": ROWS}))
    assert [i for i, _ in _entries(p, ["q"])] == ["T/0", "T/1"]
    p.write_text(json.dumps({"k1": {"q": "a"}, "k2": {"q": "b"}}))
    assert _entries(p, ["q"]) == [("k1", [("q", "a")]), ("k2", [("q", "b")])]


def test_csv_tsv_gz_zst_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    with open(tmp_path / "b.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["id", "q"])
        w.writeheader()
        w.writerow({"id": "r1", "q": "multi\nline, quoted"})
        w.writerow({"id": "r2", "q": "plain"})
    assert _entries(tmp_path / "b.csv", ["q"]) == [("r1", [("q", "multi\nline, quoted")]), ("r2", [("q", "plain")])]
    (tmp_path / "b.tsv").write_text("q\tother\nhello\tx\n")
    assert _entries(tmp_path / "b.tsv", ["q"]) == [("2", [("q", "hello")])]
    body = "\n".join(json.dumps(r) for r in ROWS).encode()
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    want = _entries_from_rows()
    assert _entries(tmp_path / "b.jsonl.gz", ["q"]) == want
    assert _entries(tmp_path / "b.jsonl.zst", ["q"]) == want
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "b.parquet")
    assert _entries(tmp_path / "b.parquet", ["q"]) == want
    assert _entries(tmp_path / "b.parquet", ["a"], "task_id")[0] == ("T/0", [("a", "x1"), ("a", "x2")])
    (tmp_path / "b.parquet.gz").write_bytes(gzip.compress((tmp_path / "b.parquet").read_bytes()))
    assert _entries(tmp_path / "b.parquet.gz", ["q"]) == want


def _entries_from_rows():
    return [(r["task_id"], [("q", r["q"])]) for r in ROWS]


@pytest.mark.parametrize("name,content,fields,id_field,message", [
    ("b.jsonl", json.dumps({"q": "x"}) + "\n", ["nope"], None, r"unknown field 'nope'.*fields present: q"),
    ("b.jsonl", json.dumps({"q": "x"}) + "\n", ["q"], "nope", r"unknown id field 'nope'"),
    ("b.jsonl", json.dumps({"zzz": "x"}) + "\n", None, None, r"pass --field with one of: zzz"),
    ("b.jsonl", '{"q": "x"}\n{"q": broken\n', ["q"], None, r"b.jsonl: line 2: invalid JSON"),
    ("b.jsonl", "[1, 2]\n", ["q"], None, r"must be objects"),
    ("b.txt", "hello", ["q"], None, r"unknown benchmark format"),
    ("b.json", "", ["q"], None, r"empty JSON file"),
    ("b.json", '"just a string"', ["q"], None, r"array of entries or an object"),
])
def test_reader_errors(tmp_path, name, content, fields, id_field, message):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(InputError, match=message) as exc:
        _entries(p, fields, id_field)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


def test_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="no such benchmark file"):
        BenchmarkReader(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="is a directory"):
        BenchmarkReader(tmp_path)
    bad = tmp_path / "b.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"q": "x"}\n' * 1000)[:60])
    with pytest.raises(InputError, match="b.jsonl.gz"):
        _entries(bad, ["q"])
    latin = tmp_path / "l.jsonl"
    latin.write_bytes(b'{"q": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"l.jsonl: invalid UTF-8 at line 1, byte offset 10; re-encode it as UTF-8"):
        _entries(latin, ["q"])
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="parquet"):
        _entries(tmp_path / "x.parquet", ["q"])


def test_object_valued_field_is_checked_as_its_json_text(tmp_path):
    """A field holding an object (e.g. a dict of test cases) is checked as its JSON text, the
    text a corpus that copied the benchmark would contain (it raised NameError before)."""
    p = tmp_path / "b.jsonl"
    value = {"input": "2 3", "output": "5 é"}
    p.write_text(json.dumps({"id": "e1", "tests": value}) + "\n", encoding="utf-8")
    (entry,) = BenchmarkReader(p, ["tests"], "id")
    assert entry.id == "e1"
    assert entry.segments == [("tests", json.dumps(value, ensure_ascii=False))]
