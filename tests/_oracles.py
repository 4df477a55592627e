"""Independent oracles shared by the exact-search tests: a plain scan of each document."""

from __future__ import annotations


def naive_occurrences(docs: list[bytes], pattern: bytes) -> list[tuple[int, int]]:
    """Every (document, byte offset) where pattern occurs, overlapping occurrences included."""
    out = []
    for d, text in enumerate(docs):
        start = text.find(pattern)
        while start != -1:
            out.append((d, start))
            start = text.find(pattern, start + 1)
    return out
