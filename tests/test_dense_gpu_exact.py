"""Exact float16 search with torch (retrieval.dense.gpu_exact), run here on CPU torch: the same code
path as on the GPU. The two-level top-k against a brute-force numpy top-k (ties to the lower id),
query tiling against one batch, k > n, and DenseIndex's engine choice."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from retrieval.dense import gpu_exact  # noqa: E402
from retrieval.dense.gpu_exact import GpuExact, block_maxima, topk_first, two_level_topk  # noqa: E402


def brute(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top k of each row by (score descending, column ascending)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def check(scores: np.ndarray, k: int, block: int) -> None:
    dtype = torch.float16 if scores.dtype == np.float16 else torch.float32
    v, c = two_level_topk(torch.from_numpy(scores).to(dtype), k, block)
    ev, ec = brute(scores, min(k, scores.shape[1]))
    assert c.dtype == torch.int64
    np.testing.assert_array_equal(c.numpy(), ec, err_msg=f"n={scores.shape[1]} k={k} block={block}")
    np.testing.assert_array_equal(v.numpy(), ev)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_topk_first_ties_to_lower_column(dtype):
    rng = np.random.default_rng(0)
    s = rng.integers(-3, 4, size=(50, 300)).astype(dtype)  # many ties
    s[0] = 0
    s[1, ::2] = -0.0  # -0.0 ties with +0.0
    s[2] = -np.inf
    for k in (1, 7, 300):
        v, c = topk_first(torch.from_numpy(s), k)
        ev, ec = brute(s, k)
        np.testing.assert_array_equal(c.numpy(), ec)
        np.testing.assert_array_equal(v.numpy(), ev)


def test_block_maxima_partial_last_block():
    s = np.random.default_rng(1).standard_normal((4, 10)).astype(np.float32)
    got = block_maxima(torch.from_numpy(s), 4).numpy()
    want = np.stack([s[:, 0:4].max(1), s[:, 4:8].max(1), s[:, 8:10].max(1)], axis=1)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_two_level_equals_brute_force_random(dtype):
    rng = np.random.default_rng(2)
    for n in (1, 2, 7, 64, 100, 1000, 1025, 4097):
        s = rng.standard_normal((9, n)).astype(dtype)
        for block in (1, 3, 16, 64, 100, 1024, 5000):
            for k in sorted({1, 2, 5, 10, max(1, n - 1), n, n + 5}):
                check(s, k, block)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_two_level_ties(dtype):
    rng = np.random.default_rng(3)
    for n, block in ((1000, 16), (1000, 7), (3001, 64), (257, 256)):
        few = rng.integers(-2, 3, size=(12, n)).astype(dtype)  # five values: ties everywhere
        for k in (1, 3, 10, 40, n):
            check(few, k, block)
        same = np.zeros((3, n), dtype=dtype)  # every column ties: the lowest k columns
        check(same, 10, block)
        spikes = np.full((3, n), -1, dtype=dtype)  # equal maxima in several blocks
        spikes[:, ::block] = 5
        spikes[:, 5::block] = 5
        check(spikes, 10, block)


def test_two_level_float16_scores_of_vectors():
    """float16 scores of real-looking vectors: several block widths give brute force's answer."""
    x, q = unit(5000, 32, 4), unit(40, 32, 5)
    s = (torch.from_numpy(q).half().float() @ torch.from_numpy(x).half().float().T).half().numpy()
    for block in (32, 100, 1024):
        check(s, 10, block)


def float32_exact(q: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    return brute(q @ x.T, k)[1]


def test_search_recall_vs_float32_exact():
    x, q = unit(20000, 64, 6), unit(200, 64, 7)
    eng = GpuExact(x, "cpu", block=256)
    scores, ids = eng.search(q, 10)
    truth = float32_exact(q, x, 10)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(ids, truth)]) == 10
    # float32 scores of the float16 vectors, sorted descending
    x16 = x.astype(np.float16).astype(np.float32)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ x16.T, ids, axis=1), rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)
    # rescore=False: the float16 selection's own scores, the same ids up to float16 ties
    s16, i16 = eng.search(q, 10, rescore=False)
    assert s16.dtype == np.float32
    assert np.mean([len(set(a) & set(b)) for a, b in zip(i16, truth)]) > 9.5


def test_rescore_from_float32():
    x, q = unit(20000, 64, 6), unit(200, 64, 7)
    eng = GpuExact(x, "cpu", block=256, rescore_from="float32")
    assert eng.nbytes == 20000 * 64 * 6
    scores, ids = eng.search(q, 10)
    ts, truth = brute(q @ x.T, 10)
    np.testing.assert_array_equal(ids, truth)
    np.testing.assert_allclose(scores, ts, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        GpuExact(x, "cpu", rescore_from="int8")


def test_duplicates_deterministic():
    base = unit(50, 16, 8)
    x = np.concatenate([base, base, base])  # each vector three times: ids i, i+50, i+100 tie
    q = base[:5] + 0.0
    eng = GpuExact(x, "cpu", block=7)
    for _ in range(2):
        _, ids = eng.search(q, 3)
        np.testing.assert_array_equal(ids, np.array([[i, i + 50, i + 100] for i in range(5)]))
    _, ids = GpuExact(np.zeros((40, 8), np.float32), "cpu", block=3).search(unit(2, 8, 9), 5)
    np.testing.assert_array_equal(ids, np.tile(np.arange(5), (2, 1)))  # all scores 0: ids 0..4


def test_tiling_matches_one_batch():
    x, q = unit(3001, 32, 10), unit(257, 32, 11)
    one = GpuExact(x, "cpu", block=64)
    tiled = GpuExact(x, "cpu", block=64, tile_bytes=3008 * 2 * 5)  # 5 queries a tile (3001 padded to 3008)
    assert one.tile_rows(len(q)) == len(q) and tiled.tile_rows(len(q)) == 5
    tiny = GpuExact(x, "cpu", block=64, tile_bytes=1)  # one query a tile
    a, b, c = one.search(q, 10), tiled.search(q, 10), tiny.search(q, 10)
    for got in (b, c):
        np.testing.assert_array_equal(got[1], a[1])
        np.testing.assert_array_equal(got[0], a[0])
    np.testing.assert_array_equal(tiled.search(q[:1], 10)[1], a[1][:1])  # a batch of one


def test_k_above_n_and_edge_shapes():
    x, q = unit(7, 8, 12), unit(3, 8, 13)
    scores, ids = GpuExact(x, "cpu", block=4).search(q, 10)
    assert scores.shape == ids.shape == (3, 10)
    np.testing.assert_array_equal(ids[:, :7], float32_exact(q, x, 7))
    assert np.all(ids[:, 7:] == -1) and np.all(scores[:, 7:] == -np.inf)
    s, i = GpuExact(x, "cpu").search(np.zeros((0, 8), np.float32), 5)
    assert s.shape == i.shape == (0, 5)
    s, i = GpuExact(x[:1], "cpu").search(q[0], 1)  # one vector, one query as a 1-d array
    assert i.tolist() == [[0]]
    with pytest.raises(ValueError):
        GpuExact(x, "cpu").search(unit(2, 9, 14), 3)


def test_candidates_for():
    assert gpu_exact.candidates_for(10, 10**6) == 20
    assert gpu_exact.candidates_for(2, 10**6) == 10
    assert gpu_exact.candidates_for(10, 15) == 15
    assert gpu_exact.candidates_for(10, 100, oversample=0) == 10


# -- the fused kernel's selection (gpu_fused), its torch stand-in on CPU ------------------------------
from retrieval.dense import gpu_fused  # noqa: E402


def int_vectors(n: int, d: int, seed: int, lo: int = -2, hi: int = 3) -> np.ndarray:
    """Small integers: float16 exact, every inner product exact in float32 whatever the order of the
    sums, and ties everywhere."""
    return np.random.default_rng(seed).integers(lo, hi, size=(n, d)).astype(np.float32)


def brute_keys(q: np.ndarray, x: np.ndarray, kc: int, allowed=None) -> tuple[np.ndarray, np.ndarray]:
    """(scores, ids) of the top kc of exact integer scores by (score descending, id ascending)."""
    s = (q.astype(np.float64) @ x.astype(np.float64).T)
    if allowed is not None:
        s[:, ~allowed] = -np.inf
    v, i = brute(s, kc)
    return v, np.where(np.isinf(v), -1, i)


def fused_top(q: np.ndarray, x: np.ndarray, kc: int, bn: int, sub: int, allowed=None):
    q16, x16 = torch.from_numpy(q).half(), torch.from_numpy(x).half()
    al = None if allowed is None else torch.from_numpy(allowed)
    sk, k1, k2 = gpu_fused.block_keys_reference(q16, x16, bn, sub, al)
    rescans = []

    def rescan(rows, top):
        rescans.append(len(rows))
        return gpu_fused.rescan_blocks(q16, x16, rows, top, bn, al)

    top = gpu_fused.select(sk, k1, k2, kc, bn, sub, rescan)
    none = top == gpu_fused.SENTINEL
    ids = gpu_fused.key_columns(top).masked_fill(none, -1).numpy()
    return gpu_fused.key_scores(top).masked_fill(none, float("-inf")).numpy(), ids, sum(rescans)


def test_keys_order_like_score_then_lower_column():
    s = torch.tensor([[0.5, -0.0, 0.0, -1.5, 3.0, -np.inf, 0.5, 1e-30, -1e-30]])
    cols = torch.arange(s.shape[1])[None, :]
    keys = gpu_fused.keys_of(s, cols)
    order = torch.argsort(keys, dim=1, descending=True)[0].tolist()
    assert order == [4, 0, 6, 7, 1, 2, 8, 3, 5]  # -0.0 == +0.0: by column
    assert torch.equal(gpu_fused.key_columns(keys), cols)
    np.testing.assert_array_equal(gpu_fused.key_scores(keys).numpy()[0, [0, 3, 4, 6, 7, 8]],
                                  s.numpy()[0, [0, 3, 4, 6, 7, 8]])
    assert bool((keys > gpu_fused.SENTINEL).all())


@pytest.mark.parametrize("seed", range(3))
def test_fused_selection_equals_brute_force(seed):
    """Ties everywhere (small integers), three or more of the top kc in one block (runs of equal
    vectors), partial last blocks and super-blocks: the selection equals brute force."""
    rng = np.random.default_rng(seed)
    for n, d, bn, sub in ((1000, 16, 16, 2), (777, 8, 8, 4), (5000, 32, 32, 3), (640, 16, 16, 1)):
        x = int_vectors(n, d, seed)
        x[100:140] = x[100]  # a run of 40 equal vectors: many of the top kc in one block
        q = int_vectors(23, d, seed + 10)
        q[0] = x[100]
        for kc in (1, 2, 5, 20):
            if -(-n // (bn * sub)) < kc:
                continue
            v, i, rescanned = fused_top(q, x, kc, bn, sub)
            ev, ei = brute_keys(q, x, kc)
            np.testing.assert_array_equal(i, ei, err_msg=f"n={n} bn={bn} sub={sub} kc={kc}")
            np.testing.assert_array_equal(v, ev.astype(np.float32))
            if kc >= 5:
                assert rescanned >= 1  # query 0's top kc sit in one block: the rescan ran and was right
        allowed = rng.random(n) < 0.3
        allowed[100:140] = True
        for kc in (1, 10):
            if -(-n // (bn * sub)) >= kc:
                _, i, _ = fused_top(q, x, kc, bn, sub, allowed)
                np.testing.assert_array_equal(i, brute_keys(q, x, kc, allowed)[1])


def test_fused_selection_few_allowed():
    """Fewer allowed vectors than kc: the rest of the row is -1 / -inf."""
    x, q = int_vectors(4096, 16, 5), int_vectors(7, 16, 6)
    allowed = np.zeros(4096, dtype=bool)
    allowed[[3, 700, 701, 4095]] = True
    v, i, _ = fused_top(q, x, 10, 16, 4, allowed)
    ev, ei = brute_keys(q, x, 10, allowed)
    np.testing.assert_array_equal(i, ei)
    assert np.all(i[:, 4:] == -1) and np.all(np.isinf(v[:, 4:]))


def test_engine_fused_reference_path():
    """GpuExact through the fused path (the kernel's torch stand-in): the same answers as the torch
    path, float64 re-scoring from float32 equals brute force, allowed masks are honoured."""
    x, q = unit(30000, 32, 20), unit(300, 32, 21)
    fused = GpuExact(x, "cpu", fused="reference", rescore_from="float32", tile_bytes=40 << 10)
    plain = GpuExact(x, "cpu", fused=False, rescore_from="float32")
    assert fused.fused_ok(20) and not plain.fused_ok(20) and fused.fused_tile_rows(300) < 300
    s, i = fused.search(q, 10)
    s0, i0 = plain.search(q, 10)
    truth = brute(q.astype(np.float64) @ x.astype(np.float64).T, 10)
    np.testing.assert_array_equal(i, truth[1])
    np.testing.assert_array_equal(i0, truth[1])
    np.testing.assert_array_equal(s, truth[0].astype(np.float32))
    allowed = np.random.default_rng(22).random(30000) < 0.01
    sa, ia = fused.search(q, 10, allowed=allowed)
    sb, ib = plain.search(q, 10, allowed=allowed)
    ta = brute(np.where(allowed, q.astype(np.float64) @ x.astype(np.float64).T, -np.inf), 10)[1]
    np.testing.assert_array_equal(ia, ta)
    np.testing.assert_array_equal(ib, ta)
    assert allowed[ia].all()
    with pytest.raises(ValueError):
        GpuExact(x, "cpu", fused="sometimes")


def test_triton_kernel_equals_reference_in_interpreter():
    """The Triton kernel itself, run by Triton's interpreter on the CPU (where Triton is installed):
    its keys equal the torch stand-in's, masks and partial blocks included."""
    pytest.importorskip("triton")
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import numpy as np, torch
        from retrieval.dense import gpu_fused
        rng = np.random.default_rng(0)
        for n, d, bm, bn, sub in ((300, 16, 16, 16, 2), (1000, 48, 32, 32, 3), (97, 32, 16, 16, 1)):
            x = torch.from_numpy(rng.integers(-2, 3, size=(n, d)).astype(np.float16))
            q = torch.from_numpy(rng.integers(-2, 3, size=(37, d)).astype(np.float16))
            for allowed in (None, torch.from_numpy(rng.random(n) < 0.5)):
                for top2 in (True, False):
                    got = gpu_fused.block_keys(q, x, bn, sub, allowed, top2=top2,
                                               config={"BM": bm, "num_warps": 4, "num_stages": 1, "PIPE": top2})
                    want = gpu_fused.block_keys_reference(q, x, bn, sub, allowed)
                    for g, w in zip(got[:3 if top2 else 2], want):
                        assert torch.equal(g, w), (n, d, bn, sub, top2)
        print("ok")
    """)
    env = {**__import__("os").environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_triton_second_stage_equals_torch_in_interpreter():
    """The second stage (selection, rescan and float64 re-scoring in one Triton kernel) and a whole
    fused search tile, in Triton's interpreter: the same top keys and rescans as ``select``, the same
    scores and ids as GpuExact.rescore and as the torch engine (exact integer scores, ties, runs of
    equal vectors that force rescans, masks, super-block keys read in several chunks)."""
    pytest.importorskip("triton")
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import numpy as np, torch
        from retrieval.dense import gpu_exact, gpu_fused
        rng = np.random.default_rng(1)
        for n, d, bn, sub, kc, k, chunk in ((2000, 16, 16, 2, 20, 10, 16), (700, 40, 16, 3, 5, 3, 2048),
                                            (900, 24, 8, 1, 12, 12, 32)):
            x = rng.integers(-2, 3, size=(n, d)).astype(np.float32)
            x[100:140] = x[100]
            q = rng.integers(-2, 3, size=(6, d)).astype(np.float32)
            q[0] = x[100]
            q32 = torch.from_numpy(q); q16 = q32.half(); x16 = torch.from_numpy(x).half()
            eng = gpu_exact.GpuExact(x, "cpu", rescore_from="float32", fused=False)
            for allowed in (None, torch.from_numpy(rng.random(n) < 0.3)):
                sk, k1, k2 = gpu_fused.block_keys_reference(q16, x16, bn, sub, allowed)
                top, flag, s, i = gpu_fused.select_rescore(sk, k1, k2, q32, q16, x16, eng.x32, kc, k, bn, sub,
                                                           allowed, chunk=chunk)
                flagged = torch.zeros(len(q), dtype=torch.int32)
                def rescan(rows, t):
                    flagged[rows] = 1
                    return gpu_fused.rescan_blocks(q16, x16, rows, t, bn, allowed)
                want = gpu_fused.select(sk, k1, k2, kc, bn, sub, rescan)
                assert torch.equal(top, want) and torch.equal(flag, flagged), (n, d, bn, sub)
                assert flag[0] == 1
                ws, wi = eng.rescore(q32, gpu_fused.key_columns(want).masked_fill(want == gpu_fused.SENTINEL, -1), k)
                assert torch.equal(s, ws) and torch.equal(i, wi)
                for rescore in (True, False):
                    kk = gpu_exact.candidates_for(k, n) if rescore else k
                    gs, gi = gpu_fused.search_tile(q32, q16, x16, eng.x32, k, kk, bn, sub, allowed, rescore)
                    es, ei = eng.search_tensor(q32, k, rescore=rescore, allowed=allowed)
                    assert torch.equal(gi, ei) and torch.equal(gs, es), (n, d, bn, sub, rescore)
        print("ok")
    """)
    env = {**__import__("os").environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_kernel_on_gpu(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setattr(gpu_exact, "FUSED_MIN_QUERIES", 1)  # the kernel at every batch size
    x, q = unit(200000, 64, 30), unit(1000, 64, 31)
    eng = GpuExact(x, "cuda", rescore_from="float32")
    assert eng.fused_ok(20)
    s, i = eng.search(q, 10)
    xt, qt = torch.from_numpy(x).cuda().double(), torch.from_numpy(q).cuda().double()
    truth = torch.topk(qt @ xt.T, 10, dim=1).indices.cpu().numpy()
    np.testing.assert_array_equal(i, truth)
    xi = int_vectors(50000, 64, 32)
    qi = torch.from_numpy(int_vectors(300, 64, 33)).cuda().half()
    xg = torch.from_numpy(xi).cuda().half()
    for bs, bn, sub in ((1, 128, 4), (17, 256, 2), (300, 256, 2), (300, 128, 3)):
        got = gpu_fused.block_keys(qi[:bs], xg, bn, sub)
        want = gpu_fused.block_keys_reference(qi[:bs], xg, bn, sub)
        for g, w in zip(got, want):
            assert torch.equal(g, w)
    # the whole fused search (second stage in Triton, rescans) against the torch engine, exact scores
    fused, plain = GpuExact(xi, "cuda", rescore_from="float32"), GpuExact(xi, "cuda", rescore_from="float32", fused=False)
    allowed = torch.from_numpy(np.random.default_rng(34).random(len(xi)) < 0.2).cuda()
    for mask in (None, allowed):
        for rescore in (True, False):
            for bs in (1, 7, 300):
                a = fused.search_tensor(qi[:bs].float(), 10, rescore=rescore, allowed=mask)
                b = plain.search_tensor(qi[:bs].float(), 10, rescore=rescore, allowed=mask)
                assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])


# -- DenseIndex ---------------------------------------------------------------------------------------
faiss = pytest.importorskip("faiss")


def test_dense_index_engine_choice(tmp_path):
    from retrieval.dense import DenseIndex, build_from_vectors

    x, q = unit(3000, 32, 15), unit(50, 32, 16)
    section = build_from_vectors(x, tmp_path / "flat", "flat", device="cpu", quiet=True)
    plain = DenseIndex.open(tmp_path / "flat", section, device="cpu")
    assert plain.engine is None  # the CPU path stays FAISS
    torch_ix = DenseIndex.open(tmp_path / "flat", section, device="cpu", exact="torch")
    assert isinstance(torch_ix.engine, GpuExact) and "engine=GpuExact" in repr(torch_ix)
    s0, i0 = plain.search(q, 10)
    s1, i1 = torch_ix.search(q, 10)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(i0, i1)]) == 10
    np.testing.assert_allclose(s1, s0, atol=2e-3)
    s, i = torch_ix.search(q[:2], 5000)  # k > n: padded like the FAISS path
    assert s.shape == (2, 5000) and np.all(i[:, 3000:] == -1) and np.all(np.isinf(s[:, 3000:]))
    with pytest.raises(Exception):
        DenseIndex.open(tmp_path / "flat", section, device="cpu", exact="nope")
    # compressed recipes keep FAISS whatever exact says
    pq = build_from_vectors(unit(12000, 32, 17), tmp_path / "pq", "pq", device="cpu", quiet=True)
    assert DenseIndex.open(tmp_path / "pq", pq, device="cpu", exact="torch").engine is None


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.mem_get_info()[0] < (12 << 30),
                    reason="needs a CUDA GPU with 12 GiB free")
def test_fused_kernel_past_2_31_elements():
    """n * d past 2**31 (int32 element offsets would wrap): the last blocks' keys are still right."""
    pytest.importorskip("triton")
    n, d = 5_800_000, 384
    g = torch.Generator(device="cuda").manual_seed(40)
    x = torch.randint(-2, 3, (n, d), device="cuda", generator=g).half()
    q = torch.randint(-2, 3, (3, d), device="cuda", generator=g).half()
    got = gpu_fused.block_keys(q, x, 256, 2)
    want = gpu_fused.block_keys_reference(q, x, 256, 2)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
