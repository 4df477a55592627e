"""Build and search the dense part of an index: FAISS (CPU or GPU) + exact rescoring.

On disk (``<index>/dense/``): ``index.faiss`` (always the CPU form, so it opens anywhere) and,
for compressed recipes, ``vectors.npy`` (+ ``scales.npy`` for int8): the full vectors used to
re-score the compressed index's candidates. The manifest section returned by ``build_dense``
describes both (see docs/formats.md, "dense").
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError, InputError, ModelError, RtvError, require
from ..progress import bar, note
from . import recipes
from .vectors import VectorStore, write_store

INDEX_FILE = "index.faiss"
SECTION_VERSION = 1
GPU_MAX_K = 2048  # FAISS GPU k-selection limit


# -- FAISS / GPU helpers ---------------------------------------------------------------------------
def _faiss():
    return require("faiss", "dense")


def gpu_count() -> int:
    """Number of GPUs FAISS can use (0 for faiss-cpu)."""
    faiss = _faiss()
    try:
        return int(faiss.get_num_gpus()) if hasattr(faiss, "StandardGpuResources") else 0
    except Exception:  # noqa: BLE001
        return 0


_GPU_RES = None


def _gpu_resources():
    global _GPU_RES
    if _GPU_RES is None:
        _GPU_RES = _faiss().StandardGpuResources()
    return _GPU_RES


def _use_gpu(device: str) -> bool:
    device = (device or "auto").lower()
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"--device must be auto, cpu or cuda (got {device!r})")
    if device == "cpu":
        return False
    n = gpu_count()
    if device.startswith("cuda") and n == 0:
        raise InputError(f"--device {device}: FAISS sees no GPU (faiss-cpu installed?); use --device auto or cpu,"
                         " or pip install 'rtv[gpu]'")
    return n > 0


def _gpu_capable(plan: dict) -> bool:
    return "HNSW" not in plan["factory"]  # FAISS has no GPU HNSW


def to_gpu(index, plan: dict):
    """A GPU copy of a CPU index (float16 lookup tables for IVF-PQ where the plan asks)."""
    faiss = _faiss()
    res = _gpu_resources()
    if plan["kind"] == "binary":
        return faiss.GpuIndexBinaryFlat(res, index)
    co = faiss.GpuClonerOptions()
    # for IVF-PQ this selects float16 lookup tables; for Flat/IVF-Flat it would store float16
    # vectors, which would make "flat" approximate, so only PQ gets it
    co.useFloat16 = bool(plan.get("gpu_float16_lut", True)) and "PQ" in plan["factory"]
    return faiss.index_cpu_to_gpu(res, 0, index, co)


def _set_params(index, plan: dict, params: dict, on_gpu: bool) -> None:
    faiss = _faiss()
    if plan["kind"] == "binary":
        return
    ps = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
    # a parameter the index has no use for (nprobe on flat, say: a small corpus fell back to it) is
    # left alone rather than an error
    if "nprobe" in params and "IVF" in plan["factory"]:
        ps.set_index_parameter(index, "nprobe", int(params["nprobe"]))
    if "ef_search" in params and "HNSW" in plan["factory"] and not on_gpu:
        ps.set_index_parameter(index, "efSearch", int(params["ef_search"]))


def code_bytes_per_vector(index, kind: str) -> float:
    """Bytes each added vector costs the index (codes + stored id + graph links), fixed parts
    (centroids, codebooks) left out: what grows with the corpus."""
    faiss = _faiss()
    if kind == "binary":
        return float(index.code_size)
    ivf = faiss.try_extract_index_ivf(index) if hasattr(faiss, "try_extract_index_ivf") else None
    if ivf is not None:
        return float(ivf.code_size + 8)  # codes + int64 id in the inverted list
    if hasattr(index, "hnsw"):
        hnsw = index.hnsw
        links = 2 * hnsw.nb_neighbors(0) * 4 + 4 if hasattr(hnsw, "nb_neighbors") else 0
        storage = faiss.downcast_index(index.storage)
        return float(getattr(storage, "code_size", index.d * 4) + links)
    return float(getattr(index, "code_size", index.d * 4))


def pack_bits(vecs: np.ndarray) -> np.ndarray:
    """Sign bits of each dimension, packed 8 to a byte (dim rounded up to a multiple of 8)."""
    return np.packbits(np.ascontiguousarray(vecs) > 0, axis=1)


# -- building ---------------------------------------------------------------------------------------
def embed_passages(texts: Iterable[str], n: int, embedder, batch: int | None = None) -> np.ndarray:
    """Embed ``n`` passage texts in order, with a progress bar; (n, dim) float32."""
    vecs = np.empty((n, embedder.dim), dtype=np.float32)
    step = batch or max(1024, 16 * embedder.default_batch_size)
    filled = 0
    buf: list[str] = []
    with bar(total=n, desc="embedding passages", unit="passage") as pb:
        def flush():
            nonlocal filled, buf
            if not buf:
                return
            if filled + len(buf) > n:
                raise RtvError(f"more passages than announced ({n}); the store changed during the build")
            vecs[filled:filled + len(buf)] = embedder.encode(buf, progress=False)
            filled += len(buf)
            pb.update(len(buf))
            buf = []

        for text in texts:
            buf.append(text)
            if len(buf) >= step:
                flush()
        flush()
    if filled != n:
        raise RtvError(f"{filled} passages embedded, {n} announced; the store changed during the build")
    return vecs


def build_dense(texts: Iterable[str], n: int, out_dir: Path, embedder, recipe: str | None = None,
                device: str | None = None) -> dict:
    """Embed the passages (in passage-id order), build the FAISS index and the rescoring store in
    ``out_dir`` and return the manifest's "dense" section. Trains/adds on the GPU when FAISS has one."""
    if n <= 0:
        raise InputError("the corpus has no passages to embed (empty corpus or only empty documents)")
    recipes.load_recipe(recipe)  # unknown recipe: fail before embedding
    started = time.time()
    vecs = embed_passages(texts, n, embedder)
    embed_s = time.time() - started
    section = build_from_vectors(vecs, out_dir, recipe, model_id=embedder.model_id,
                                 device=device if device is not None else getattr(embedder, "device", "auto"))
    section["embed_seconds"] = round(embed_s, 3)
    section["embed_device"] = getattr(embedder, "device", "cpu")
    return section


def build_from_vectors(vecs: np.ndarray, out_dir: Path, recipe: str | None = None, *, model_id: str = "vectors",
                       device: str = "auto", quiet: bool = False) -> dict:
    """Build from L2-normalised float32 vectors (n, dim): the part of ``build_dense`` after embedding."""
    faiss = _faiss()
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or len(vecs) == 0:
        raise InputError(f"no vectors to index (got shape {vecs.shape})")
    n, dim = vecs.shape
    plan = recipes.plan(recipe, n, dim, quiet=quiet)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = (device or "auto").lower()
    gpu = _use_gpu("cpu" if dev == "cpu" else "auto") and _gpu_capable(plan) and plan["kind"] != "binary"
    t0 = time.time()
    rng = np.random.default_rng(1234)
    if plan["kind"] == "binary":
        codes = pack_bits(vecs)
        index = faiss.index_binary_factory(codes.shape[1] * 8, plan["factory"])
        if not index.is_trained:
            index.train(codes[np.sort(rng.choice(n, plan["train_points"] or n, replace=False))])
        index.add(codes)
        train_s = 0.0
    else:
        index = faiss.index_factory(dim, plan["factory"], faiss.METRIC_INNER_PRODUCT)
        if "ef_construction" in plan["params"] and hasattr(index, "hnsw"):
            index.hnsw.efConstruction = plan["params"]["ef_construction"]
        work = to_gpu(index, plan) if gpu else index
        if not index.is_trained:
            sample = vecs if plan["train_points"] >= n else vecs[np.sort(rng.choice(n, plan["train_points"], replace=False))]
            note_msg = f"training {plan['factory']} on {len(sample)} vectors ({'GPU' if gpu else 'CPU'})"
            if not quiet:
                note(note_msg)
            work.train(sample)
        train_s = time.time() - t0
        step = 1 << 16
        with bar(total=n, desc="adding vectors", unit="vec") as pb:
            for lo in range(0, n, step):
                work.add(vecs[lo:lo + step])
                pb.update(min(step, n - lo))
        index = faiss.index_gpu_to_cpu(work) if gpu else work
    build_s = time.time() - t0
    if plan["kind"] == "binary":
        faiss.write_index_binary(index, str(out_dir / INDEX_FILE))
    else:
        faiss.write_index(index, str(out_dir / INDEX_FILE))
    store = None if plan["store"] == "none" else write_store(vecs, out_dir, plan["store"])
    files = {INDEX_FILE: {"bytes": (out_dir / INDEX_FILE).stat().st_size}}
    for f in (store or {}).get("files", []):
        files[f] = {"bytes": (out_dir / f).stat().st_size}
    return {
        "version": SECTION_VERSION,
        "model": model_id,
        "dim": int(dim),
        "normalized": True,
        "recipe": plan["recipe"],
        "kind": plan["kind"],
        "factory": plan["factory"],
        "metric": "hamming" if plan["kind"] == "binary" else "inner_product",
        "n_vectors": int(n),
        "params": plan["params"],
        "layout": {k: plan[k] for k in ("nlist", "m", "M") if k in plan},
        "gpu_float16_lut": plan["gpu_float16_lut"],
        "store": store,
        "files": files,
        "index_bytes_per_vector": round(files[INDEX_FILE]["bytes"] / n, 2),
        "code_bytes_per_vector": code_bytes_per_vector(index, plan["kind"]),
        "train_points": int(plan["train_points"]),
        "train_seconds": round(train_s, 3),
        "build_seconds": round(build_s, 3),
        "build_device": "gpu" if gpu else "cpu",
        "faiss_version": getattr(faiss, "__version__", "?"),
    }


def _torch_cuda() -> str | None:
    """'cuda' when torch is installed and sees a GPU, else None."""
    try:
        import torch
    except ImportError:
        return None
    return "cuda" if torch.cuda.is_available() else None


# -- model check --------------------------------------------------------------------------------------
def check_model(section: dict, embedder) -> None:
    """ModelError when ``embedder`` is not the model the index was built with."""
    if section.get("model") != embedder.model_id or int(section.get("dim", -1)) != int(embedder.dim):
        raise ModelError(
            f"this index was built with model {section.get('model')!r} (dim {section.get('dim')}), "
            f"not {embedder.model_id!r} (dim {embedder.dim}); query with --model {section.get('model')} "
            "or rebuild the index with the new model")


# -- searching -------------------------------------------------------------------------------------
_REQUIRED = ("model", "dim", "kind", "factory", "n_vectors", "params", "files")


class DenseIndex:
    """The dense part of an index, opened for search (on the GPU when FAISS has one)."""

    def __init__(self, directory: Path, section: dict, index, store: VectorStore | None, on_gpu: bool,
                 device: str, embedder=None):
        self.directory = Path(directory)
        self.section = section
        self.index = index
        self.store = store
        self.on_gpu = on_gpu
        self.device = device
        self.params = dict(section["params"])
        self.n = int(section["n_vectors"])
        self.dim = int(section["dim"])
        self._embedder = embedder
        if embedder is not None:
            check_model(section, embedder)

    @classmethod
    def open(cls, directory: str | Path, section: dict, device: str = "auto", embedder=None) -> "DenseIndex":
        faiss = _faiss()
        directory = Path(directory)
        if not isinstance(section, dict) or any(k not in section for k in _REQUIRED):
            missing = [k for k in _REQUIRED if not isinstance(section, dict) or k not in section]
            raise IndexFormatError(f"{directory}: manifest's dense section lacks {missing}; rebuild the index")
        if int(section.get("version", 1)) > SECTION_VERSION:
            raise IndexFormatError(f"{directory}: dense part written by a newer rtv (version {section['version']}); upgrade rtv")
        for name, info in section["files"].items():
            p = directory / name
            if not p.is_file():
                raise IndexFormatError(f"{p}: missing; rebuild the index with `rtv index`")
            if p.stat().st_size != int(info["bytes"]):
                raise IndexFormatError(f"{p}: {p.stat().st_size} bytes, manifest says {info['bytes']}; "
                                       "the file is truncated or replaced, rebuild the index")
        path = str(directory / INDEX_FILE)
        binary = section["kind"] == "binary"
        try:
            index = faiss.read_index_binary(path) if binary else faiss.read_index(path)
        except RuntimeError as exc:
            raise IndexFormatError(f"{path}: unreadable FAISS index ({str(exc).splitlines()[0][:160]}); rebuild the index") from None
        dim = int(section["dim"])
        want_d = ((dim + 7) // 8) * 8 if binary else dim
        if index.ntotal != int(section["n_vectors"]) or index.d != want_d:
            raise IndexFormatError(f"{path}: holds {index.ntotal} vectors of dim {index.d}, manifest says "
                                   f"{section['n_vectors']} of dim {want_d}; rebuild the index")
        store = None
        if section.get("store"):
            store = VectorStore(directory, section["store"], int(section["n_vectors"]), dim)
        plan = {"kind": section["kind"], "factory": section["factory"],
                "gpu_float16_lut": section.get("gpu_float16_lut", True)}
        on_gpu = _use_gpu(device) and _gpu_capable(plan)
        if on_gpu:
            index = to_gpu(index, plan)
        _set_params(index, plan, section["params"], on_gpu)
        return cls(directory, section, index, store, on_gpu, device, embedder)

    # -- queries --------------------------------------------------------------------------------------
    @property
    def embedder(self):
        if self._embedder is None:
            from .embedder import load_embedder

            self._embedder = load_embedder(self.section["model"], "cpu" if self.device == "cpu" else "auto")
            check_model(self.section, self._embedder)
        return self._embedder

    @embedder.setter
    def embedder(self, value) -> None:
        check_model(self.section, value)
        self._embedder = value

    def embed(self, queries: list[str]) -> np.ndarray:
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise InputError("empty query; give some text to search for")
        return self.embedder.encode(queries, progress=False)

    def set_params(self, **params) -> None:
        """Change search parameters (nprobe, ef_search, rescore_multiplier) for later searches."""
        self.params.update({k: int(v) for k, v in params.items() if v is not None})
        plan = {"kind": self.section["kind"], "factory": self.section["factory"]}
        _set_params(self.index, plan, self.params, self.on_gpu)

    def search(self, queries, k: int, rescore: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` passages for each query (texts, or an (nq, dim) float32 array of normalised
        query vectors): (scores float32 (nq, k), ids int64 (nq, k)); rows are padded with id -1 and
        score -inf where fewer than k passages exist. Scores are inner products (cosine) of full
        vectors, after rescoring (``rescore=False`` gives the compressed index's own order)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
            raise InputError(f"-k {k}: must be a whole number >= 1")
        k = int(k)
        if isinstance(queries, np.ndarray):
            q = np.ascontiguousarray(queries, dtype=np.float32)
            if q.ndim == 1:
                q = q[None, :]
        else:
            if isinstance(queries, str):
                queries = [queries]
            q = self.embed(list(queries))
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise InputError(f"query vectors have shape {q.shape}; this index wants (n, {self.dim})")
        nq = len(q)
        if nq == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        mult = int(self.params.get("rescore_multiplier", 1)) if (rescore and self.store is not None) else 1
        binary = self.section["kind"] == "binary"
        if binary and self.store is not None and rescore:
            mult = max(mult, 1)
        kc = min(max(k, k * mult), self.n)
        if self.on_gpu:
            kc = min(kc, GPU_MAX_K)
        if binary:
            dist, ids = self.index.search(pack_bits(q), kc)
            scores = -dist.astype(np.float32)  # larger is better
        else:
            scores, ids = self.index.search(q, kc)
        ids = ids.astype(np.int64, copy=False)
        if self.store is not None and (rescore or binary):
            return self._rescore(q, ids, k)
        return _pad(scores[:, :k], ids[:, :k], k)

    def _rescore(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.on_gpu and self.rescore_on_gpu:
            dev = _torch_cuda()
            if dev is not None:
                return self._rescore_torch(q, cand, k, dev)
        return self._rescore_numpy(q, cand, k)

    rescore_on_gpu = True  # with the index on the GPU, a copy of the store there re-scores (torch)

    def _rescore_torch(self, q: np.ndarray, cand: np.ndarray, k: int, device: str) -> tuple[np.ndarray, np.ndarray]:
        """The same rescoring as ``_rescore_numpy``, on ``device`` with torch: the store is copied there
        once (n x dim float16 or int8, what the mapped file holds)."""
        import torch

        if getattr(self, "_store_t", None) is None or self._store_t[0] != device:
            vec = torch.from_numpy(np.array(self.store.vectors)).to(device)  # a writable copy of the map
            sc = (torch.from_numpy(np.array(self.store.scales)).to(device)
                  if self.store.scales is not None else None)
            self._store_t = (device, vec, sc)
        _, vec, sc = self._store_t
        nq, kc = cand.shape
        take = min(k, kc)
        out_s = np.full((nq, k), -np.inf, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        per = max(1, (256 << 20) // max(1, kc * self.dim * 4))
        with torch.inference_mode():
            for lo in range(0, nq, per):
                c = torch.from_numpy(cand[lo:lo + per]).to(device)
                qq = torch.from_numpy(q[lo:lo + per]).to(device)
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

    def _rescore_numpy(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        nq, kc = cand.shape
        out_s = np.full((nq, k), -np.inf, dtype=np.float32)
        out_i = np.full((nq, k), -1, dtype=np.int64)
        per = max(1, (64 << 20) // max(1, kc * self.dim * 4))  # ~64 MB of gathered vectors at a time
        for lo in range(0, nq, per):
            c = cand[lo:lo + per]
            valid = c >= 0
            rows = self.store.gather(np.where(valid, c, 0).ravel()).reshape(len(c), kc, self.dim)
            s = np.matmul(rows, q[lo:lo + per, :, None])[..., 0]
            s[~valid] = -np.inf
            take = min(k, kc)
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

    @property
    def memory_bytes(self) -> int:
        """Bytes of the compressed index file (what search keeps in RAM / GPU memory)."""
        return int(self.section["files"][INDEX_FILE]["bytes"])

    def __repr__(self) -> str:
        return (f"DenseIndex({self.section['recipe']!r}, {self.section['factory']!r}, n={self.n}, "
                f"dim={self.dim}, gpu={self.on_gpu})")


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = scores.astype(np.float32, copy=True)
    ids = ids.astype(np.int64, copy=True)
    scores[ids < 0] = -np.inf
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return scores, ids
