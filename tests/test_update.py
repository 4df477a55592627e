"""Living indexes (issue 10): rtv add / delete / compact against an oracle, a fresh build of the live
documents. Answers are compared by external id and text, never by internal ids (which a fresh build
numbers differently).

- a hypothesis state machine runs random sequences of add (new documents, --replace, refused
  duplicates), delete and compact; after every step each count, find, docs, cnf, extract and
  lexical (BM25) search equals a fresh build's, and after compact the shard files are
  byte-identical to the fresh build's;
- the dense part: vectors appended to the trained index give a fresh build's dense results;
- a SIGKILLed add leaves the index as it was; bad CLI input is a one-line error that changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from retrieval import Index
from retrieval.errors import InputError
from retrieval.update import add, compact, delete

WORDS = ["alpha", "beta", "gamma", "delta", "alphabet", "bet", "café", "naïve", "東京", "ab", "ba", "x"]
PATTERNS = ["alpha", "bet", "a", "ab", "é", "東京", "ta g", "x"]
QUERY_WORDS = ["alpha", "beta", "gamma", "naïve", "alphabet café x", "gamma delta beta"]
SHARD_SIZE = 96  # several shards per build and per add
SETTINGS = dict(parts="exact,lexical", shard_size=SHARD_SIZE, sa_sample=4, isa_sample=8)


def write_jsonl(path: Path, docs: list[tuple[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for ext_id, text in docs:
            f.write(json.dumps({"id": ext_id, "text": text}, ensure_ascii=False) + "\n")
    return path


def answers(index: Index) -> dict:
    """Everything the tests compare, in terms of external ids and text."""
    flt = index.doc_filter()
    live = range(index.n_documents) if flt is None else flt.allowed_ids.tolist()
    ext = {d["id"]: d["ext_id"] for d in index.store.documents(list(live))}
    out = {"documents": [(ext[d], index.extract(d)) for d in live],
           "count": [index.count(p) for p in PATTERNS],
           "count_many": index.count_many(PATTERNS).tolist()}
    finds = []
    for p in PATTERNS:
        docs, offs = index.find(p, 0, 10_000)
        finds.append(sorted((ext[int(d)], int(o)) for d, o in zip(docs, offs)))
    out["find"] = finds
    out["docs"] = [sorted(ext[int(d)] for d in index.docs(p)) for p in PATTERNS]
    out["cnf"] = sorted(ext[int(d)] for d in index.cnf([["alpha", "東京"], ["bet"]]))
    n_live_passages = sum(1 for r in index.store.iter_passages() if r["doc_id"] in ext)
    lexical = []
    for w in QUERY_WORDS:
        hits = index.search(w, k=n_live_passages, mode="lexical", rerank=False) if n_live_passages else []
        lexical.append(sorted((round(h.score, 9), h.ext_id, h.text) for h in hits))
    out["lexical"] = lexical
    return out


def empty_answers() -> dict:
    return {"documents": [], "count": [0] * len(PATTERNS), "count_many": [0] * len(PATTERNS),
            "find": [[] for _ in PATTERNS], "docs": [[] for _ in PATTERNS], "cnf": [], "lexical": [[] for _ in QUERY_WORDS]}


def fresh(tmp: Path, docs: list[tuple[str, str]], name: str, lexical: str = "postings") -> Index:
    return Index.build([write_jsonl(tmp / f"{name}.jsonl", docs)], tmp / name, **SETTINGS, lexical=lexical)


def shard_bytes(index: Index) -> list[bytes]:
    return [(index.root / s["file"]).read_bytes() for s in index.manifest["exact"]["shards"]]


texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)


class LivingIndex(RuleBasedStateMachine):
    """The model: the live documents as (external id, text), in id order (a fresh build's order).
    The index's lexical part is `lexical` (postings files, or FTS5 for indexes built that way); the
    oracle is a fresh build of the live documents with FTS5 (rtv's earlier lexical part) as well as
    one of the same kind."""

    lexical = "postings"

    def __init__(self):
        super().__init__()
        import tempfile

        self.tmp = Path(tempfile.mkdtemp(prefix="rtv-update-"))
        self.path = self.tmp / "idx"
        self.live: list[tuple[str, str]] = []
        self.next_id = 0
        self.steps = 0

    def new_docs(self, batch: list[str]) -> list[tuple[str, str]]:
        docs = [(f"d{self.next_id + i}", t) for i, t in enumerate(batch)]
        self.next_id += len(batch)
        return docs

    @initialize(batch=st.lists(texts, min_size=1, max_size=6))
    def build(self, batch):
        self.live = self.new_docs(batch)
        Index.build([write_jsonl(self.tmp / "build.jsonl", self.live)], self.path, **SETTINGS,
                    lexical=self.lexical).close()

    def source(self, docs) -> Path:
        self.steps += 1
        return write_jsonl(self.tmp / f"step-{self.steps}.jsonl", docs)

    @rule(batch=st.lists(texts, min_size=1, max_size=5), data=st.data())
    def add_new(self, batch, data):
        docs = self.new_docs(batch)
        replaced = []
        if self.live and data.draw(st.booleans(), label="replace one"):
            old = data.draw(st.sampled_from(self.live), label="replaced")
            replaced.append(old[0])
            docs.append((old[0], data.draw(texts, label="new text")))
        add(self.path, [self.source(docs)], replace=bool(replaced))
        self.live = [d for d in self.live if d[0] not in replaced] + docs

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def add_duplicate_is_refused(self, data):
        old = data.draw(st.sampled_from(self.live), label="duplicate")
        before = (self.path / "CURRENT").read_text()
        with pytest.raises(InputError, match=f"document id {old[0]!r} is already in"):
            add(self.path, [self.source(self.new_docs(["fresh text"]) + [old])])
        assert (self.path / "CURRENT").read_text() == before
        assert not list(self.path.glob(".gen-*"))  # the half-built generation is gone

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def delete_some(self, data):
        gone = data.draw(st.lists(st.sampled_from([d[0] for d in self.live]), min_size=1, max_size=3, unique=True))
        summary = delete(self.path, gone)
        assert summary["deleted_now"] == len(gone)
        self.live = [d for d in self.live if d[0] not in gone]

    @rule()
    def compact_it(self):
        if not self.live:
            with pytest.raises(InputError, match="every document is deleted"):
                compact(self.path)
            return
        compact(self.path)
        got, want = Index.open(self.path), fresh(self.tmp, self.live, f"fresh-compact-{self.steps}", self.lexical)
        assert shard_bytes(got) == shard_bytes(want)  # byte-identical shards
        assert got.n_documents == len(self.live) and got.info()["deleted_documents"] == 0
        assert len(got.info()["segments"]) == 1

    @invariant()
    def equals_a_fresh_build(self):
        if not hasattr(self, "live") or not self.path.exists():
            return
        got = Index.open(self.path)
        info = got.info()
        assert info["documents"] == len(self.live)
        if not self.live:
            assert answers(got) == empty_answers()
            return
        self.steps += 1
        want = answers(fresh(self.tmp, self.live, f"fresh-{self.steps}", self.lexical))
        assert answers(got) == want
        if self.lexical != "fts5":
            assert want == answers(fresh(self.tmp, self.live, f"fresh-fts5-{self.steps}", "fts5"))

    def teardown(self):
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


class LivingFts5Index(LivingIndex):
    lexical = "fts5"  # an index whose lexical part is FTS5 (built that way, or by an earlier rtv)


TestLivingIndex = LivingIndex.TestCase
TestLivingIndex.settings = settings(max_examples=8, stateful_step_count=6, deadline=None,
                                    suppress_health_check=list(HealthCheck))
TestLivingFts5Index = LivingFts5Index.TestCase
TestLivingFts5Index.settings = settings(max_examples=4, stateful_step_count=6, deadline=None,
                                        suppress_health_check=list(HealthCheck))


# -- generations: links, readers of the old generation, segments -------------------------------------
def test_add_links_unchanged_files_and_old_readers_keep_their_generation(tmp_path):
    first = fresh(tmp_path, [("a", "alpha beta"), ("b", "gamma delta")], "idx")
    before = answers(first)
    add(tmp_path / "idx", [write_jsonl(tmp_path / "new.jsonl", [("c", "alpha 東京")])])
    now = Index.open(tmp_path / "idx")
    for s in first.manifest["exact"]["shards"]:  # the old shards are the same files (hard links)
        assert os.path.samefile(first.root / s["file"], now.root / s["file"])
    assert not os.path.samefile(first.root / "meta.sqlite", now.root / "meta.sqlite")
    assert answers(first) == before  # the Index opened before the add still reads its own generation
    assert now.count("alpha") == 2 and now.count("東京") == 1
    segs = now.info()["segments"]
    assert [(s["kind"], s["first_doc"], s["n_docs"]) for s in segs] == [("build", 0, 2), ("add", 2, 1)]
    assert segs[1]["shards"] == ["exact/shard-00001.fmi"]


def test_delete_then_add_the_same_id_again(tmp_path):
    fresh(tmp_path, [("a", "alpha"), ("b", "beta")], "idx")
    delete(tmp_path / "idx", ["a"])
    add(tmp_path / "idx", [write_jsonl(tmp_path / "again.jsonl", [("a", "alpha again")])])
    idx = Index.open(tmp_path / "idx")
    assert answers(idx) == answers(fresh(tmp_path, [("b", "beta"), ("a", "alpha again")], "want"))
    assert idx.info()["segments"][0]["deleted"] == 1


def test_index_methods_return_the_new_generation(tmp_path):
    idx = fresh(tmp_path, [("a", "alpha"), ("b", "beta")], "idx")
    idx2 = idx.add([write_jsonl(tmp_path / "n.jsonl", [("c", "gamma alpha")])])
    idx3 = idx2.delete(["a"]).compact()
    assert idx.count("alpha") == 1 and idx2.count("alpha") == 2 and idx3.count("alpha") == 1
    assert idx3.info()["documents"] == 2 and idx3.root.name == "gen-000004"


# -- dense: appended vectors answer like a fresh build's -----------------------------------------------
def test_dense_add_delete_compact_equal_a_fresh_build(tmp_path):
    pytest.importorskip("faiss")
    pytest.importorskip("sentence_transformers")
    dense = dict(parts="exact,lexical,dense", recipe="flat", device="cpu")
    a = [(f"a{i}", f"the {w} river flows past the old mill number {i}") for i, w in enumerate(WORDS[:6])]
    b = [(f"b{i}", f"a recipe for {w} bread with flour and water, loaf {i}") for i, w in enumerate(WORDS[:5])]
    Index.build([write_jsonl(tmp_path / "a.jsonl", a)], tmp_path / "idx", **dense).close()
    add(tmp_path / "idx", [write_jsonl(tmp_path / "b.jsonl", b)], device="cpu")
    queries = ["bread baking", "a river and a mill"]

    def dense_hits(index):
        return [[(h.ext_id, h.text, round(h.score, 4)) for h in index.search(q, k=5, mode="dense", rerank=False)]
                for q in queries]

    def want(docs, name):
        return Index.build([write_jsonl(tmp_path / f"{name}.jsonl", docs)], tmp_path / name, **dense)

    got = Index.open(tmp_path / "idx", device="cpu")
    assert got.dense.n == want(a + b, "w1").dense.n
    assert dense_hits(got) == dense_hits(want(a + b, "w1b"))
    got = got.delete(["b1", "a0"])
    assert dense_hits(got) == dense_hits(want([d for d in a + b if d[0] not in ("b1", "a0")], "w2"))
    got = got.compact()
    w3 = want([d for d in a + b if d[0] not in ("b1", "a0")], "w3")
    assert dense_hits(got) == dense_hits(w3)
    assert (got.root / "dense/index.faiss").read_bytes() == (w3.root / "dense/index.faiss").read_bytes()


def test_appended_store_rows_equal_a_fresh_stores_rows(tmp_path):
    """int8 with one scale a vector: each row is coded alone, so appending gives a fresh store's rows;
    float16 likewise. (Per-dimension ranges and PCA keep the first build's parameters by design.)"""
    from retrieval.dense.vectors import VectorStore, append_store, write_store

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((50, 16)).astype(np.float32)
    for dtype, opts in (("float16", {}), ("int8", {"scale": "vector"})):
        d_all, d_app = tmp_path / f"{dtype}-all", tmp_path / f"{dtype}-app"
        d_all.mkdir()
        d_app.mkdir()
        spec = write_store(vecs, d_all, dtype, **opts)
        write_store(vecs[:30], d_app, dtype, **opts)
        append_store(d_app, spec, 30, vecs[30:])
        a, b = VectorStore(d_all, spec, 50, 16), VectorStore(d_app, spec, 50, 16)
        assert np.array_equal(a.vectors, b.vectors)
        assert (a.scales is None) == (b.scales is None) and (a.scales is None or np.array_equal(a.scales, b.scales))


# -- a killed add ----------------------------------------------------------------------------------------
def test_sigkilled_add_leaves_the_index_as_it_was(tmp_path):
    idx = fresh(tmp_path, [("a", "alpha beta"), ("b", "gamma")], "idx")
    before = answers(idx)
    big = write_jsonl(tmp_path / "big.jsonl", [(f"n{i}", f"alpha filler {i} " * 400) for i in range(3000)])
    script = (f"from retrieval.update import add\n"
              f"add({str(tmp_path / 'idx')!r}, [{str(big)!r}], workers=1)\n")
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "RTV_SILENT": "1"})
    deadline = time.monotonic() + 60
    while not list((tmp_path / "idx").glob(".gen-*.building-*/exact/*.fmi")):  # mid-way: shards being written
        assert child.poll() is None and time.monotonic() < deadline, "the add ended before it could be killed"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (tmp_path / "idx" / "CURRENT").read_text().strip() == "gen-000001"
    assert answers(Index.open(tmp_path / "idx")) == before
    # the next change removes the killed one's leftovers and works
    add(tmp_path / "idx", [write_jsonl(tmp_path / "c.jsonl", [("c", "alpha")])])
    assert not list((tmp_path / "idx").glob(".gen-*")) and not list(tmp_path.glob(".idx.lock"))
    assert Index.open(tmp_path / "idx").count("alpha") == 2


# -- the CLI: bad input is one line, a non-zero exit, and changes nothing ------------------------------
def _cli(*args):
    from rtv_cli.main import cli

    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def _state(path: Path) -> tuple:
    gen = (path / "CURRENT").read_text().strip()
    return gen, (path / gen / "manifest.json").read_bytes(), sorted(p.name for p in path.iterdir())


@pytest.mark.parametrize("args, message", [
    (["add", "{idx}", "{dup}"], "document id 'a' is already in"),
    (["add", "{idx}", "{missing}"], "missing.jsonl"),
    (["add", "{idx}", "{empty}"], "no non-empty documents to add"),
    (["add", "{nothing}", "{new}"], "no such index directory"),
    (["delete", "{idx}", "--id", "zz"], "--id 'zz': no live document"),
    (["delete", "{idx}"], "give the documents to delete"),
    (["delete", "{nothing}", "--id", "a"], "no such index directory"),
    (["compact", "{nothing}"], "no such index directory"),
])
def test_cli_bad_input(tmp_path, args, message):
    fresh(tmp_path, [("a", "alpha"), ("b", "beta")], "idx")
    paths = {"idx": tmp_path / "idx", "nothing": tmp_path / "nothing",
             "dup": write_jsonl(tmp_path / "dup.jsonl", [("n", "new"), ("a", "again")]),
             "missing": tmp_path / "missing.jsonl", "new": write_jsonl(tmp_path / "new.jsonl", [("n", "new")]),
             "empty": write_jsonl(tmp_path / "empty.jsonl", [("e", "")])}
    before = _state(tmp_path / "idx")
    result = _cli(*[a.format(**paths) for a in args])
    assert result.exit_code != 0
    err = result.output.strip().splitlines()
    assert "Traceback" not in result.output and message in err[-1] and err[-1].startswith("Error: ")
    assert _state(tmp_path / "idx") == before
    assert not (tmp_path / "nothing").exists()


def test_cli_add_delete_compact_info(tmp_path):
    fresh(tmp_path, [("a", "alpha"), ("b", "beta")], "idx")
    r = _cli("add", tmp_path / "idx", write_jsonl(tmp_path / "n.jsonl", [("c", "gamma"), ("d", "alpha")]), "--json", "--silent")
    assert r.exit_code == 0 and json.loads(r.output)["added"] == 2
    r = _cli("delete", tmp_path / "idx", "--id", "a", "--id", "c", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["deleted_now"] == 2
    info = json.loads(_cli("info", tmp_path / "idx", "--json").output)
    assert (info["documents"], info["deleted_documents"]) == (2, 2)
    assert [(s["n_docs"], s["deleted"]) for s in info["segments"]] == [(2, 1), (2, 1)]
    r = _cli("compact", tmp_path / "idx", "--silent")
    assert r.exit_code == 0 and "dropped 2 deleted documents" in r.output
    info = json.loads(_cli("info", tmp_path / "idx", "--json").output)
    assert (info["documents"], info["deleted_documents"], len(info["segments"])) == (2, 0, 1)


@pytest.mark.parametrize("recipe", ["pq", "binary", "hnsw"])
def test_appended_vectors_are_found_under_their_passage_ids(tmp_path, recipe):
    """Vectors appended to a trained index (IVF-PQ keeps its centroids and codebooks, binary and HNSW
    grow) are searchable under the ids that follow the old ones: each appended vector, as a query,
    finds itself first (rescored exactly from the appended store rows), like the old ones do."""
    pytest.importorskip("faiss")
    from retrieval.dense.index import DenseIndex, append_vectors, build_from_vectors

    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((12_000, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    section = build_from_vectors(vecs[:10_000], tmp_path, recipe, device="cpu", quiet=True)
    section = append_vectors(tmp_path, section, vecs[10_000:])
    assert section["n_vectors"] == 12_000 and section["appended_vectors"] == 2_000
    dense = DenseIndex.open(tmp_path, section, device="cpu")
    for lo in (0, 10_000):  # old vectors and appended ones alike
        _, ids = dense.search(vecs[lo:lo + 300], 1)
        assert (ids[:, 0] == np.arange(lo, lo + 300)).mean() >= 0.97


def test_delete_where_uses_the_filter_language(tmp_path):
    docs = [{"id": f"d{i}", "text": f"{w} text {i}", "lang": "de" if i % 3 == 0 else "en", "year": 2000 + i}
            for i, w in enumerate(WORDS)]
    src = tmp_path / "m.jsonl"
    src.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    Index.build([src], tmp_path / "idx", **SETTINGS).close()
    summary = delete(tmp_path / "idx", ["d1"], where="lang = 'de' AND year < 2009")
    gone = {"d1"} | {d["id"] for d in docs if d["lang"] == "de" and d["year"] < 2009}
    assert summary["deleted_now"] == len(gone) == 4
    keep = [(d["id"], d["text"]) for d in docs if d["id"] not in gone]
    assert answers(Index.open(tmp_path / "idx")) == answers(fresh(tmp_path, keep, "want"))
    before = _state(tmp_path / "idx")
    with pytest.raises(InputError, match="matches no live document"):
        delete(tmp_path / "idx", where="lang = 'de' AND year < 2009")  # those are deleted already
    result = _cli("delete", tmp_path / "idx", "--where", "lang = = 'x'")
    assert result.exit_code == 1 and "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert _state(tmp_path / "idx") == before


@pytest.mark.parametrize("change", ["add", "delete", "compact"])
def test_a_damaged_store_is_not_carried_into_a_new_generation(tmp_path, change):
    """add and delete rewrite meta.sqlite (compact rewrites everything) under a fresh checksum, so a
    damaged one is refused first instead of being sealed anew."""
    from retrieval.errors import IndexFormatError

    idx = fresh(tmp_path, [("a", "alpha"), ("b", "beta")], "idx")
    store = idx.root / "meta.sqlite"
    data = bytearray(store.read_bytes())
    data[len(data) // 2] ^= 0x01
    store.write_bytes(data)
    before = _state(tmp_path / "idx")
    with pytest.raises(IndexFormatError, match="corrupted"):
        {"add": lambda: add(tmp_path / "idx", [write_jsonl(tmp_path / "n.jsonl", [("c", "gamma")])]),
         "delete": lambda: delete(tmp_path / "idx", ["a"]),
         "compact": lambda: compact(tmp_path / "idx")}[change]()
    assert _state(tmp_path / "idx") == before
