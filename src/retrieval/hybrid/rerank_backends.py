"""Cross-encoder inference on CPU without torch at query time: ONNX Runtime or OpenVINO, fp32 or int8.

rerank.py decides which backend runs (its `resolve_backend`); this module exports a model and runs it.

Export happens once per model, offline, from the model directory's own files (retrieval/onnx_export.py,
shared with the query embedder), and is cached next to the model (`<model>/onnx/`, `<model>/openvino/`; a read-only model directory is cached under
$XDG_CACHE_HOME/rtv/rerankers/ instead). Each file's stamp (`<file>.source.json`) records the
weights' size and mtime and the recipe (_EXPORT_TAG), so retrained weights, or a changed export
recipe, are exported again, int8 files included.

- onnx:          torch.onnx.export of the transformers model (the one step that needs torch), with
                 its eager attention: torch's SDPA attention exports as MatMul/Softmax guarded by
                 IsNaN/Where nodes, which OpenVINO runs op by op, while the eager graph becomes one
                 fused attention subgraph there (7% less CPU for the bf16 model, 20 pairs of 128
                 tokens; the same scores as torch fp32 in ONNX Runtime).
- onnx-int8:     onnxruntime's dynamic quantization of that file: int8 weights per channel,
                 activations quantized per batch at run time (no calibration data needed).
- openvino:      OpenVINO compiles the ONNX file; its CPU plugin picks the precision (bf16 on CPUs
                 with AVX512-BF16/AMX, else fp32).
- openvino-int8: NNCF's static int8 quantization (transformer preset: SmoothQuant, fast bias
                 correction), calibrated once on pairs made from the index's own passages
                 (calibration_pairs: passages spread evenly over the index, each one's opening
                 words as a query against it and a few others), so the export does not depend on
                 which query came first; real text of the index at hand, which no generic set
                 could supply offline. Without an index (predict called directly) it calibrates
                 on the first call's pairs.

The tokenizer is the model's tokenizer.json through the `tokenizers` library (what transformers'
fast tokenizer runs), pairs truncated longest-first to `max_length` (or a lower cap per call) and
padded to the longest pair of their batch, so short passages cost what they are, not `max_length`. Scores get the activation
that sentence-transformers' CrossEncoder applies (sigmoid for one label, unless the config names
another), so every backend returns the same kind of number.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .. import onnx_export
from ..errors import ModelError
from ..cores import usable_cores
from ..onnx_export import export_lock as _export_lock

EXPORTED = ("onnx", "onnx-int8", "openvino", "openvino-int8")
# the module each backend needs at query time, and the pip install that brings it
NEEDS = {"onnx": ("onnxruntime",), "onnx-int8": ("onnxruntime",), "openvino": ("openvino",),
         "openvino-int8": ("openvino", "nncf")}
INSTALL = "pip install 'rtv[rerank-cpu]' (onnxruntime, openvino, nncf)"
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_FILES = {"onnx": "onnx/model.onnx", "onnx-int8": "onnx/model_qint8.onnx",
          "openvino": "onnx/model.onnx", "openvino-int8": "openvino/model_qint8.xml"}
_CACHE = "rerankers"  # $XDG_CACHE_HOME/rtv/rerankers/ for a read-only model directory
# how the files are made, stamped on each (onnx_export.exported_file): a file made otherwise is redone
_EXPORT_TAG = "eager-attention"
_TAGS = {"onnx": _EXPORT_TAG, "onnx-int8": _EXPORT_TAG, "openvino": _EXPORT_TAG,
         "openvino-int8": _EXPORT_TAG + "; calibrated on index passages"}
# x (1 + CALIBRATION_OTHERS) = 128 pairs: NNCF's statistics, one pair at a time, are the first
# rerank's cost (192 pairs of SciFact took 81 s at load 6); one query's 20 pairs and 300 pairs of
# man-page training queries gave int8 scores equally close to torch's (Spearman 0.983 / 0.986)
CALIBRATION_PASSAGES = 32
CALIBRATION_OTHERS = 3


def available(backend: str) -> str | None:
    """None when `backend`'s modules import; else the name of the missing one."""
    import importlib.util

    for mod in NEEDS[backend]:
        if importlib.util.find_spec(mod) is None:
            return mod
    return None


def export_dir(model_dir: str | os.PathLike) -> Path:
    """Where a model's exports live: beside it when writable, else in the user's cache."""
    return onnx_export.export_dir(model_dir, _CACHE)


def exported_file(model_dir: str | os.PathLike, backend: str) -> Path | None:
    """The cached export for `backend`, or None when missing or made from other weights."""
    return onnx_export.exported_file(model_dir, _FILES[backend], _CACHE, _TAGS[backend])


def export_onnx(model_dir: str | os.PathLike) -> Path:
    """<export dir>/onnx/model.onnx from the model directory's files (never the network)."""
    def load():
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True,
                                                                  attn_implementation="eager").eval()

    return onnx_export.export_onnx(model_dir, _FILES["onnx"], _CACHE, what="cross-encoder", load=load,
                                   inputs=_INPUTS, outputs={"logits": {0: "batch"}}, tag=_TAGS["onnx"])


def export_onnx_int8(model_dir: str | os.PathLike) -> Path:
    """<export dir>/onnx/model_qint8.onnx: dynamic int8 quantization of the ONNX export."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ..progress import note

    model_dir = Path(model_dir)
    done = exported_file(model_dir, "onnx-int8")
    if done:
        return done
    src = export_onnx(model_dir)
    final = export_dir(model_dir) / _FILES["onnx-int8"]
    note(f"quantizing the cross-encoder {model_dir} to int8 (ONNX Runtime, dynamic; once)")
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp:
        quantize_dynamic(str(src), str(Path(tmp) / final.name), weight_type=QuantType.QInt8, per_channel=True)
        onnx_export.publish(Path(tmp), final, model_dir, _TAGS["onnx-int8"])
    return final


def calibration_pairs(index, n: int = CALIBRATION_PASSAGES, others: int = CALIBRATION_OTHERS) -> list[tuple[str, str]]:
    """(query, passage) pairs for int8 calibration from an index's own passages: `n` passages spread
    evenly over it, each one's opening words (a query's length) paired with it and with `others`
    of the other chosen passages. Deterministic: the same index gives the same pairs."""
    total = int(index.n_passages)
    ids = sorted({i * total // n for i in range(min(n, total))})
    texts = [r["text"] for r in index.passages(ids) if r.get("text", "").strip()]
    pairs = []
    for i, text in enumerate(texts):
        query = " ".join(text.split()[:10])
        pairs += [(query, texts[(i + j * (len(texts) // (others + 1) or 1)) % len(texts)]) for j in range(others + 1)]
    return pairs


def export_openvino_int8(model_dir: str | os.PathLike, calibration: list[dict], source: str = "") -> Path:
    """<export dir>/openvino/model_qint8.xml: NNCF static int8, calibrated on `calibration`
    (tokenized batches of real pairs; `source` says where they came from, for the notice)."""
    import tempfile

    import nncf
    import openvino as ov

    from ..progress import note

    model_dir = Path(model_dir)
    done = exported_file(model_dir, "openvino-int8")
    if done:
        return done
    src = export_onnx(model_dir)
    final = export_dir(model_dir) / _FILES["openvino-int8"]
    n = sum(len(b["input_ids"]) for b in calibration)
    note(f"quantizing the cross-encoder {model_dir} to int8 (OpenVINO/NNCF, calibrated on {n} pairs "
         f"{source or 'of this first call'}; once, cached in {final.parent})")
    model = ov.Core().read_model(str(src))
    samples = [{k: v[i:i + 1] for k, v in b.items()} for b in calibration for i in range(len(b["input_ids"]))]
    # NNCF writes its log lines and progress bars to stdout, which is the results' (rtv query --json):
    # stderr, where rtv's own notices go, instead
    nncf_log = logging.getLogger("nncf")
    handlers = [h for h in nncf_log.handlers if isinstance(h, logging.StreamHandler) and h.stream is not sys.stderr]
    streams = [h.setStream(sys.stderr) for h in handlers]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            quantized = nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                                      subset_size=len(samples))
    finally:
        for h, stream in zip(handlers, streams):
            h.setStream(stream)
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp:
        ov.save_model(quantized, str(Path(tmp) / final.name))
        onnx_export.publish(Path(tmp), final, model_dir, _TAGS["openvino-int8"])
    return final


def _activation(config: dict):
    """sentence-transformers' CrossEncoder default: sigmoid for one label, identity for more,
    unless the config names one (config["sentence_transformers"]["activation_fn"])."""
    named = (config.get("sentence_transformers") or {}).get("activation_fn") or ""
    labels = len(config.get("id2label") or {}) or 1
    if named.endswith("Identity") or (not named and labels > 1):
        return lambda x: x
    if named.endswith("Sigmoid") or (not named and labels == 1):
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    raise ModelError(f"cross-encoder activation {named!r}: only Sigmoid/Identity run outside torch; "
                     "use backend='torch'")


class ExportedCrossEncoder:
    """A cross-encoder run by ONNX Runtime or OpenVINO; `predict` as CrossEncoder.predict's."""

    def __init__(self, model_dir: str | os.PathLike, backend: str, *, max_length: int | None = 256,
                 threads: int | None = None):
        from tokenizers import Tokenizer

        if backend not in EXPORTED:
            raise ModelError(f"reranker backend {backend!r}: not one of {', '.join(EXPORTED)}")
        self.model_dir, self.backend = Path(model_dir), backend
        self.model_name_or_path = str(model_dir)
        config = json.loads((self.model_dir / "config.json").read_text())
        self._activate = _activation(config)
        tok_file = self.model_dir / "tokenizer.json"
        if not tok_file.is_file():
            raise ModelError(f"reranker {model_dir}: no tokenizer.json (a fast tokenizer is needed outside torch)")
        self.tokenizer = Tokenizer.from_file(str(tok_file))
        limit = min(max_length or 512, config.get("max_position_embeddings", 512))
        self.tokenizer.enable_truncation(limit, strategy="longest_first")
        self.max_length = limit
        self._capped: dict[int, object] = {}  # lower caps asked for by predict(max_length=): a tokenizer each
        self.threads = threads or usable_cores()
        self._run = None
        self._lock = threading.Lock()
        if backend != "openvino-int8" or exported_file(self.model_dir, backend):
            with _export_lock:
                self._load()  # openvino-int8 without a cached export calibrates on its first pairs

    @property
    def needs_calibration(self) -> bool:
        """openvino-int8 with no export of these weights yet: calibrate() (or the first predict) makes it."""
        return self._run is None

    def calibrate(self, pairs: Sequence[tuple[str, str]], max_length: int | None = None, source: str = "") -> None:
        """Make the int8 export from `pairs` (truncated at `max_length`, as they will be scored), once."""
        pairs = list(pairs)
        with self._lock:
            if self._run is None and pairs:
                batches = [self._encode(pairs[s:s + 32], max_length) for s in range(0, len(pairs), 32)]
                with _export_lock:
                    self._load(calibration=batches, source=source)

    def _load(self, calibration: list[dict] | None = None, source: str = "") -> None:
        if self.backend in ("onnx", "onnx-int8"):
            path = export_onnx(self.model_dir) if self.backend == "onnx" else export_onnx_int8(self.model_dir)
            self._run = onnx_export.onnxruntime_runner(path, "logits", self.threads)
            return
        if self.backend == "openvino":
            path = export_onnx(self.model_dir)
        else:
            path = (exported_file(self.model_dir, "openvino-int8")
                    or export_openvino_int8(self.model_dir, calibration, source))
        self._run = onnx_export.openvino_runner(path, self.threads)

    def tokenizer_at(self, cap: int | None):
        """The tokenizer truncating pairs to `cap` tokens (at most max_length): one per cap, made
        once, since changing a shared tokenizer's truncation would race with other threads."""
        if cap is None or cap >= self.max_length:
            return self.tokenizer
        if cap not in self._capped:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_str(self.tokenizer.to_str())
            tok.enable_truncation(cap, strategy="longest_first")
            self._capped.setdefault(cap, tok)
        return self._capped[cap]

    def _encode(self, pairs: Sequence[tuple[str, str]], cap: int | None = None) -> dict[str, np.ndarray]:
        return onnx_export.token_feeds(self.tokenizer_at(cap).encode_batch([(q, p) for q, p in pairs]))

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, show_progress_bar: bool = False,
                convert_to_numpy: bool = True, max_length: int | None = None) -> np.ndarray:
        """Scores of `pairs`; `max_length` lowers the pair cap for this call (Reranker.score's:
        rerank_stage holds pairs to the size of the index's passages)."""
        if max_length is not None and max_length < 8:
            raise ModelError(f"cross-encoder max_length {max_length}: too short for a (query, passage) pair")
        pairs = list(pairs)
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        lengths = [len(q) + len(p) for q, p in pairs]
        order = sorted(range(len(pairs)), key=lambda i: -lengths[i])  # batches of similar length pad less
        batches = [self._encode([pairs[i] for i in order[s:s + batch_size]], max_length)
                   for s in range(0, len(pairs), batch_size)]
        with self._lock:  # an OpenVINO infer request (and the first-use calibration) serves one call at a time
            if self._run is None:
                with _export_lock:
                    self._load(calibration=batches)
            logits = np.concatenate([self._run(b) for b in batches]).astype(np.float32)
        scores = np.empty_like(logits)
        scores[order] = self._activate(logits)
        return scores[:, 0] if scores.shape[1] == 1 else scores
