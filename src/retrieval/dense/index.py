"""Build and search the dense part of an index: FAISS (CPU or GPU) + exact rescoring.

On disk (``<index>/dense/``): ``index.faiss`` (always the CPU form, so it opens anywhere) and,
for compressed recipes, ``vectors.npy`` (+ ``scales.npy`` / ``quant.npy`` / ``pca.npy`` for int8
stores): the full vectors used to re-score the compressed index's candidates. The manifest section returned by ``build_dense``
describes both (see docs/formats.md, "dense").

What differs between float indexes (flat, IVF-PQ, HNSW) and binary ones (sign bits, Hamming) lives
in one codec object (``codec_for``); rescoring, the same for every recipe, in ``vectors.Rescorer``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError, InputError, ModelError, RtvError, require
from ..progress import bar, note
from . import recipes
from .vectors import Rescorer, VectorStore, write_store

INDEX_FILE = "index.faiss"
SECTION_VERSION = 1
GPU_MAX_K = 2048  # FAISS GPU k-selection limit
# a filtered search over at most this many allowed vectors scores them all exactly (numpy over the
# rescoring store, ~1.5 us a vector) instead of probing the index: no slower than IVF-PQ's ~1 ms at
# that size, and never comes back short (eval/results/bench_filter.json)
BRUTE_FORCE_MAX = 2048
SCORE_CHUNK = 65536  # vectors scored at once by that exact scoring (bounded temporaries)


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


def pack_bits(vecs: np.ndarray) -> np.ndarray:
    """Sign bits of each dimension, packed 8 to a byte (dim rounded up to a multiple of 8)."""
    return np.packbits(np.ascontiguousarray(vecs) > 0, axis=1)


class _Codec:
    def __init__(self, factory: str, gpu_float16_lut: bool = True):
        self.factory = factory
        self.gpu_float16_lut = gpu_float16_lut


class FloatCodec(_Codec):
    """Float32 vectors in a FAISS ``Index`` (flat, IVF-PQ, HNSW) under inner product."""

    kind = "float"
    metric = "inner_product"

    def encode(self, vecs: np.ndarray) -> np.ndarray:
        return vecs

    def index_dim(self, dim: int) -> int:
        return dim

    def new(self, dim: int):
        faiss = _faiss()
        return faiss.index_factory(dim, self.factory, faiss.METRIC_INNER_PRODUCT)

    def write(self, index, path: str) -> None:
        _faiss().write_index(index, path)

    def read(self, path: str, mapped: bool = False):
        """The index in ``path``; ``mapped``: a flat index's vectors memory-mapped in place, read only
        (FAISS's IO_FLAG_MMAP_IFC: opening a 150 MB flat index took 0.08 s instead of 0.32 s; pages
        come in as searches touch them). Only for search: ``rtv add`` reads its own copy to change."""
        faiss = _faiss()
        if mapped and self.factory == "Flat" and hasattr(faiss, "IO_FLAG_MMAP_IFC"):
            return faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC)
        return faiss.read_index(path)

    def file_bytes(self, index) -> int:
        """Bytes ``write`` would put on disk for ``index``."""
        return int(_faiss().serialize_index(index).size)

    def gpu_ok(self, building: bool) -> bool:
        # FAISS has no GPU HNSW, PQ fast-scan (x4fs) or RaBitQ index
        return not any(tag in self.factory for tag in ("HNSW", "x4fs", "RaBitQ"))

    def to_gpu(self, index):
        faiss = _faiss()
        co = faiss.GpuClonerOptions()
        # for IVF-PQ this selects float16 lookup tables; for Flat/IVF-Flat it would store float16
        # vectors, which would make "flat" approximate, so only PQ gets it
        co.useFloat16 = self.gpu_float16_lut and "PQ" in self.factory
        return faiss.index_cpu_to_gpu(_gpu_resources(), 0, index, co)

    def to_cpu(self, index):
        return _faiss().index_gpu_to_cpu(index)

    def set_params(self, index, params: dict, on_gpu: bool) -> None:
        faiss = _faiss()
        ps = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
        # a parameter the index has no use for (nprobe on flat, say: a small corpus fell back to it) is
        # left alone rather than an error
        if "nprobe" in params and "IVF" in self.factory:
            ps.set_index_parameter(index, "nprobe", int(params["nprobe"]))
        if "ef_search" in params and "HNSW" in self.factory and not on_gpu:
            ps.set_index_parameter(index, "efSearch", int(params["ef_search"]))

    def scores(self, dist: np.ndarray) -> np.ndarray:
        return dist  # inner products (approximate for compressed codes): larger is better


class BinaryCodec(_Codec):
    """Sign bits of each dimension in a FAISS ``IndexBinary`` under Hamming distance."""

    kind = "binary"
    metric = "hamming"

    def encode(self, vecs: np.ndarray) -> np.ndarray:
        return pack_bits(vecs)

    def index_dim(self, dim: int) -> int:
        return ((dim + 7) // 8) * 8

    def new(self, dim: int):
        return _faiss().index_binary_factory(self.index_dim(dim), self.factory)

    def write(self, index, path: str) -> None:
        _faiss().write_index_binary(index, path)

    def read(self, path: str, mapped: bool = False):
        return _faiss().read_index_binary(path)  # FAISS maps no binary index in place: always read

    def file_bytes(self, index) -> int:
        return int(_faiss().serialize_index_binary(index).size)

    def gpu_ok(self, building: bool) -> bool:
        # built on the CPU (nothing to train; packing bits costs little), so no GPU-to-CPU copy is needed
        return not building

    def to_gpu(self, index):
        return _faiss().GpuIndexBinaryFlat(_gpu_resources(), index)

    def set_params(self, index, params: dict, on_gpu: bool) -> None:
        pass  # exhaustive Hamming search has no search parameters

    def scores(self, dist: np.ndarray) -> np.ndarray:
        return -dist.astype(np.float32)  # minus the Hamming distance: larger is better


def codec_for(kind: str, factory: str, gpu_float16_lut: bool = True) -> FloatCodec | BinaryCodec:
    """The codec of a plan or manifest section's ``kind`` ("float" or "binary")."""
    if kind not in ("float", "binary"):
        raise IndexFormatError(f"dense kind {kind!r} unknown (float or binary); rebuild the index")
    return (BinaryCodec if kind == "binary" else FloatCodec)(factory, bool(gpu_float16_lut))


# -- building ---------------------------------------------------------------------------------------
def embed_passages(texts: Iterable[str], n: int, embedder) -> np.ndarray:
    """Embed ``n`` passage texts in order, with a progress bar; (n, dim) float32."""
    vecs = np.empty((n, embedder.dim), dtype=np.float32)
    step = getattr(embedder, "encode_step", None) or max(1024, 16 * embedder.default_batch_size)
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
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or len(vecs) == 0:
        raise InputError(f"no vectors to index (got shape {vecs.shape})")
    n, dim = vecs.shape
    plan = recipes.plan(recipe, n, dim, quiet=quiet)
    codec = codec_for(plan["kind"], plan["factory"], plan["gpu_float16_lut"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gpu = _use_gpu("cpu" if (device or "auto").lower() == "cpu" else "auto") and codec.gpu_ok(building=True)
    t0 = time.time()
    codes = codec.encode(vecs)
    index = codec.new(dim)
    if "ef_construction" in plan["params"] and hasattr(index, "hnsw"):
        index.hnsw.efConstruction = plan["params"]["ef_construction"]
    work = codec.to_gpu(index) if gpu else index
    if not index.is_trained:
        rng = np.random.default_rng(1234)
        sample = codes if plan["train_points"] >= n else codes[np.sort(rng.choice(n, plan["train_points"], replace=False))]
        if not quiet:
            note(f"training {plan['factory']} on {len(sample)} vectors ({'GPU' if gpu else 'CPU'})")
        work.train(sample)
    train_s = time.time() - t0
    # the trained, still empty index's file size: what the file holds whatever the corpus size
    # (centroids, codebooks, headers), so the rest of the file is what each vector costs
    fixed_bytes = codec.file_bytes(codec.to_cpu(work) if gpu else work)
    step = 1 << 16
    with bar(total=n, desc="adding vectors", unit="vec") as pb:
        for lo in range(0, n, step):
            work.add(codes[lo:lo + step])
            pb.update(min(step, n - lo))
    index = codec.to_cpu(work) if gpu else work
    build_s = time.time() - t0
    codec.write(index, str(out_dir / INDEX_FILE))
    store = None if plan["store"] == "none" else write_store(vecs, out_dir, plan["store"], **plan["store_options"])
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
        "metric": codec.metric,
        "n_vectors": int(n),
        "params": plan["params"],
        "layout": {k: plan[k] for k in ("nlist", "m", "M") if k in plan},
        "gpu_float16_lut": plan["gpu_float16_lut"],
        "store": store,
        "files": files,
        "index_bytes_per_vector": round(files[INDEX_FILE]["bytes"] / n, 2),
        # measured: the index file's bytes beyond its fixed part, per vector (codes, ids in the
        # inverted lists, graph links: what grows with the corpus)
        "code_bytes_per_vector": round((files[INDEX_FILE]["bytes"] - fixed_bytes) / n, 2),
        "train_points": int(plan["train_points"]),
        "train_seconds": round(train_s, 3),
        "build_seconds": round(build_s, 3),
        "build_device": "gpu" if gpu else "cpu",
        "faiss_version": getattr(_faiss(), "__version__", "?"),
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
                 device: str, embedder=None, engine=None, engine_why: str = ""):
        self.directory = Path(directory)
        # exact float16 search with torch (gpu_exact.GpuExact), when chosen at open; else FAISS
        self.engine = engine
        self.engine_why = engine_why
        self.section = section
        self.codec = codec_for(section["kind"], section["factory"], section.get("gpu_float16_lut", True))
        self.index = index
        self.store = store
        # with the index on the GPU, a copy of the store there re-scores (torch), when torch sees it
        self.rescorer = None if store is None else Rescorer(store, _torch_cuda() if on_gpu else None)
        self.on_gpu = on_gpu
        self.device = device
        self.params = dict(section["params"])
        self.n = int(section["n_vectors"])
        self.dim = int(section["dim"])
        self._embedder = embedder
        if embedder is not None:
            check_model(section, embedder)

    @classmethod
    def open(cls, directory: str | Path, section: dict, device: str = "auto", embedder=None,
             exact: str = "auto") -> "DenseIndex":
        """Open for search. ``exact`` picks the engine of a flat (exact) index: "auto" searches it in
        float16 with torch on the GPU when torch sees one (``device`` auto or cuda) and the vectors fit
        in its free memory, else FAISS (a notice says which and why); "torch" always uses the torch
        engine, on ``device`` (``cpu`` too: the same code); "faiss" always FAISS. Compressed recipes
        (pq, binary, hnsw) always search with FAISS."""
        directory = Path(directory)
        if exact not in ("auto", "torch", "faiss"):
            raise InputError(f"exact={exact!r}: must be auto, torch or faiss")
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
        codec = codec_for(section["kind"], section["factory"], section.get("gpu_float16_lut", True))
        path = str(directory / INDEX_FILE)
        try:
            index = codec.read(path, mapped=True)
        except RuntimeError as exc:
            raise IndexFormatError(f"{path}: unreadable FAISS index ({str(exc).splitlines()[0][:160]}); rebuild the index") from None
        dim = int(section["dim"])
        want_d = codec.index_dim(dim)
        if index.ntotal != int(section["n_vectors"]) or index.d != want_d:
            raise IndexFormatError(f"{path}: holds {index.ntotal} vectors of dim {index.d}, manifest says "
                                   f"{section['n_vectors']} of dim {want_d}; rebuild the index")
        store = None
        if section.get("store"):
            store = VectorStore(directory, section["store"], int(section["n_vectors"]), dim)
        engine, why = _exact_engine(index, section, device, exact)
        if engine is not None:
            return cls(directory, section, index, store, False, device, embedder, engine, why)
        on_gpu = _use_gpu(device) and codec.gpu_ok(building=False)
        if on_gpu:
            index = codec.to_gpu(index)
        codec.set_params(index, section["params"], on_gpu)
        return cls(directory, section, index, store, on_gpu, device, embedder, None, why)

    # -- queries --------------------------------------------------------------------------------------
    @property
    def embedder(self):
        if self._embedder is None:
            # queries without torch where the model allows (ONNX Runtime / OpenVINO on the CPU cores,
            # also beside a GPU: one query is cheap there); else sentence-transformers
            from .embedder import load_query_embedder

            self._embedder = load_query_embedder(self.section["model"], self.device)
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
        self.codec.set_params(self.index, self.params, self.on_gpu)

    def search(self, queries, k: int, rescore: bool = True, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` passages for each query (texts, or an (nq, dim) float32 array of normalised
        query vectors): (scores float32 (nq, k), ids int64 (nq, k)); rows are padded with id -1 and
        score -inf where fewer than k passages exist. Scores are inner products (cosine) of full
        vectors, after rescoring. ``rescore=False`` (or a recipe without a store) gives the index's
        own order and scores: inner products, approximate for compressed codes, or minus the Hamming
        distance for binary codes. ``allowed`` (a boolean mask over passage ids, from a
        retrieval.filters.DocFilter) restricts the search to those passages, inside it
        (``_search_allowed``): k come back whenever k allowed passages exist."""
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
        if len(q) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        if allowed is not None:
            return self._search_allowed(q, k, rescore, allowed)
        if self.engine is not None:
            # float16 selection, its candidates re-scored in float32 from the float16 vectors
            # (rescore=False: the float16 scores themselves)
            return self.engine.search(q, k, rescore=rescore)
        rescorer = self.rescorer if rescore else None
        # rescoring looks at rescore_multiplier times more candidates than it returns
        mult = int(self.params.get("rescore_multiplier", 1)) if rescorer else 1
        kc = min(max(k, k * mult), self.n)
        if self.on_gpu:
            kc = min(kc, GPU_MAX_K)
        dist, ids = self.index.search(self.codec.encode(q), kc)
        ids = ids.astype(np.int64, copy=False)
        if rescorer is not None:
            return rescorer(q, ids, k)
        return _pad(self.codec.scores(dist)[:, :k], ids[:, :k], k)

    # -- filtered search ------------------------------------------------------------------------------
    def _search_allowed(self, q: np.ndarray, k: int, rescore: bool, allowed: np.ndarray):
        """Search among the allowed passages only. The torch engine (flat, on a GPU) masks the
        excluded columns. With a rescoring store, a small allowed set (<= BRUTE_FORCE_MAX) is
        scored exactly from it: about as cheap as probing, and never short. Otherwise FAISS
        searches with an IDSelectorBitmap (a flat index: exact, never short), so the candidates
        are all allowed; an IVF
        or HNSW search probing few lists can still find fewer than k allowed ones (a selective
        filter), and those queries are answered by the exact scoring instead."""
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != (self.n,):
            raise InputError(f"allowed: a mask of {allowed.shape} for {self.n} vectors")
        ids = np.flatnonzero(allowed).astype(np.int64)
        if len(ids) == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        if self.engine is not None:  # exact float16 search on the device, the excluded columns masked
            return self.engine.search(q, k, rescore=rescore, allowed=allowed)
        if len(ids) <= BRUTE_FORCE_MAX and self.store is not None:
            return self._score_exactly(q, ids, k)
        scores, out = self._faiss_allowed(q, k, rescore, allowed)
        short = (out >= 0).sum(axis=1) < min(k, len(ids))
        if short.any():
            scores[short], out[short] = self._score_exactly(q[short], ids, k)
        return scores, out

    def _faiss_allowed(self, q: np.ndarray, k: int, rescore: bool, allowed: np.ndarray):
        faiss = _faiss()
        rescorer = self.rescorer if rescore else None
        mult = int(self.params.get("rescore_multiplier", 1)) if rescorer else 1
        kc = min(max(k, k * mult), self.n)
        codes = self.codec.encode(q)
        if self.on_gpu:
            # FAISS's GPU indexes take no IDSelector: more candidates (by the allowed fraction),
            # the excluded ones dropped; a query left short goes to the exact scoring
            kc = min(GPU_MAX_K, self.n, int(np.ceil(kc * self.n / max(1, int(allowed.sum())))))
            dist, ids = self.index.search(codes, kc)
            ids = ids.astype(np.int64, copy=True)
            ids[(ids >= 0) & ~allowed[np.maximum(ids, 0)]] = -1
        else:
            bitmap = np.packbits(allowed, bitorder="little")  # bit i of byte i // 8 = passage i
            sel = faiss.IDSelectorBitmap(self.n, faiss.swig_ptr(bitmap))
            dist, ids = self.index.search(codes, kc, params=_selector_params(self.index, sel))
            ids = ids.astype(np.int64, copy=False)
        if rescorer is not None:
            return rescorer(q, ids, k)
        dist = np.where(ids >= 0, dist, -np.inf if self.codec.kind == "float" else np.inf)
        if self.on_gpu:  # the dropped candidates: the kept ones first, in order
            order = np.argsort(ids < 0, axis=1, kind="stable")
            dist, ids = np.take_along_axis(dist, order, 1), np.take_along_axis(ids, order, 1)
        return _pad(self.codec.scores(dist)[:, :k], ids[:, :k], k)

    def _score_exactly(self, q: np.ndarray, ids: np.ndarray, k: int):
        """Top k of `ids` by the inner product of `q` with the vectors rescoring uses (the store's,
        else the index's own float vectors), ties to the lower id; in chunks of ids."""
        nq = len(q)
        best_s = np.full((nq, 0), -np.inf, np.float32)
        best_i = np.zeros((nq, 0), np.int64)
        for lo in range(0, len(ids), SCORE_CHUNK):
            part = ids[lo:lo + SCORE_CHUNK]
            s = q @ self._vectors(part).T
            best_s = np.concatenate([best_s, s.astype(np.float32)], axis=1)
            best_i = np.concatenate([best_i, np.broadcast_to(part, (nq, len(part)))], axis=1)
            take = min(k, best_s.shape[1])
            top = np.argpartition(-best_s, take - 1, axis=1)[:, :take] if take < best_s.shape[1] else \
                np.tile(np.arange(best_s.shape[1]), (nq, 1))
            best_s, best_i = np.take_along_axis(best_s, top, 1), np.take_along_axis(best_i, top, 1)
        order = np.lexsort((best_i, -best_s), axis=1) if nq else np.zeros((0, 0), np.int64)
        best_s, best_i = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
        return _pad(best_s, best_i, k)

    def _vectors(self, ids: np.ndarray) -> np.ndarray:
        """Full float32 vectors of passages `ids`: the rescoring store's, else the index's own."""
        if self.store is not None:
            return self.store.dequantize(ids)
        if self.codec.kind != "float":
            raise InputError(f"{self.directory}: a binary index without a rescoring store cannot be filtered exactly")
        index = self.codec.to_cpu(self.index) if self.on_gpu else self.index
        ivf = _faiss().try_extract_index_ivf(index)
        if ivf is not None and not ivf.direct_map.type:
            ivf.make_direct_map()
        return np.asarray(index.reconstruct_batch(ids), dtype=np.float32)

    def __repr__(self) -> str:
        engine = f", engine={self.engine!r}" if self.engine is not None else ""
        return (f"DenseIndex({self.section['recipe']!r}, {self.section['factory']!r}, n={self.n}, "
                f"dim={self.dim}, gpu={self.on_gpu}{engine})")


def _exact_engine(index, section: dict, device: str, exact: str):
    """(GpuExact or None, why) for ``DenseIndex.open``: the torch engine for a flat float index when
    ``exact`` asks for it or ("auto") torch sees a GPU and the float16 vectors fit there."""
    flat = section.get("kind") == "float" and section.get("factory") == "Flat"
    if exact == "faiss" or not flat:
        return None, ""
    from . import gpu_exact

    n, dim = int(section["n_vectors"]), int(section["dim"])
    if exact == "torch":
        dev = gpu_exact.cuda_device(device) or ("cpu" if (device or "auto").lower() in ("cpu", "auto") else None)
        if dev is None:
            raise InputError(f"--device {device}: torch sees no CUDA GPU here; use --device cpu or auto")
    else:
        dev = gpu_exact.cuda_device(device)
        if dev is None:
            return None, ""  # no GPU for torch: FAISS, as before
    # a float32 copy for rescoring too (float32 exact scores) when that fits, else float16 alone
    ok32, fit = gpu_exact.fits(n, dim, dev, bytes_per_value=6)
    ok16, fit16 = (True, fit) if ok32 else gpu_exact.fits(n, dim, dev)
    if not ok16 and exact == "auto":
        why = f"flat index: {fit16}; searching with FAISS instead of exact float16 on the GPU"
        note(why)
        return None, why
    rescore_from = "float32" if ok32 else "float16"
    why = (f"flat index: exact float16 search with torch on {dev}, top candidates re-scored from "
           f"{rescore_from} vectors ({fit if ok32 else fit16})")
    note(why)
    return gpu_exact.GpuExact(_flat_vectors(index), dev, rescore_from=rescore_from), why


def _flat_vectors(index, step: int = 1 << 18) -> np.ndarray:
    """The float32 (n, d) vectors of a FAISS flat index: a view of its storage when it has one
    (no copy), else reconstructed in chunks."""
    n, d = int(index.ntotal), int(index.d)
    if hasattr(index, "get_xb"):
        try:
            return _faiss().rev_swig_ptr(index.get_xb(), n * d).reshape(n, d)
        except Exception:  # noqa: BLE001 - not a plain float flat index: reconstruct
            pass
    out = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        out[lo:hi] = index.reconstruct_n(lo, hi - lo)
    return out


def _selector_params(index, sel):
    """FAISS SearchParameters carrying an IDSelector and the index's own search settings (a bare
    SearchParametersIVF would search with nprobe 1)."""
    faiss = _faiss()
    ivf = faiss.try_extract_index_ivf(index) if isinstance(index, faiss.Index) else None
    if ivf is not None:
        return faiss.SearchParametersIVF(sel=sel, nprobe=int(ivf.nprobe))
    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None:
        return faiss.SearchParametersHNSW(sel=sel, efSearch=int(hnsw.efSearch))
    return faiss.SearchParameters(sel=sel)


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = scores.astype(np.float32, copy=True)
    ids = ids.astype(np.int64, copy=True)
    scores[ids < 0] = -np.inf
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
    return scores, ids


# -- appending (rtv add) ------------------------------------------------------------------------------
def append_vectors(directory: Path, section: dict, vecs: np.ndarray) -> dict:
    """Add L2-normalised float32 vectors `vecs` (their passage ids continue the index's) to the dense
    part in `directory`, a new generation's copy: the FAISS index keeps its training (IVF centroids,
    PQ codebooks, HNSW graph) and gains the new codes; the rescoring store gains their rows. Files are
    written under new names and renamed into place, so a hard link to the live generation's file is
    never written through. Returns the updated manifest section."""
    import os

    from .vectors import append_store

    directory = Path(directory)
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[1] != int(section["dim"]):
        raise InputError(f"vectors of shape {vecs.shape} cannot join a dense index of dim {section['dim']}")
    codec = codec_for(section["kind"], section["factory"], section.get("gpu_float16_lut", True))
    path = directory / INDEX_FILE
    index = codec.read(str(path))
    n_old = int(section["n_vectors"])
    if index.ntotal != n_old:
        raise IndexFormatError(f"{path}: holds {index.ntotal} vectors, manifest says {n_old}; rebuild the index")
    codes = codec.encode(vecs)
    for lo in range(0, len(codes), 1 << 16):
        index.add(codes[lo:lo + (1 << 16)])
    tmp = directory / (INDEX_FILE + ".new")
    codec.write(index, str(tmp))
    os.replace(tmp, path)
    if section.get("store"):
        append_store(directory, section["store"], n_old, vecs)
    n = n_old + len(vecs)
    files = {name: {"bytes": (directory / name).stat().st_size} for name in section["files"]}
    return {**section, "n_vectors": n, "files": files,
            "index_bytes_per_vector": round(files[INDEX_FILE]["bytes"] / n, 2),
            "appended_vectors": int(section.get("appended_vectors", 0)) + len(vecs)}
