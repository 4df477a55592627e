"""JSONL parsed in worker processes over byte ranges (readers/ranges.py) gives read_documents'
documents, notices and errors, and a build that uses it is byte-identical to --workers 1."""

import json

import pytest

from retrieval import Index
from retrieval.corpus import ReadOptions, read_documents
from retrieval.errors import InputError
from retrieval.readers import ranges
from retrieval.readers.ranges import FileRange, cut, read_documents_parallel


def _corpus(root, bad_line: str | None = None):
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(120):
        lines.append(json.dumps({"id": f"x{i}", "text": ("wörd%d " % i) * (i % 6), "n": i}, ensure_ascii=False))
        if i % 13 == 0:
            lines.append("   ")  # blank lines are skipped but counted
        if i == 90 and bad_line is not None:
            lines.append(bad_line)
    lines.append(json.dumps({"id": "long", "text": "z" * 700}))  # longer than the small ranges below
    (root / "a.jsonl").write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    (root / "b.csv").write_text("text,id\nhello,c1\nworld,c2\n")
    (root / "c.jsonl").write_text("\n".join(json.dumps({"text": f"t{i} é"}) for i in range(40)))  # no final newline
    (root / "d.jsonl").write_text("")
    return root


def test_cut_ranges_end_at_line_ends_and_know_their_first_line(tmp_path):
    path = tmp_path / "f.jsonl"
    data = b"".join(b"%d\n" % i * (i % 4) for i in range(200)) + b"x" * 300 + b"\nlast"
    path.write_bytes(data)
    whole = FileRange(path, "f.jsonl", 0, len(data), 1, None, True)
    for size in (1, 7, 64, 1000, len(data)):
        pieces = list(cut(whole, size))
        assert b"".join(data[p.start:p.end] for p in pieces) == data
        for p in pieces:
            assert p.first_line == data.count(b"\n", 0, p.start) + 1
            assert p.end == len(data) or data[p.end - 1:p.end] == b"\n"
            assert p.size <= size or data.count(b"\n", p.start, p.end - 1) == 0  # only a lone long line overflows


@pytest.mark.parametrize("parse_bytes", [1, 200, 5000, 1 << 20])
@pytest.mark.parametrize("opts", [ReadOptions(), ReadOptions(errors="replace")])
def test_documents_and_notices_equal_the_serial_reader(tmp_path, capsys, parse_bytes, opts):
    root = _corpus(tmp_path / "corpus")
    want = list(read_documents([root], opts))
    want_notes = capsys.readouterr().err
    got = list(read_documents_parallel([root], opts, 2, parse_bytes=parse_bytes))
    assert got == want and len(want) > 100
    assert capsys.readouterr().err == want_notes


@pytest.mark.parametrize("bad", ['{"id": "q", "text": ', '"a string"', '{"id": "x5", "nope": 1}',
                                 '{"text": "no id"}'])
def test_errors_name_the_same_line_as_the_serial_reader(tmp_path, bad):
    root = _corpus(tmp_path / "corpus", bad_line=bad)
    with pytest.raises(InputError) as serial:
        list(read_documents([root], ReadOptions()))
    with pytest.raises(InputError) as parallel:
        list(read_documents_parallel([root], ReadOptions(), 2, parse_bytes=100))
    assert str(parallel.value) == str(serial.value) and "a.jsonl: line 9" in str(serial.value)


def test_invalid_utf8_and_the_first_error_in_document_order(tmp_path):
    root = _corpus(tmp_path / "corpus")
    a = root / "a.jsonl"
    a.write_bytes(a.read_bytes().replace(b'"x100"', b'"x\xff00"'))
    (root / "b.csv").write_text('text,id\n"never closed,c1\n')  # a later error, read by this process
    with pytest.raises(InputError) as serial:
        list(read_documents([root], ReadOptions()))
    with pytest.raises(InputError) as parallel:
        list(read_documents_parallel([root], ReadOptions(), 2, parse_bytes=64))
    assert str(parallel.value) == str(serial.value) and "invalid UTF-8 at line" in str(serial.value)


@pytest.mark.parametrize("parts,errors", [("exact", "strict"), ("exact,lexical", "strict"), ("exact", "replace")])
def test_a_build_parsing_in_workers_is_byte_identical_to_workers_1(tmp_path, monkeypatch, parts, errors):
    """The workers parse the JSONL for the plan and again for each shard's text (errors=replace:
    invalid UTF-8 and a lone surrogate replaced the same way both times)."""
    root = _corpus(tmp_path / "corpus")
    if errors == "replace":
        a = root / "a.jsonl"
        a.write_bytes(a.read_bytes().replace(b'"x100"', b'"x\xff00"').replace(b'"w\xc3\xb6rd33 ', b'"\\ud800w\xff '))
    one = Index.build([root], tmp_path / "one", parts=parts, shard_size=900, workers=1, errors=errors)
    monkeypatch.setattr(ranges, "PARSE_BYTES", 300)  # many parse tasks, so the pool runs
    two = Index.build([root], tmp_path / "two", parts=parts, shard_size=900, workers=2, errors=errors)
    try:
        assert len(one.manifest["exact"]["shards"]) > 3
        ga, gb = one.root, two.root
        files = sorted(str(p.relative_to(ga)) for p in ga.rglob("*") if p.is_file() and p.name != "manifest.json")
        assert files == sorted(str(p.relative_to(gb)) for p in gb.rglob("*") if p.is_file() and p.name != "manifest.json")
        assert all((ga / f).read_bytes() == (gb / f).read_bytes() for f in files)
        strip = ("created", "build_seconds", "seal")  # the seal hashes the manifest, times included
        assert {k: v for k, v in one.manifest.items() if k not in strip} == \
            {k: v for k, v in two.manifest.items() if k not in strip}
    finally:
        one.close()
        two.close()


def test_a_bad_line_fails_the_build_with_the_serial_error_and_stops_the_parse_workers(tmp_path, monkeypatch):
    import multiprocessing

    root = _corpus(tmp_path / "corpus", bad_line='{"text": "cut off')
    with pytest.raises(InputError) as serial:
        Index.build([root], tmp_path / "one", parts="exact", shard_size=900, workers=1)
    monkeypatch.setattr(ranges, "PARSE_BYTES", 300)
    with pytest.raises(InputError) as parallel:
        Index.build([root], tmp_path / "two", parts="exact", shard_size=900, workers=2)
    assert str(parallel.value) == str(serial.value) and "invalid JSON" in str(serial.value)
    assert not (tmp_path / "two").exists() and not multiprocessing.active_children()


@pytest.mark.parametrize("parse_bytes", [1, 300, 1 << 20])
def test_documents_without_text_point_at_lines_that_give_the_text_again(tmp_path, parse_bytes):
    """text=False (a build whose shard workers read the text): each JSONL document comes without its
    text, with the byte length of that text and its line, whose parse gives the serial reader's
    document; the documents of other formats (read here) keep their text."""
    from dataclasses import replace

    from retrieval.readers.documents import range_documents

    root = _corpus(tmp_path / "corpus")
    want = list(read_documents([root], ReadOptions()))
    got = list(read_documents_parallel([root], ReadOptions(), 2, parse_bytes=parse_bytes, text=False))
    assert len(got) == len(want) > 100
    spans = 0
    for g, w in zip(got, want):
        if g.span is None:  # b.csv: read by this process, with its text
            assert g == w and w.source.endswith("b.csv")
            continue
        spans += 1
        assert g.text == "" and g.length == len(w.text.encode("utf-8")) > 0
        assert replace(g, text=w.text, length=None, span=None) == w
        again = [d for d in range_documents(g.span, ReadOptions()) if d.text]
        assert again == [w]  # the line alone, with its own line number (ids of last resort)
    assert spans == len(want) - 2


def test_a_shard_planned_from_spans_reads_its_text_and_notices_a_changed_file(tmp_path):
    from retrieval.build import plan_shards

    root = _corpus(tmp_path / "corpus")
    want = list(plan_shards(read_documents([root], ReadOptions()), 900))
    got = list(plan_shards(read_documents_parallel([root], ReadOptions(), 2, parse_bytes=300, text=False), 900))
    assert len(got) == len(want) > 3
    assert any(len(s.parts) > 1 for s in got)  # shards that mix spans of a.jsonl with b.csv's text, or files
    for g, w in zip(got, want):
        assert (g.number, g.first_doc, g.docs, g.size) == (w.number, w.first_doc, w.docs, len(w.text))
        assert g.read(ReadOptions()) == w.text
    a = root / "a.jsonl"
    a.write_bytes(a.read_bytes().replace(b'"w\xc3\xb6rd7 "', b'"w\xc3\xb6rd7  "'))  # a document one byte longer
    changed = [s for s in got if any(getattr(p, "path", None) == a for p, _ in s.parts)]
    with pytest.raises(InputError, match="a.jsonl: changed while being indexed"):
        for s in changed:
            s.read(ReadOptions())
