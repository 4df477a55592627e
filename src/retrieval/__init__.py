"""rtv: exact (FM-index) and dense (FAISS) retrieval over one corpus."""

__version__ = "0.1.0"

from .errors import IndexFormatError, InputError, MissingDependencyError, ModelError, RtvError  # noqa: E402
from .hits import Hit  # noqa: E402
from .index import Index  # noqa: E402

__all__ = ["Index", "Hit", "Retriever", "RtvError", "InputError", "IndexFormatError", "ModelError",
           "MissingDependencyError", "__version__"]


def __getattr__(name):
    if name == "Retriever":  # heavy (models); imported on first use
        from .retriever import Retriever

        return Retriever
    raise AttributeError(name)
