"""Corpus readers: the names other modules import; the code lives in retrieval.readers."""

from .readers.documents import ID_FIELDS, Document, ReadOptions, read_documents

__all__ = ["ID_FIELDS", "Document", "ReadOptions", "read_documents"]
