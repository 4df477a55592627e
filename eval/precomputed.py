"""Build an index from embeddings made earlier (on a GPU machine, or by a previous build) instead
of embedding on this CPU: the build's own embedding step is swapped for a lookup that checks the
passages are exactly the ones the vectors were made from."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np


@contextmanager
def precomputed_vectors(vectors: np.ndarray, texts: Sequence[str], source: str) -> Iterator[None]:
    """While active, Index.build takes passage i's vector from `vectors[i]` (L2-normalised here);
    a passage text that differs from `texts[i]` stops the build (the vectors are stale)."""
    import retrieval.dense.index as dense_index

    if len(vectors) != len(texts):
        sys.exit(f"{source}: {len(vectors)} vectors for {len(texts)} passages; embed them all again")
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    at = 0

    def lookup(batch, n, embedder):  # called once per shard, in passage order
        nonlocal at
        if list(batch) != list(texts[at:at + n]):
            sys.exit(f"{source}: the index's passages differ from the embedded ones; embed them again")
        at += n
        return vectors[at - n:at]

    embed = dense_index.embed_passages
    dense_index.embed_passages = lookup
    try:
        yield
    finally:
        dense_index.embed_passages = embed
