"""LlamaIndex adapter: an rtv Retriever as a `llama_index.core.retrievers.BaseRetriever`.

    from retrieval.integrations.llamaindex import RtvRetriever
    li = RtvRetriever.from_path("my-index", k=5, rerank=False)     # or RtvRetriever(retriever)
    li = RtvRetriever.from_path("my-index", where="lang = 'en'")  # only matching documents
    nodes = li.retrieve("question")   # list[NodeWithScore]

Each node is a TextNode (id "rtv-<passage_id>", text = passage, metadata = passage_id, doc_id,
ext_id, start, end, spans, stages and the document's metadata) with the hit's score.
Needs the optional extra: pip install 'rtv[llamaindex]'.
"""

from __future__ import annotations

from functools import lru_cache

from ..errors import require
from .langchain import hit_to_metadata


@lru_cache(maxsize=1)
def _class():
    retrievers = require("llama_index.core.retrievers", "llamaindex")
    schema = require("llama_index.core.schema", "llamaindex")

    class RtvRetriever(retrievers.BaseRetriever):
        """rtv hybrid retrieval (dense + BM25 + exact, RRF, optional cross-encoder) for LlamaIndex."""

        def __init__(self, retriever, k: int | None = None, **kwargs):
            self._rtv = retriever
            self._k = k
            super().__init__(**kwargs)

        @classmethod
        def from_path(cls, path, **options) -> "RtvRetriever":
            from ..retriever import Retriever

            return cls(Retriever(path, **options))

        def _retrieve(self, query_bundle) -> list:
            hits = self._rtv.retrieve(query_bundle.query_str, k=self._k)
            out = []
            for h in hits:
                meta = hit_to_metadata(h)
                node = schema.TextNode(id_=f"rtv-{h.passage_id}", text=h.text, metadata=meta,
                                       excluded_embed_metadata_keys=list(meta), excluded_llm_metadata_keys=list(meta))
                out.append(schema.NodeWithScore(node=node, score=float(h.score)))
            return out

    return RtvRetriever


def __getattr__(name: str):
    if name == "RtvRetriever":
        return _class()
    raise AttributeError(name)


__all__ = ["RtvRetriever"]
