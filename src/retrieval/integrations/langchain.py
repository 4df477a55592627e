"""LangChain adapter: an rtv Retriever as a `langchain_core.retrievers.BaseRetriever`.

    from retrieval.integrations.langchain import RtvRetriever
    lc = RtvRetriever.from_path("my-index", k=5, rerank=False)      # or RtvRetriever(retriever=r)
    lc = RtvRetriever.from_path("my-index", where="lang = 'en'")  # only matching documents
    docs = lc.invoke("question")   # list[langchain_core.documents.Document]

Each Document's page_content is the passage text; metadata carries passage_id, doc_id, ext_id,
score, start, end, spans, stages and the document's own metadata under "document".
Needs the optional extra: pip install 'rtv[langchain]'.
"""

from __future__ import annotations

from functools import lru_cache

from ..errors import require


def hit_to_metadata(hit) -> dict:
    return {"passage_id": hit.passage_id, "doc_id": hit.doc_id, "ext_id": hit.ext_id, "score": float(hit.score),
            "start": hit.start, "end": hit.end, "spans": [list(s) for s in hit.spans], "stages": hit.stages,
            "document": hit.metadata}


@lru_cache(maxsize=1)
def _class():
    retrievers = require("langchain_core.retrievers", "langchain")
    documents = require("langchain_core.documents", "langchain")
    from pydantic import ConfigDict

    class RtvRetriever(retrievers.BaseRetriever):
        """rtv hybrid retrieval (dense + BM25 + exact, RRF, optional cross-encoder) for LangChain."""

        model_config = ConfigDict(arbitrary_types_allowed=True)
        retriever: object
        k: int | None = None

        @classmethod
        def from_path(cls, path, **options) -> "RtvRetriever":
            from ..retriever import Retriever

            return cls(retriever=Retriever(path, **options))

        def _get_relevant_documents(self, query: str, *, run_manager=None) -> list:
            hits = self.retriever.retrieve(query, k=self.k)
            return [documents.Document(page_content=h.text, metadata=hit_to_metadata(h),
                                       id=str(h.passage_id)) for h in hits]

    return RtvRetriever


def __getattr__(name: str):
    if name == "RtvRetriever":
        return _class()
    raise AttributeError(name)


__all__ = ["RtvRetriever", "hit_to_metadata"]
