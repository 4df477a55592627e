"""The RAG retriever: one object that opens an index and returns hits for a query.

    from retrieval import Retriever
    r = Retriever("my-index", mode="hybrid", k=10, rerank=True)
    hits = r.retrieve("how do I ...")          # list[Hit]
    many = r.batch(["q1", "q2"])               # list[list[Hit]]

A Hit has passage_id, doc_id, ext_id, text, score, start/end (byte span of the passage in its
document), metadata (the document's), spans (exact matches inside the passage) and stages
(stage -> {rank, score}). Reranking follows the one policy of the CLI and Index.search
(retrieval.options): rerank="auto" (the default) uses the default cross-encoder for hybrid
search when it is on disk and says once when it is not; rerank=True (or a `reranker`) loads the
model at construction, so a missing one fails at once with a ModelError saying how to provide it.

A remote index works the same way: Retriever("http://HOST:PORT/NAME", token=...) or
Retriever(retrieval.connect(url)); its searches run on the `rtv serve` server, which reranks with
the cross-encoder it was started with (rerank="auto" | True | False is sent along).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import InputError
from .hits import Hit
from .options import DEFAULT_FUSION, DEFAULT_K, DEFAULT_MODE, DEFAULT_RERANK, check_options, check_rerank


class Retriever:
    def __init__(self, path_or_index, mode: str = DEFAULT_MODE, k: int | None = None, rerank=DEFAULT_RERANK,
                 reranker=None, fusion: str = DEFAULT_FUSION, *, depth: int | None = None,
                 rerank_top_n: int | None = None, weights: Mapping[str, float] | None = None, device: str = "auto",
                 token: str | None = None, where: str | None = None):
        from .hybrid.rerank import resolve_reranker

        check_options(mode, k, fusion, flags=False)
        if isinstance(path_or_index, str) and path_or_index.startswith(("http://", "https://")):
            from .serve.client import connect  # an `rtv serve` index: http://HOST:PORT/NAME

            self.index = connect(path_or_index, token=token)
            self._owns_index = True
        elif isinstance(path_or_index, (str, os.PathLike, Path)):
            from .index import Index

            self.index = Index.open(path_or_index, device=device)
            self._owns_index = True
        else:
            self.index = path_or_index
            self._owns_index = False
        self.mode, self.k, self.fusion = mode, k, fusion
        self.depth, self.weights = depth, dict(weights) if weights else None
        self.where = where  # a retrieval.filters expression every search is restricted to
        # a remote index (retrieval.connect) searches and reranks on its server, with its model
        self.remote = bool(getattr(self.index, "is_remote", False))
        if self.remote:
            if reranker is not None:
                raise InputError("reranker: a remote index reranks with its server's cross-encoder; "
                                 "pass rerank=True/'auto'/False instead")
            check_rerank(rerank)
            self._remote_rerank, self._rerank_top_n, self.reranker = rerank, rerank_top_n, None
        else:
            self.reranker = resolve_reranker(rerank, reranker, mode=mode, device=device, top_n=rerank_top_n)

    @property
    def rerank(self):
        if self.remote:
            return self._remote_rerank  # the server's policy decides ("auto" | True | False)
        return self.reranker is not None

    def retrieve(self, query: str, k: int | None = None, where: str | None = None) -> list[Hit]:
        return self.batch([query], k=k, where=where)[0]

    def batch(self, queries: Sequence[str], k: int | None = None, where: str | None = None) -> list[list[Hit]]:
        """Hits for each query; `where` (default: the Retriever's) restricts them to documents whose
        metadata match it."""
        from .hybrid import search

        if isinstance(queries, str):
            raise InputError("batch() takes a list of queries; use retrieve() for one query")
        where = self.where if where is None else where
        if self.remote:
            return self.index.search_batch(list(queries), k=k or self.k or DEFAULT_K, mode=self.mode, rerank=self._remote_rerank,
                                           fusion=self.fusion, depth=self.depth, weights=self.weights,
                                           rerank_top_n=self._rerank_top_n, where=where)
        return search(self.index, list(queries), mode=self.mode, k=k or self.k, rerank=self.reranker is not None,
                      reranker=self.reranker, fusion=self.fusion, depth=self.depth, weights=self.weights, where=where)

    __call__ = retrieve

    def close(self) -> None:
        if self._owns_index:
            self.index.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Retriever({str(getattr(self.index, 'path', self.index))!r}, mode={self.mode!r}, k={self.k}, "
                f"rerank={self.rerank}, fusion={self.fusion!r})")
