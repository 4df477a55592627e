"""The rescoring store and the one rescorer every recipe uses.

The store holds every passage's full vector in float16 (or int8 with a per-vector scale), written
as .npy and memory-mapped read-only at query time. ``Rescorer`` re-scores a compressed index's
candidates exactly from it: numpy over the map on the CPU, torch on the GPU.

FAISS's own ``IndexRefine`` / ``Refine(SQfp16)`` does the same job for float indexes, but it does not
fit here: its refine index lives inside ``index.faiss`` and is read into RAM with it (the store must
stay a small memory-mapped file), it has no int8-with-per-vector-scale codec, it does not take
binary (Hamming) indexes, and it does not run on the GPU. So rtv keeps its own, one for all recipes.
"""

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

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def gather(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")  # sequential-ish reads of the mapped file
        rows = np.empty((len(ids), self.vectors.shape[1]), dtype=np.float32)
        rows[order] = self.vectors[ids[order]]
        if self.scales is not None:
            rows *= np.asarray(self.scales[ids], dtype=np.float32)[:, None]
        return rows


class Rescorer:
    """Exact inner products of each query with its candidates' full vectors, and the top k of them.

    ``device=None`` re-scores with numpy over the memory-mapped store; a torch device name ("cuda",
    or "cpu" to check that path without a GPU) re-scores there, from a copy of the store made on first
    use (n x dim float16 or int8: what the mapped file holds). Both give the same result.
    """

    def __init__(self, store: VectorStore, device: str | None = None):
        self.store = store
        self.device = device
        self._on_device = None  # (vectors, scales) as torch tensors on ``device``

    def __call__(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 (nq, k), ids int64 (nq, k)) from candidates ``cand`` (nq, kc), -1 = none;
        rows sorted by score, padded with -inf / -1 where fewer than k candidates are valid."""
        if self.device is None:
            return self._numpy(q, cand, k)
        return self._torch(q, cand, k)

    def _numpy(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        nq, kc = cand.shape
        dim = self.store.dim
        out_s = np.full((nq, k), -np.inf, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        take = min(k, kc)
        per = max(1, (64 << 20) // max(1, kc * dim * 4))  # ~64 MB of gathered vectors at a time
        for lo in range(0, nq, per):
            c = cand[lo:lo + per]
            valid = c >= 0
            rows = self.store.gather(np.where(valid, c, 0).ravel()).reshape(len(c), kc, dim)
            s = np.matmul(rows, q[lo:lo + per, :, None])[..., 0]
            s[~valid] = -np.inf
            top = np.argpartition(-s, take - 1, axis=1)[:, :take] if take < kc else np.tile(np.arange(kc), (len(c), 1))
            ts = np.take_along_axis(s, top, axis=1)
            order = np.argsort(-ts, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            ts = np.take_along_axis(ts, order, axis=1)
            ti = np.take_along_axis(c, top, axis=1)
            ti[~np.isfinite(ts)] = -1
            out_s[lo:lo + per, :take] = ts
            out_i[lo:lo + per, :take] = ti
        return out_s, out_i

    def _torch(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        if self._on_device is None:
            vec = torch.from_numpy(np.array(self.store.vectors)).to(self.device)  # a writable copy of the map
            sc = (torch.from_numpy(np.array(self.store.scales)).to(self.device)
                  if self.store.scales is not None else None)
            self._on_device = (vec, sc)
        vec, sc = self._on_device
        nq, kc = cand.shape
        take = min(k, kc)
        out_s = np.full((nq, k), -np.inf, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        per = max(1, (256 << 20) // max(1, kc * self.store.dim * 4))
        with torch.inference_mode():
            for lo in range(0, nq, per):
                c = torch.from_numpy(cand[lo:lo + per]).to(self.device)
                qq = torch.from_numpy(q[lo:lo + per]).to(self.device)
                valid = c >= 0
                ci = torch.where(valid, c, torch.zeros_like(c))
                rows = vec[ci].float()  # (b, kc, dim)
                if sc is not None:
                    rows *= sc[ci][..., None]
                s = torch.bmm(rows, qq[:, :, None])[..., 0]
                s[~valid] = -torch.inf
                ts, top = torch.topk(s, take, dim=1, largest=True, sorted=True)
                ti = torch.gather(c, 1, top)
                ti[~torch.isfinite(ts)] = -1
                out_s[lo:lo + per, :take] = ts.cpu().numpy()
                out_i[lo:lo + per, :take] = ti.cpu().numpy()
        return out_s, out_i
