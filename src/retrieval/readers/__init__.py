"""One reader package for corpora (`rtv index`) and benchmarks (`rtv contamination`).

compression.py opens plain/.gz/.zst/.bz2/.xz files as one checked binary stream; formats.py
turns JSONL, JSON, CSV/TSV, parquet and plain text into records, streamed; walk.py walks
directories; documents.py makes corpus Documents, entries.py benchmark entries. Both callers
thus read every format and compression the same way.
"""

from .compression import COMPRESSIONS, open_binary
from .documents import ID_FIELDS, Document, ReadOptions, read_documents
from .entries import BenchmarkEntry, BenchmarkReader
from .formats import FORMATS, Decoding, Record, detect, iter_records, read_text

__all__ = ["COMPRESSIONS", "FORMATS", "ID_FIELDS", "BenchmarkEntry", "BenchmarkReader", "Decoding", "Document",
           "ReadOptions", "Record", "detect", "iter_records", "open_binary", "read_documents", "read_text"]
