"""The shared reader package (retrieval.readers): every format and compression for corpora and
benchmarks alike; truncated or corrupt compressed input is refused, never read partially."""

import bz2
import csv
import gzip
import json
import lzma
import os
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval import progress
from retrieval.contamination import BenchmarkReader
from retrieval.errors import InputError
from retrieval.readers import ReadOptions, read_documents
from retrieval.readers import formats as formats_mod

ROWS = [{"id": f"r{i}", "text": f"record {i} héllo " + "wörld " * (i % 7), "lang": "de" if i % 2 else "en"}
        for i in range(400)]
JSONL = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS).encode()

COMPRESS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    # with a checksum, so that a flipped byte anywhere is detectable (zstd's default has none)
    ".zst": lambda b: zstandard.ZstdCompressor(write_checksum=True).compress(b),
}


def corpus(path, **kw):
    return [(d.ext_id, d.text, d.metadata) for d in read_documents([path], ReadOptions(**kw))]


def bench(path):
    return [(e.id, e.segments) for e in BenchmarkReader(path, ["text"])]


EXPECTED_CORPUS = [(r["id"], r["text"], {"lang": r["lang"]}) for r in ROWS]
EXPECTED_BENCH = [(r["id"], [("text", r["text"])]) for r in ROWS]


# -- truncated and corrupt compressed input (issue 11 item 5) -----------------------------------------
def cut_points(n):
    return sorted({0, 1, 2, 5, 10, n // 3, n // 2, n - 9, n - 4, n - 1})


@pytest.mark.parametrize("ext", sorted(COMPRESS))
@pytest.mark.parametrize("reader", ["corpus", "bench"])
def test_truncated_compressed_input_is_refused(tmp_path, ext, reader):
    whole = COMPRESS[ext](JSONL)
    path = tmp_path / f"c.jsonl{ext}"
    path.write_bytes(whole)
    read = corpus if reader == "corpus" else bench
    assert read(path) == (EXPECTED_CORPUS if reader == "corpus" else EXPECTED_BENCH)  # the whole file reads
    for cut in cut_points(len(whole)):
        path.write_bytes(whole[:cut])
        with pytest.raises(InputError, match="truncated: the compressed stream ends early; re-download or re-compress it") as exc:
            read(path)
        assert str(path) in str(exc.value) and "\n" not in str(exc.value), cut


@pytest.mark.parametrize("ext", sorted(COMPRESS))
@pytest.mark.parametrize("reader", ["corpus", "bench"])
def test_flipped_bytes_never_give_other_data(tmp_path, ext, reader):
    """A flipped byte either changes nothing (e.g. a gzip mtime byte) or is refused with one line."""
    whole = COMPRESS[ext](JSONL)
    path = tmp_path / f"c.jsonl{ext}"
    read = corpus if reader == "corpus" else bench
    expected = EXPECTED_CORPUS if reader == "corpus" else EXPECTED_BENCH
    refused = 0
    for pos in sorted({0, 3, 4, 9, 12, 20, 40, len(whole) // 4, len(whole) // 2, len(whole) - 20, len(whole) - 6, len(whole) - 1}):
        bad = bytearray(whole)
        bad[pos] ^= 0x55
        path.write_bytes(bytes(bad))
        try:
            got = read(path)
        except InputError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            refused += 1
        else:
            assert got == expected, pos
    assert refused >= 8


@pytest.mark.parametrize("reader", ["corpus", "bench"])
def test_corrupt_deflate_and_zstd_data_named(tmp_path, reader):
    read = corpus if reader == "corpus" else bench
    gz = bytearray(gzip.compress(JSONL))
    gz[len(gz) // 2:len(gz) // 2 + 8] = b"\xff" * 8  # inside the deflate data: zlib.error before
    (tmp_path / "c.jsonl.gz").write_bytes(bytes(gz))
    with pytest.raises(InputError, match=r"c.jsonl.gz: corrupt gzip data \(.*\); re-download or re-compress it"):
        read(tmp_path / "c.jsonl.gz")
    zs = bytearray(zstandard.ZstdCompressor().compress(JSONL))
    zs[4] ^= 0xFF  # the frame header descriptor: ZstdError before
    (tmp_path / "c.jsonl.zst").write_bytes(bytes(zs))
    with pytest.raises(InputError, match=r"c.jsonl.zst: corrupt zstd data \(.*\); re-download or re-compress it"):
        read(tmp_path / "c.jsonl.zst")
    (tmp_path / "plain.jsonl.gz").write_bytes(JSONL[:100])  # named .gz but not compressed
    with pytest.raises(InputError, match="plain.jsonl.gz: corrupt gzip data"):
        read(tmp_path / "plain.jsonl.gz")


@pytest.mark.parametrize("ext", sorted(COMPRESS))
def test_concatenated_streams_read_whole(tmp_path, ext):
    half = len(ROWS) // 2
    first = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS[:half]).encode()
    path = tmp_path / f"c.jsonl{ext}"
    path.write_bytes(COMPRESS[ext](first) + COMPRESS[ext](JSONL[len(first):]))
    assert corpus(path) == EXPECTED_CORPUS
    assert bench(path) == EXPECTED_BENCH


def test_truncated_compressed_text_and_parquet(tmp_path):
    txt = tmp_path / "doc.txt.zst"
    whole = zstandard.ZstdCompressor().compress("a plain text document\n".encode() * 500)
    txt.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match="doc.txt.zst: truncated"):
        list(read_documents([txt]))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "c.parquet")
    whole = gzip.compress((tmp_path / "c.parquet").read_bytes())
    (tmp_path / "c.parquet.gz").write_bytes(whole[:-3])
    for read in (corpus, bench):
        with pytest.raises(InputError, match="c.parquet.gz: truncated"):
            read(tmp_path / "c.parquet.gz")


# -- every format and compression for both callers ------------------------------------------------------
def write_format(tmp_path, name):
    path = tmp_path / name
    base = name.split(".")[1]
    if base in ("jsonl", "ndjson"):
        data = JSONL
    elif base == "json":
        data = json.dumps(ROWS, ensure_ascii=False).encode()
    elif base in ("csv", "tsv"):
        plain = tmp_path / f"plain.{base}"
        with open(plain, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, ["id", "text", "lang"], delimiter="\t" if base == "tsv" else ",")
            w.writeheader()
            w.writerows(ROWS)
        data = plain.read_bytes()
    else:
        pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "plain.parquet")
        data = (tmp_path / "plain.parquet").read_bytes()
    suffix = "." + name.rsplit(".", 1)[1]
    path.write_bytes(COMPRESS[".zst" if suffix == ".zstd" else suffix](data) if suffix in (*COMPRESS, ".zstd") else data)
    return path


NAMES = ["c.jsonl", "c.ndjson", "c.json", "c.csv", "c.tsv", "c.parquet", "c.pq"] + [
    f"c.{fmt}{ext}" for fmt in ("jsonl", "json", "csv", "parquet") for ext in (".gz", ".bz2", ".xz", ".zst", ".zstd")]


@pytest.mark.parametrize("name", NAMES)
def test_every_format_and_compression_for_corpus_and_benchmark(tmp_path, name):
    path = write_format(tmp_path, name)
    assert corpus(path) == EXPECTED_CORPUS
    assert bench(path) == EXPECTED_BENCH


def test_csv_corpus_quoting_and_ids(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('doc_id,text,year\n7,"multi\nline, ""quoted""",1999\n8,plain,2000\n', encoding="utf-8")
    docs = list(read_documents([path]))
    assert [(d.ext_id, d.text, d.metadata, d.id_field) for d in docs] == [
        ("7", 'multi\nline, "quoted"', {"year": "1999"}, "doc_id"), ("8", "plain", {"year": "2000"}, "doc_id")]
    path.write_text("title,text\na,one\nb,two\n")  # no id column: file:line of the row
    assert [(d.ext_id, d.id_field) for d in read_documents([path])] == [("c.csv:2", None), ("c.csv:3", None)]


def test_directory_mixes_formats_and_skips_binary_even_compressed(tmp_path):
    (tmp_path / "a.csv").write_text("text\nfrom csv\n")
    (tmp_path / "b.txt.xz").write_bytes(lzma.compress(b"xz text"))
    (tmp_path / "c.bin.gz").write_bytes(gzip.compress(b"\x00\x01\x02 binary"))
    (tmp_path / "d.jsonl.bz2").write_bytes(bz2.compress(b'{"text": "from bz2"}\n'))
    docs = list(read_documents([tmp_path]))
    assert [(d.ext_id, d.text) for d in docs] == [("a.csv:2", "from csv"), ("b.txt.xz", "xz text"), ("d.jsonl.bz2:1", "from bz2")]


# -- JSON arrays are streamed, never loaded whole -------------------------------------------------------
def test_json_array_corpus_is_streamed_from_a_fifo(tmp_path):
    """The writer holds the array open until the reader has yielded 100 documents: a reader that
    loads the array whole would wait for the end of the file and never get there."""
    fifo = tmp_path / "c.json"
    os.mkfifo(fifo)
    got_100 = threading.Event()
    waited = {}

    def writer():
        with open(fifo, "w", encoding="utf-8") as f:
            f.write("[\n")
            for i in range(300):
                f.write(json.dumps({"id": i, "text": f"doc {i} é"}) + ",\n")
            f.flush()
            waited["ok"] = got_100.wait(timeout=30)
            f.write(",\n".join(json.dumps({"id": i, "text": f"doc {i} é"}) for i in range(300, 600)) + "\n]\n")

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    n = 0
    for doc in read_documents([fifo]):
        assert (doc.ext_id, doc.text, doc.id_field) == (str(n), f"doc {n} é", "id")
        n += 1
        if n == 100:
            got_100.set()
    t.join(timeout=30)
    assert waited.get("ok") is True and n == 600


def test_json_array_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(ROWS[:50])[:-40])
    with pytest.raises(InputError, match="c.json: JSON array is not closed"):
        corpus(path)
    path.write_text('[{"text": "a"}, {"text": nope}, {"text": "c"}]')
    with pytest.raises(InputError, match=r"c.json: item 1: invalid JSON"):
        corpus(path)
    path.write_text('[{"text": "a"}] [{"text": "b"}]')  # a second array would be silently lost
    with pytest.raises(InputError, match=r"c.json: content after the closing \]"):
        corpus(path)
    path.write_bytes(b'[{"text": "a"},\n {"text": "b\xff"}]')
    with pytest.raises(InputError, match=r"c.json: invalid UTF-8 at line 2, byte offset 28; .*--errors replace"):
        corpus(path)
    assert corpus(path, errors="replace")[1][1] == "b\ufffd"


def test_json_object_is_one_document_or_a_container(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"id": "only", "text": "one doc", "parts": [{"x": 1}]}))
    assert corpus(path) == [("only", "one doc", {"parts": [{"x": 1}]})]
    path.write_text(json.dumps({"version": 2, "data": ROWS[:3]}))
    assert corpus(path) == EXPECTED_CORPUS[:3]


# -- document ids (issue 9) ------------------------------------------------------------------------------
def test_ids_from_first_known_field(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "_silent", False)
    (tmp_path / "a.jsonl").write_text('{"_id": 5, "doc_id": "x", "text": "a"}\n{"_id": 6, "text": "b"}\n')
    (tmp_path / "b.jsonl").write_text('{"doc_id": "d1", "text": "c"}\n{"doc_id": "d2", "text": "d", "id": "ignored"}\n')
    (tmp_path / "c.jsonl").write_text('{"id": "i1", "_id": "u", "text": "e"}\n')
    docs = list(read_documents([tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"]))
    assert [(d.ext_id, d.id_field, d.metadata) for d in docs] == [
        ("5", "_id", {"doc_id": "x"}), ("6", "_id", {}), ("d1", "doc_id", {}), ("d2", "doc_id", {"id": "ignored"}),
        ("i1", "id", {"_id": "u"})]
    err = capsys.readouterr().err.splitlines()
    assert err == [f"rtv: {tmp_path / 'a.jsonl'}: document ids from field '_id'",
                   f"rtv: {tmp_path / 'b.jsonl'}: document ids from field 'doc_id'",
                   f"rtv: {tmp_path / 'c.jsonl'}: document ids from field 'id'"]


def test_one_notice_per_source_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "_silent", False)
    for i in range(5):
        (tmp_path / f"{i}.jsonl").write_text(json.dumps({"id": f"{i}", "text": "t"}) + "\n")
    assert [d.ext_id for d in read_documents([tmp_path])] == ["0", "1", "2", "3", "4"]
    assert capsys.readouterr().err.splitlines() == [f"rtv: {tmp_path}: document ids from field 'id'"]


def test_no_id_field_gives_file_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a", "ID": 1}\n\n{"text": "b"}\n')
    assert [(d.ext_id, d.id_field) for d in read_documents([path])] == [("c.jsonl:1", None), ("c.jsonl:3", None)]
    path.write_text('{"text": "a"}\n{"text": "b", "id": "late"}\n')  # decided by the first record
    assert [d.ext_id for d in read_documents([path])] == ["c.jsonl:1", "c.jsonl:2"]


@pytest.mark.parametrize("content,id_field,message", [
    ('{"id": 1, "text": "a"}\n{"text": "b"}\n', None,
     r"c.jsonl: line 2: no id field 'id'.*--id-field"),
    ('{"key": 1, "text": "a"}\n{"text": "b"}\n', "key", r"c.jsonl: line 2: no id field 'key'; .*--id-field"),
    ('{"text": "a"}\n', "key", r"c.jsonl: line 1: no id field 'key'"),
    ('{"id": null, "text": "a"}\n', None, r"c.jsonl: line 1: id field 'id' is null"),
    ('{"id": [1], "text": "a"}\n', None, r"c.jsonl: line 1: id field 'id' is list, not a string or integer"),
])
def test_id_field_errors(tmp_path, content, id_field, message):
    path = tmp_path / "c.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as exc:
        list(read_documents([path], ReadOptions(id_field=id_field)))
    assert "\n" not in str(exc.value)


def test_explicit_id_field_and_parquet_int_ids(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "no", "num": 10, "text": "a"}, {"id": "no", "num": 11, "text": "b"}]), path)
    docs = list(read_documents([path], ReadOptions(id_field="num")))
    assert [(d.ext_id, d.id_field, d.metadata) for d in docs] == [("10", "num", {"id": "no"}), ("11", "num", {"id": "no"})]
    assert [d.ext_id for d in read_documents([path])] == ["no", "no"]  # the builder refuses these duplicates


# -- the streamed JSON array against json.loads, with pieces small enough to split everything ---------
TEXT = st.text(st.sampled_from(list('ab "\\\n\t,]}[{:') + ["é", "中", "🙂", "\u2028"]), max_size=30)
RECORD = st.fixed_dictionaries({"text": TEXT}, optional={"n": st.one_of(st.integers(-10**12, 10**12), st.floats(allow_nan=False)),
                                                         "t": st.sampled_from([True, False, None]), "l": st.lists(TEXT, max_size=3)})


@settings(max_examples=60, deadline=None)
@given(records=st.lists(RECORD, max_size=8), indent=st.sampled_from([None, 0, 2]), chunk=st.integers(1, 9))
def test_streamed_array_equals_json_loads_and_every_prefix_is_refused(tmp_path_factory, records, indent, chunk):
    path = tmp_path_factory.mktemp("arr") / "c.json"
    body = json.dumps(records, ensure_ascii=False, indent=indent).encode()
    old = formats_mod.JSON_CHUNK_BYTES
    formats_mod.JSON_CHUNK_BYTES = chunk  # not monkeypatch: hypothesis reruns the body in one test
    try:
        path.write_bytes(body)
        want = [r["text"] for r in json.loads(body)]
        assert [d.text for d in read_documents([path])] == [t for t in want if t]
        for cut in range(1, len(body), max(1, len(body) // 15)):
            path.write_bytes(body[:cut])
            with pytest.raises(InputError, match="c.json: "):
                list(read_documents([path]))
    finally:
        formats_mod.JSON_CHUNK_BYTES = old


@settings(max_examples=40, deadline=None)
@given(records=st.lists(RECORD, min_size=1, max_size=6), where=st.floats(0, 1), chunk=st.integers(1, 9))
def test_invalid_utf8_position_in_streamed_array(tmp_path_factory, records, where, chunk):
    path = tmp_path_factory.mktemp("utf") / "c.json"
    body = json.dumps(records, ensure_ascii=False, indent=1).encode()
    # put a stray continuation byte just after a character that starts inside a string value
    starts = [i for i in range(len(body)) if body[i] & 0xC0 != 0x80 and body[:i].count(b'"') % 2 == 1]
    if not starts:
        return
    at = starts[int(where * (len(starts) - 1))]
    bad = body[:at] + b"\x80" + body[at:]
    line = bad.count(b"\n", 0, at) + 1
    path.write_bytes(bad)
    old = formats_mod.JSON_CHUNK_BYTES
    formats_mod.JSON_CHUNK_BYTES = chunk
    try:
        with pytest.raises(InputError, match=rf"invalid UTF-8 at line {line}, byte offset {at};"):
            list(read_documents([path]))
    finally:
        formats_mod.JSON_CHUNK_BYTES = old
