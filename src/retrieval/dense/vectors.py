"""The rescoring store and the one rescorer every recipe uses.

The store holds every passage's full vector in float16, or in int8 (one scale a vector, or one
affine range a dimension), or in int4 (one affine range a dimension, two codes a byte), the int8
and int4 codes optionally on the vectors' leading principal axes (PCA) first, or as 8-bit product
quantization codes (``pq``: m bytes a vector, one of 256 centroids for each of m sub-vectors, the
codebook trained at build); written as .npy and memory-mapped read-only at query time. ``Rescorer`` re-scores a compressed index's
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
CODEBOOK = "codebook.npy"  # pq: (m, 256, dim / m) float32, each sub-vector's 256 centroids
STORE_DTYPES = ("float16", "int8", "int4", "pq")
INT8_SCALES = ("vector", "dimension")
# int4 ranges: each dimension's 0.1% and 99.9% quantiles, not its min and max: 15 steps over the
# full range leave the bulk of the values in a few codes (SciFact, real MiniLM vectors: recall@10
# of re-scored exact candidates 0.927 with min/max, 0.942 with these quantiles)
INT4_QUANTILE = 0.001
PQ_TRAIN_POINTS = 65536  # 256 centroids x 256 points: FAISS's own cap for a PQ's k-means


def _whole(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= 1


def check_store_options(dtype: str, scale: str | None = None, pca_dim: int | None = None, dim: int | None = None,
                        m: int | None = None) -> None:
    """ValueError naming what is wrong with a store's settings."""
    if dtype not in STORE_DTYPES:
        raise ValueError(f"unknown store dtype {dtype!r} ({', '.join(STORE_DTYPES)})")
    if scale is not None and (dtype != "int8" or scale not in INT8_SCALES):
        raise ValueError(f"store scale {scale!r}: only for int8, and 'vector' or 'dimension'")
    if pca_dim is not None:
        if dtype not in ("int8", "int4") or not _whole(pca_dim):
            raise ValueError(f"store pca_dim {pca_dim!r}: only for int8 and int4, a whole number >= 1")
        if dim is not None and pca_dim >= dim:
            raise ValueError(f"store pca_dim {pca_dim} must be below the vectors' dimension {dim}")
    r = pca_dim or dim
    if dtype == "int4" and r is not None and r % 2:
        raise ValueError(f"store int4 packs two dimensions a byte: the dimension ({r}) must be even")
    if m is not None and dtype != "pq":
        raise ValueError(f"store m {m!r}: only for pq")
    if dtype == "pq":
        if not _whole(m):
            raise ValueError(f"store pq needs m, the number of sub-vectors (a whole number >= 1), not {m!r}")
        if dim is not None and dim % m:
            raise ValueError(f"store pq m {m} must divide the vectors' dimension {dim}")


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


def int4_ranges(y: np.ndarray, sample: int = 200_000, seed: int = 1234) -> np.ndarray:
    """(2, r) float32 [lo; step] of each dimension: lo and hi its INT4_QUANTILE and 1 - INT4_QUANTILE
    quantiles over up to ``sample`` rows, step = (hi - lo) / 15."""
    x = y if len(y) <= sample else y[np.sort(np.random.default_rng(seed).choice(len(y), sample, replace=False))]
    lo, hi = np.quantile(x, [INT4_QUANTILE, 1 - INT4_QUANTILE], axis=0)
    step = (hi - lo) / 15.0
    step[step <= 0] = 1.0
    return np.stack([lo, step]).astype(np.float32)


def quantize_int4(y: np.ndarray, quant: np.ndarray) -> np.ndarray:
    """(n, r / 2) uint8: c = clip(rint((y - lo) / step), 0, 15) a dimension, dimension 2j in the high
    nibble of byte j and 2j + 1 in the low one."""
    c = np.clip(np.rint((y - quant[0]) / quant[1]), 0, 15).astype(np.uint8)
    return (c[:, 0::2] << 4) | c[:, 1::2]


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    """float32 (n, 2 w) codes 0..15 of (n, w) packed bytes (quantize_int4's layout)."""
    out = np.empty((len(packed), 2 * packed.shape[1]), dtype=np.float32)
    out[:, 0::2] = packed >> 4
    out[:, 1::2] = packed & 15
    return out


def train_pq(y: np.ndarray, m: int, seed: int = 1234) -> np.ndarray:
    """(m, 256, d / m) float32: a FAISS 8-bit product quantizer's centroids, trained on up to
    PQ_TRAIN_POINTS rows of ``y``."""
    import faiss

    x = y if len(y) <= PQ_TRAIN_POINTS else y[np.sort(np.random.default_rng(seed).choice(len(y), PQ_TRAIN_POINTS, replace=False))]
    pq = faiss.ProductQuantizer(y.shape[1], m, 8)
    pq.cp.seed = seed
    pq.verbose = False
    pq.train(np.ascontiguousarray(x, dtype=np.float32))
    return faiss.vector_to_array(pq.centroids).reshape(m, 256, y.shape[1] // m).astype(np.float32)


def encode_pq(y: np.ndarray, codebook: np.ndarray, step: int = 1 << 16) -> np.ndarray:
    """(n, m) uint8: each sub-vector's nearest centroid (L2), by FAISS from the given codebook (the
    same codes for the rows of the first build and for rows appended later)."""
    import faiss

    m, ksub, dsub = codebook.shape
    pq = faiss.ProductQuantizer(m * dsub, m, 8)
    faiss.copy_array_to_vector(np.ascontiguousarray(codebook, dtype=np.float32).ravel(), pq.centroids)
    out = np.empty((len(y), m), dtype=np.uint8)
    for lo in range(0, len(y), step):
        out[lo:lo + step] = pq.compute_codes(np.ascontiguousarray(y[lo:lo + step], dtype=np.float32))
    return out


def write_store(vecs: np.ndarray, out_dir: Path, dtype: str, scale: str | None = None,
                pca_dim: int | None = None, m: int | None = None) -> dict:
    """Write ``vecs`` (n, d) float32 as the store; returns the manifest's store spec
    {"dtype", ["scale", "pca_dim", "m",] "files": [...]}.

    float16: the vectors rounded to float16. int8: optionally projected on their ``pca_dim``
    leading principal axes first, then int8 with one scale a vector (``scale="vector"``, the
    default) or one affine range a dimension (``"dimension"``). int4: likewise optionally PCA,
    then 4 bits a dimension over its quantile range (``int4_ranges``). pq: ``m`` 8-bit product
    quantization codes a vector and their trained codebook."""
    out_dir = Path(out_dir)
    check_store_options(dtype, scale, pca_dim, vecs.shape[1], m)
    if dtype == "float16":
        np.save(out_dir / VECTORS, vecs.astype(np.float16), allow_pickle=False)
        return {"dtype": "float16", "files": [VECTORS]}
    if dtype == "pq":
        codebook = train_pq(vecs, m)
        np.save(out_dir / VECTORS, encode_pq(vecs, codebook), allow_pickle=False)
        np.save(out_dir / CODEBOOK, codebook, allow_pickle=False)
        return {"dtype": "pq", "m": int(m), "files": sorted([VECTORS, CODEBOOK])}
    scale = scale or "vector" if dtype == "int8" else None
    files = [VECTORS]
    y = vecs
    if pca_dim is not None:
        pca = fit_pca(vecs, pca_dim)
        y = np.empty((len(vecs), pca_dim), dtype=np.float32)
        for lo in range(0, len(vecs), 1 << 16):  # bounded temporaries
            y[lo:lo + (1 << 16)] = (vecs[lo:lo + (1 << 16)] - pca[0]) @ pca[1:].T
        np.save(out_dir / PCA, pca, allow_pickle=False)
        files.append(PCA)
    if dtype == "int4":
        quant = int4_ranges(y)
        np.save(out_dir / VECTORS, quantize_int4(y, quant), allow_pickle=False)
        np.save(out_dir / QUANT, quant, allow_pickle=False)
        spec = {"dtype": "int4", "files": sorted(files + [QUANT])}
        if pca_dim is not None:
            spec["pca_dim"] = int(pca_dim)
        return spec
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
    bias = q . (lo + 128 step); int4 the same with lo + step * c (``gather`` unpacks the nibbles).
    PCA (r dims): x ~ mean + A^T y, so q is first mapped to A q and bias gains q . mean. pq:
    ``gather`` decodes the rows from the codebook (q~ = q, bias 0). ``dequantize(ids)`` gives the
    vectors the store stands for, in full dim.
    """

    def __init__(self, directory: Path, spec: dict, n: int, dim: int):
        directory = Path(directory)
        self.dtype = spec.get("dtype")
        self.scale = spec.get("scale", "vector") if self.dtype == "int8" else None
        self.pca_dim = spec.get("pca_dim")
        self.m = spec.get("m")
        path = directory / VECTORS
        try:
            check_store_options(self.dtype, self.scale, self.pca_dim, dim, self.m)
        except ValueError as exc:
            raise IndexFormatError(f"{path}: manifest's store spec {spec!r}: {exc}; rebuild the index "
                                   "(or open it with the rtv that wrote it)") from None
        r = self.pca_dim or dim
        self.full_dim = dim
        self.row_dim = r  # width of the rows ``gather`` returns

        def load(name):
            return np.load(directory / name, mmap_mode="r", allow_pickle=False)

        try:
            self.vectors = load(VECTORS)
            self.scales = load(SCALES) if self.scale == "vector" else None
            ranged = self.scale == "dimension" or self.dtype == "int4"
            quant = np.asarray(load(QUANT), dtype=np.float32) if ranged else None
            pca = np.asarray(load(PCA), dtype=np.float32) if self.pca_dim else None
            self.codebook = np.asarray(load(CODEBOOK), dtype=np.float32) if self.dtype == "pq" else None
        except (OSError, ValueError) as exc:
            raise IndexFormatError(f"{path}: unreadable rescoring store ({exc}); rebuild the index") from None
        want = {"float16": np.float16, "int8": np.int8}.get(self.dtype, np.uint8)
        width = {"int4": r // 2, "pq": self.m}.get(self.dtype, r)
        if self.vectors.shape != (n, width) or self.vectors.dtype != want:
            raise IndexFormatError(
                f"{path}: holds {self.vectors.shape} {self.vectors.dtype}, manifest says ({n}, {width}) "
                f"{np.dtype(want)}; the index is damaged, rebuild it")
        if self.scales is not None and (self.scales.shape != (n,) or self.scales.dtype != np.float32):
            raise IndexFormatError(f"{directory / SCALES}: wrong shape or type; rebuild the index")
        if quant is not None and quant.shape != (2, r):
            raise IndexFormatError(f"{directory / QUANT}: shape {quant.shape}, want (2, {r}); rebuild the index")
        if pca is not None and pca.shape != (r + 1, dim):
            raise IndexFormatError(f"{directory / PCA}: shape {pca.shape}, want ({r + 1}, {dim}); rebuild the index")
        if self.codebook is not None and self.codebook.shape != (self.m, 256, dim // self.m):
            raise IndexFormatError(f"{directory / CODEBOOK}: shape {self.codebook.shape}, want "
                                   f"({self.m}, 256, {dim // self.m}); rebuild the index")
        if self.codebook is not None:  # for gather: all centroids in one table, sub-quantizer j's from 256 j
            self._centroids = np.ascontiguousarray(self.codebook.reshape(-1, dim // self.m))
            self._first = (np.arange(self.m) * 256).astype(np.intp)
        self.lo, self.step = (quant[0], quant[1]) if quant is not None else (None, None)
        # codes c stand for lo + step * (c + offset): int8 codes are centred on 0, int4 ones are 0..15
        self.offset = 128.0 if self.dtype == "int8" else 0.0
        self.mean, self.axes = (pca[0], pca[1:]) if pca is not None else (None, None)

    @property
    def dim(self) -> int:
        """Dimension of the rows ``gather`` returns (the PCA dimension when reduced)."""
        return self.row_dim

    def prepare(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = np.asarray(q, dtype=np.float32)
        bias = np.zeros(len(q), dtype=np.float32)
        if self.axes is not None:
            bias += q @ self.mean
            q = q @ self.axes.T
        if self.step is not None:
            bias += q @ (self.lo + self.offset * self.step)
            q = q * self.step
        return np.ascontiguousarray(q, dtype=np.float32), bias

    def gather(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")  # sequential-ish reads of the mapped file
        raw = np.empty((len(ids), self.vectors.shape[1]), dtype=self.vectors.dtype)
        raw[order] = self.vectors[ids[order]]
        if self.dtype == "int4":
            return unpack_int4(raw)
        if self.dtype == "pq":  # row i, sub-vector j: centroid raw[i, j] of sub-quantizer j
            # one np.take over the flattened codebook: ~15x faster than codebook[arange(m), raw]
            return np.take(self._centroids, raw.astype(np.intp) + self._first, axis=0).reshape(len(ids), self.row_dim)
        return raw.astype(np.float32)

    def dots(self, qt: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """(b, kc) float32: prepared queries ``qt`` (b, r) times the gathered rows ``ids`` (b, kc).
        pq: from each query's lookup table (its sub-vectors' inner products with all 256
        centroids), summed over the rows' codes, without decoding the rows."""
        b, kc = ids.shape
        if self.dtype != "pq":
            return np.matmul(self.gather(ids.ravel()).reshape(b, kc, self.row_dim), qt[:, :, None])[..., 0]
        flat = ids.ravel()
        order = np.argsort(flat, kind="stable")
        raw = np.empty((len(flat), self.m), dtype=np.uint8)
        raw[order] = self.vectors[flat[order]]
        at = (raw.astype(np.intp) + self._first).reshape(b, kc, self.m)
        out = np.empty((b, kc), dtype=np.float32)
        for i in range(b):
            # (m, 256, dsub) @ (m, dsub, 1): entry 256 j + c is sub-vector j's product with centroid c
            lut = np.matmul(self.codebook, qt[i].reshape(self.m, -1, 1)).ravel()
            out[i] = np.take(lut, at[i]).sum(axis=1)
        return out

    def torch_rows(self, raw, consts):
        """``gather`` for torch: float32 rows of the raw stored rows ``raw`` (b, kc, width) on the
        device; ``consts`` = the codebook there (pq), else None."""
        import torch

        if self.dtype == "int4":
            raw = raw.to(torch.int16)
            return torch.stack([raw >> 4, raw & 15], dim=-1).flatten(-2).float()
        if self.dtype == "pq":
            sub = torch.arange(self.m, device=raw.device)
            return consts[sub, raw.long()].flatten(-2)
        return raw.float()

    def row_scales(self, ids: np.ndarray) -> np.ndarray | None:
        return None if self.scales is None else np.asarray(self.scales[np.asarray(ids, dtype=np.int64)], dtype=np.float32)

    def dequantize(self, ids: np.ndarray) -> np.ndarray:
        """The full-dimension float32 vectors rows ``ids`` stand for (what rescoring scores)."""
        y = self.gather(ids)
        s = self.row_scales(ids)
        if s is not None:
            y *= s[:, None]
        if self.step is not None:
            y = self.lo + self.step * (y + self.offset)
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
            s = self.store.dots(qt[lo:lo + per], flat.reshape(len(c), kc))
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
            cb = torch.from_numpy(np.array(self.store.codebook)).to(self.device) if self.store.codebook is not None else None
            self._on_device = (vec, sc, cb)
        vec, sc, cb = self._on_device
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
                rows = self.store.torch_rows(vec[ci], cb)  # (b, kc, dim)
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
    and PCA axes fitted on the vectors the store was built from (rows beyond those ranges clip);
    int4 likewise; pq with the codebook trained at the first build. The rows already there keep
    their codes."""
    directory = Path(directory)
    old = VectorStore(directory, spec, n_old, vecs.shape[1])
    if old.dtype == "float16":
        codes, scales = vecs.astype(np.float16), None
    elif old.dtype == "pq":
        codes, scales = encode_pq(vecs, old.codebook), None
    elif old.dtype == "int4":
        y = vecs if old.axes is None else (vecs - old.mean) @ old.axes.T
        codes, scales = quantize_int4(y, np.stack([old.lo, old.step])), None
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
