"""A remote index: `retrieval.connect(url)` gives an object with the methods of a local Index.

    from retrieval import connect, Retriever
    idx = connect("http://127.0.0.1:8080/my-index", token="T")
    idx.count("def main"); idx.count_many(["a", "b"])            # int, numpy int64 array
    docs, offsets = idx.find("def main", limit=100)                # numpy arrays, as Index.find
    idx.cnf([["import numpy", "import scipy"], ["def main"]])     # every matching document id
    idx.extract(17); idx.snippet(17, 100, 40); idx.ngram_counts("some text", n=3)
    idx.search("parse dates", k=5, mode="dense")                   # list[Hit]
    Retriever(idx, k=5)  or  Retriever("http://127.0.0.1:8080/my-index")   # runs on the server

Searches rerank on the server, with the cross-encoder it was started with (rerank="auto" | True |
False); a `reranker` argument cannot name a model over HTTP. Errors: a refusal (4xx) raises
InputError with the server's message; no server, a timeout or a 5xx raise RemoteError.
Needs httpx (pip install 'rtv[serve]').
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..errors import InputError, RtvError, require
from ..hits import Hit
from ..options import DEFAULT_FUSION, DEFAULT_K, DEFAULT_MODE, DEFAULT_RERANK, check_rerank


class RemoteError(RtvError):
    """The server could not be reached or failed (5xx)."""


def _where(body: dict, where: str | None) -> dict:
    """The request body with the filter expression, when there is one (the server parses it)."""
    return {**body, "where": where} if where is not None else body

def _hit(d: dict) -> Hit:
    return Hit(passage_id=d["passage_id"], doc_id=d["doc_id"], text=d["text"], score=float(d["score"]),
               start=d["start"], end=d["end"], ext_id=d.get("ext_id"), metadata=d.get("metadata") or {},
               spans=[tuple(s) for s in d.get("spans") or []], stages=d.get("stages") or {})


class RemoteIndex:
    """One index of an `rtv serve` server, with the query methods of retrieval.Index."""

    is_remote = True  # Retriever sends its searches to the server (retriever.py)

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, client=None):
        httpx = require("httpx", "serve")
        parts = urlsplit(url.rstrip("/"))
        segs = [s for s in parts.path.split("/") if s]
        if parts.scheme not in ("http", "https") or not parts.netloc or not segs:
            raise InputError(f"{url!r}: give the URL of one index, http://HOST:PORT/NAME (NAME as `rtv serve` lists it)")
        if len(segs) >= 2 and segs[-2] == "v1":  # http://host/v1/NAME works too
            segs = segs[:-2] + segs[-1:]
        self.name = segs[-1]
        self.base = urlunsplit((parts.scheme, parts.netloc, "/".join(["", *segs[:-1]]), "", ""))
        self.path = url  # what a Retriever's repr shows
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = client or httpx.Client(base_url=self.base, headers=headers, timeout=timeout)
        self._httpx = httpx
        self._info = None

    # -- HTTP ------------------------------------------------------------------------------------
    def _url(self, op: str) -> str:
        return f"/v1/{self.name}/{op}"

    def _check(self, r):
        if r.status_code < 400:
            return
        try:
            err = r.json()["error"]
            msg = err["message"]
        except Exception:  # noqa: BLE001 - not one of ours
            err, msg = {}, r.text[:200]
        if r.status_code < 500:
            raise InputError(f"{self.base}{r.request.url.path}: {msg}")
        raise RemoteError(f"{self.base}{r.request.url.path}: the server failed ({r.status_code}: {msg})")

    def _send(self, method: str, path: str, **kw):
        try:
            r = self._http.request(method, path, **kw)
        except self._httpx.HTTPError as exc:
            raise RemoteError(f"{self.base}{path}: cannot reach the server ({type(exc).__name__}: {exc}); "
                              "is `rtv serve` running there?") from None
        self._check(r)
        return r.json()

    def _post(self, op: str, body: dict) -> dict:
        return self._send("POST", self._url(op), json=body)

    # -- the Index methods -----------------------------------------------------------------------
    def info(self) -> dict:
        return self._send("GET", self._url("info"))

    @property
    def manifest_info(self) -> dict:
        if self._info is None:
            self._info = self.info()
        return self._info

    @property
    def n_documents(self) -> int:
        return int(self.manifest_info["documents"])

    def count(self, pattern: str, where: str | None = None) -> int:
        return int(self._post("count", _where({"query": _text(pattern)}, where))["count"])

    def count_many(self, patterns: Sequence[str], where: str | None = None) -> np.ndarray:
        patterns = [_text(p) for p in patterns]
        if not patterns:
            return np.zeros(0, dtype=np.int64)
        rows = self._post("count", _where({"queries": patterns}, where))["results"]
        return np.array([r["count"] for r in rows], dtype=np.int64)

    def find(self, pattern: str, offset: int = 0, limit: int = 100,
             where: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        page = self._post("find", _where({"query": _text(pattern), "offset": offset, "limit": limit,
                                          "snippets": False}, where))
        rows = page["results"]
        return (np.array([r["doc_id"] for r in rows], dtype=np.int64),
                np.array([r["offset"] for r in rows], dtype=np.int64))

    def find_page(self, pattern: str, offset: int = 0, limit: int = 10, context: int = 40,
                  where: str | None = None) -> dict:
        """The server's find answer: count, results with ext_id and snippet, next_offset."""
        return self._post("find", _where({"query": _text(pattern), "offset": offset, "limit": limit,
                                          "context": context}, where))

    def docs(self, pattern: str, where: str | None = None) -> np.ndarray:
        return self.cnf([[pattern]], where=where)

    def cnf(self, clauses: Sequence[Sequence[str]], where: str | None = None) -> np.ndarray:
        clauses = [[_text(s) for s in g] for g in clauses]
        out, offset = [], 0
        while True:
            page = self._post("cnf", _where({"clauses": clauses, "offset": offset, "limit": 100_000}, where))
            out.extend(r["doc_id"] for r in page["results"])
            if page["next_offset"] is None:
                return np.array(out, dtype=np.int64)
            offset = page["next_offset"]

    def extract(self, doc: int) -> str:
        return self._post("extract", {"doc_id": int(doc)})["text"]

    def snippet(self, doc: int, offset: int, width: int) -> str:
        return self._post("snippet", {"doc_id": int(doc), "offset": int(offset), "width": int(width)})["snippet"]

    def ngram_counts(self, text: str, n: int, unit: str = "tokens", where: str | None = None) -> np.ndarray:
        rows = self._post("ngrams", _where({"text": text, "n": int(n), "unit": unit}, where))["ngrams"]
        return np.array([r["count"] for r in rows], dtype=np.int64)

    def search(self, query: str, k: int = DEFAULT_K, mode: str = DEFAULT_MODE, **options) -> list[Hit]:
        return self.search_batch([query], k, mode, **options)[0]

    def search_batch(self, queries: Sequence[str], k: int = DEFAULT_K, mode: str = DEFAULT_MODE, rerank=DEFAULT_RERANK,
                     reranker=None, fusion: str = DEFAULT_FUSION, *, depth: int | None = None,
                     rerank_top_n: int | None = None, weights=None, where: str | None = None,
                     **ignored) -> list[list[Hit]]:
        """As Index.search_batch; the server reranks with its own cross-encoder (reranker must be None).
        Options that only make sense in-process (device, timings) are ignored."""
        if isinstance(queries, str):
            raise InputError("search_batch() takes a list of queries; use search() for one query")
        if reranker is not None:
            raise InputError("reranker: a remote index reranks with the server's cross-encoder (rtv serve "
                             "--reranker DIR); pass rerank=True/'auto'/False instead")
        check_rerank(rerank)
        body = {"queries": list(queries), "k": k, "mode": mode, "rerank": rerank, "fusion": fusion}
        if depth is not None:
            body["depth"] = depth
        if rerank_top_n is not None:
            body["rerank_top_n"] = rerank_top_n
        if weights:
            body["weights"] = dict(weights)
        rows = self._post("query", _where(body, where))["results"]
        return [[_hit(h) for h in row["results"]] for row in rows]

    def contamination(self, entries: Iterable[dict], fields: Sequence[str] | None = None, **options) -> Iterator[dict]:
        """Stream the server's contamination answer: one dict per entry (type "entry"), then the
        summary (type "summary", with its worst entries). Options: id_field, name, unit, window,
        thresholds=(suspicious, dirty), max_matches, worst, where."""
        body = {"entries": list(entries), **({"fields": list(fields)} if fields else {}), **options}
        if "thresholds" in body:
            body["thresholds"] = list(body["thresholds"])
        try:
            with self._http.stream("POST", self._url("contamination"), json=body) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                for line in r.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except self._httpx.HTTPError as exc:
            raise RemoteError(f"{self.base}: contamination stream failed ({type(exc).__name__}: {exc})") from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RemoteIndex({self.base!r}, name={self.name!r})"


def _text(s) -> str:
    if isinstance(s, bytes):
        try:
            return s.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("a remote index takes UTF-8 text; bytes that are not UTF-8 cannot be sent as JSON") from None
    return s


def connect(url: str, token: str | None = None, timeout: float = 60.0) -> RemoteIndex:
    """A remote index at `url` (http://HOST:PORT/NAME); checks that the server holds it."""
    idx = RemoteIndex(url, token=token, timeout=timeout)
    try:
        idx._info = idx.info()
    except Exception:
        idx.close()
        raise
    return idx
