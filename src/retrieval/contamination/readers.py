"""Benchmark readers: the names other modules import; the code lives in retrieval.readers."""

from ..readers.entries import (DEFAULT_ID_FIELDS, DEFAULT_TEXT_FIELDS, BenchmarkEntry, BenchmarkReader,
                               detect_format, get_field)

__all__ = ["DEFAULT_ID_FIELDS", "DEFAULT_TEXT_FIELDS", "BenchmarkEntry", "BenchmarkReader", "detect_format", "get_field"]
