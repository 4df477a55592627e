"""The torch-free query embedder (dense/embedder.py ExportedEmbedder) against sentence-transformers'
own encode of the same model (the oracle): the same vectors on real texts, batched or one at a
time; pooling against sentence-transformers' Pooling module; the export offline (sockets refused)
into the user cache for a read-only model; queries then import no torch; fallbacks with a notice."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
from retrieval.dense import embedder as emb  # noqa: E402

pytestmark = pytest.mark.model
RUNTIMES = [r for r in ("onnxruntime", "openvino") if __import__("importlib").util.find_spec(r) is not None]
needs_runtime = pytest.mark.skipif(not RUNTIMES, reason="neither onnxruntime nor openvino installed")
ROOT = Path(__file__).resolve().parents[1]


def real_texts() -> list[str]:
    """Paragraphs of the project's own docs (real prose and code, short and long: some pass the
    model's 256-token limit), and edge cases: one letter, accents and CJK, surrounding spaces."""
    paras = []
    for doc in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        paras += [p.strip() for p in doc.read_text(encoding="utf-8").split("\n\n") if len(p.strip()) > 20]
    texts = paras[::max(1, len(paras) // 60)][:60]
    long = " ".join(paras[:40])
    return texts + [long, "a", "  Ünïcödé — naïve café, 漢字 and emoji 🙂  ", "protein folding in cells"]


@pytest.fixture(scope="module")
def st_embedder():
    return emb.load_embedder(None, "cpu")


@needs_runtime
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_same_vectors_as_sentence_transformers(st_embedder, runtime):
    texts = real_texts()
    assert max(len(t) for t in texts) > 4000  # truncation is exercised
    q = emb.ExportedEmbedder(emb.default_model_dir(), emb.DEFAULT_MODEL_ID, runtime=runtime)
    assert q.dim == st_embedder.dim and q.max_tokens == st_embedder.max_tokens
    ours = q.encode(texts, progress=False)
    ref = st_embedder.encode(texts, progress=False)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-4  # float32 both ways: ~1e-7 observed
    assert (ours * ref).sum(axis=1).min() > 1 - 1e-6
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # the batch a text lands in (its padding) does not change its vector
    one = np.stack([q.encode([t], progress=False)[0] for t in texts[:12]])
    assert np.abs(one - ours[:12]).max() < 1e-5
    q.encode(texts[:7], batch_size=3, progress=False)
    np.testing.assert_allclose(q.encode(texts[:7], batch_size=3, progress=False), ours[:7], atol=1e-5)


@pytest.mark.parametrize("modes", [["mean"], ["cls"], ["max"], ["mean_sqrt_len_tokens"], ["cls", "mean"]])
def test_pooling_matches_sentence_transformers_pooling(modes):
    import torch
    from sentence_transformers.models import Normalize, Pooling

    rng = np.random.default_rng(3)
    tokens = rng.normal(size=(5, 9, 16)).astype(np.float32)
    mask = np.zeros((5, 9), np.int64)
    for i, n in enumerate([9, 1, 4, 7, 2]):
        mask[i, :n] = 1
    pooling = Pooling(16, pooling_mode=modes[0] if len(modes) == 1 else tuple(modes))
    feats = {"token_embeddings": torch.from_numpy(tokens.copy()), "attention_mask": torch.from_numpy(mask)}
    ref = Normalize()(pooling(feats))["sentence_embedding"].numpy()
    np.testing.assert_allclose(emb._pool(tokens, mask, modes, normalize=True), ref, atol=1e-6)


def _model_copy(tmp_path: Path, edits: dict | None = None) -> Path:
    """A copy of the shipped model's files (the weights hard-linked where possible: never written),
    with the json files of ``edits`` (relative path -> content) replaced."""
    src = emb.default_model_dir()
    dst = tmp_path / "model"
    shutil.copytree(src, dst, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("rtv-encoder", "onnx"))
    for name, value in (edits or {}).items():
        (dst / name).write_text(json.dumps(value))
    return dst


def _link_or_copy(a, b):
    if not str(a).endswith((".safetensors", ".bin")):  # the files a test may rewrite: real copies
        return shutil.copy2(a, b)
    try:
        os.link(a, b)
    except OSError:
        shutil.copy2(a, b)


def test_pipeline_is_read_from_the_model_files(tmp_path):
    spec = emb.pipeline(emb.default_model_dir())
    assert spec == {"max_seq_length": 256, "pooling": ["mean"], "normalize": True, "dim": 384}
    modules = json.loads((emb.default_model_dir() / "modules.json").read_text())
    m = _model_copy(tmp_path, {"modules.json": modules[:2], "sentence_bert_config.json": {"max_seq_length": 128},
                               "1_Pooling/config.json": {"word_embedding_dimension": 384, "pooling_mode_cls_token": True,
                                                         "pooling_mode_mean_tokens": False}})
    assert emb.pipeline(m) == {"max_seq_length": 128, "pooling": ["cls"], "normalize": False, "dim": 384}
    dense = modules[:2] + [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]
    (m / "modules.json").write_text(json.dumps(dense))
    with pytest.raises(emb.Unsupported, match="Dense"):
        emb.pipeline(m)
    (m / "modules.json").write_text(json.dumps(modules))
    (m / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 384, "pooling_mode": "lasttoken"}))
    with pytest.raises(emb.Unsupported, match="lasttoken"):
        emb.pipeline(m)


def test_unsupported_model_falls_back_with_a_notice(tmp_path, monkeypatch, capsys):
    from retrieval import progress

    monkeypatch.setattr(progress, "_silent", False)
    monkeypatch.setattr(emb, "_runtime", lambda: None)
    got = emb.load_query_embedder(None, "cpu")
    assert isinstance(got, emb.Embedder)
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("rtv:")]
    assert len(ours) == 1 and "sentence-transformers" in ours[0] and "onnxruntime" in ours[0], err


@needs_runtime
def test_export_offline_into_the_user_cache_then_queries_without_torch(tmp_path, st_embedder):
    """A read-only model directory (as if: the test runs as root): the export lands in
    $XDG_CACHE_HOME/rtv/embedders/, made in a fresh process with every socket refused; a second fresh
    process embeds from it without importing torch, transformers or sentence-transformers, and gets
    sentence-transformers' vectors."""
    model = _model_copy(tmp_path)
    cache = tmp_path / "cache"
    patch_ro = (
        "import os\n"
        f"_access = os.access; os.access = lambda p, m, **k: False if os.path.realpath(p) == {str(model.resolve())!r} "
        "else _access(p, m, **k)\n")
    export = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network used during the export')\n"
        "socket.socket.connect = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        + patch_ro +
        "from retrieval.dense.embedder import export_query_encoder\n"
        f"print(export_query_encoder({str(model)!r}))\n")
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(cache)}
    out = subprocess.run([sys.executable, "-c", export], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path.is_file() and str(path).startswith(str(cache / "rtv" / "embedders"))
    assert not (model / "rtv-encoder").exists()
    assert "exporting the embedding model" in out.stderr
    texts = real_texts()[:20]
    query = (
        patch_ro +
        "import json, sys\n"
        "from retrieval.dense.embedder import load_query_embedder\n"
        f"q = load_query_embedder({str(model)!r}, 'cpu')\n"
        f"v = q.encode(json.loads(sys.argv[1]), progress=False)\n"
        "print(json.dumps({'cls': type(q).__name__, 'v': v.tolist(), "
        "'heavy': sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules)}))\n")
    out = subprocess.run([sys.executable, "-c", query, json.dumps(texts)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["cls"] == "ExportedEmbedder" and got["heavy"] == []
    assert "exporting" not in out.stderr  # the cached export was used
    assert np.abs(np.array(got["v"], np.float32) - st_embedder.encode(texts, progress=False)).max() < 1e-4


@needs_runtime
def test_a_cuda_index_embeds_queries_without_torch(tmp_path):
    """device="cuda" (the GPU machine's Index.open): one query is embedded on the CPU cores by the
    exported model, torch untouched (on a CPU machine too: nothing here needs a GPU)."""
    code = ("import sys\n"
            "from retrieval.dense.embedder import load_query_embedder\n"
            "q = load_query_embedder(None, 'cuda')\n"
            "v = q.encode(['protein folding in cells'], progress=False)\n"
            "print(type(q).__name__, q.gpu_device, v.shape, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ExportedEmbedder", "cuda", "(1,", "384)", "False"]
