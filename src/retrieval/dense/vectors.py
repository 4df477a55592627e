"""The rescoring store and the one rescorer every recipe uses.

The store holds every passage's full vector in float16, or in int8 (one scale a vector, or one
affine range a dimension), optionally on the vectors' leading principal axes (PCA) first; written
as .npy and memory-mapped read-only at query time. ``Rescorer`` re-scores a compressed index's
candidates exactly from it: numpy over the map on the CPU, torch on the GPU.

FAISS's own ``IndexRefine`` / ``Refine(SQfp16)`` does the same job for float indexes, but it does not
fit here: its refine index lives inside ``index.faiss`` and is read into RAM with it (the store must
stay a small memory-mapped file), it has no int8-with-per-vector-scale codec, it does not take
binary (Hamming) indexes, and it does not run on the GPU. So rtv keeps its own, one for all recipes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError

VECTORS = "vectors.npy"
SCALES = "scales.npy"   # int8, scale "vector": (n,) float32, one scale a vector
QUANT = "quant.npy"     # int8, scale "dimension": (2, r) float32, each dimension's low end and step
PCA = "pca.npy"         # pca_dim r: (r + 1, dim) float32, the mean then r principal axes (rows)
STORE_DTYPES = ("float16", "int8")
INT8_SCALES = ("vector", "dimension")


def check_store_options(dtype: str, scale: str | None = None, pca_dim: int | None = None, dim: int | None = None) -> None:
    """ValueError naming what is wrong with a store's settings."""
    if dtype not in STORE_DTYPES:
        raise ValueError(f"unknown store dtype {dtype!r} (float16 or int8)")
    if scale is not None and (dtype != "int8" or scale not in INT8_SCALES):
        raise ValueError(f"store scale {scale!r}: only for int8, and 'vector' or 'dimension'")
    if pca_dim is not None:
        if dtype != "int8" or isinstance(pca_dim, bool) or not isinstance(pca_dim, int) or pca_dim < 1:
            raise ValueError(f"store pca_dim {pca_dim!r}: only for int8, a whole number >= 1")
        if dim is not None and pca_dim >= dim:
            raise ValueError(f"store pca_dim {pca_dim} must be below the vectors' dimension {dim}")


def fit_pca(vecs: np.ndarray, r: int, sample: int = 200_000, seed: int = 1234) -> np.ndarray:
    """(r + 1, dim) float32: the mean of ``vecs`` and its r leading principal axes (float64 eigh of
    the covariance of up to ``sample`` rows)."""
    x = vecs
    if len(x) > sample:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), sample, replace=False))]
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=0)
    xc = x - mu
    w, v = np.linalg.eigh(xc.T @ xc / max(1, len(x) - 1))
    axes = v[:, np.argsort(-w)[:r]].T  # (r, dim), orthonormal rows
    return np.concatenate([mu[None, :], axes]).astype(np.float32)


def quantize_int8(y: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes of float32 rows ``y`` and their scale: per vector, c = rint(y / s) with
    s = max|y| / 127 (returns (n,) s); per dimension, c = rint((y - lo) / step) - 128 with
    step = (hi - lo) / 255 over the rows (returns (2, r) [lo; step])."""
    if scale == "vector":
        s = np.abs(y).max(axis=1) / 127.0
        s[s == 0] = 1.0
        return np.clip(np.rint(y / s[:, None]), -127, 127).astype(np.int8), s.astype(np.float32)
    lo, hi = y.min(axis=0), y.max(axis=0)
    step = (hi - lo) / 255.0
    step[step == 0] = 1.0
    c = np.clip(np.rint((y - lo) / step) - 128, -128, 127).astype(np.int8)
    return c, np.stack([lo, step]).astype(np.float32)


def write_store(vecs: np.ndarray, out_dir: Path, dtype: str, scale: str | None = None,
                pca_dim: int | None = None) -> dict:
    """Write ``vecs`` (n, d) float32 as the store; returns the manifest's store spec
    {"dtype", ["scale", "pca_dim",] "files": [...]}.

    float16: the vectors rounded to float16. int8: optionally projected on their ``pca_dim``
    leading principal axes first, then int8 with one scale a vector (``scale="vector"``, the
    default) or one affine range a dimension (``"dimension"``)."""
    out_dir = Path(out_dir)
    check_store_options(dtype, scale, pca_dim, vecs.shape[1])
    if dtype == "float16":
        np.save(out_dir / VECTORS, vecs.astype(np.float16), allow_pickle=False)
        return {"dtype": "float16", "files": [VECTORS]}
    scale = scale or "vector"
    files = [VECTORS]
    y = vecs
    if pca_dim is not None:
        pca = fit_pca(vecs, pca_dim)
        y = np.empty((len(vecs), pca_dim), dtype=np.float32)
        for lo in range(0, len(vecs), 1 << 16):  # bounded temporaries
            y[lo:lo + (1 << 16)] = (vecs[lo:lo + (1 << 16)] - pca[0]) @ pca[1:].T
        np.save(out_dir / PCA, pca, allow_pickle=False)
        files.append(PCA)
    codes, s = quantize_int8(y, scale)
    np.save(out_dir / VECTORS, codes, allow_pickle=False)
    np.save(out_dir / (SCALES if scale == "vector" else QUANT), s, allow_pickle=False)
    files.append(SCALES if scale == "vector" else QUANT)
    spec = {"dtype": "int8", "scale": scale, "files": sorted(files)}
    if pca_dim is not None:
        spec["pca_dim"] = int(pca_dim)
    return spec


class VectorStore:
    """Memory-mapped store vectors, scored against queries as ``bias(q) + row_scale_i * (codes_i . q~)``.

    ``prepare(q)`` maps (nq, dim) queries to (q~ (nq, r), bias (nq,)); ``gather(ids)`` returns the
    rows' codes as float32 (ids must be valid) and ``row_scales(ids)`` their scales (None when 1):
    float16: q~ = q, bias 0, codes the vectors. int8 per vector: codes * s_i is the vector.
    int8 per dimension: lo + step * (c + 128) is the vector, so q~ = q * step and
    bias = q . (lo + 128 step). PCA (r dims): x ~ mean + A^T y, so q is first mapped to A q and
    bias gains q . mean. ``dequantize(ids)`` gives the vectors the store stands for, in full dim.
    """

    def __init__(self, directory: Path, spec: dict, n: int, dim: int):
        directory = Path(directory)
        self.dtype = spec.get("dtype")
        self.scale = spec.get("scale", "vector") if self.dtype == "int8" else None
        self.pca_dim = spec.get("pca_dim")
        path = directory / VECTORS
        try:
            check_store_options(self.dtype, self.scale, self.pca_dim, dim)
        except ValueError as exc:
            raise IndexFormatError(f"{path}: manifest's store spec {spec!r}: {exc}; rebuild the index") from None
        r = self.pca_dim or dim
        self.full_dim = dim

        def load(name):
            return np.load(directory / name, mmap_mode="r", allow_pickle=False)

        try:
            self.vectors = load(VECTORS)
            self.scales = load(SCALES) if self.scale == "vector" else None
            quant = np.asarray(load(QUANT), dtype=np.float32) if self.scale == "dimension" else None
            pca = np.asarray(load(PCA), dtype=np.float32) if self.pca_dim else None
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{path}: unreadable rescoring store ({exc}); rebuild the index") from None
        want = np.float16 if self.dtype == "float16" else np.int8
        if self.vectors.shape != (n, r) or self.vectors.dtype != want:
            raise IndexFormatError(
                f"{path}: holds {self.vectors.shape} {self.vectors.dtype}, manifest says ({n}, {r}) "
                f"{np.dtype(want)}; the index is damaged, rebuild it")
        if self.scales is not None and (self.scales.shape != (n,) or self.scales.dtype != np.float32):
            raise IndexFormatError(f"{directory / SCALES}: wrong shape or type; rebuild the index")
        if quant is not None and quant.shape != (2, r):
            raise IndexFormatError(f"{directory / QUANT}: shape {quant.shape}, want (2, {r}); rebuild the index")
        if pca is not None and pca.shape != (r + 1, dim):
            raise IndexFormatError(f"{directory / PCA}: shape {pca.shape}, want ({r + 1}, {dim}); rebuild the index")
        self.lo, self.step = (quant[0], quant[1]) if quant is not None else (None, None)
        self.mean, self.axes = (pca[0], pca[1:]) if pca is not None else (None, None)

    @property
    def dim(self) -> int:
        """Dimension of the stored rows (the PCA dimension when reduced)."""
        return int(self.vectors.shape[1])

    def prepare(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(q, dtype=np.float32)
        bias = np.zeros(len(q), dtype=np.float32)
        if self.axes is not None:
            bias += q @ self.mean
            q = q @ self.axes.T
        if self.step is not None:
            bias += q @ (self.lo + 128.0 * self.step)
            q = q * self.step
        return np.ascontiguousarray(q, dtype=np.float32), bias

    def gather(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")  # sequential-ish reads of the mapped file
        rows = np.empty((len(ids), self.vectors.shape[1]), dtype=np.float32)
        rows[order] = self.vectors[ids[order]]
        return rows

    def row_scales(self, ids: np.ndarray) -> np.ndarray | None:
        return None if self.scales is None else np.asarray(self.scales[np.asarray(ids, dtype=np.int64)], dtype=np.float32)

    def dequantize(self, ids: np.ndarray) -> np.ndarray:
        """The full-dimension float32 vectors rows ``ids`` stand for (what rescoring scores)."""
        y = self.gather(ids)
        s = self.row_scales(ids)
        if s is not None:
            y *= s[:, None]
        if self.step is not None:
            y = self.lo + self.step * (y + 128.0)
        if self.axes is not None:
            y = self.mean + y @ self.axes
        return y


class Rescorer:
    """Exact inner products of each query with its candidates' full vectors, and the top k of them.

    ``device=None`` re-scores with numpy over the memory-mapped store; a torch device name ("cuda",
    or "cpu" to check that path without a GPU) re-scores there, from a copy of the store made on first
    use (n x r float16 or int8: what the mapped file holds). Both give the same result: for each
    candidate, the query's inner product with the vector the store stands for (``dequantize``).
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
        qt, bias = self.store.prepare(q)
        per = max(1, (64 << 20) // max(1, kc * dim * 4))  # ~64 MB of gathered vectors at a time
        for lo in range(0, nq, per):
            c = cand[lo:lo + per]
            valid = c >= 0
            flat = np.where(valid, c, 0).ravel()
            rows = self.store.gather(flat).reshape(len(c), kc, dim)
            s = np.matmul(rows, qt[lo:lo + per, :, None])[..., 0]
            sc = self.store.row_scales(flat)
            if sc is not None:
                s *= sc.reshape(len(c), kc)
            s += bias[lo:lo + per, None]
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
        qt, bias = self.store.prepare(q)
        per = max(1, (256 << 20) // max(1, kc * self.store.dim * 4))
        with torch.inference_mode():
            for lo in range(0, nq, per):
                c = torch.from_numpy(cand[lo:lo + per]).to(self.device)
                qq = torch.from_numpy(qt[lo:lo + per]).to(self.device)
                valid = c >= 0
                ci = torch.where(valid, c, torch.zeros_like(c))
                rows = vec[ci].float()  # (b, kc, dim)
                s = torch.bmm(rows, qq[:, :, None])[..., 0]
                if sc is not None:
                    s *= sc[ci]
                s += torch.from_numpy(bias[lo:lo + per]).to(self.device)[:, None]
                s[~valid] = -torch.inf
                ts, top = torch.topk(s, take, dim=1, largest=True, sorted=True)
                ti = torch.gather(c, 1, top)
                ti[~torch.isfinite(ts)] = -1
                out_s[lo:lo + per, :take] = ts.cpu().numpy()
                out_i[lo:lo + per, :take] = ti.cpu().numpy()
        return out_s, out_i


def append_store(directory: Path, spec: dict, n_old: int, vecs: np.ndarray) -> None:
    """Append float32 rows `vecs` to the store of `n_old` rows in `directory` (`spec`: the manifest's
    store spec), in place of its files there. New rows are coded with the store's own parameters:
    float16 as they are; int8 with each row's own scale (per vector), or the per-dimension ranges
    and PCA axes fitted on the vectors the store was built from (rows beyond those ranges clip), so
    the rows already there keep their codes."""
    directory = Path(directory)
    old = VectorStore(directory, spec, n_old, vecs.shape[1])
    if old.dtype == "float16":
        codes, scales = vecs.astype(np.float16), None
    else:
        y = vecs if old.axes is None else (vecs - old.mean) @ old.axes.T
        if old.scale == "vector":
            codes, scales = quantize_int8(y, "vector")
        else:
            codes = np.clip(np.rint((y - old.lo) / old.step) - 128, -128, 127).astype(np.int8)
            scales = None
    _append_rows(directory / VECTORS, old.vectors, codes)
    if scales is not None:
        _append_rows(directory / SCALES, old.scales, scales)


def _append_rows(path: Path, old: np.ndarray, new: np.ndarray, step: int = 1 << 16) -> None:
    """Write old rows then new rows as a new .npy at `path` (through a memory map, in steps)."""
    tmp = path.with_name(path.name + ".new")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=old.dtype, shape=(len(old) + len(new),) + old.shape[1:])
    for lo in range(0, len(old), step):
        hi = min(lo + step, len(old))
        out[lo:hi] = old[lo:hi]
    out[len(old):] = new
    out.flush()
    del out
    os.replace(tmp, path)  # a new inode under the old name: a hard link's other name keeps its file
