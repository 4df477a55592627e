"""`rtv serve` follows the live generation of its indexes (serve/live.py): a real server (uvicorn on
127.0.0.1) while `retrieval.update` adds, deletes and compacts. Oracle: a naive scan of the live
documents' text after each change; every request answers from one generation, whole."""

from __future__ import annotations

import json
import threading

import pytest
from _oracles import naive_occurrences
from _serve_fixtures import DOCS, Server, wait_until, write_corpus

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

NEW = [("new1", "ZEBRA_77 grazes; a second ZEBRA_77 joins the herd near the cat."),
       ("new2", "One more ZEBRA_77 and the cat, written by a later add."),
       ("new3", "The cat again, and nothing striped at all.")]


def _jsonl(path, docs):
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in docs), encoding="utf-8")
    return path


def _naive(docs, pattern: str) -> int:
    return len(naive_occurrences([t.encode() for _, t in docs], pattern.encode()))


@pytest.fixture()
def served(tmp_path):
    from retrieval import Index

    Index.build([write_corpus(tmp_path / "c.jsonl")], tmp_path / "idx", id_field="id", dense=False).close()
    s = Server(str(tmp_path / "idx"), "--no-rerank", "--threads", "4")
    with httpx.Client(base_url=s.url, timeout=60) as c:
        yield tmp_path, c
    assert s.stop() == 0
    assert "Traceback" not in s.stderr, s.stderr


def _ok(r) -> dict:
    assert r.status_code == 200, r.text
    return r.json()


def _count(c, q: str) -> int:
    return _ok(c.post("/v1/idx/count", json={"query": q}))["count"]


def test_server_follows_add_and_delete(served):
    from retrieval.update import add, compact, delete

    tmp, c = served
    gen0 = _ok(c.get("/v1"))["indexes"][0]["generation"]
    assert _count(c, "ZEBRA_77") == 0

    add(tmp / "idx", [_jsonl(tmp / "new.jsonl", NEW[:2])], id_field="id")
    live = DOCS + NEW[:2]
    assert _count(c, "ZEBRA_77") == _naive(live, "ZEBRA_77") == 3  # the next request sees the add
    assert _count(c, "cat") == _naive(live, "cat")
    page = _ok(c.post("/v1/idx/find", json={"query": "ZEBRA_77", "limit": 10}))
    assert sorted(r["ext_id"] for r in page["results"]) == ["new1", "new1", "new2"]
    gen1 = _ok(c.get("/v1"))["indexes"][0]["generation"]
    info = _ok(c.get("/v1/idx/info"))
    assert gen1 != gen0 and info["generation"] == gen1 and info["documents"] == len(live)
    assert _ok(c.get("/health"))["generations"] == {"idx": gen1}  # no token: this server has none either way

    delete(tmp / "idx", ["new1"])
    gen2 = (tmp / "idx" / "CURRENT").read_text(encoding="utf-8").strip()
    assert gen2 != gen1 and _ok(c.get("/health"))["generations"] == {"idx": gen2}  # the first request after it
    live = DOCS + NEW[1:2]
    assert _count(c, "ZEBRA_77") == _naive(live, "ZEBRA_77") == 1
    page = _ok(c.post("/v1/idx/find", json={"query": "ZEBRA_77", "limit": 10}))
    assert [r["ext_id"] for r in page["results"]] == ["new2"]
    hits = _ok(c.post("/v1/idx/query", json={"query": "ZEBRA_77 herd", "mode": "lexical", "k": 5}))["results"]
    assert hits and "new1" not in {h["ext_id"] for h in hits}
    assert _ok(c.get("/v1/idx/info"))["deleted_documents"] == 1

    # two more changes: the first generations are gone from disk, the server still answers
    add(tmp / "idx", [_jsonl(tmp / "new3.jsonl", NEW[2:])], id_field="id")
    compact(tmp / "idx")
    live = DOCS + NEW[1:]
    assert not (tmp / "idx" / gen0).exists() and not (tmp / "idx" / gen1).exists()
    assert _count(c, "cat") == _naive(live, "cat") and _count(c, "ZEBRA_77") == 1
    info = _ok(c.get("/v1/idx/info"))
    assert info["documents"] == len(live) and info["deleted_documents"] == 0


def test_concurrent_requests_during_changes(served):
    """Requests from several threads while adds, a delete and a compaction publish: every one
    succeeds, and each find page is whole: its count and its occurrences are those of one of the
    generations (never a mix, never an error from a generation removed under it), and each one is
    served in turn."""
    from retrieval.update import add, compact, delete

    tmp, c = served
    changes = [lambda: add(tmp / "idx", [_jsonl(tmp / "a.jsonl", NEW[:1])], id_field="id"),
               lambda: add(tmp / "idx", [_jsonl(tmp / "b.jsonl", NEW[1:])], id_field="id"),
               lambda: delete(tmp / "idx", ["new1", "cats"]),
               lambda: compact(tmp / "idx")]
    live = [DOCS, DOCS + NEW[:1], DOCS + NEW, [d for d in DOCS + NEW if d[0] not in ("new1", "cats")]]
    live.append(live[-1])
    allowed = {(_naive(docs, "cat"), _naive(docs, "ZEBRA_77")) for docs in live}
    done = threading.Event()
    errors, seen = [], []

    def reader():
        with httpx.Client(base_url=c.base_url, timeout=60) as own:
            for _ in range(400):  # bounded, whether or not the changes are finished
                if done.is_set():
                    break
                try:
                    cat = own.post("/v1/idx/find", json={"query": "cat", "limit": 100, "snippets": False})
                    zebra = own.post("/v1/idx/count", json={"queries": ["cat", "ZEBRA_77"]})
                    lex = own.post("/v1/idx/query", json={"query": "cat", "mode": "lexical", "k": 3})
                    for r in (cat, zebra, lex):
                        if r.status_code != 200:
                            errors.append(r.text)
                    page = cat.json()
                    if len(page["results"]) != page["count"]:
                        errors.append(f"find page of {len(page['results'])} for count {page['count']}")
                    counts = tuple(x["count"] for x in zebra.json()["results"])
                    if counts not in allowed:
                        errors.append(f"counts {counts} of no generation")
                    seen.append(counts)
                except Exception as exc:  # noqa: BLE001 - a failed request is what this test looks for
                    errors.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for change in changes:
            # a few rounds of requests on this generation first (more than one in flight per thread)
            mark = len(seen) + 2 * len(threads)
            assert wait_until(lambda mark=mark: len(seen) >= mark or errors, timeout=60) and not errors, errors[:5]
            change()
    finally:
        done.set()
        for t in threads:
            t.join(120)
    assert not errors, errors[:5]
    assert set(seen) == allowed  # each generation was served while the others were requested
    final = live[-1]
    assert _count(c, "cat") == _naive(final, "cat") and _count(c, "ZEBRA_77") == _naive(final, "ZEBRA_77")


def test_info_of_a_removed_generation_says_open_again(tmp_path):
    from retrieval import Index
    from retrieval.errors import IndexFormatError
    from retrieval.update import add, delete

    Index.build([write_corpus(tmp_path / "c.jsonl")], tmp_path / "idx", id_field="id", dense=False).close()
    old = Index.open(tmp_path / "idx")
    try:
        assert old.info()["documents"] == len(DOCS)
        add(tmp_path / "idx", [_jsonl(tmp_path / "new.jsonl", NEW)], id_field="id")
        delete(tmp_path / "idx", ["new1"])
        assert not old.root.exists()  # two changes later, its generation is removed
        with pytest.raises(IndexFormatError, match="open it again"):
            old.info()
    finally:
        old.close()


def test_replaced_generation_is_closed_after_its_last_request(tmp_path):
    """A request still running on the old generation keeps it open across the swap; the old Index is
    closed once that request's response is sent, and new requests go to the new generation."""
    from fastapi.testclient import TestClient

    from retrieval import Index
    from retrieval.serve.app import ServeConfig, create_app, open_state
    from retrieval.update import add

    Index.build([write_corpus(tmp_path / "c.jsonl")], tmp_path / "idx", id_field="id", dense=False).close()
    state = open_state(ServeConfig(indexes=[("i", str(tmp_path / "idx"))], rerank=False, warm_up=False))
    live = state.indexes["i"]
    old = live.current
    entered, go, closed = threading.Event(), threading.Event(), []
    count_many, close = old.count_many, old.close

    def slow_count_many(*args, **kwargs):
        entered.set()
        assert go.wait(30)
        return count_many(*args, **kwargs)

    old.count_many = slow_count_many
    old.close = lambda: (closed.append(True), close())
    with TestClient(create_app(state)) as client:
        slow = {}
        t = threading.Thread(target=lambda: slow.update(r=client.post("/v1/i/count", json={"query": "cat"})))
        t.start()
        assert entered.wait(30)
        add(tmp_path / "idx", [_jsonl(tmp_path / "new.jsonl", NEW)], id_field="id")
        assert client.post("/v1/i/count", json={"query": "ZEBRA_77"}).json()["count"] == 3
        assert live.current is not old and not closed  # swapped, but still held by the slow request
        go.set()
        t.join(30)
        assert slow["r"].status_code == 200 and slow["r"].json()["count"] == _naive(DOCS, "cat")
        assert closed == [True] and not live._users and not live._retired


def test_dense_search_follows_an_add(tmp_path):
    """A dense index: after an add, a dense query finds a new document (its vectors are in the new
    generation's FAISS index, searched with the model the server had loaded)."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("faiss")
    from retrieval import Index
    from retrieval.update import add

    Index.build([write_corpus(tmp_path / "c.jsonl")], tmp_path / "idx", id_field="id", dense=True, recipe="flat").close()
    s = Server(str(tmp_path / "idx"), "--no-rerank")
    try:
        with httpx.Client(base_url=s.url, timeout=120) as c:
            body = {"query": "zebras grazing in a striped herd", "mode": "dense", "k": 3}
            before = _ok(c.post("/v1/idx/query", json=body))["results"]
            assert "new1" not in {h["ext_id"] for h in before}
            add(tmp_path / "idx", [_jsonl(tmp_path / "new.jsonl", NEW)], id_field="id")
            after = _ok(c.post("/v1/idx/query", json=body))["results"]
            assert after[0]["ext_id"] in ("new1", "new2")
            local = Index.open(tmp_path / "idx")
            try:  # the server's answer is the freshly opened index's answer
                want = local.search(body["query"], k=3, mode="dense", rerank=False)
                assert [h["passage_id"] for h in after] == [h.passage_id for h in want]
            finally:
                local.close()
    finally:
        assert s.stop() == 0
    assert "Traceback" not in s.stderr and "not opened ahead" not in s.stderr, s.stderr
