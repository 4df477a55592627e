"""Dense recipes against brute force on seeded clustered vectors; rescoring; save/load; errors; GPU."""

from __future__ import annotations

import json
import math
import tomllib

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from retrieval.dense import (DenseIndex, available_recipes, build_dense, build_from_vectors,  # noqa: E402
                             check_model, gpu_count, load_recipe, plan)
from retrieval.dense.recipes import choose_nlist, recipe_dirs  # noqa: E402
from retrieval.dense.vectors import Rescorer, VectorStore, write_store  # noqa: E402
from retrieval.errors import IndexFormatError, InputError, ModelError  # noqa: E402

N, D, NQ, K = 20000, 128, 300, 10
MORE = 4000  # extra base vectors: a second, larger build of each recipe measures bytes per vector


def clustered(n: int, d: int, n_centers: int, seed: int, spread: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_centers, d)).astype(np.float32)
    # uneven cluster sizes, like real corpora
    labels = rng.choice(n_centers, n, p=rng.dirichlet(np.ones(n_centers)))
    x = centers[labels] + spread * rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = clustered(N + NQ, D, 200, seed=7)
    base, queries = x[:N], x[N:]
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :K]
    return base, queries, truth


@pytest.fixture(scope="module")
def more():
    return clustered(MORE, D, 200, seed=8)


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids, truth)]))


@pytest.fixture(scope="module")
def built(data, tmp_path_factory):
    base = data[0]
    out = {}
    for name in ("flat", "pq", "binary", "hnsw", "compact"):
        d = tmp_path_factory.mktemp(name)
        section = build_from_vectors(base, d, name, device="cpu", quiet=True)
        out[name] = (d, section)
    return out


def open_cpu(built, name):
    d, section = built[name]
    return DenseIndex.open(d, section, device="cpu")


def test_flat_is_exact(data, built):
    base, queries, truth = data
    scores, ids = open_cpu(built, "flat").search(queries, K)
    assert recall(ids, truth) == 1.0
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ base.T, ids, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, minimum", [("pq", 0.93), ("binary", 0.95), ("hnsw", 0.97)])
def test_recipe_recall_after_rescoring(data, built, name, minimum):
    _, queries, truth = data
    index = open_cpu(built, name)
    _, ids = index.search(queries, K)
    assert recall(ids, truth) >= minimum


@pytest.mark.parametrize("name", ["pq", "binary", "compact"])
def test_rescoring_improves_recall(data, built, name):
    _, queries, truth = data
    index = open_cpu(built, name)
    plain = recall(index.search(queries, K, rescore=False)[1], truth)
    rescored = recall(index.search(queries, K)[1], truth)
    assert rescored >= plain + 0.1
    index.set_params(rescore_multiplier=1)
    less = recall(index.search(queries, K)[1], truth)
    assert less < rescored


def test_rescored_scores_are_exact_and_sorted(data, built):
    """Rescored scores are the inner products with the vectors the store stands for (the pq recipe's
    store, dequantised from its files by the oracle), and within that store's error of float32."""
    base, queries, _ = data
    d, section = built["pq"]
    scores, ids = open_cpu(built, "pq").search(queries[:50], K)
    deq = oracle_dequantise(d, section["store"])
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries[:50], deq[ids]), atol=1e-5)
    exact = np.take_along_axis(queries[:50] @ base.T, ids, 1)
    np.testing.assert_allclose(scores, exact, atol=STORE_ERROR[section["store"]["dtype"]])
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


@pytest.mark.parametrize("name", ["flat", "pq", "binary", "hnsw"])
def test_bytes_per_vector_is_what_the_file_grows_by(data, more, built, name, tmp_path):
    """code_bytes_per_vector is measured, not computed: a build with MORE vectors has an index
    file larger by MORE x that (HNSW's random levels make it approximate); index_bytes_per_vector
    is the file's size over the vectors."""
    d, section = built[name]
    size = (d / "index.faiss").stat().st_size
    assert section["index_bytes_per_vector"] == pytest.approx(size / N, abs=0.01)
    if "x4fs" in section["factory"]:
        # fast-scan lists hold their codes in blocks of 32 (the last one padded), so the bytes a
        # vector costs are its id plus its list's padded codes, not the slope of a bigger build
        index = faiss.read_index(str(d / "index.faiss"))
        ivf = faiss.extract_index_ivf(index)
        padded = sum(math.ceil(ivf.invlists.list_size(i) / 32) * 32 for i in range(ivf.nlist))
        m = section["layout"]["m"]
        assert section["code_bytes_per_vector"] == pytest.approx((8 * N + m // 2 * padded) / N, abs=0.01)
        assert section["code_bytes_per_vector"] <= section["index_bytes_per_vector"]
        return
    bigger = build_from_vectors(np.concatenate([data[0], more]), tmp_path, name, device="cpu", quiet=True)
    assert bigger["factory"] == section["factory"]  # the same layout (nlist), or the slope means nothing
    grown = ((tmp_path / "index.faiss").stat().st_size - size) / MORE
    assert section["code_bytes_per_vector"] == pytest.approx(grown, rel=0.02)
    assert section["code_bytes_per_vector"] <= section["index_bytes_per_vector"]


def test_compact_recipe_is_pq_with_a_smaller_store(built):
    """compact: pq's first stage, re-scored from an 8-bit PQ store at least 2.5x smaller a vector
    than pq's int8 store (sizes of the files on disk)."""
    (pd, pq), (cd, compact) = built["pq"], built["compact"]
    assert compact["factory"] == pq["factory"] and compact["store"]["dtype"] == "pq"

    def store_bytes(d, section):
        return sum((d / f).stat().st_size for f in section["store"]["files"])

    assert store_bytes(cd, compact) * 2.5 <= store_bytes(pd, pq)


def test_compression(built):
    """Compressed recipes are at least 16x smaller than float32 per vector, measured on disk;
    flat's file holds the float32 vectors themselves."""
    for name in ("pq", "binary"):
        assert built[name][1]["code_bytes_per_vector"] * 16 <= D * 4, name
    assert built["flat"][1]["code_bytes_per_vector"] == pytest.approx(D * 4, abs=0.01)
    assert built["flat"][1]["store"] is None


def test_nprobe_matters(data, built):
    _, queries, truth = data
    index = open_cpu(built, "pq")
    index.set_params(nprobe=1)
    low = recall(index.search(queries, K)[1], truth)
    index.set_params(nprobe=64)
    assert recall(index.search(queries, K)[1], truth) > low


def test_round_trip_and_manifest_json(data, built):
    _, queries, _ = data
    d, section = built["pq"]
    section2 = json.loads(json.dumps(section))
    a = DenseIndex.open(d, section, device="cpu").search(queries[:20], K)
    b = DenseIndex.open(d, section2, device="cpu").search(queries[:20], K)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    assert section2["model"] == "vectors" and section2["dim"] == D and section2["n_vectors"] == N
    assert set(section2["files"]) == {"index.faiss", "vectors.npy", "scales.npy"}  # pq.toml: int8 per vector
    assert section2["store"] == {"dtype": "int8", "scale": "vector", "files": ["scales.npy", "vectors.npy"]}


def test_int8_store_recipe_file(data, tmp_path):
    base, queries, truth = data
    recipe = tmp_path / "pq8.toml"
    recipe.write_text('[dense]\nfactory = "IVF{nlist},PQ{m}x8np"\ndims_per_code = 8\nnprobe = 32\n'
                      'rescore_multiplier = 10\nstore = "int8"\nmin_vectors = 1000\n')
    section = build_from_vectors(base, tmp_path / "ix", str(recipe), device="cpu", quiet=True)
    assert section["store"]["dtype"] == "int8" and "scales.npy" in section["files"]
    _, ids = DenseIndex.open(tmp_path / "ix", section, device="cpu").search(queries, K)
    assert recall(ids, truth) >= 0.9


def test_small_corpus_falls_back_to_flat(data, tmp_path, capsys):
    from retrieval import progress

    progress.set_silent(False)
    try:
        section = build_from_vectors(data[0][:500], tmp_path, None, device="cpu")
        section2 = build_from_vectors(data[0][:500], tmp_path / "pq", "pq", device="cpu")
    finally:
        progress.set_silent(True)
    assert section["recipe"] == "flat" and section2["recipe"] == "flat"
    assert "flat" in capsys.readouterr().err


def _recipe_file(name: str) -> dict:
    """A recipe's [dense] table read straight from its TOML file (not through load_recipe)."""
    path = next(d / f"{name}.toml" for d in recipe_dirs() if (d / f"{name}.toml").is_file())
    return tomllib.loads(path.read_text())["dense"]


def test_auto_switches_where_pq_toml_says():
    pq = _recipe_file("pq")
    assert plan(None, pq["min_vectors"] - 1, 384, quiet=True)["recipe"] == "flat"
    assert plan(None, pq["min_vectors"], 384, quiet=True)["recipe"] == "pq"
    assert plan("pq", pq["min_vectors"] - 1, 384, quiet=True)["recipe"] == "flat"


@pytest.mark.parametrize("n", [50000, 1_000_000])
def test_pq_plan_follows_pq_toml(n):
    """The concrete pq plan for n vectors of 384 dims keeps what pq.toml asks for."""
    pq = _recipe_file("pq")
    p = plan("pq", n, 384, quiet=True)
    nlist, m = p["nlist"], p["m"]
    assert p["factory"] == pq["factory"].format(nlist=nlist, m=m)
    assert 384 % m == 0 and abs(384 / m - pq["dims_per_code"]) <= 1  # dims_per_code dims a byte
    assert n / nlist >= pq["min_points_per_list"]
    assert p["params"]["nprobe"] == min(nlist, max(pq["nprobe"], math.ceil(nlist * pq["nprobe_fraction"])))
    assert p["params"]["rescore_multiplier"] == pq["rescore_multiplier"] and p["store"] == pq["store"]
    assert min(n, nlist * pq["train_points_per_list"]) <= p["train_points"] <= pq["max_train_points"]


@pytest.mark.parametrize("n", [10000, 20000, 100000, 1000000, 10**8])
def test_choose_nlist(n):
    nlist = choose_nlist(n, load_recipe("pq"))
    assert nlist & (nlist - 1) == 0 and n / nlist >= 39 and nlist <= 65536


def test_unknown_recipe_lists_available():
    with pytest.raises(InputError, match="available: .*pq"):
        load_recipe("nope")
    assert {"auto", "flat", "pq", "binary", "hnsw"} <= set(available_recipes())


def test_k_checks_and_padding(data, built, tmp_path):
    _, queries, _ = data
    index = open_cpu(built, "pq")
    for bad in (0, -3):
        with pytest.raises(InputError):
            index.search(queries[:2], bad)
    small = build_from_vectors(data[0][:5], tmp_path, "flat", device="cpu", quiet=True)
    scores, ids = DenseIndex.open(tmp_path, small, device="cpu").search(queries[:3], 8)
    assert ids.shape == (3, 8) and (ids[:, :5] >= 0).all() and (ids[:, 5:] == -1).all()
    assert np.isneginf(scores[:, 5:]).all()
    with pytest.raises(InputError, match="shape"):
        index.search(np.zeros((2, D + 1), np.float32), 3)


def test_damaged_files(data, built, tmp_path):
    import shutil

    d, section = built["pq"]
    bad = tmp_path / "bad"
    shutil.copytree(d, bad)
    with open(bad / "vectors.npy", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(IndexFormatError, match="vectors.npy"):
        DenseIndex.open(bad, section, device="cpu")
    (bad / "index.faiss").unlink()
    with pytest.raises(IndexFormatError, match="missing"):
        DenseIndex.open(bad, section, device="cpu")
    with pytest.raises(IndexFormatError, match="lacks"):
        DenseIndex.open(d, {"model": "x"}, device="cpu")


class FakeEmbedder:
    """Deterministic embedder: text 'p<i>' is the i-th row of a table (llm's EmbedDemo idea)."""

    device = "cpu"
    tokenizer = None
    max_tokens = 256
    default_batch_size = 64

    def __init__(self, table: np.ndarray, model_id: str = "fake/model"):
        self.table = table
        self.dim = table.shape[1]
        self.model_id = model_id
        self.calls = 0

    def encode(self, texts, batch_size=None, progress=True):
        self.calls += 1
        return self.table[[int(t[1:]) for t in texts]]


def test_build_dense_with_text_and_model_check(data, tmp_path):
    base, queries, truth = data
    table = np.concatenate([base[:3000], queries[:5]])
    emb = FakeEmbedder(table)
    texts = (f"p{i}" for i in range(3000))
    section = build_dense(texts, 3000, tmp_path, emb, None)
    assert section["model"] == "fake/model" and section["recipe"] == "flat" and "embed_seconds" in section
    index = DenseIndex.open(tmp_path, section, device="cpu", embedder=emb)
    scores, ids = index.search([f"p{3000 + i}" for i in range(5)], 3)
    expected = np.argsort(-(queries[:5] @ base[:3000].T), axis=1)[:, :3]
    np.testing.assert_array_equal(ids, expected)
    with pytest.raises(ModelError, match="fake/model"):
        check_model(section, FakeEmbedder(table, "other/model"))
    with pytest.raises(ModelError):
        check_model(section, FakeEmbedder(table[:, :64]))
    with pytest.raises(InputError, match="empty"):
        index.search(["  "], 3)


def test_build_dense_empty_and_count_mismatch(data, tmp_path):
    emb = FakeEmbedder(data[0][:10])
    with pytest.raises(InputError, match="no passages"):
        build_dense(iter([]), 0, tmp_path, emb)
    from retrieval.errors import RtvError

    with pytest.raises(RtvError):
        build_dense((f"p{i}" for i in range(3)), 5, tmp_path, emb)
    with pytest.raises(InputError, match="unknown recipe"):
        build_dense((f"p{i}" for i in range(3)), 3, tmp_path, emb, "nope")


def test_device_cuda_without_gpu_is_clear(data, built):
    if gpu_count() > 0:
        pytest.skip("a GPU is present")
    d, section = built["flat"]
    with pytest.raises(InputError, match="GPU"):
        DenseIndex.open(d, section, device="cuda")


# -- GPU paths (skipped cleanly without a GPU) --------------------------------------------------------
needs_gpu = pytest.mark.skipif(gpu_count() == 0, reason="FAISS sees no GPU")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name, minimum", [("flat", 0.999), ("pq", 0.95), ("binary", 0.95)])
def test_gpu_search_matches_cpu(data, built, name, minimum):
    _, queries, truth = data
    d, section = built[name]
    gpu = DenseIndex.open(d, section, device="cuda")
    assert gpu.on_gpu
    _, ids = gpu.search(queries, K)
    assert recall(ids, truth) >= minimum


@pytest.mark.gpu
@needs_gpu
def test_gpu_build_saves_cpu_form(data, tmp_path):
    base, queries, truth = data
    section = build_from_vectors(base, tmp_path, "pq", device="auto", quiet=True)
    assert section["build_device"] == "gpu"
    cpu = DenseIndex.open(tmp_path, section, device="cpu")
    assert not cpu.on_gpu
    assert recall(cpu.search(queries, K)[1], truth) >= 0.95


@pytest.mark.parametrize("name", ["pq", "binary"])
def test_torch_rescoring_matches_numpy(data, built, name):
    """The GPU rescoring path (torch), run here on the CPU, returns what the numpy path returns,
    and both return the brute-force top k of the candidates' full vectors."""
    pytest.importorskip("torch")
    base, queries, _ = data
    index = open_cpu(built, name)
    rng = np.random.default_rng(5)
    cand = rng.integers(0, N, size=(len(queries), 40))
    cand[:, -3:] = -1  # padding ids, as FAISS returns them
    ws, wi = Rescorer(index.store)(queries, cand, K)
    gs, gi = Rescorer(index.store, device="cpu")(queries, cand, K)
    np.testing.assert_allclose(gs, ws, rtol=1e-5, atol=1e-5)
    assert (gi == wi).mean() > 0.999  # ties may order differently
    exact = np.einsum("qd,qkd->qk", queries, base[np.where(cand >= 0, cand, 0)])
    exact[cand < 0] = -np.inf
    want = -np.sort(-exact, axis=1)[:, :K]
    np.testing.assert_allclose(ws, want, atol=STORE_ERROR[index.store.dtype])  # within the store's error of float32


def test_binary_without_rescoring_is_hamming_order(data, built):
    """rescore=False on the binary recipe: the k smallest Hamming distances of the sign bits,
    against a brute-force numpy popcount."""
    base, queries, _ = data
    scores, ids = open_cpu(built, "binary").search(queries[:40], K, rescore=False)
    bits_b, bits_q = base > 0, queries[:40] > 0
    ham = (bits_q[:, None, :] != bits_b[None, :, :]).sum(axis=2)
    np.testing.assert_array_equal(-scores, np.take_along_axis(ham, ids, 1))
    np.testing.assert_array_equal(-scores, np.sort(ham, axis=1)[:, :K])


# -- rescoring stores: float16, int8 (per vector / per dimension), PCA-reduced int8, int4, 8-bit PQ --
STORE_OPTIONS = {
    "float16": {"dtype": "float16"},
    "int8-vector": {"dtype": "int8", "scale": "vector"},
    "int8-dimension": {"dtype": "int8", "scale": "dimension"},
    "pca-int8": {"dtype": "int8", "scale": "dimension", "pca_dim": 96},
    "int4": {"dtype": "int4"},
    "pca-int4": {"dtype": "int4", "pca_dim": 96},
    "pq": {"dtype": "pq", "m": 32},
}
# how far a store's inner products may be from float32's on these unit vectors (D = 128)
STORE_ERROR = {"float16": 2e-3, "int8": 1e-2, "int8-vector": 1e-2, "int8-dimension": 1e-2, "int4": 0.08, "pq": 0.15}


def oracle_dequantise(d, spec: dict) -> np.ndarray:
    """The vectors a store stands for, read straight from its .npy files by the documented formulas
    (docs/formats.md, dense), not through VectorStore."""
    codes = np.load(d / "vectors.npy").astype(np.float64)
    if spec["dtype"] == "float16":
        return codes
    if spec["dtype"] == "pq":  # sub-vector j of row i: centroid codes[i, j] of sub-quantizer j
        book = np.load(d / "codebook.npy").astype(np.float64)
        return np.concatenate([book[j][codes[:, j].astype(int)] for j in range(spec["m"])], axis=1)
    if spec["dtype"] == "int4":
        raw = np.load(d / "vectors.npy").astype(np.int64)
        nibbles = np.stack([raw // 16, raw % 16], axis=2).reshape(len(raw), -1)  # high nibble first
        lo, step = np.load(d / "quant.npy").astype(np.float64)
        y = lo + step * nibbles
    elif spec.get("scale", "vector") == "vector":
        y = codes * np.load(d / "scales.npy").astype(np.float64)[:, None]
    else:
        lo, step = np.load(d / "quant.npy").astype(np.float64)
        y = lo + step * (codes + 128)
    if "pca_dim" in spec:
        pca = np.load(d / "pca.npy").astype(np.float64)
        y = pca[0] + y @ pca[1:]
    return y


@pytest.fixture(scope="module")
def stores(data, tmp_path_factory):
    base = data[0]
    out = {}
    for name, opts in STORE_OPTIONS.items():
        d = tmp_path_factory.mktemp(f"store-{name}")
        spec = write_store(base, d, **opts)
        out[name] = (d, spec)
    return out


def _npy_body_bytes(path) -> int:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
        return path.stat().st_size - f.tell()


@pytest.mark.parametrize("name", list(STORE_OPTIONS))
def test_store_rescoring_is_brute_force_on_the_dequantised_vectors(data, stores, name):
    """Rescorer's scores and top k equal a brute-force top k over the oracle's dequantised vectors
    of the candidates, and stay close to the float32 inner products (int8: within 0.01)."""
    base, queries, _ = data
    d, spec = stores[name]
    store = VectorStore(d, spec, N, D)
    rng = np.random.default_rng(11)
    cand = rng.integers(0, N, size=(len(queries), 60))
    cand[:, -5:] = -1
    scores, ids = Rescorer(store)(queries, cand, K)
    deq = oracle_dequantise(d, spec)
    safe = np.where(cand >= 0, cand, 0)
    brute = np.einsum("qd,qkd->qk", queries.astype(np.float64), deq[safe])
    brute[cand < 0] = -np.inf
    want = -np.sort(-brute, axis=1)[:, :K]
    np.testing.assert_allclose(scores, want, atol=1e-5)
    np.testing.assert_allclose(np.einsum("qd,qkd->qk", queries, deq[ids].astype(np.float32)), scores, atol=1e-5)
    assert np.all(np.isin(ids, cand))
    np.testing.assert_allclose(store.dequantize(np.arange(0, N, 97)), deq[::97], atol=1e-5)
    exact = np.take_along_axis(queries @ base.T, ids, 1)
    if name in STORE_ERROR:  # PCA drops the variance beyond its axes: see the round-trip test
        np.testing.assert_allclose(scores, exact, atol=STORE_ERROR[name])


@pytest.mark.parametrize("name", list(STORE_OPTIONS))
def test_store_bytes_on_disk(data, stores, name, tmp_path):
    """The store's files are what the spec names; vectors.npy holds exactly n x r bytes (int8),
    n x r / 2 (int4), n x m (pq) or 2 n x d (float16) beyond its header; the manifest's file sizes
    are the files'."""
    d, spec = stores[name]
    r = spec.get("pca_dim", D)
    want = N * {"float16": 2 * r, "int8": r, "int4": r // 2, "pq": spec.get("m")}[spec["dtype"]]
    assert _npy_body_bytes(d / "vectors.npy") == want
    section = build_from_vectors(data[0][:3000], tmp_path, _store_recipe(tmp_path, STORE_OPTIONS[name]),
                                 device="cpu", quiet=True)
    assert set(section["files"]) == {"index.faiss", *section["store"]["files"]}
    for f, info in section["files"].items():
        assert info["bytes"] == (tmp_path / f).stat().st_size, f
    assert _npy_body_bytes(tmp_path / "vectors.npy") == 3000 * want // N


def _store_recipe(tmp_path, opts: dict, first_stage: str = 'kind = "binary"\nfactory = "BFlat"\n') -> str:
    lines = ["[dense]", first_stage.strip(), "rescore_multiplier = 20", f'store = "{opts["dtype"]}"']
    if "scale" in opts:
        lines.append(f'store_scale = "{opts["scale"]}"')
    if "pca_dim" in opts:
        lines.append(f"store_pca_dim = {opts['pca_dim']}")
    if "m" in opts:
        lines.append(f"store_pq_dims_per_code = {D // opts['m']}")
    p = tmp_path / "store-recipe.toml"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def test_int8_store_recall_close_to_float16(data, built, stores):
    """Behind the same first stage (the pq recipe's candidates), int8 stores keep most of float16's
    gain over the first stage. These seeded clusters are tight (the 10th and 11th neighbours' scores
    often differ by less than int8's error), so int8 loses up to ~0.03 here; on real MiniLM vectors
    it loses <= 0.005 (eval/bench_store.py), which is what the recipes' choice rests on."""
    _, queries, truth = data
    index = open_cpu(built, "pq")
    got = {}
    for name in ("float16", "int8-vector", "int8-dimension"):
        d, spec = stores[name]
        index.store = VectorStore(d, spec, N, D)
        index.rescorer = Rescorer(index.store)
        got[name] = recall(index.search(queries, K)[1], truth)
    raw = recall(index.search(queries, K, rescore=False)[1], truth)
    assert got["float16"] >= 0.93
    for name in ("int8-vector", "int8-dimension"):
        assert got[name] >= got["float16"] - 0.04, got
        assert got[name] - raw >= 0.8 * (got["float16"] - raw), (got, raw)


def test_pca_round_trip(tmp_path):
    """Vectors that lie in a 40-dim subspace (plus an offset) come back from a pca_dim=40 int8 store
    within int8 precision; the stored axes are orthonormal and span that subspace."""
    rng = np.random.default_rng(3)
    basis, _ = np.linalg.qr(rng.standard_normal((D, 40)))  # (D, 40) orthonormal columns
    coef = rng.standard_normal((5000, 40)) * np.linspace(1.0, 0.1, 40)
    x = (coef @ basis.T + 0.3 * rng.standard_normal(D) / np.sqrt(D)).astype(np.float32)
    spec = write_store(x, tmp_path, "int8", scale="dimension", pca_dim=40)
    assert spec == {"dtype": "int8", "scale": "dimension", "pca_dim": 40,
                    "files": ["pca.npy", "quant.npy", "vectors.npy"]}
    pca = np.load(tmp_path / "pca.npy")
    axes = pca[1:].astype(np.float64)
    np.testing.assert_allclose(axes @ axes.T, np.eye(40), atol=1e-5)
    np.testing.assert_allclose(axes.T @ (axes @ basis), basis, atol=1e-4)  # span equals the subspace
    np.testing.assert_allclose(pca[0], x.mean(axis=0), atol=1e-5)
    back = VectorStore(tmp_path, spec, 5000, D).dequantize(np.arange(5000))
    step = np.load(tmp_path / "quant.npy")[1]
    err = np.abs(back - x).max()
    assert err <= 0.51 * np.sqrt(40) * step.max() + 1e-5  # half a step a coordinate, rotated
    assert err > 0  # int8: not exact
    # a pca_dim below the subspace loses its trailing variance: the round trip is then far off
    (tmp_path / "less").mkdir()
    spec20 = write_store(x, tmp_path / "less", "int8", scale="dimension", pca_dim=20)
    lost = VectorStore(tmp_path / "less", spec20, 5000, D).dequantize(np.arange(5000))
    assert np.abs(lost - x).max() > 10 * err


@pytest.mark.parametrize("name", ["int8-dimension", "pca-int8", "int4", "pca-int4", "pq"])
def test_torch_rescoring_matches_numpy_for_int8_stores(data, stores, name):
    pytest.importorskip("torch")
    _, queries, _ = data
    d, spec = stores[name]
    store = VectorStore(d, spec, N, D)
    cand = np.random.default_rng(6).integers(0, N, size=(len(queries), 40))
    cand[:, -2:] = -1
    ws, wi = Rescorer(store)(queries, cand, K)
    gs, gi = Rescorer(store, device="cpu")(queries, cand, K)
    np.testing.assert_allclose(gs, ws, rtol=1e-5, atol=1e-5)
    assert (gi == wi).mean() > 0.999


def test_old_store_specs_keep_opening(data, tmp_path):
    """Manifests written before store scales existed ({"dtype": "float16"} and per-vector int8
    without a "scale" key) open and search as before."""
    base, queries, truth = data
    for dtype, files in (("float16", ["vectors.npy"]), ("int8", ["vectors.npy", "scales.npy"])):
        d = tmp_path / dtype
        section = build_from_vectors(base, d, _store_recipe(tmp_path, {"dtype": dtype}), device="cpu", quiet=True)
        assert sorted(section["store"]["files"]) == sorted(files)
        old = json.loads(json.dumps(section))
        old["store"] = {"dtype": dtype, "files": files}  # what the earlier rtv wrote
        index = DenseIndex.open(d, old, device="cpu")
        assert index.store.dtype == dtype and index.store.scale == (None if dtype == "float16" else "vector")
        scores, ids = index.search(queries, K)
        assert recall(ids, truth) >= 0.9
        np.testing.assert_allclose(scores, np.take_along_axis(queries @ base.T, ids, 1), atol=1e-2)


def test_bad_store_settings_are_clear(data, built, stores, tmp_path):
    with pytest.raises(InputError, match="store_scale"):
        plan(_store_recipe(tmp_path, {"dtype": "float16", "scale": "vector"}), 5000, D, quiet=True)
    with pytest.raises(InputError, match="pca_dim"):
        plan(_store_recipe(tmp_path, {"dtype": "int8", "scale": "dimension", "pca_dim": D}), 5000, D, quiet=True)
    with pytest.raises(InputError, match="scale"):
        plan(_store_recipe(tmp_path, {"dtype": "int8", "scale": "row"}), 5000, D, quiet=True)
    import shutil

    d, spec = stores["pca-int8"]
    bad = tmp_path / "bad"
    shutil.copytree(d, bad)
    np.save(bad / "quant.npy", np.zeros((2, 7), np.float32))
    with pytest.raises(IndexFormatError, match="quant.npy"):
        VectorStore(bad, spec, N, D)
    with pytest.raises(IndexFormatError, match="store spec"):
        VectorStore(d, {**spec, "scale": "row"}, N, D)


def test_ip_lists_have_unit_centroids(built):
    """FAISS's k-means under inner product leaves the coarse quantizer's centroids unit length, like
    the vectors (so a spherical k-means option would change nothing: eval/bench_ivf.py)."""
    index = faiss.read_index(str(built["pq"][0] / "index.faiss"))  # held: the IVF view does not own it
    ivf = faiss.extract_index_ivf(index)
    np.testing.assert_allclose(np.linalg.norm(ivf.quantizer.reconstruct_n(0, ivf.nlist), axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("factory, on_gpu", [("IVF64,PQ32x4fs", False), ("IVF64,RaBitQfs", False),
                                             ("HNSW32,SQ8", False), ("IVF64,PQ16x8np", True), ("Flat", True)])
def test_gpu_ok_only_where_faiss_has_a_gpu_index(factory, on_gpu):
    from retrieval.dense.index import codec_for

    assert codec_for("float", factory).gpu_ok(building=True) is on_gpu
