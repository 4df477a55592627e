"""rtv query: the JSON contract and the reranker default (on when a cross-encoder is on disk)."""

import json
import random

import pytest
from click.testing import CliRunner

from _hybrid_fixtures import topic_passage, train_tiny_cross_encoder
from rtv_cli.main import cli


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("q")
    rng = random.Random(5)
    docs = [{"id": f"d{i}", "text": f"list {topic_passage(rng, ['animals', 'colors', 'tools'][i % 3])}"}
            for i in range(30)]
    (tmp / "c.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp / "idx"
    r = CliRunner().invoke(cli, ["index", str(tmp / "c.jsonl"), "-o", str(out), "--no-dense", "--id-field", "id", "--silent"])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture
def empty_hf_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


def query(*args):
    return CliRunner().invoke(cli, ["query", *map(str, args)])


def test_hybrid_without_model_on_disk_says_so_and_ranks(index_dir, empty_hf_cache, monkeypatch):
    from retrieval import progress

    monkeypatch.setattr(progress, "_silent", False)  # the notice is the point here
    r = query(index_dir, "list tools", "-k", "5", "--json")
    assert r.exit_code == 0, r.output
    assert "ranking without a cross-encoder" in r.stderr
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert all({"doc_id", "passage_id", "score", "text", "start", "end", "stages"} <= h.keys() for h in hits)
    assert all("rerank" not in h["stages"] for h in hits)


def test_explicit_rerank_without_model_fails_with_the_fix(index_dir, empty_hf_cache):
    r = query(index_dir, "list tools", "--rerank")
    assert r.exit_code == 1
    assert "--reranker DIR" in r.output and "--no-rerank" in r.output


def test_reranker_path_reranks(index_dir, tmp_path):
    model = train_tiny_cross_encoder(tmp_path / "ce")
    r = query(index_dir, "list tools", "-k", "10", "--reranker", model, "--json")
    assert r.exit_code == 0, r.output
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert [h["stages"]["rerank"]["rank"] for h in hits] == list(range(1, 11))
    assert all(h["text"].split()[0] == "list" for h in hits)
    tools = set(hits[0]["text"].split()) & {"hammer", "saw", "drill", "wrench", "screwdriver", "chisel",
                                            "pliers", "shovel", "rake", "axe", "ladder", "file"}
    assert tools  # the cross-encoder put a 'tools' passage first


@pytest.mark.parametrize("k", ["0", "31"])
def test_k_out_of_range_is_an_error(index_dir, k):
    r = query(index_dir, "list tools", "-k", k, "--no-rerank")
    assert r.exit_code == 1
    assert f"-k {k}" in r.output and ("must be >= 1" in r.output or "holds only 30 passages" in r.output)
