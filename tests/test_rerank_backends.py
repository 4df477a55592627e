"""CPU reranking backends (hybrid/rerank_backends.py): ONNX Runtime / OpenVINO, fp32 and int8, against
the torch CrossEncoder of the same weights (the oracle); the export is offline; a missing backend
falls back with a notice; one policy picks the backend (rerank.resolve_backend)."""

import json
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from _hybrid_fixtures import TOPICS, topic_passage, train_tiny_cross_encoder
from retrieval.hybrid import rerank, rerank_backends
from retrieval.hybrid.rerank import Reranker, resolve_backend

EXPORTED = [b for b in rerank_backends.EXPORTED if rerank_backends.available(b) is None]


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory):
    return train_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce"))


@pytest.fixture
def model_copy(tiny_ce, tmp_path):
    """A fresh copy per test: exports are cached beside the model."""
    return shutil.copytree(tiny_ce, tmp_path / "ce")


def _pairs(seed: int):
    """(query, relevant passages, irrelevant passages) for each topic: clearly separated pairs."""
    rng = random.Random(seed)
    for topic in TOPICS:
        pos = [topic_passage(rng, topic) for _ in range(4)]
        neg = [topic_passage(rng, t) for t in TOPICS if t != topic for _ in range(4)]
        yield topic, pos, neg


@pytest.mark.skipif(not EXPORTED, reason="no CPU runtime (onnxruntime / openvino) installed")
@pytest.mark.parametrize("backend", EXPORTED)
def test_backend_agrees_with_torch(model_copy, backend):
    torch_rr = Reranker(str(model_copy), backend="torch", device="cpu", max_length=64)
    rr = Reranker(str(model_copy), backend=backend, device="cpu", max_length=64)
    assert rr.backend == backend and torch_rr.backend == "torch"
    ours, ref = [], []
    for query, pos, neg in _pairs(7):
        s = rr.score(query, pos + neg)
        # clearly separated pairs keep their order whatever the precision
        assert s[:len(pos)].min() > s[len(pos):].max(), (backend, query)
        ours.append(s)
        ref.append(torch_rr.score(query, pos + neg))
    ours, ref = np.concatenate(ours), np.concatenate(ref)
    assert np.corrcoef(ours, ref)[0, 1] > (0.999999 if backend in ("onnx",) else 0.98)
    if backend == "onnx":  # the same fp32 graph: the same numbers
        np.testing.assert_allclose(ours, ref, atol=1e-5)
    # scores do not depend on the batching (pairs sorted by length, padded per batch); dynamic int8
    # quantizes activations per batch, so there only the clear separation must survive
    query, pos, neg = next(_pairs(8))
    texts = pos + neg
    whole = rr.score(query, texts)
    rr.batch_size = 3
    split = rr.score(query, texts)
    if backend == "onnx-int8":
        assert split[:len(pos)].min() > split[len(pos):].max()
    else:
        np.testing.assert_allclose(split, whole, atol=2e-3 if "int8" in backend else 1e-5)


@pytest.mark.skipif("onnx" not in EXPORTED, reason="onnxruntime not installed")
def test_export_never_touches_the_network(model_copy, tmp_path):
    """The export runs in a fresh process with HF_HUB_OFFLINE=1 and every socket refused."""
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise OSError('network used during the export')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "from retrieval.hybrid.rerank_backends import export_onnx_int8, exported_file\n"
        f"p = export_onnx_int8({str(model_copy)!r})\n"
        f"assert exported_file({str(model_copy)!r}, 'onnx-int8') == p and exported_file({str(model_copy)!r}, 'onnx')\n"
        "print('ok', p)\n")
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ok" in out.stdout and (model_copy / "onnx" / "model_qint8.onnx").is_file()
    assert "exporting the cross-encoder" in out.stderr  # said once, on stderr
    # new weights: the stale export is not used
    weights = next(model_copy.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"")
    import os

    os.utime(weights, ns=(1, 1))
    assert rerank_backends.exported_file(model_copy, "onnx") is None


@pytest.mark.skipif("onnx" not in EXPORTED, reason="onnxruntime not installed")
def test_read_only_model_directory_exports_into_the_user_cache(model_copy, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(rerank_backends.os, "access", lambda path, mode: False)  # as if read-only (we are root)
    where = rerank_backends.export_dir(model_copy)
    assert str(where).startswith(str(tmp_path / "cache" / "rtv" / "rerankers"))
    path = rerank_backends.export_onnx(model_copy)
    assert path.is_file() and path.parent.parent == where and not (model_copy / "onnx").exists()


def test_missing_backend_falls_back_with_a_notice(model_copy, monkeypatch, capsys):
    from retrieval import progress

    monkeypatch.setattr(progress, "_silent", False)
    monkeypatch.setattr(rerank_backends, "available", lambda b: "onnxruntime" if b.startswith("onnx") else None)
    # the next installed one in the CPU order
    assert resolve_backend("onnx-int8", "cpu") == (next(b for b in rerank.CPU_PREFERENCE if not b.startswith("onnx")), "cpu")
    err = capsys.readouterr().err
    assert "onnx-int8" in err and "onnxruntime is not installed" in err and "pip install" in err
    monkeypatch.setattr(rerank_backends, "available", lambda b: "openvino")
    assert resolve_backend("auto", "cpu") == ("torch", "cpu")  # "auto": quietly the torch it always had
    assert capsys.readouterr().err == ""
    rr = Reranker(str(model_copy), backend="openvino-int8", device="cpu", max_length=64)
    assert rr.backend == "torch"
    assert "no CPU runtime installed" in capsys.readouterr().err
    query, pos, neg = next(_pairs(9))
    s = rr.score(query, pos + neg)
    assert s[:len(pos)].min() > s[len(pos):].max()


def test_one_policy_for_devices_and_depth(monkeypatch):
    from retrieval.errors import InputError

    assert resolve_backend("auto", "cuda") == ("torch", "cuda")  # a GPU runs torch
    assert resolve_backend("torch", "cpu") == ("torch", "cpu")
    monkeypatch.setattr(rerank, "gpu_present", lambda: False)
    backend, device = resolve_backend("auto", None)
    assert device == "cpu" and backend == next((b for b in rerank.CPU_PREFERENCE if b in EXPORTED), "torch")
    with pytest.raises(InputError, match="backend 'tensorrt'"):
        resolve_backend("tensorrt", "cpu")


def test_cpu_depth_default(model_copy):
    assert Reranker(str(model_copy), backend="torch", device="cpu", max_length=64).top_n == rerank.TOP_N_CPU
    assert Reranker(str(model_copy), backend="torch", device="cpu", max_length=64, top_n=7).top_n == 7


@pytest.mark.skipif("onnx" not in EXPORTED, reason="onnxruntime not installed")
def test_exported_backend_keeps_torch_out_of_the_query_process(model_copy, tmp_path):
    """Once exported, reranking on CPU loads neither torch nor sentence-transformers."""
    rerank_backends.export_onnx(model_copy)
    code = (
        "import sys\n"
        "from retrieval.hybrid.rerank import Reranker\n"
        f"rr = Reranker({str(model_copy)!r}, backend='onnx', device='cpu', max_length=64)\n"
        "s = rr.score('tools', ['hammer saw drill', 'red blue green'])\n"
        "assert s[0] > s[1], s\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().replace("'", '"')) == []


@pytest.mark.skipif("onnx" not in EXPORTED, reason="onnxruntime not installed")
def test_a_lower_cap_per_call_scores_as_a_model_built_with_it(model_copy):
    """score(max_length=n) (what rerank_stage asks for, fitted to the index's passages) truncates
    as a reranker built with max_length=n does, and torch's CrossEncoder at n agrees (the oracle);
    a cap above the model's own changes nothing."""
    rr = Reranker(str(model_copy), backend="onnx", device="cpu", max_length=64)
    short = Reranker(str(model_copy), backend="onnx", device="cpu", max_length=12)
    torch_short = Reranker(str(model_copy), backend="torch", device="cpu", max_length=12)
    query, pos, neg = next(_pairs(9))
    texts = pos + neg
    assert max(len(rr.model.tokenizer.encode(query, t).ids) for t in texts) > 12  # the cap bites
    capped = rr.score(query, texts, max_length=12)
    np.testing.assert_allclose(capped, short.score(query, texts), atol=1e-6)
    np.testing.assert_allclose(capped, torch_short.score(query, texts), atol=1e-5)
    assert not np.allclose(capped, rr.score(query, texts), atol=1e-4)
    np.testing.assert_allclose(rr.score(query, texts, max_length=500), rr.score(query, texts), atol=1e-6)


def test_fitted_cap_is_the_passage_size():
    class Manifest:
        def __init__(self, manifest):
            self.manifest = manifest

    assert rerank.fitted_max_length(Manifest({"passages": {"max_tokens": 128}})) == 128
    assert rerank.fitted_max_length(Manifest({"passages": {}})) is None
    assert rerank.fitted_max_length(Manifest({})) is None


@pytest.mark.skipif("onnx" not in EXPORTED, reason="onnxruntime not installed")
def test_retrained_weights_re_export_every_derived_file(model_copy):
    """Retrained weights (here: the classifier negated, so relevant pairs now score lowest, as the
    torch oracle of the new weights says) are exported again for every backend, the int8 file made
    from the old weights included, even after the float export beside it has been redone."""
    from safetensors.torch import load_file, save_file

    query, pos, neg = next(_pairs(9))
    assert Reranker(str(model_copy), backend="onnx-int8", device="cpu", max_length=64).backend == "onnx-int8"
    weights = model_copy / "model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: (-v if k.startswith("classifier.") else v) for k, v in tensors.items()}, str(weights),
              metadata={"format": "pt"})
    rerank._cache.clear()  # as a new process would: models are loaded once per process
    oracle = Reranker(str(model_copy), backend="torch", device="cpu", max_length=64).score(query, pos + neg)
    assert oracle[:len(pos)].max() < oracle[len(pos):].min()  # the new weights invert the ranking
    for backend in ("onnx", "onnx-int8"):  # the float file is redone first, then the int8 one
        s = Reranker(str(model_copy), backend=backend, device="cpu", max_length=64).score(query, pos + neg)
        assert s[:len(pos)].max() < s[len(pos):].min(), backend


@pytest.mark.skipif("onnx" not in EXPORTED, reason="onnxruntime not installed")
def test_export_made_by_another_recipe_is_redone(model_copy):
    """An export stamped by another recipe (here: the stamp an rtv before the eager-attention export
    wrote, weights only) is not used: it is made again, with the recipe's tag, and its graph is the
    eager attention's (no IsNaN guard, which torch's SDPA attention exports and OpenVINO cannot fuse)."""
    import onnx

    path = rerank_backends.export_onnx(model_copy)
    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    assert "IsNaN" not in ops and "Softmax" in ops
    stamp = path.with_name(path.name + ".source.json")
    old = json.loads(stamp.read_text())
    assert old.pop("export") == rerank_backends._TAGS["onnx"]
    stamp.write_text(json.dumps(old))  # weights unchanged, recipe unknown
    assert rerank_backends.exported_file(model_copy, "onnx") is None
    before = path.stat().st_mtime_ns
    again = rerank_backends.export_onnx(model_copy)
    assert again == path and path.stat().st_mtime_ns != before
    assert json.loads(stamp.read_text())["export"] == rerank_backends._TAGS["onnx"]


@pytest.mark.skipif("openvino-int8" not in EXPORTED, reason="openvino / nncf not installed")
def test_int8_is_calibrated_on_the_index_passages_not_the_first_query(model_copy, tmp_path):
    """The first rerank on an index calibrates openvino-int8 on pairs of that index's own passages
    (the same pairs for the same index, whatever the query), and the int8 model then ranks as the
    torch oracle of the same weights does."""
    from retrieval import Index
    from retrieval.hybrid import search

    rng = random.Random(11)
    docs = [{"id": f"d{i}", "text": f"list {topic_passage(rng, list(TOPICS)[i % 3])}", "topic": list(TOPICS)[i % 3]}
            for i in range(60)]
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    index = Index.build([src], tmp_path / "idx", id_field="id", dense=False)
    try:
        texts = {r["text"] for r in index.iter_passages()}
        pairs = rerank_backends.calibration_pairs(index)
        assert pairs == rerank_backends.calibration_pairs(index)  # deterministic
        n = min(rerank_backends.CALIBRATION_PASSAGES, index.n_passages)
        assert len(pairs) == n * (1 + rerank_backends.CALIBRATION_OTHERS)
        assert all(p in texts for _, p in pairs)
        assert all(any(t.startswith(q) for t in texts) for q, _ in pairs)  # a passage's opening words
        assert len({p for _, p in pairs}) == n  # spread over the index, not one query's candidates

        rr = Reranker(str(model_copy), backend="openvino-int8", device="cpu", max_length=64, top_n=60)
        assert rr.backend == "openvino-int8" and rr.model.needs_calibration
        hits = search(index, ["list tools"], mode="lexical", k=20, rerank=True, reranker=rr)[0]
        assert not rr.model.needs_calibration and rerank_backends.exported_file(model_copy, "openvino-int8")
        assert all(h.metadata["topic"] == "tools" for h in hits[:20])  # all 20 tools passages first
        oracle = Reranker(str(model_copy), backend="torch", device="cpu", max_length=64)
        got = [h.text for h in hits]
        ours, ref = rr.score("list tools", got), oracle.score("list tools", got)
        assert np.corrcoef(ours, ref)[0, 1] > 0.98
    finally:
        index.close()
