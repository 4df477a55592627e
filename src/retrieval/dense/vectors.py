"""The rescoring store: every passage's full vector in float16 (or int8 with a per-vector scale),
written as .npy and memory-mapped read-only at query time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import IndexFormatError

VECTORS = "vectors.npy"
SCALES = "scales.npy"


def write_store(vecs: np.ndarray, out_dir: Path, dtype: str) -> dict:
    """Write ``vecs`` (n, d) float32 as the store; returns {"dtype", "files": [...]}."""
    out_dir = Path(out_dir)
    if dtype == "float16":
        np.save(out_dir / VECTORS, vecs.astype(np.float16), allow_pickle=False)
        return {"dtype": "float16", "files": [VECTORS]}
    if dtype == "int8":
        scale = np.abs(vecs).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(vecs / scale[:, None]), -127, 127).astype(np.int8)
        np.save(out_dir / VECTORS, q, allow_pickle=False)
        np.save(out_dir / SCALES, scale.astype(np.float32), allow_pickle=False)
        return {"dtype": "int8", "files": [VECTORS, SCALES]}
    raise ValueError(f"unknown store dtype {dtype!r}")


class VectorStore:
    """Memory-mapped full vectors; ``gather(ids)`` returns float32 rows (ids must be valid)."""

    def __init__(self, directory: Path, spec: dict, n: int, dim: int):
        self.dtype = spec["dtype"]
        path = Path(directory) / VECTORS
        try:
            self.vectors = np.load(path, mmap_mode="r", allow_pickle=False)
            self.scales = (np.load(Path(directory) / SCALES, mmap_mode="r", allow_pickle=False)
                           if self.dtype == "int8" else None)
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{path}: unreadable rescoring store ({exc}); rebuild the index") from None
        want = np.float16 if self.dtype == "float16" else np.int8
        if self.vectors.shape != (n, dim) or self.vectors.dtype != want:
            raise IndexFormatError(
                f"{path}: holds {self.vectors.shape} {self.vectors.dtype}, manifest says ({n}, {dim}) "
                f"{np.dtype(want)}; the index is damaged, rebuild it")
        if self.scales is not None and self.scales.shape != (n,):
            raise IndexFormatError(f"{Path(directory) / SCALES}: wrong shape; rebuild the index")

    def gather(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")  # sequential-ish reads of the mapped file
        rows = np.empty((len(ids), self.vectors.shape[1]), dtype=np.float32)
        rows[order] = self.vectors[ids[order]]
        if self.scales is not None:
            rows *= np.asarray(self.scales[ids], dtype=np.float32)[:, None]
        return rows

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes + (self.scales.nbytes if self.scales is not None else 0))
