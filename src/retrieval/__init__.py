"""rtv: exact (FM-index) and dense (FAISS) retrieval over one corpus."""

__version__ = "0.1.0"

from .errors import IndexFormatError, InputError, MissingDependencyError, ModelError, RtvError  # noqa: E402
from .hits import Hit  # noqa: E402
from .index import Index  # noqa: E402

__all__ = ["Index", "Hit", "Retriever", "RtvError", "InputError", "IndexFormatError", "ModelError",
           "MissingDependencyError", "connect", "__version__"]


def connect(url: str, token: str | None = None, timeout: float = 60.0):
    """A remote index served by `rtv serve` (url: http://HOST:PORT/NAME), with the query methods of
    Index (count, count_many, find, cnf, extract, snippet, ngram_counts, search, search_batch, info);
    Retriever and the LangChain/LlamaIndex adapters accept it. Needs httpx (pip install 'rtv[serve]')."""
    from .serve.client import connect as _connect

    return _connect(url, token=token, timeout=timeout)


def __getattr__(name):
    if name == "Retriever":  # heavy (models); imported on first use
        from .retriever import Retriever

        return Retriever
    raise AttributeError(name)
