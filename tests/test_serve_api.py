"""`rtv serve` end to end: a real server (uvicorn on 127.0.0.1, started by the CLI) over real indexes,
checked against the local Index's own answers and a naive scan of the corpus; limits, auth and
errors; the remote client `retrieval.connect` and Retriever / LangChain / LlamaIndex over it."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from _oracles import naive_occurrences
from _serve_fixtures import DOCS, Server, doc_bytes, write_corpus

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("faiss")
    from _hybrid_fixtures import train_tiny_cross_encoder
    from retrieval import Index

    tmp = tmp_path_factory.mktemp("serve")
    src = write_corpus(tmp / "c.jsonl")
    Index.build([src], tmp / "main-idx", id_field="id", dense=True, recipe="flat").close()
    Index.build([src], tmp / "exact-idx", id_field="id", dense=False).close()
    reranker = train_tiny_cross_encoder(tmp / "ce", steps=20)  # any real cross-encoder: compared with local
    return tmp, reranker


@pytest.fixture(scope="module")
def local(built):
    from retrieval import Index

    idx = Index.open(built[0] / "main-idx")
    yield idx
    idx.close()


@pytest.fixture(scope="module")
def server(built):
    tmp, reranker = built
    s = Server(f"docs={tmp / 'main-idx'}", str(tmp / "exact-idx"), "--token", TOKEN, "--reranker", str(reranker),
               "--limit", "max_k=20", "--limit", "max_batch=8", "--limit", "max_body_bytes=65536",
               "--limit", "max_pattern_bytes=64", "--limit", "max_query_bytes=128")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=120) as c:
        yield c


def post(http, path, body, status=200):
    r = http.post(path, json=body)
    assert r.status_code == status, r.text
    data = r.json()
    if status == 200:
        assert isinstance(data.pop("latency_ms"), float)
    return data


def naive_count(pattern: str) -> int:
    return len(naive_occurrences(doc_bytes(), pattern.encode("utf-8")))


# -- server basics ---------------------------------------------------------------------------------
def test_health_and_auth(server):
    r = httpx.get(server.url + "/health")  # no token
    assert r.status_code == 200 and r.json()["status"] == "ok" and "latency_ms" in r.json()
    v1 = httpx.get(server.url + "/v1", headers=AUTH).json()
    assert r.json()["generations"] == {row["name"]: row["generation"] for row in v1["indexes"]}
    assert all(g.startswith("gen-") for g in r.json()["generations"].values())
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.post(server.url + "/v1/docs/count", json={"query": "cat"}, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "unauthorized" and "Bearer" in r.json()["error"]["message"]
    r = httpx.get(server.url + "/v1", headers=AUTH)
    names = {row["name"]: row for row in r.json()["indexes"]}
    assert set(names) == {"docs", "exact-idx"}  # NAME=DIR, and the directory's own name
    assert names["docs"]["dense"] and not names["exact-idx"]["dense"]
    assert names["docs"]["documents"] == len(DOCS)


def test_openapi_page_and_no_cors_by_default(server, http):
    spec = http.get("/openapi.json").json()
    for op in ("count", "find", "cnf", "extract", "snippet", "ngrams", "query", "contamination", "info"):
        assert f"/v1/{{name}}/{op}" in spec["paths"], op
    assert http.get("/docs").status_code == 200
    page = http.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert "script-src 'self'" in page.headers["content-security-policy"]
    r = http.post("/v1/docs/count", json={"query": "cat"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_info_hides_the_server_directory(http, local, built):
    info = http.get("/v1/docs/info").json()
    want = local.info()
    assert info["documents"] == want["documents"] and info["passages"] == want["passages"]
    assert info["shards"] == want["shards"] and info["generation"] == want["generation"]
    assert str(built[0]) not in json.dumps(info["path"]) and info["path"] == "docs"


# -- exact search against the naive scan and the local index ---------------------------------------
PATTERNS = ["the", "cat", "the quick brown fox", "café", "日本", "Nile", "database backup", "zebra", "e.\xff",
            "ERR_CONN_RESET_42", "s. Cats"]


def test_count_single_and_batched(http, local):
    for p in PATTERNS:
        assert post(http, "/v1/docs/count", {"query": p}) == {"query": p, "count": naive_count(p)}
    rows = post(http, "/v1/docs/count", {"queries": PATTERNS[:8]})["results"]
    assert [r["count"] for r in rows] == local.count_many(PATTERNS[:8]).tolist()
    assert [r["query"] for r in rows] == PATTERNS[:8]


def test_find_pages_cover_every_occurrence(http):
    for p in ("the", "cat", "日本", "Nile"):
        seen, offset = [], 0
        while offset is not None:
            page = post(http, "/v1/docs/find", {"query": p, "offset": offset, "limit": 3, "context": 5})
            assert page["count"] == naive_count(p) and len(page["results"]) <= 3
            for r in page["results"]:
                assert r["ext_id"] == DOCS[r["doc_id"]][0]
                assert p in r["snippet"]
            seen += [(r["doc_id"], r["offset"]) for r in page["results"]]
            offset = page["next_offset"]
        assert sorted(seen) == naive_occurrences(doc_bytes(), p.encode())
    many = post(http, "/v1/docs/find", {"queries": ["cat", "dog"], "limit": 100, "snippets": False})["results"]
    assert [m["count"] for m in many] == [naive_count("cat"), naive_count("dog")]
    assert all("snippet" not in r for m in many for r in m["results"])


def test_cnf(http):
    clauses = [["cat", "dog"], ["pet", "home"]]
    page = post(http, "/v1/docs/cnf", {"clauses": clauses, "limit": 100})
    want = [i for i, t in enumerate(doc_bytes()) if (b"cat" in t or b"dog" in t) and (b"pet" in t or b"home" in t)]
    assert [r["doc_id"] for r in page["results"]] == want and page["count"] == len(want)
    assert [r["ext_id"] for r in page["results"]] == [DOCS[i][0] for i in want]
    first = post(http, "/v1/docs/cnf", {"clauses": [["the"]], "limit": 2})
    rest = post(http, "/v1/docs/cnf", {"clauses": [["the"]], "offset": first["next_offset"], "limit": 100})
    assert [r["doc_id"] for r in first["results"] + rest["results"]] == \
        [i for i, t in enumerate(doc_bytes()) if b"the" in t]
    assert rest["next_offset"] is None


def test_extract_and_snippet(http, local):
    for d in (0, 8, 9):
        got = post(http, "/v1/docs/extract", {"doc_id": d})
        assert got == {"doc_id": d, "ext_id": DOCS[d][0], "text": DOCS[d][1]}
    rows = post(http, "/v1/docs/extract", {"doc_ids": [3, 1]})["results"]
    assert [r["text"] for r in rows] == [DOCS[3][1], DOCS[1][1]]
    for d, off, width in ((9, 1, 7), (8, 3, 10), (0, 0, 12)):
        got = post(http, "/v1/docs/snippet", {"doc_id": d, "offset": off, "width": width})
        assert got["snippet"] == local.snippet(d, off, width)
        assert got["snippet"] in DOCS[d][1]
    items = [{"doc_id": 9, "offset": 0, "width": 9}, {"doc_id": 2, "offset": 2, "width": 6}]
    rows = post(http, "/v1/docs/snippet", {"items": items})["results"]
    assert [r["snippet"] for r in rows] == [local.snippet(**{"doc": i["doc_id"], "offset": i["offset"], "width": i["width"]})
                                           for i in items]


def test_ngrams_against_naive_counts(http, local):
    text = "the quick brown fox jumps over the lazy cat"
    for unit, n in (("tokens", 3), ("chars", 6)):
        got = post(http, "/v1/docs/ngrams", {"text": text, "n": n, "unit": unit})
        counts = [g["count"] for g in got["ngrams"]]
        assert counts == local.ngram_counts(text, n, unit).tolist()
        assert counts == [naive_count(g["ngram"]) for g in got["ngrams"]]
        assert all(text.encode()[g["start"]:].startswith(g["ngram"].encode()) for g in got["ngrams"])
    assert [g["ngram"] for g in got["ngrams"]][:2] == ["the qu", "he qui"]


# -- search against the local index ----------------------------------------------------------------
QUERIES = ["pet animals kept at home", "write \"database backup\" to disk", "longest rivers", "ERR_CONN_RESET_42"]


def same_hits(got: list[dict], hits) -> None:
    assert [g["passage_id"] for g in got] == [h.passage_id for h in hits]
    for g, h in zip(got, hits):
        assert g["score"] == pytest.approx(h.score, rel=1e-4, abs=1e-5)
        assert g["ext_id"] == h.ext_id and g["text"] == h.text and g["spans"] == [list(s) for s in h.spans]
        assert set(g["stages"]) == set(h.stages)
        for st in h.stages:
            assert g["stages"][st]["rank"] == h.stages[st]["rank"]


@pytest.mark.parametrize("mode", ["dense", "lexical", "exact", "hybrid"])
def test_query_matches_local_search(http, local, mode):
    for fusion in (("weighted", "rrf") if mode == "hybrid" else ("weighted",)):
        want = local.search_batch(QUERIES, k=5, mode=mode, rerank=False, fusion=fusion)
        got = post(http, "/v1/docs/query", {"queries": QUERIES, "k": 5, "mode": mode, "rerank": False, "fusion": fusion})
        for q, row, hits in zip(QUERIES, got["results"], want):
            assert row["query"] == q and row["reranked"] is False
            assert [r["rank"] for r in row["results"]] == list(range(1, len(hits) + 1))
            same_hits(row["results"], hits)
    one = post(http, "/v1/docs/query", {"query": QUERIES[1], "k": 3, "mode": mode, "rerank": False})
    same_hits(one["results"], local.search(QUERIES[1], k=3, mode=mode, rerank=False))


def test_query_reranks_with_the_servers_model(http, local, built):
    want = local.search("pet animals kept at home", k=5, mode="hybrid", rerank=True, reranker=str(built[1]))
    got = post(http, "/v1/docs/query", {"query": "pet animals kept at home", "k": 5, "rerank": True})
    assert got["reranked"] is True and "rerank" in got["results"][0]["stages"]
    same_hits(got["results"], want)
    auto = post(http, "/v1/docs/query", {"query": "pet animals kept at home", "k": 5})  # auto: hybrid reranks
    assert auto["reranked"] is True
    dense = post(http, "/v1/docs/query", {"query": "pet animals kept at home", "k": 5, "mode": "dense"})
    assert dense["reranked"] is False  # auto reranks hybrid only, as the CLI


def test_concurrent_queries_are_batched_correctly(http, local):
    """Many clients at once: the batcher merges their searches; each still gets its own answer."""
    qs = [f"{w} {x}" for w in ("cats", "rivers", "disk", "socket") for x in ("at home", "on earth", "nightly")]
    want = {q: [h.passage_id for h in hits] for q, hits in zip(qs, local.search_batch(qs, k=4, mode="dense"))}

    def one(q):
        return q, [h["passage_id"] for h in post(http, "/v1/docs/query", {"query": q, "k": 4, "mode": "dense"})["results"]]

    with ThreadPoolExecutor(12) as pool:
        got = dict(pool.map(one, qs * 2))
    assert got == want


# -- contamination: the server's stream against the library's own run over the same file ----------
def bench_entries():
    return [
        {"id": "copied", "prompt": DOCS[3][1]},
        {"id": "half", "prompt": DOCS[6][1][:60] + " and then something else entirely that no document says."},
        {"id": "clean", "prompt": "An entirely novel sentence about nothing in particular, written for this test."},
        {"id": "short", "prompt": "tiny"},
        {"id": "uni", "prompt": DOCS[9][1] + DOCS[8][1]},
    ]


def local_run(local, tmp_path, entries, **cfg):
    from retrieval.contamination import BenchmarkRun, ContaminationConfig

    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    run = BenchmarkRun(local, path, ["prompt"], None, ContaminationConfig(**cfg), name="bench")
    results = [r.to_json() for r in run]
    return results, run.summary


def check_stream(lines, want, summary):
    *entries, last = lines
    assert entries == want
    assert last["type"] == "summary" and "latency_ms" in last
    for key in ("buckets", "histogram", "entries", "scored", "too_short", "windows", "windows_found", "mean_score"):
        assert last[key] == summary.to_json()[key], key
    assert [w["id"] for w in last["worst"]] == [r.id for r in summary.worst()]


def test_contamination_json_entries(http, local, tmp_path):
    want, summary = local_run(local, tmp_path, bench_entries())
    r = http.post("/v1/docs/contamination", json={"entries": bench_entries(), "fields": ["prompt"], "name": "bench"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.text.splitlines()]
    check_stream(lines, want, summary)
    assert {e["id"]: e["bucket"] for e in lines[:-1]}["copied"] == "dirty"


def test_contamination_jsonl_upload_streams(http, local, tmp_path):
    want, summary = local_run(local, tmp_path, bench_entries(), unit="tokens", window=4)
    body = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in bench_entries()).encode()
    lines = []
    with http.stream("POST", "/v1/docs/contamination", content=body,
                     params={"fields": "prompt", "unit": "tokens", "window": 4, "name": "bench"},
                     headers={"Content-Type": "application/x-ndjson"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(json.loads(line))
    check_stream(lines, want, summary)


def test_contamination_refusals(http):
    bad = http.post("/v1/docs/contamination", json={"entries": [{"q": "x"}], "fields": ["prompt"]})
    assert bad.status_code == 400 and "unknown field 'prompt'" in bad.json()["error"]["message"]
    r = http.post("/v1/docs/contamination", json={"entries": [{"prompt": "x"}], "path": "/etc/passwd"})
    assert r.status_code == 422 and r.json()["error"]["argument"] == "path"  # no file is ever named
    r = http.post("/v1/docs/contamination", content=b'{"prompt": "a"}\nnot json\n',
                  headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 400 and "line 2" in r.json()["error"]["message"]
    r = http.post("/v1/docs/contamination", content=b"x", headers={"Content-Type": "text/csv"})
    assert r.status_code == 415


# -- limits and bad input: 4xx JSON naming the limit or argument ------------------------------------
@pytest.mark.parametrize("path, body, status, limit", [
    ("/v1/docs/query", {"query": "cats", "k": 21}, 422, "max_k"),
    ("/v1/docs/count", {"queries": ["a"] * 9}, 422, "max_batch"),
    ("/v1/docs/count", {"query": "x" * 65}, 422, "max_pattern_bytes"),
    ("/v1/docs/count", {"query": "é" * 33}, 422, "max_pattern_bytes"),  # bytes, not characters
    ("/v1/docs/find", {"query": "the", "limit": 5000}, 422, "max_find_limit"),
    ("/v1/docs/snippet", {"doc_id": 0, "offset": 0, "width": 10**6}, 422, "max_snippet_bytes"),
    ("/v1/docs/count", {"query": "x" * 70000}, 413, "max_body_bytes"),
    ("/v1/docs/query", {"query": "cats " * 30}, 422, "max_query_bytes"),
])
def test_limits(http, path, body, status, limit):
    r = http.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == "limit" and err["limit"] == limit and limit in err["message"]
    assert err["value"] > err["max"]


def test_streamed_body_over_the_limit(server):
    def chunks():
        for _ in range(20):
            yield b" " * 8192

    r = httpx.post(server.url + "/v1/docs/count", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["limit"] == "max_body_bytes"


@pytest.mark.parametrize("path, body, status, words", [
    ("/v1/docs/query", {"query": "cats", "k": "ten"}, 422, ["k"]),
    ("/v1/docs/query", {"query": "cats", "mode": "fuzzy"}, 400, ["mode", "hybrid"]),
    ("/v1/docs/query", {"query": "cats", "fusion": "max"}, 400, ["fusion", "rrf"]),
    ("/v1/docs/query", {"query": "   "}, 400, ["empty query"]),
    ("/v1/docs/query", {"query": "cats", "k": 50, "mode": "dense"}, 422, ["max_k"]),
    ("/v1/docs/query", {"query": "cats", "reranker": "/etc"}, 422, ["reranker", "no such argument"]),
    ("/v1/exact-idx/query", {"query": "cats", "mode": "dense"}, 400, ["dense", "lexical"]),
    ("/v1/docs/count", {}, 422, ["query", "queries"]),
    ("/v1/docs/count", {"query": "a", "queries": ["b"]}, 422, ["query", "queries"]),
    ("/v1/docs/extract", {"doc_id": 99}, 422, ["doc_id 99", "0..11"]),
    ("/v1/docs/extract", {"doc_id": -1}, 422, ["doc_id"]),
    ("/v1/nope/count", {"query": "a"}, 404, ["nope", "docs", "exact-idx"]),
    ("/v1/..%2F..%2Fetc/count", {"query": "a"}, 404, []),
    ("/v1/docs/cnf", {"clauses": [[]]}, 422, ["clauses"]),
])
def test_bad_input_is_a_4xx_json_error(http, path, body, status, words):
    r = http.post(path, json=body)
    assert r.status_code == status, r.text
    msg = r.json()["error"]["message"]
    for w in words:
        assert w in msg, (w, msg)
    assert "Traceback" not in r.text


def test_bad_json_and_wrong_content_type(http):
    r = http.post("/v1/docs/count", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]
    r = http.post("/v1/docs/count", content=b"query=a", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422 and "application/json" in r.json()["error"]["message"]


# -- the remote client -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def remote(server):
    from retrieval import connect

    idx = connect(server.url + "/docs", token=TOKEN)
    yield idx
    idx.close()


def test_connect_refusals(server):
    from retrieval import InputError, connect
    from retrieval.serve.client import RemoteError

    with pytest.raises(InputError, match="Bearer"):
        connect(server.url + "/docs")
    with pytest.raises(InputError, match="no index named 'nope'"):
        connect(server.url + "/nope", token=TOKEN)
    with pytest.raises(InputError, match="HOST:PORT/NAME"):
        connect(server.url, token=TOKEN)
    with pytest.raises(RemoteError, match="cannot reach"):
        connect("http://127.0.0.1:9/docs", timeout=2)


def test_remote_index_has_the_local_answers(remote, local):
    assert remote.n_documents == local.n_documents
    for p in PATTERNS:
        assert remote.count(p) == local.count(p)
    np.testing.assert_array_equal(remote.count_many(PATTERNS[:8]), local.count_many(PATTERNS[:8]))
    for p, off, lim in (("the", 0, 100), ("the", 3, 4), ("cat", 0, 2)):
        for a, b in zip(remote.find(p, offset=off, limit=lim), local.find(p, offset=off, limit=lim)):
            np.testing.assert_array_equal(a, b)
    clauses = [["cat", "dog"], ["the"]]
    np.testing.assert_array_equal(remote.cnf(clauses), local.cnf(clauses))
    np.testing.assert_array_equal(remote.docs("Nile"), local.docs("Nile"))
    assert [remote.extract(d) for d in range(len(DOCS))] == [local.extract(d) for d in range(len(DOCS))]
    assert remote.snippet(9, 2, 8) == local.snippet(9, 2, 8)
    np.testing.assert_array_equal(remote.ngram_counts("the quick brown fox jumps", 2),
                                  local.ngram_counts("the quick brown fox jumps", 2))
    assert remote.info()["documents"] == local.info()["documents"]
    for mode in ("dense", "lexical", "exact", "hybrid"):
        got = remote.search_batch(QUERIES, k=4, mode=mode, rerank=False)
        want = local.search_batch(QUERIES, k=4, mode=mode, rerank=False)
        for g, w in zip(got, want):
            assert [(h.passage_id, h.doc_id, h.text, h.spans, h.ext_id, h.metadata) for h in g] == \
                [(h.passage_id, h.doc_id, h.text, h.spans, h.ext_id, h.metadata) for h in w]
            assert [h.score for h in g] == pytest.approx([h.score for h in w], rel=1e-4, abs=1e-5)
    with pytest.raises(Exception, match="max_k"):
        remote.search("cats", k=21)


def test_remote_contamination(remote, local, tmp_path):
    want, summary = local_run(local, tmp_path, bench_entries())
    lines = list(remote.contamination(bench_entries(), fields=["prompt"], name="bench"))
    check_stream(lines, want, summary)


def test_retriever_and_adapters_take_a_url(server, local):
    from retrieval import Retriever
    from retrieval.errors import InputError

    url = server.url + "/docs"
    local_r = Retriever(local, mode="hybrid", k=4, rerank=False)
    with Retriever(url, mode="hybrid", k=4, rerank=False, token=TOKEN) as r:
        assert r.remote and r.rerank is False
        for q in QUERIES:
            assert [h.passage_id for h in r.retrieve(q)] == [h.passage_id for h in local_r.retrieve(q)]
        assert [[h.passage_id for h in hs] for hs in r.batch(QUERIES[:2], k=2)] == \
            [[h.passage_id for h in hs] for hs in local_r.batch(QUERIES[:2], k=2)]
        from retrieval.integrations.langchain import RtvRetriever as LC
        from retrieval.integrations.llamaindex import RtvRetriever as LI

        docs = LC(retriever=r, k=3).invoke(QUERIES[0])
        assert [d.metadata["passage_id"] for d in docs] == [h.passage_id for h in local_r.retrieve(QUERIES[0], k=3)]
        nodes = LI(r, k=3).retrieve(QUERIES[0])
        assert [n.node.metadata["passage_id"] for n in nodes] == [d.metadata["passage_id"] for d in docs]
    lc = LC.from_path(url, k=2, rerank=False, token=TOKEN)
    assert len(lc.invoke("rivers")) == 2
    with pytest.raises(InputError, match="server's cross-encoder"):
        Retriever(url, reranker="/some/dir", token=TOKEN)


# -- the command line ------------------------------------------------------------------------------
def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "rtv_cli.main", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, words", [
    (["serve", "/no/such/index"], ["no such index directory"]),
    (["serve", "bad name=/tmp"], ["index name 'bad name'"]),
    (["serve", "IDX", "--limit", "max_q=3"], ["--limit", "max_k"]),
    (["serve", "IDX", "IDX"], ["given twice"]),
])
def test_cli_errors_are_one_line(built, args, words):
    args = [str(built[0] / "exact-idx") if a == "IDX" else a for a in args]
    r = run_cli(*args)
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("Error:")


def test_cli_port_in_use_and_graceful_stop(server, built):
    port = server.url.rsplit(":", 1)[1]
    r = run_cli("serve", str(built[0] / "exact-idx"), "--port", port)
    assert r.returncode == 1 and "cannot listen there" in r.stderr and "Traceback" not in r.stderr
    s = Server(str(built[0] / "exact-idx"))
    assert httpx.post(s.url + "/v1/exact-idx/count", json={"query": "the"}).json()["count"] == naive_count("the")
    assert s.stop() == 0  # SIGTERM: uvicorn finishes, the lifespan closes the pool and indexes
    assert "Traceback" not in s.stderr and s.stderr.rstrip().endswith("rtv serve: stopped")


def test_accepted_connections_have_tcp_nodelay():
    """The listening socket rtv serve makes: asyncio turns Nagle off on the connections it accepts
    (else each small response waits for the client's delayed ACK, about 40 ms)."""
    from rtv_cli.serve_cmd import _bind

    sock = _bind("127.0.0.1", 0)

    async def accept_one():
        got = asyncio.get_running_loop().create_future()

        async def on_conn(reader, writer):
            got.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_conn, sock=sock)  # as uvicorn serves sockets=[sock]
        _, w = await asyncio.open_connection(*sock.getsockname())
        value = await asyncio.wait_for(got, 10)
        w.close()
        server.close()
        return value

    assert asyncio.run(accept_one()) != 0
