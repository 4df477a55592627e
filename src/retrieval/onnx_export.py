"""Models run on CPU without torch: a local Hugging Face model exported to ONNX once, offline, cached,
and run by ONNX Runtime or OpenVINO. Used by the cross-encoder reranker (hybrid/rerank_backends.py)
and the query embedder (dense/embedder.py, ExportedEmbedder).

Exports are cached next to the model (``<model>/<relpath>``) when its directory is writable, else
under ``$XDG_CACHE_HOME/rtv/<cache>/<hash of the model path>/``. Each export has its own stamp,
``<file>.source.json``, recording the weights' size and mtime, so retrained weights are exported
again — every derived file too (one stamp a directory let an int8 file made from the old weights pass
once the float export beside it had been redone); a caller's ``tag`` (how it exports: the graph's
form, the int8 calibration) is stamped too, so a changed recipe re-exports as new weights do. The export itself
(``torch.onnx.export`` of the model loaded from the directory's own files, with ``HF_HUB_OFFLINE``)
is the one step that needs torch; running the file needs only a runtime.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# one export (or first-use compilation) at a time in a process: two threads asking for the same
# model must not both write it
export_lock = threading.Lock()


def export_dir(model_dir: str | os.PathLike, cache: str) -> Path:
    """Where a model's exports live: beside it when writable, else in the user's cache
    (``cache`` names the kind of model there: "rerankers", "embedders")."""
    model_dir = Path(model_dir).resolve()
    if os.access(model_dir, os.W_OK):
        return model_dir
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rtv" / cache
    return base / hashlib.sha256(str(model_dir).encode()).hexdigest()[:16]


def source_stamp(model_dir: Path, tag: str | None = None) -> dict:
    """What an export was made from: the weights' sizes and mtimes, and the exporter's ``tag``."""
    weights = [p for p in sorted(Path(model_dir).iterdir()) if p.suffix in (".safetensors", ".bin")]
    stamp = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in weights}
    return {**stamp, "export": tag} if tag else stamp


def stamp_file(export: Path) -> Path:
    """The stamp of one export: which weights it was made from."""
    return export.with_name(export.name + ".source.json")


def exported_file(model_dir: str | os.PathLike, relpath: str, cache: str, tag: str | None = None) -> Path | None:
    """The cached export ``relpath``, or None when missing or made from other weights (or by
    another recipe: ``tag``)."""
    model_dir = Path(model_dir)
    path = export_dir(model_dir, cache) / relpath
    try:
        if path.is_file() and json.loads(stamp_file(path).read_text()) == source_stamp(model_dir, tag):
            return path
    except (OSError, ValueError):
        pass
    return None


def publish(tmp: Path, final: Path, model_dir: Path, tag: str | None = None) -> None:
    """Move finished export files into place, the stamp last, so a crash leaves no valid-looking half."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(tmp).iterdir()):
        os.replace(f, final.parent / f.name)
    stamp_file(final).write_text(json.dumps(source_stamp(model_dir, tag)))


def export_onnx(model_dir: str | os.PathLike, relpath: str, cache: str, *, what: str,
                load: Callable[[], object], inputs: Sequence[str], outputs: dict[str, dict[int, str]],
                tag: str | None = None) -> Path:
    """``<export dir>/<relpath>``: the torch module ``load()`` returns (loaded from the model
    directory's files, never the network; called with ``inputs`` as int64 (batch, tokens) tensors,
    positionally) exported to ONNX, cached. The inputs' batch and token axes are dynamic, and each
    output's axes as ``outputs`` (name -> {axis: name}) says. ``what`` names the model in the
    one-line notice; ``tag`` is stamped (exported_file)."""
    from .progress import note

    model_dir = Path(model_dir)
    done = exported_file(model_dir, relpath, cache, tag)
    if done:
        return done
    final = export_dir(model_dir, cache) / relpath
    note(f"exporting the {what} {model_dir} to ONNX (once; cached in {final.parent})")
    os.environ["HF_HUB_OFFLINE"] = "1"  # a local directory: nothing to fetch, and nothing may be
    import torch

    model = load()
    dummy = tuple(torch.ones((2, 16), dtype=torch.long) for _ in inputs)
    axes = {n: {0: "batch", 1: "tokens"} for n in inputs}
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=final.parent) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings: the notice above says what happens
        with torch.inference_mode():
            torch.onnx.export(model, dummy, str(Path(tmp) / final.name), dynamo=False, input_names=list(inputs),
                              output_names=list(outputs), opset_version=17, external_data=False,
                              dynamic_axes={**axes, **outputs})
        publish(Path(tmp), final, model_dir, tag)
    return final


def token_feeds(encodings, pad_id: int = 0) -> dict[str, np.ndarray]:
    """A runner's int64 inputs for a batch of ``tokenizers`` encodings, padded with ``pad_id`` to
    the batch's longest (attention mask and token types 0 there)."""
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros((len(encodings), width), dtype=np.int64)
    for i, e in enumerate(encodings):
        n = len(e.ids)
        ids[i, :n], mask[i, :n], types[i, :n] = e.ids, e.attention_mask, e.type_ids
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def onnxruntime_runner(path: str | os.PathLike, output: str, threads: int) -> Callable[[dict], np.ndarray]:
    """feeds -> the ``output`` array, by an ONNX Runtime CPU session of ``threads`` threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # no spinning: ONNX Runtime's idle threads otherwise busy-wait after each run, on the cores the
    # next stage needs (the query embedder's spin slowed the cross-encoder that followed it by a third)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run([output], feeds)[0]


def openvino_runner(path: str | os.PathLike, threads: int, precision: str | None = None) -> Callable[[dict], np.ndarray]:
    """feeds -> the first output, by OpenVINO's CPU plugin (one infer request: callers serialise).
    ``precision`` None lets the plugin choose (bf16 on CPUs that have it); "f32" keeps float32."""
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, **({"INFERENCE_PRECISION_HINT": precision} if precision else {})}
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    return lambda feeds: request.infer(feeds)[0].copy()
