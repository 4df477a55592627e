"""The CLI contract of rtv index / count / find / cnf / info / extract, and its bad-input errors."""

import json

import pytest
from click.testing import CliRunner

from rtv_cli.main import cli

DOCS = [{"id": "d0", "text": "alpha beta gamma alpha"}, {"id": "d1", "text": "-dash beta delta"},
        {"id": "d2", "text": "naïve café alpha"}]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    corpus = tmp / "c.jsonl"
    corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DOCS), encoding="utf-8")
    out = tmp / "idx"
    result = CliRunner().invoke(cli, ["index", str(corpus), "-o", str(out), "--no-dense", "--id-field", "id", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["documents"] == 3
    return out


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def lines(result):
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_count_json_in_query_order(index_dir):
    out = lines(run("count", index_dir, "alpha", "beta", "zzz", "café", "--json"))
    assert out == [{"query": "alpha", "count": 3}, {"query": "beta", "count": 2},
                   {"query": "zzz", "count": 0}, {"query": "café", "count": 1}]


def test_double_dash_allows_leading_dash(index_dir):
    assert lines(run("count", index_dir, "--json", "--", "-dash")) == [{"query": "-dash", "count": 1}]


def test_find_json(index_dir):
    out = lines(run("find", index_dir, "alpha", "--context", "3", "--json"))
    assert sorted((o["doc_id"], o["offset"]) for o in out) == [(0, 0), (0, 17), (2, 13)]
    hit = next(o for o in out if o["doc_id"] == 2)
    assert hit["snippet"] == "é alpha" and hit["ext_id"] == "d2"
    # a snippet edge that cuts a character in two drops the partial character
    out = lines(run("find", index_dir, "alpha", "--context", "2", "--json"))
    assert next(o for o in out if o["doc_id"] == 2)["snippet"] == " alpha"
    out = lines(run("find", index_dir, "caf", "--context", "1", "--json"))
    assert out[0]["snippet"] == " caf"
    assert len(lines(run("find", index_dir, "alpha", "--limit", "2", "--json"))) == 2


def test_cnf_and_extract(index_dir):
    out = lines(run("cnf", index_dir, "gamma|delta", "beta", "--json"))
    assert [o["doc_id"] for o in out] == [0, 1]
    assert lines(run("extract", index_dir, "2", "--json")) == [{"doc_id": 2, "text": "naïve café alpha"}]


def test_info(index_dir):
    info = lines(run("info", index_dir, "--json"))[0]
    assert info["documents"] == 3 and info["format_version"] == 3 and len(info["shards"]) == 1
    gen = index_dir / info["generation"]
    assert (index_dir / "CURRENT").read_text().strip() == info["generation"] == "gen-000001"
    on_disk = sum(f.stat().st_size for f in gen.rglob("*") if f.is_file())
    assert info["index_bytes"] == on_disk  # the sizes rtv info reports are the files on disk
    parts = info["parts"]
    assert set(parts) == {"exact", "passages", "lexical"}  # built with --no-dense
    assert sum(p["bytes"] for p in parts.values()) == on_disk
    shards = sum(f.stat().st_size for f in (gen / "exact").iterdir())
    assert shards < parts["exact"]["bytes"] < on_disk
    # the lexical part is its postings files (the store keeps no FTS5 table beside them)
    assert parts["lexical"]["bytes"] == sum(f.stat().st_size for f in (gen / "lexical").iterdir())
    for p in parts.values():
        assert p["per_corpus_byte"] == round(p["bytes"] / info["corpus_bytes"], 4)


def test_index_lexical_fts5_ranks_words_as_postings_do(index_dir, tmp_path):
    """--lexical fts5 keeps the FTS5 table (no lexical/ files); BM25 over words is the same as the
    postings files' (the default index_dir), score for score."""
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in DOCS), encoding="utf-8")
    out = tmp_path / "fts"
    lines(run("index", corpus, "-o", out, "--no-dense", "--id-field", "id", "--lexical", "fts5", "--json"))
    gen = out / (out / "CURRENT").read_text().strip()
    assert not (gen / "lexical").exists() and "lexical" not in json.loads((gen / "manifest.json").read_text())
    for q in ("alpha", "beta delta", "café alphas"):
        want = lines(run("query", index_dir, q, "--mode", "lexical", "--no-rerank", "--json"))
        got = lines(run("query", out, q, "--mode", "lexical", "--no-rerank", "--json"))
        assert want and [(h["ext_id"], round(h["score"], 9)) for h in got] == \
            [(h["ext_id"], round(h["score"], 9)) for h in want]


@pytest.mark.parametrize("args,message", [
    (["count", "{idx}", ""], "empty pattern"),
    (["count", "{tmp}", "x"], "not an rtv index"),
    (["count", "{tmp}/missing", "x"], "no such index directory"),
    (["extract", "{idx}", "9"], "out of range"),
])
def test_bad_queries(index_dir, tmp_path, args, message):
    result = run(*[a.format(idx=index_dir, tmp=tmp_path) for a in args])
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("files,extra,message", [
    ({"c.jsonl": ""}, [], "no non-empty documents"),
    ({"c.jsonl": '{"body": "x"}\n'}, [], "no field 'text'"),
    ({"c.jsonl": '{"text": "a", "id": 1}\n{"text": "b", "id": 1}\n'}, ["--id-field", "id"], "duplicate id '1'"),
    ({"c.jsonl": '{"text": "a"}\n'}, ["--shard-size", "0"], "--shard-size 0"),
])
def test_bad_corpora_leave_nothing(tmp_path, files, extra, message):
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    out = tmp_path / "idx"
    result = run("index", *[tmp_path / n for n in files], "-o", out, "--no-dense", *extra)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert not out.exists() and not any(p.name.startswith(".idx") for p in tmp_path.iterdir())


def test_usage_errors_exit_2(index_dir):
    assert run("count", index_dir).exit_code == 2
    assert run("index", "x").exit_code == 2
    assert run("index", "x", "-o", "y", "--shard-size", "lots").exit_code == 2


def test_existing_output_needs_force(index_dir, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text")
    result = run("index", corpus, "-o", index_dir, "--no-dense")
    assert result.exit_code == 1 and "--force" in result.output
