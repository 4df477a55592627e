"""The rtv HTTP server: FastAPI routes over the library's public API.

    state = open_state(ServeConfig(indexes=[("docs", "my-index")], token="T"))   # opens + warms up
    app = create_app(state)                                                       # an ASGI app
    # rtv serve runs it with uvicorn on 127.0.0.1 (cli/rtv_cli/serve_cmd.py)

Routes (every JSON answer carries `latency_ms`, the time spent in the server):
    GET  /                          the web page (static HTML + JS, no build step)
    GET  /health                    {"status": "ok", "version", "generations": {index: generation}}; no token needed
    GET  /docs, /openapi.json       OpenAPI (FastAPI)
    GET  /v1                        indexes (with the generation served), limits, version, reranker
    GET  /v1/{index}/info           rtv info's JSON (the server's directory left out)
    POST /v1/{index}/count          {"query"} | {"queries": [...]}
    POST /v1/{index}/find           {"query" | "queries", "offset", "limit", "context", "snippets"}
    POST /v1/{index}/cnf            {"clauses": [[a, b], [c]] | "queries": [clauses...], "offset", "limit"}
    POST /v1/{index}/extract        {"doc_id"} | {"doc_ids": [...]}
    POST /v1/{index}/snippet        {"doc_id", "offset", "width"} | {"items": [...]}
    POST /v1/{index}/ngrams         {"text", "n", "unit"} | {"texts": [...], "n", "unit"}
    POST /v1/{index}/query          {"query" | "queries", "mode", "k", "rerank", "fusion", "depth", ...}
    POST /v1/{index}/contamination  {"entries": [...], "fields", ...} or a JSONL body (options in the
                                    query string); streams JSON lines: entries, then the summary

Field names are those of the CLI's --json output. The index name in a path only selects one of the
indexes opened at start (a dict lookup): nothing a request sends reaches the filesystem, and a
search's reranker is the one the server was started with. Each index follows its live generation
(serve/live.py: rtv add / delete / compact show in the next request), and a request reads the
generation that was live when it arrived, whole. Library calls run in a thread pool (the C++ core
releases the GIL); searches are batched across concurrent requests with the same options, so the
embedding model encodes several queries in one call while others run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from ..errors import InputError, MissingDependencyError, RtvError, require
from ..options import DEFAULT_FUSION, DEFAULT_K, DEFAULT_MODE, DEFAULT_RERANK, FUSIONS, MODES
from .limits import ApiError, Limits, check_batch, check_max, check_pattern, over_limit
from .live import LeaseRelease, LiveIndex

require("fastapi", "serve")  # a missing extra says which pip install to run

from fastapi import Depends, FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse, Response, StreamingResponse  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field, ValidationError  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

log = logging.getLogger("rtv.serve")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CONFIG_ENV = "RTV_SERVE_CONFIG"  # the config of worker processes (--workers N > 1), as JSON


# -- configuration and state ----------------------------------------------------------------------
@dataclass
class ServeConfig:
    indexes: list[tuple[str, str]]  # (name, directory)
    token: str | None = None
    threads: int = 4  # library calls in flight at once (C++ releases the GIL)
    search_slots: int = 2  # search batches in flight at once
    max_search_batch: int = 64  # queries in one batched search call
    cors: list[str] = field(default_factory=list)
    reranker: str | None = None  # a cross-encoder directory; None: the default one when on disk
    rerank: bool = True  # False: never rerank (no model loaded)
    device: str = "auto"
    limits: Limits = field(default_factory=Limits)
    warm_up: bool = True

    def to_json(self) -> str:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["limits"] = self.limits.to_json()
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "ServeConfig":
        d = json.loads(text)
        d["limits"] = Limits(**d["limits"])
        d["indexes"] = [tuple(x) for x in d["indexes"]]
        return cls(**d)


def parse_index_arg(arg: str) -> tuple[str, str]:
    """NAME=DIR or DIR (the name is the directory's own name)."""
    name, sep, path = arg.partition("=")
    if not sep:
        name, path = os.path.basename(os.path.normpath(arg)), arg
    if not NAME_RE.match(name):
        raise InputError(f"index name {name!r} (from {arg!r}): use letters, digits, '.', '_' or '-' "
                         f"(at most 64, not starting with '.', '_' or '-'); set one with NAME=DIR")
    return name, path


class State:
    """What the server holds open: indexes, the reranker, the thread pool, the search batcher."""

    def __init__(self, config: ServeConfig, indexes: dict, reranker):
        self.config = config
        self.limits = config.limits
        self.indexes = {name: LiveIndex(name, idx, config.device) for name, idx in indexes.items()}
        self.reranker = reranker  # a retrieval.hybrid.rerank.Reranker or None
        self.pool = ThreadPoolExecutor(max_workers=max(1, config.threads), thread_name_prefix="rtv-serve")
        # searches (model calls) get threads of their own, so a count never waits behind an embedding
        self.search_pool = ThreadPoolExecutor(max_workers=max(1, config.search_slots), thread_name_prefix="rtv-search")
        self.batcher: SearchBatcher | None = None  # made on the event loop (lifespan)
        self.on_ready = None  # called once the server accepts requests

    async def index(self, name: str):
        """The live generation of index `name`, held open for the request until its response is sent."""
        live = self.indexes.get(name)
        if live is None:
            raise ApiError(404, "unknown_index", f"no index named {name!r} here; this server holds: "
                           f"{', '.join(sorted(self.indexes))}", index=name, indexes=sorted(self.indexes))
        return await live.acquire()

    async def run(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: fn(*args, **kwargs))

    async def run_search(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.search_pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.search_pool.shutdown(wait=True)
        for live in self.indexes.values():
            live.close()


def open_state(config: ServeConfig) -> State:
    """Open every index (Index.open), load the models once (a first search warms them up)."""
    from .. import Index
    from ..hybrid.rerank import resolve_reranker

    names = [n for n, _ in config.indexes]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"index name {dup[0]!r} given twice; name them apart with NAME=DIR")
    if not config.indexes:
        raise InputError("no index to serve; give at least one index directory")
    indexes = {}
    for name, path in config.indexes:
        indexes[name] = Index.open(path, device=config.device)
    reranker = None
    if config.rerank:
        reranker = resolve_reranker("auto", config.reranker, mode="hybrid", device=config.device)
    if config.warm_up:
        for idx in indexes.values():
            if idx.dense is not None:  # load the embedding model and FAISS once, now
                idx.search_batch(["warm up"], k=1, mode="dense", rerank=False)
        if reranker is not None:
            reranker.score("warm up", ["warm up"])
    return State(config, indexes, reranker)


# -- the search batcher ---------------------------------------------------------------------------
class SearchBatcher:
    """Queues searches; each free slot takes every queued request with the same options (up to
    max_batch queries) and runs them as one search_batch call in the pool. One client waits for
    nothing; many clients share embedding calls."""

    def __init__(self, state: State, slots: int, max_batch: int):
        self.state = state
        self.max_batch = max(1, max_batch)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.slots = asyncio.Semaphore(max(1, slots))
        self.task = asyncio.get_running_loop().create_task(self._loop())
        self.pending: set = set()

    async def search(self, index, queries: list[str], options: dict) -> list:
        fut = asyncio.get_running_loop().create_future()
        # one batch, one Index: requests leased to another generation of the same index wait
        key = (id(index), json.dumps(options, sort_keys=True, default=repr))
        await self.queue.put((key, queries, options, fut, index))
        return await fut

    async def _loop(self) -> None:
        while True:
            first = await self.queue.get()
            await self.slots.acquire()
            group, rest, n = [first], [], len(first[1])
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if item[0] == first[0] and n + len(item[1]) <= self.max_batch:
                    group.append(item)
                    n += len(item[1])
                else:
                    rest.append(item)
            for item in rest:  # others wait for the next free slot, in order
                self.queue.put_nowait(item)
            t = asyncio.get_running_loop().create_task(self._run(group))
            self.pending.add(t)
            t.add_done_callback(self.pending.discard)

    async def _run(self, group) -> None:
        try:
            options, index = group[0][2], group[0][4]
            queries = [q for _, qs, _, _, _ in group for q in qs]
            try:
                results = await self.state.run_search(index.search_batch, queries, **options)
            except Exception as exc:  # noqa: BLE001
                if len(group) == 1:
                    group[0][3].set_exception(exc)
                    return
                # one request's queries failed the batch: run each request alone
                for _, qs, _, fut, _ in group:
                    try:
                        fut.set_result(await self.state.run_search(index.search_batch, qs, **options))
                    except Exception as one:  # noqa: BLE001
                        fut.set_exception(one)
                return
            i = 0
            for _, qs, _, fut, _ in group:
                if not fut.cancelled():
                    fut.set_result(results[i:i + len(qs)])
                i += len(qs)
        finally:
            self.slots.release()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)


# -- request bodies -------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CountRequest(_Body):
    query: str | None = Field(None, description="one string (exact bytes)")
    queries: list[str] | None = Field(None, description="several strings (the batched form)")
    where: str | None = Field(None, description="only documents whose metadata match, e.g. \"lang = 'en'\" "
                              "(the --where language: docs/cli.md)")


class FindRequest(_Body):
    query: str | None = None
    queries: list[str] | None = None
    offset: int = Field(0, ge=0, description="skip this many occurrences (paging)")
    limit: int = Field(10, ge=0, description="occurrences in this page")
    context: int = Field(40, ge=0, description="snippet bytes on each side")
    snippets: bool = Field(True, description="false: doc_id and offset only")
    where: str | None = Field(None, description="only documents whose metadata match, e.g. \"lang = 'en'\" "
                              "(the --where language: docs/cli.md)")


class CnfRequest(_Body):
    clauses: list[list[str]] | None = Field(None, description="an AND of OR-groups: [[a, b], [c]]")
    queries: list[list[list[str]]] | None = Field(None, description="several CNF queries")
    offset: int = Field(0, ge=0)
    limit: int = Field(100, ge=0)
    where: str | None = Field(None, description="only documents whose metadata match, e.g. \"lang = 'en'\" "
                              "(the --where language: docs/cli.md)")


class ExtractRequest(_Body):
    doc_id: int | None = None
    doc_ids: list[int] | None = None


class SnippetItem(_Body):
    doc_id: int
    offset: int = Field(ge=0)
    width: int = Field(ge=0)


class SnippetRequest(_Body):
    doc_id: int | None = None
    offset: int | None = Field(None, ge=0)
    width: int | None = Field(None, ge=0)
    items: list[SnippetItem] | None = None


class NgramRequest(_Body):
    text: str | None = None
    texts: list[str] | None = None
    n: int = Field(13, ge=1)
    unit: Literal["tokens", "chars", "bytes"] = "tokens"
    where: str | None = Field(None, description="only documents whose metadata match, e.g. \"lang = 'en'\" "
                              "(the --where language: docs/cli.md)")


class QueryRequest(_Body):
    query: str | None = None
    queries: list[str] | None = None
    mode: str = Field(DEFAULT_MODE, description=" | ".join(MODES))
    k: int = DEFAULT_K
    rerank: Literal["auto"] | bool = Field(DEFAULT_RERANK, description="auto: the server's cross-encoder for "
                                           "hybrid when it has one; true: must rerank; false: never")
    fusion: str = Field(DEFAULT_FUSION, description=" | ".join(FUSIONS))
    depth: int | None = Field(None, ge=1, description="candidates per stage (default max(100, k))")
    rerank_top_n: int | None = Field(None, ge=1)
    weights: dict[str, float] | None = None
    where: str | None = Field(None, description="only documents whose metadata match, e.g. \"lang = 'en'\" "
                              "(the --where language: docs/cli.md)")


class ContaminationOptions(_Body):
    fields: list[str] | None = Field(None, description="fields to check (default: the first of text, question, prompt, ...)")
    id_field: str | None = None
    name: str = Field("benchmark", description="the benchmark's name in the results")
    unit: Literal["chars", "tokens"] = "chars"
    window: int | None = Field(None, ge=1)
    thresholds: list[float] = Field([0.2, 0.8], min_length=2, max_length=2)
    max_matches: int = Field(5, ge=0, le=50)
    worst: int = Field(20, ge=0, le=1000)
    where: str | None = Field(None, description="only documents whose metadata match, e.g. \"lang = 'en'\" "
                              "(the --where language: docs/cli.md)")


class ContaminationRequest(ContaminationOptions):
    entries: list[dict[str, Any]]


def one_or_many(one, many, one_name: str, many_name: str, limits: Limits) -> tuple[list, bool]:
    if (one is None) == (many is None):
        raise ApiError(422, "invalid_argument", f"give either {one_name!r} or {many_name!r} (the batched form)",
                       argument=one_name)
    if many is not None:
        check_batch(limits, len(many), many_name)
        return list(many), False
    return [one], True


def answer(obj: dict, t0: float) -> JSONResponse:
    obj["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    return JSONResponse(obj)


# -- contamination input --------------------------------------------------------------------------
def benchmark_entries(records: Sequence, fields, id_field, positions: Sequence[str]):
    """BenchmarkEntry objects for in-memory records, with the field rules of the file reader
    (retrieval.readers.entries): the first default text field when none is named, ids from
    id_field or the first default id field, else the record's position."""
    from ..readers.entries import (DEFAULT_ID_FIELDS, DEFAULT_TEXT_FIELDS, BenchmarkEntry, has_field, field_texts,
                                   get_field)

    if not records:
        raise InputError("entries: none given; post at least one benchmark entry")
    first = records[0]
    if not isinstance(first, dict):
        raise InputError(f"entries: each must be an object with named fields, got {type(first).__name__}")
    shown = ", ".join(list(first)[:20])
    if not fields:
        found = [f for f in DEFAULT_TEXT_FIELDS if isinstance(first.get(f), str)]
        if not found:
            raise InputError(f"entries: no field named and none of {', '.join(DEFAULT_TEXT_FIELDS)} exists; "
                             f"pass fields with one of: {shown}")
        fields = [found[0]]
    for f in fields:
        if not has_field(first, f):
            raise InputError(f"fields: unknown field {f!r}; fields present: {shown}")
    if id_field is not None and not has_field(first, id_field):
        raise InputError(f"id_field: unknown field {id_field!r}; fields present: {shown}")
    if id_field is None:
        id_field = next((f for f in DEFAULT_ID_FIELDS if f in first), None)
    out = []
    for obj, pos in zip(records, positions):
        if not isinstance(obj, dict):
            raise InputError(f"entries: entry {pos} is a {type(obj).__name__}, not an object with named fields")
        raw = get_field(obj, id_field) if id_field else None
        segments, missing = [], []
        for f in fields:
            if not has_field(obj, f):
                missing.append(f)
                continue
            segments.extend((f, t) for t in field_texts(get_field(obj, f)))
        out.append(BenchmarkEntry(pos if raw is None else str(raw), segments, missing))
    if all(not any(t for _, t in e.segments) for e in out):
        raise InputError(f"entries: all {len(out)} are empty in field(s) {', '.join(fields)}; name the text fields")
    return out, fields


def parse_jsonl(body: bytes) -> tuple[list, list[str]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"the benchmark is not valid UTF-8 (byte {exc.start}); re-encode it as UTF-8") from None
    records, positions = [], []
    for lineno, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"the benchmark's line {lineno}: invalid JSON ({exc.msg}); fix or remove the line") from None
        positions.append(str(lineno))
    return records, positions


# -- middleware: body size ------------------------------------------------------------------------
class _TooLarge(StarletteHTTPException):
    def __init__(self, err: ApiError):
        super().__init__(err.status, err.body["error"]["message"])
        self.api_error = err


class BodyLimit:
    """Refuses a request body over the limit (413), by Content-Length or while it streams in."""

    def __init__(self, app, limits: Limits):
        self.app, self.limits = app, limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["path"].endswith("/contamination")
        name = "max_upload_bytes" if upload else "max_body_bytes"
        cap = getattr(self.limits, name)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            err = over_limit(self.limits, name, int(length), "request body (bytes)", status=413)
            return await JSONResponse(err.body, status_code=413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise _TooLarge(over_limit(self.limits, name, seen, "request body (bytes, so far)", status=413))
            return message

        return await self.app(scope, limited, send)


# -- the app --------------------------------------------------------------------------------------
def _static(name: str) -> bytes:
    return resources.files("retrieval.serve").joinpath("static", name).read_bytes()


PAGE_TYPES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
              "app.css": "text/css; charset=utf-8"}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def create_app(state: State) -> FastAPI:
    from .. import __version__
    from ..hits import Hit  # noqa: F401  (the shape of query results)
    from ..options import check_options, check_queries

    limits = state.limits
    page = {name: _static(name) for name in PAGE_TYPES}  # read once; no request picks a file

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.batcher = SearchBatcher(state, state.config.search_slots, state.config.max_search_batch)
        if state.on_ready:
            state.on_ready()
        try:
            yield
        finally:  # graceful shutdown: uvicorn has finished the requests in flight
            await state.batcher.close()
            await asyncio.get_running_loop().run_in_executor(None, state.close)

    app = FastAPI(title="rtv", version=__version__, lifespan=lifespan,
                  description="Exact (FM-index) and dense retrieval over one corpus. Every answer carries "
                              "latency_ms. Field names follow the `rtv ... --json` output.")
    app.add_middleware(BodyLimit, limits=limits)
    app.add_middleware(LeaseRelease)
    if state.config.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(state.config.cors), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    # -- errors: JSON, 4xx for what the caller can fix, no traceback to the caller ---------------
    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body, status_code=exc.status, headers=headers)

    @app.exception_handler(InputError)
    async def _input_error(request, exc):
        return JSONResponse({"error": {"type": "bad_request", "message": str(exc)}}, status_code=400)

    @app.exception_handler(RtvError)
    async def _rtv_error(request, exc):
        if isinstance(exc, MissingDependencyError):
            return JSONResponse({"error": {"type": "unavailable", "message": str(exc)}}, status_code=501)
        return JSONResponse({"error": {"type": "bad_request", "message": str(exc)}}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        return JSONResponse(_validation_body(exc.errors()), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc):
        if isinstance(exc, _TooLarge):
            return JSONResponse(exc.api_error.body, status_code=413)
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http")
        return JSONResponse({"error": {"type": kind, "message": str(exc.detail)}}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request, exc):
        log.exception("internal error on %s", request.url.path)
        return JSONResponse({"error": {"type": "internal", "message": "internal error; the server log has the details"}},
                            status_code=500)

    def auth(request: Request) -> None:
        token = state.config.token
        if not token:
            return
        got = request.headers.get("authorization", "")
        scheme, _, value = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise ApiError(401, "unauthorized", "this server needs `Authorization: Bearer TOKEN` (the --token it "
                           "was started with)" + ("; the token given is wrong" if got else ""))

    guarded = [Depends(auth)]

    # -- the page and health ---------------------------------------------------------------------
    def page_response(name: str) -> Response:
        return Response(page[name], media_type=PAGE_TYPES[name],
                        headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    async def index_page():
        return page_response("index.html")

    @app.get("/app.js", include_in_schema=False)
    async def page_js():
        return page_response("app.js")

    @app.get("/app.css", include_in_schema=False)
    async def page_css():
        return page_response("app.css")

    @app.get("/health", tags=["server"])
    async def health():
        # the generation each index answers from now (following a change published since), so a
        # deploy check can tell that `rtv add` / `delete` / `compact` reached the server
        t0 = time.perf_counter()
        generations = {name: (await state.index(name)).root.name for name in state.indexes}
        return answer({"status": "ok", "version": __version__, "generations": generations}, t0)

    @app.get("/v1", tags=["server"], dependencies=guarded)
    async def server_info():
        t0 = time.perf_counter()
        rows = []
        for name in state.indexes:
            m = (idx := await state.index(name)).manifest
            rows.append({"name": name, "generation": idx.root.name,
                         "documents": m["corpus"]["documents"] - m["corpus"].get("deleted", 0),
                         "passages": m["corpus"]["passages"], "corpus_bytes": m["corpus"]["bytes"],
                         "dense": bool(m.get("dense"))})
        return answer({"version": __version__, "indexes": rows, "limits": limits.to_json(),
                       "reranker": getattr(state.reranker, "name", None)}, t0)

    @app.get("/v1/{name}/info", tags=["index"], dependencies=guarded)
    async def info(name: str):
        t0 = time.perf_counter()
        idx = await state.index(name)
        data = await state.run(idx.info)
        data["path"] = name  # the server's directory stays on the server
        data["name"] = name
        data["reranker"] = getattr(state.reranker, "name", None)
        return answer(data, t0)

    # -- exact search ----------------------------------------------------------------------------
    @app.post("/v1/{name}/count", tags=["exact"], dependencies=guarded)
    async def count(name: str, req: CountRequest):
        """Occurrences of each string (exact UTF-8 bytes): {"query", "count"}."""
        t0 = time.perf_counter()
        idx = await state.index(name)
        qs, single = one_or_many(req.query, req.queries, "query", "queries", limits)
        for q in qs:
            check_pattern(limits, q)
        counts = await state.run(idx.count_many, qs, where=req.where)
        rows = [{"query": q, "count": int(n)} for q, n in zip(qs, counts)]
        return answer(rows[0] if single else {"results": rows}, t0)

    def _find(idx, q: str, offset: int, lim: int, context: int, snippets: bool, where: str | None) -> dict:
        total = idx.count(q, where=where)
        docs, offs = idx.find(q, offset=offset, limit=lim, where=where)
        docs, offs = docs.tolist(), offs.tolist()
        ext = {d["id"]: d["ext_id"] for d in idx.store.documents(set(docs))}
        width = len(q.encode("utf-8"))
        rows = []
        for d, o in zip(docs, offs):
            row = {"doc_id": d, "ext_id": ext.get(d), "offset": o}
            if snippets:
                start = max(0, o - context)
                row["snippet"] = idx.snippet(d, start, o - start + width + context)
            rows.append(row)
        nxt = offset + len(rows)
        return {"query": q, "count": total, "offset": offset, "limit": lim, "results": rows,
                "next_offset": nxt if nxt < total and rows else None}

    @app.post("/v1/{name}/find", tags=["exact"], dependencies=guarded)
    async def find(name: str, req: FindRequest):
        """A page of occurrences: {"doc_id", "ext_id", "offset", "snippet"}, the total count, next_offset."""
        t0 = time.perf_counter()
        idx = await state.index(name)
        qs, single = one_or_many(req.query, req.queries, "query", "queries", limits)
        for q in qs:
            check_pattern(limits, q)
        check_max(limits, "max_find_limit", req.limit, "limit")
        check_max(limits, "max_context", req.context, "context")
        pages = await state.run(lambda: [_find(idx, q, req.offset, req.limit, req.context, req.snippets, req.where)
                                              for q in qs])
        return answer(pages[0] if single else {"results": pages}, t0)

    def _cnf(idx, clauses, offset: int, lim: int, where: str | None) -> dict:
        docs = idx.cnf(clauses, where=where)
        page_ids = docs[offset:offset + lim].tolist()
        ext = {d["id"]: d["ext_id"] for d in idx.store.documents(page_ids)}
        nxt = offset + len(page_ids)
        return {"clauses": clauses, "count": int(len(docs)), "offset": offset, "limit": lim,
                "results": [{"doc_id": d, "ext_id": ext.get(d)} for d in page_ids],
                "next_offset": nxt if nxt < len(docs) and page_ids else None}

    @app.post("/v1/{name}/cnf", tags=["exact"], dependencies=guarded)
    async def cnf(name: str, req: CnfRequest):
        """Documents containing (a OR b) AND c for clauses [[a, b], [c]]; paged by offset/limit."""
        t0 = time.perf_counter()
        idx = await state.index(name)
        qs, single = one_or_many(req.clauses, req.queries, "clauses", "queries", limits)
        for clauses in qs:
            if not clauses or any(not g for g in clauses):
                raise ApiError(422, "invalid_argument", "clauses: give at least one group, each with at least one string",
                               argument="clauses")
            n = sum(len(g) for g in clauses)
            check_max(limits, "max_batch", n, "clauses (strings in one query)")
            for g in clauses:
                for s in g:
                    check_pattern(limits, s, "clause string")
        check_max(limits, "max_cnf_limit", req.limit, "limit")
        pages = await state.run(lambda: [_cnf(idx, c, req.offset, req.limit, req.where) for c in qs])
        return answer(pages[0] if single else {"results": pages}, t0)

    def _check_doc(idx, d: int) -> None:
        if not 0 <= d < idx.n_documents:
            raise ApiError(422, "invalid_argument", f"doc_id {d}: this index holds documents 0..{idx.n_documents - 1}",
                           argument="doc_id")

    @app.post("/v1/{name}/extract", tags=["exact"], dependencies=guarded)
    async def extract(name: str, req: ExtractRequest):
        """Documents rebuilt from the FM-index: {"doc_id", "ext_id", "text"}."""
        t0 = time.perf_counter()
        idx = await state.index(name)
        ids, single = one_or_many(req.doc_id, req.doc_ids, "doc_id", "doc_ids", limits)
        for d in ids:
            _check_doc(idx, d)

        def work():
            rows = {r["id"]: r for r in idx.store.documents(ids)}
            total = sum(rows[d]["length"] for d in ids if d in rows)
            if total > limits.max_extract_bytes:
                raise over_limit(limits, "max_extract_bytes", total, "documents' length (bytes)")
            return [{"doc_id": d, "ext_id": rows.get(d, {}).get("ext_id"), "text": idx.extract(d)} for d in ids]

        rows = await state.run(work)
        return answer(rows[0] if single else {"results": rows}, t0)

    @app.post("/v1/{name}/snippet", tags=["exact"], dependencies=guarded)
    async def snippet(name: str, req: SnippetRequest):
        """Text of bytes [offset, offset + width) of a document, less characters cut at either edge."""
        t0 = time.perf_counter()
        idx = await state.index(name)
        single = req.items is None
        if single:
            if req.doc_id is None or req.offset is None or req.width is None:
                raise ApiError(422, "invalid_argument", "give doc_id, offset and width, or items (the batched form)",
                               argument="doc_id")
            items = [SnippetItem(doc_id=req.doc_id, offset=req.offset, width=req.width)]
        else:
            check_batch(limits, len(req.items), "items")
            items = req.items
        for it in items:
            _check_doc(idx, it.doc_id)
            check_max(limits, "max_snippet_bytes", it.width, "width")
        rows = await state.run(lambda: [{"doc_id": it.doc_id, "offset": it.offset, "width": it.width,
                                         "snippet": idx.snippet(it.doc_id, it.offset, it.width)} for it in items])
        return answer(rows[0] if single else {"results": rows}, t0)

    @app.post("/v1/{name}/ngrams", tags=["exact"], dependencies=guarded)
    async def ngrams(name: str, req: NgramRequest):
        """Counts of every n-gram of a text (unit: tokens, chars or bytes): {"ngram", "start", "count"}."""
        from ..windows import windows

        t0 = time.perf_counter()
        idx = await state.index(name)
        texts, single = one_or_many(req.text, req.texts, "text", "texts", limits)
        for t in texts:
            check_pattern(limits, t, "text", "max_ngram_text_bytes")

        def work():
            out = []
            for t in texts:
                counts = idx.ngram_counts(t, req.n, req.unit, where=req.where).tolist()
                data, starts, lengths = windows(t, req.n, req.unit)
                grams = [{"ngram": data[s:s + n].decode("utf-8", "replace"), "start": s, "count": int(c)}
                         for s, n, c in zip(starts.tolist(), lengths.tolist(), counts)]
                out.append({"text": t, "n": req.n, "unit": req.unit, "ngrams": grams})
            return out

        rows = await state.run(work)
        return answer(rows[0] if single else {"results": rows}, t0)

    # -- search ----------------------------------------------------------------------------------
    @app.post("/v1/{name}/query", tags=["search"], dependencies=guarded)
    async def query(name: str, req: QueryRequest):
        """Passages for a query (hybrid, dense, lexical or exact): results as `rtv query --json`
        (rank, doc_id, ext_id, passage_id, score, text, start, end, spans, stages, metadata)."""
        t0 = time.perf_counter()
        idx = await state.index(name)
        qs, single = one_or_many(req.query, req.queries, "query", "queries", limits)
        check_options(req.mode, req.k, req.fusion, flags=False)
        for q in qs:
            check_pattern(limits, q, "query", "max_query_bytes")
        check_queries(qs)
        check_max(limits, "max_k", req.k, "k")
        if req.depth is not None:
            check_max(limits, "max_depth", req.depth, "depth")
        if req.rerank_top_n is not None:
            check_max(limits, "max_depth", req.rerank_top_n, "rerank_top_n")
        if req.rerank is True and state.reranker is None:
            raise ApiError(400, "bad_request", "rerank true: this server has no cross-encoder; start `rtv serve` with "
                           "--reranker DIR, or ask for rerank auto/false", argument="rerank")
        use = state.reranker is not None and (req.rerank is True or (req.rerank == "auto" and req.mode == "hybrid"))
        options = {"k": req.k, "mode": req.mode, "rerank": use, "reranker": state.reranker if use else None,
                   "fusion": req.fusion, "depth": req.depth, "weights": req.weights, "where": req.where}
        if req.rerank_top_n is not None:
            options["rerank_top_n"] = req.rerank_top_n
        results = await state.batcher.search(idx, qs, options)
        rows = [{"query": q, "mode": req.mode, "k": req.k, "reranked": use,
                 "results": [h.to_json(rank) for rank, h in enumerate(hits, start=1)]} for q, hits in zip(qs, results)]
        return answer(rows[0] if single else {"results": rows}, t0)

    # -- contamination ---------------------------------------------------------------------------
    @app.post("/v1/{name}/contamination", tags=["contamination"], dependencies=guarded,
              openapi_extra={"requestBody": {"content": {
                  "application/json": {"schema": ContaminationRequest.model_json_schema()},
                  "application/x-ndjson": {"schema": {"type": "string", "format": "binary"},
                                           "description": "a JSONL benchmark; options in the query string"}},
                  "required": True}})
    async def contamination(name: str, request: Request):
        """Score benchmark entries: JSON lines, one per entry (as `rtv contamination --json`), then
        the summary with its worst entries. Post {"entries": [...], "fields": [...], ...} as JSON, or
        a JSONL file with Content-Type application/x-ndjson and the options as query parameters
        (?fields=prompt&fields=answer&unit=chars&window=50&thresholds=0.2&thresholds=0.8)."""
        from ..contamination import ContaminationConfig, Scorer, Summary, Thresholds

        t0 = time.perf_counter()
        idx = await state.index(name)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()
        try:
            if ctype in ("application/json", ""):
                try:
                    req = ContaminationRequest.model_validate_json(body)
                except ValidationError as exc:
                    raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]) from None
                records, positions = req.entries, [str(i) for i in range(len(req.entries))]
            elif ctype in ("application/x-ndjson", "application/jsonl", "application/jsonlines", "text/plain"):
                params = {}
                for key in request.query_params:
                    vals = request.query_params.getlist(key)
                    params[key] = vals if key in ("fields", "thresholds") else vals[-1]
                try:
                    req = ContaminationOptions.model_validate(params)
                except ValidationError as exc:
                    raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]) from None
                records, positions = parse_jsonl(body)
            else:
                raise ApiError(415, "unsupported_media_type", f"Content-Type {ctype!r}: post application/json "
                               "({\"entries\": [...]}) or application/x-ndjson (a JSONL benchmark)")
        finally:
            del body
        check_max(limits, "max_entries", len(records), "entries")
        entries, fields = benchmark_entries(records, req.fields, req.id_field, positions)
        config = ContaminationConfig(unit=req.unit, window=req.window, thresholds=Thresholds(*req.thresholds),
                                     max_matches=req.max_matches, worst=req.worst, where=req.where)
        scorer = Scorer(idx, config, req.name)
        summary = Summary(req.name, req.name, fields, config)

        def lines():
            for r in scorer.score(entries):
                summary.add(r)
                yield json.dumps(r.to_json(), ensure_ascii=False) + "\n"

        gen = lines()
        done = object()

        async def stream():
            loop = asyncio.get_running_loop()
            batch = []
            while True:
                line = await loop.run_in_executor(state.pool, next, gen, done)
                if line is done:
                    break
                batch.append(line)
                if len(batch) >= 64:
                    yield "".join(batch)
                    batch = []
            if batch:
                yield "".join(batch)
            summary.finish()
            s = summary.to_json()
            s["worst"] = [r.to_json() for r in summary.worst()]
            s["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
            yield json.dumps(s, ensure_ascii=False) + "\n"

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    return app


def _validation_body(errors: list) -> dict:
    def where(loc) -> str:
        loc = list(loc)
        if loc and loc[0] in ("body", "query", "path"):  # where FastAPI found it, not its name
            loc = loc[1:]
        return ".".join(str(p) for p in loc) or "body"

    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    arg = where(first.get("loc", ()))
    msg = f"{arg}: {first.get('msg', 'invalid')}"
    if first.get("type") == "json_invalid":
        msg = f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'decode error')})"
    elif arg == "body" and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
        msg = "the request body must be a JSON object (send Content-Type: application/json)"
    elif first.get("type") == "extra_forbidden":
        msg = f"{arg}: no such argument"
    return {"error": {"type": "invalid_argument", "argument": arg, "message": msg,
                      "details": [{"argument": where(e.get("loc", ())), "message": e.get("msg")} for e in errors]}}


def app_from_env() -> FastAPI:
    """The app of one worker process (rtv serve --workers N): the config comes in RTV_SERVE_CONFIG."""
    config = ServeConfig.from_json(os.environ[CONFIG_ENV])
    return create_app(open_state(config))
