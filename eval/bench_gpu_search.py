"""Exact float16 search on the GPU (retrieval.dense.gpu_exact) side by side with FAISS, in one run.

1M x 384 unit vectors (random normal, normalised; and a clustered set), 16,384 queries, k = 10:

- cuBLAS float16 matmul alone (Q @ X^T, tiled, nothing selected): the unfused ceiling;
- the fused Triton kernel alone (gpu_fused.block_keys: matmul + best of each block, the score matrix
  never written), keeping the best one (max_only) or the best two (top2, what the engine uses) per
  block, over a few tile shapes;
- the second stage alone (gpu_fused.select_rescore: the exact top 20 from the kernel's keys, the
  rare rescan, their float64 re-scoring, one Triton program a query);
- the engine, whole search: fused kernel + second stage (rescans in it) re-scoring 20
  candidates from float32 vectors (fused_f32), the same re-scored from the float16 vectors
  (fused_f16), the float16 score matrix + two-level top-k (unfused_f32), and matmul + torch.topk;
- FAISS GpuIndexFlatIP with float32 and float16 storage;

recall@10 of each against exact search in float64 over the float32 vectors (the truth) and against
float32 exact search (TF32 off; itself shown against the truth), batches of 1 .. 16,384 queries, one
batch of 100k queries (checked against the smaller batches' answers). At 10M x 384 (clustered):
the engine vs FAISS flat (float32, float16), FAISS IVF-PQ (rtv's pq recipe's layout at 10M:
IVF16384,PQ64, raw and re-scored x20) and binary sign codes (GpuIndexBinaryFlat, raw and re-scored
x20): QPS, recall@10, bytes on the GPU. Timings: best of 2-3 runs after a warm-up,
torch.cuda.synchronize() around each; queries and results stay on the GPU (FAISS through
faiss.contrib.torch_utils) unless the entry says numpy.

    python eval/bench_gpu_search.py --commit SHA            # on the GPU machine (faiss-gpu: shared/gpu/)
    python eval/bench_gpu_search.py --plot-only             # redraw the plot from the JSON

Writes eval/results/bench_gpu_search.json and bench_gpu_search.png (or --out).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))
from provenance import provenance, write_results  # noqa: E402

try:
    import retrieval  # noqa: F401
except ImportError:  # a machine without the library's other needs (sqlite-utils, ...): the dense part alone
    import types

    _pkg = types.ModuleType("retrieval")
    _pkg.__path__ = [str(ROOT / "src" / "retrieval")]
    sys.modules["retrieval"] = _pkg

OUT = ROOT / "eval" / "results" / "bench_gpu_search.json"


def log(*a) -> None:
    print(*a, flush=True)


def sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def best_time(torch, fn, reps: int = 3, warm: int = 1) -> float:
    for _ in range(warm):
        fn()
    sync(torch)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(torch)
        best = min(best, time.perf_counter() - t0)
    return best


def peak_bytes(torch):
    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def unit_rows(x):
    return x / x.norm(dim=1, keepdim=True)


def make_data(torch, kind: str, n: int, d: int, nq: int, device, seed: int, centres: int = 1000):
    """float32 (n, d) unit vectors and (nq, d) queries, generated on the device in 1M-row chunks."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.empty((n + nq, d), dtype=torch.float32, device=device)
    if kind == "random":
        for lo in range(0, n + nq, 1 << 20):
            m = min(1 << 20, n + nq - lo)
            x[lo:lo + m] = unit_rows(torch.randn(m, d, device=device, generator=g))
    else:  # clustered: centres of uneven weight, each vector a centre plus equal-size noise
        c = torch.randn(centres, d, device=device, generator=g)
        w = torch.distributions.Dirichlet(torch.ones(centres, device=device)).sample()
        for lo in range(0, n + nq, 1 << 20):
            m = min(1 << 20, n + nq - lo)
            lab = torch.multinomial(w, m, replacement=True, generator=g)
            x[lo:lo + m] = unit_rows(c[lab] + torch.randn(m, d, device=device, generator=g))
    return x[:n], x[n:].contiguous()


def exact_top(torch, x, q, k: int, dtype, per: int = 1024, xchunk: int = 1 << 20):
    """Exact top k ids (nq, k) by (score descending, id ascending) in ``dtype`` (float64: the truth;
    float32 with TF32 off: float32 exact search)."""
    out = []
    for lo in range(0, len(q), per):
        qq = q[lo:lo + per].to(dtype)
        best_s, best_i = None, None
        for xlo in range(0, len(x), xchunk):
            s = qq @ x[xlo:xlo + xchunk].to(dtype).T
            v, i = torch.topk(s, min(k, s.shape[1]), dim=1)
            i = i + xlo
            if best_s is not None:
                v, i = torch.cat([best_s, v], 1), torch.cat([best_i, i], 1)
                v, j = torch.topk(v, k, dim=1)
                i = torch.gather(i, 1, j)
            best_s, best_i = v, i
        out.append(best_i)
    return torch.cat(out)


def recall(torch, ids, truth) -> float:
    ids = torch.as_tensor(ids).to(truth.device)
    k = truth.shape[1]
    return round(float((ids[:, :k, None] == truth[:, None, :]).any(-1).float().sum(1).mean()) / k, 6)


def faiss_flat(faiss, res, x, f16: bool):
    cfg = faiss.GpuIndexFlatConfig()
    cfg.useFloat16 = f16
    ix = faiss.GpuIndexFlatIP(res, x.shape[1], cfg)
    for lo in range(0, len(x), 1 << 20):
        ix.add(x[lo:lo + (1 << 20)])
    return ix


class Bench:
    def __init__(self, torch, results: dict, save):
        self.torch, self.results, self.save = torch, results, save

    def entry(self, table: dict, name: str, nq: int, fn, ids_fn=None, truths=None, reps: int = 3, **extra):
        torch = self.torch
        try:
            t = best_time(torch, fn, reps=reps)
            e = {"qps": round(nq / t, 1), "seconds": round(t, 5), **extra}
            if ids_fn is not None:
                ids = ids_fn()
                for tname, truth in (truths or {}).items():
                    e[f"recall_at_10_vs_{tname}"] = recall(torch, ids[:len(truth)], truth)
            table[name] = e
            log(f"  {name}: {e}")
        except Exception as exc:  # noqa: BLE001 - record and go on
            table[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"  {name} FAILED: {traceback.format_exc()}")
            torch.cuda.empty_cache()
        self.save()
        return table[name]


def kernel_sweep(torch, B: Bench, R: dict, q, x16, nq: int):
    """The fused kernel alone over block widths and tile shapes (PIPE: the inner loop pipelined by
    Triton, else unrolled); returns (block, sub, config) of the fastest top2 run."""
    from retrieval.dense import gpu_fused

    q16 = q.half().contiguous()
    S = R.setdefault("kernel_sweep", {})
    runs = [(256, 2, bm, w, st, pipe, True) for bm, w, st, pipe in
            ((128, 8, 3, True), (128, 8, 3, False), (128, 8, 4, True), (128, 4, 3, True), (64, 4, 3, True))]
    runs += [(256, 4, 128, 8, 3, True, True), (256, 2, 128, 8, 2, True, True)]
    runs += [(128, 4, 128, 8, 3, True, True), (128, 4, 64, 4, 3, True, True),
             (256, 2, 128, 8, 3, True, False), (128, 4, 64, 4, 3, True, False)]
    best, best_t = None, float("inf")
    for bn, sub, bm, w, st, pipe, top2 in runs:
        cfg = {"BM": bm, "num_warps": w, "num_stages": st, "PIPE": pipe}
        name = f"bn{bn}_bm{bm}_w{w}_s{st}{'_pipe' if pipe else ''}_{'top2' if top2 else 'max_only'}"
        e = B.entry(S, name, nq, lambda cfg=cfg, top2=top2, bn=bn, sub=sub:
                    gpu_fused.block_keys(q16, x16, bn, sub, top2=top2, config=cfg), reps=3,
                    block=bn, sub=sub, **cfg, top2=top2)
        if top2 and e.get("seconds", 1e9) < best_t:
            best, best_t = (bn, sub, cfg), e["seconds"]
    torch.cuda.empty_cache()
    return best


def profile_top(torch, fn, reps: int = 5, top: int = 12) -> dict:
    """Where one call's time goes: torch.profiler's heaviest ops by GPU time, per call."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    sync(torch)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        sync(torch)
    wall = (time.perf_counter() - t0) / reps
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: getattr(e, "self_device_time_total", 0), reverse=True)[:top]:
        rows.append({"op": e.key[:90], "calls": e.count // reps,
                     "self_gpu_us": round(getattr(e, "self_device_time_total", 0) / reps, 1),
                     "cpu_total_us": round(e.cpu_time_total / reps, 1)})
    return {"wall_ms_profiled": round(1000 * wall, 3), "ops": rows}


def run_1m(torch, args, kind: str, device, full: bool, results: dict, B: Bench) -> None:
    from retrieval.dense import gpu_exact, gpu_fused
    from retrieval.dense.gpu_exact import GpuExact

    n, d, nq, k = args.n, args.dim, args.nq, args.k
    log(f"[{kind}] {n} x {d}, {nq} queries")
    x, q = make_data(torch, kind, n, d, nq, device, seed=1 if kind == "random" else 2)
    t0 = time.perf_counter()
    truth64 = exact_top(torch, x, q, k, torch.float64)
    truth32 = exact_top(torch, x, q, k, torch.float32)
    sync(torch)
    R = results.setdefault("datasets", {}).setdefault(kind, {"n": n, "dim": d, "nq": nq, "k": k})
    R["truth_seconds"] = round(time.perf_counter() - t0, 2)
    R["float32_exact_recall_vs_float64"] = recall(torch, truth32, truth64)
    truths = {"float64": truth64, "float32": truth32}
    t0 = time.perf_counter()
    eng = GpuExact(x, str(device), rescore_from="float32")
    sync(torch)
    R["engine_load_seconds"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    eng.search_tensor(q[:1], k)
    sync(torch)
    R["engine_first_query_seconds"] = round(time.perf_counter() - t0, 3)  # Triton compile / cache load
    R["engine"] = {"fused": eng.fused_ok(gpu_exact.candidates_for(k, n)), "fused_block": gpu_exact.FUSED_BLOCK,
                   "fused_sub": gpu_exact.FUSED_SUB, "candidates": gpu_exact.candidates_for(k, n),
                   "fused_tile_queries": eng.fused_tile_rows(nq), "unfused_block": eng.block,
                   "unfused_tile_queries": eng.tile_rows(nq), "vector_bytes": eng.nbytes,
                   "rescoring": "float64 from the float32 copy on the GPU"}
    M = R.setdefault("methods", {})
    x16, per = eng.x, eng.tile_rows(nq)
    xt = x16.t()

    def matmul_only():
        with torch.inference_mode():
            for lo in range(0, nq, per):
                _ = q[lo:lo + per].half() @ xt

    def matmul_topk(qq=q, tile=per):
        outs = []
        with torch.inference_mode():
            for lo in range(0, len(qq), tile):
                outs.append(torch.topk(qq[lo:lo + tile].half() @ xt, k, dim=1).indices)
        return torch.cat(outs)

    B.entry(M, "cublas_matmul_only", nq, matmul_only, what="float16 Q @ X^T per tile, nothing selected",
            tile_queries=per, reps=5)
    if full:
        best = kernel_sweep(torch, B, R, q, x16, nq)
        if best is not None:  # the engine takes the sweep's fastest blocks and tile in this run
            bn, sub, cfg = best
            R["kernel_config_used"] = {"block": bn, "sub": sub, **cfg}
            gpu_fused.BIG_BATCH_CONFIG = dict(cfg)
            gpu_exact.FUSED_BLOCK, gpu_exact.FUSED_SUB = bn, sub
            eng.fused_block, eng.fused_sub = bn, sub
    R["engine"].update(fused_block=eng.fused_block, fused_sub=eng.fused_sub,
                       big_batch_config=dict(gpu_fused.BIG_BATCH_CONFIG))
    q16 = q.half().contiguous()
    bn, sub = eng.fused_block, eng.fused_sub
    kc = gpu_exact.candidates_for(k, n)
    keys = gpu_fused.block_keys(q16, x16, bn, sub)
    flag = gpu_fused.select_rescore(*keys, q, q16, x16, eng.x32, kc, k, bn, sub)[1]
    R["rescanned_query_fraction"] = round(float(flag.float().mean()), 5)  # two of a query's top 20 in one block
    B.entry(M, "fused_kernel_top2", nq, lambda: gpu_fused.block_keys(q16, x16, bn, sub), reps=5, block=bn, sub=sub,
            what="the fused kernel alone: scores + best two of each block, best of each super-block")
    B.entry(M, "fused_kernel_max_only", nq, lambda: gpu_fused.block_keys(q16, x16, bn, sub, top2=False), reps=5,
            what="the fused kernel keeping only the best of each block (not enough for the exact selection)")
    B.entry(M, "second_stage_only", nq, lambda: gpu_fused.select_rescore(*keys, q, q16, x16, eng.x32, kc, k, bn, sub),
            reps=5, what="the second stage alone on the kernel's keys: selection of the top 20 (rescans "
                         "included) + float64 re-scoring, one Triton program a query")
    del keys, flag
    B.entry(M, "engine_fused_f32", nq, lambda: eng.search_tensor(q, k), lambda: eng.search_tensor(q, k)[1],
            truths, reps=5, what="fused kernel + second-stage kernel (selection, rescans, float64 "
                                 "re-scoring of the top 20 from float32 vectors: 3x memory), no host sync")
    B.entry(M, "engine_fused_no_rescore", nq, lambda: eng.search_tensor(q, k, rescore=False),
            lambda: eng.search_tensor(q, k, rescore=False)[1], truths,
            what="fused kernel, exact top 10 by float16 products, no re-scoring")
    e16 = GpuExact(x16, str(device), rescore_from="float16")
    B.entry(M, "engine_fused_f16", nq, lambda: e16.search_tensor(q, k), lambda: e16.search_tensor(q, k)[1],
            truths, what="fused kernel, float64 re-scoring from the float16 vectors (float16 memory only)")
    del e16
    eu = GpuExact(x, str(device), rescore_from="float32", fused=False)
    eu.x32 = eng.x32
    B.entry(M, "engine_unfused_f32", nq, lambda: eu.search_tensor(q, k), lambda: eu.search_tensor(q, k)[1],
            truths, what="float16 score matrix (cuBLAS) + two-level top-k (block 512), float64 re-scoring")
    if full:
        B.entry(M, "matmul_topk", nq, matmul_topk, matmul_topk, truths, reps=2,
                what="cuBLAS float16 matmul + torch.topk over each row")
        q_np = q.cpu().numpy()
        B.entry(M, "engine_fused_numpy_io", nq, lambda: eng.search(q_np, k),
                lambda: torch.from_numpy(eng.search(q_np, k)[1]), truths,
                what="engine.search on numpy queries: host->GPU copy and results back included")

    fx = {}
    try:
        import faiss

        res = faiss.StandardGpuResources()
        import faiss.contrib.torch_utils  # noqa: F401 - lets GPU indexes take torch tensors
    except (AttributeError, ImportError) as exc:
        res = None
        R["faiss_error"] = f"{type(exc).__name__}: {exc}"
    for f16 in ((False, True) if res is not None else ()):
        name = "faiss_gpu_flat_f16" if f16 else "faiss_gpu_flat_f32"
        try:
            fx[name] = faiss_flat(faiss, res, x, f16)
        except Exception as exc:  # noqa: BLE001
            M[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        B.entry(M, name, nq, lambda ix=fx[name]: ix.search(q, k), lambda ix=fx[name]: ix.search(q, k)[1], truths,
                io="torch tensors on the GPU")
    if res is not None:
        R["faiss"] = {"version": faiss.__version__, "gpus": int(faiss.get_num_gpus())}

    if full:
        Bt = R.setdefault("batches", {})
        # each takes the batch as a tensor on the GPU and as a numpy array on the host
        fns = {"engine_fused_f32": lambda qb, qn: eng.search_tensor(qb, k),
               "engine_fused_f32_numpy_io": lambda qb, qn: eng.search(qn, k),
               "engine_unfused_f32": lambda qb, qn: eu.search_tensor(qb, k),
               "matmul_topk": lambda qb, qn: matmul_topk(qb, eng.tile_rows(len(qb)))}
        for name, ix in fx.items():
            fns[name] = (lambda qb, qn, ix=ix: ix.search(qb, k))
        for bs in (int(b) for b in args.batches.split(",")):
            m = min(nq, max(bs, 256 if bs <= 16 else 2048 if bs <= 256 else nq))
            qs, qs_np = q[:m], q_np[:m]
            row = {"queries": m}
            for name, fn in fns.items():
                try:
                    def go(fn=fn):
                        for lo in range(0, m, bs):
                            fn(qs[lo:lo + bs], qs_np[lo:lo + bs])
                    t = best_time(torch, go, reps=2)
                    row[name] = {"qps": round(m / t, 1), "ms_per_batch": round(1000 * t / (-(-m // bs)), 4)}
                except Exception as exc:  # noqa: BLE001
                    row[name] = {"error": f"{type(exc).__name__}: {exc}"}
            Bt[str(bs)] = row
            log(f"[{kind}] batch {bs}: {row}")
            B.save()
        P = R.setdefault("profile", {})
        for bs in (1, 64, nq):
            try:
                P[f"engine_fused_f32_batch{bs}"] = profile_top(torch, lambda bs=bs: eng.search_tensor(q[:bs], k))
                P[f"engine_unfused_f32_batch{bs}"] = profile_top(torch, lambda bs=bs: eu.search_tensor(q[:bs], k))
            except Exception as exc:  # noqa: BLE001
                P[f"batch{bs}"] = {"error": f"{type(exc).__name__}: {exc}"}
            B.save()
        try:  # one batch of 100k queries, tiled inside; its rows against smaller batches' answers
            extra = make_data(torch, "random", 16, d, args.huge_batch, device, seed=3)[1]
            qh = torch.cat([q, extra[:max(0, args.huge_batch - nq)]])
            t = best_time(torch, lambda: eng.search_tensor(qh, k), reps=2)
            _, ih = eng.search_tensor(qh, k)
            _, i0 = eng.search_tensor(q, k)
            _, i1 = eng.search_tensor(q[:1000], k)
            _, i2 = eng.search_tensor(q[:7], k)
            R["huge_batch"] = {"queries": len(qh), "qps": round(len(qh) / t, 1), "seconds": round(t, 4),
                               "same_ids_as_nq_batch": bool(torch.equal(ih[:nq], i0)),
                               "same_ids_as_1000_batch": bool(torch.equal(i0[:1000], i1)),
                               "same_ids_as_7_batch": bool(torch.equal(i0[:7], i2)),
                               "recall_at_10_vs_float64_first_nq": recall(torch, ih[:nq], truth64),
                               "peak_gpu_bytes": peak_bytes(torch)}
            log(f"[{kind}] huge batch: {R['huge_batch']}")
        except Exception as exc:  # noqa: BLE001
            R["huge_batch"] = {"error": f"{type(exc).__name__}: {exc}"}
            log(traceback.format_exc())
        B.save()
    del fx, eng, eu, x, q, x16, xt, truth64, truth32, res
    torch.cuda.empty_cache()


def sign_codes(torch, x):
    """(n, d/8) uint8 sign bits of float vectors (bit j of byte i: dimension 8i + j)."""
    bits = (x > 0).view(len(x), -1, 8).to(torch.uint8)
    return (bits << torch.arange(8, device=x.device, dtype=torch.uint8)).sum(dim=2, dtype=torch.uint8)


def run_big(torch, args, device, results: dict, B: Bench) -> None:
    """10M: the engine vs FAISS flat, IVF-PQ and binary codes (recall on 1024 queries)."""
    import faiss

    from retrieval.dense import recipes
    from retrieval.dense.gpu_exact import GpuExact

    n, d, k, nq = args.big_n, args.dim, args.k, 4096
    R = results.setdefault("big", {"n": n, "dim": d, "nq": nq, "k": k, "data": "clustered, 10000 centres",
                                   "recall_queries": 1024})
    M = R.setdefault("methods", {})
    try:
        x, q = make_data(torch, "clustered", n, d, nq, device, seed=5, centres=10000)
        t0 = time.perf_counter()
        truth64 = exact_top(torch, x, q[:1024], k, torch.float64, per=256)
        truths = {"float64": truth64}
        R["truth_seconds"] = round(time.perf_counter() - t0, 2)
        eng = GpuExact(x, str(device), rescore_from="float32")
        x16 = eng.x
        B.entry(M, "engine_fused_f32", nq, lambda: eng.search_tensor(q, k), lambda: eng.search_tensor(q[:1024], k)[1],
                truths, gpu_bytes_per_vector=6 * d, what="fused exact float16, float64 re-scoring from float32")
        e16 = GpuExact(x16, str(device), rescore_from="float16")
        B.entry(M, "engine_fused_f16", nq, lambda: e16.search_tensor(q, k), lambda: e16.search_tensor(q[:1024], k)[1],
                truths, gpu_bytes_per_vector=2 * d, what="fused exact float16, re-scoring from float16 (no float32 copy)")
        del e16
        per = eng.tile_rows(nq)
        B.entry(M, "cublas_matmul_only", nq,
                lambda: [q[lo:lo + per].half() @ x16.t() for lo in range(0, nq, per)], reps=2, gpu_bytes_per_vector=2 * d)
        res = faiss.StandardGpuResources()
        import faiss.contrib.torch_utils  # noqa: F401
        for f16 in (True, False):
            name = "faiss_gpu_flat_f16" if f16 else "faiss_gpu_flat_f32"
            try:
                ix = faiss_flat(faiss, res, x, f16)
                B.entry(M, name, nq, lambda ix=ix: ix.search(q, k), lambda ix=ix: ix.search(q[:1024], k)[1], truths,
                        reps=2, gpu_bytes_per_vector=(2 if f16 else 4) * d)
                del ix
            except Exception as exc:  # noqa: BLE001
                M[name] = {"error": f"{type(exc).__name__}: {exc}"}
            torch.cuda.empty_cache()
        B.save()
        # IVF-PQ in rtv's pq recipe's layout for this n
        plan = recipes.plan("pq", n, d, quiet=True)
        nlist, m = plan["nlist"], plan["m"]
        R["ivfpq"] = {"factory": plan["factory"], "train_points": plan["train_points"],
                      "recipe_nprobe": plan["params"]["nprobe"], "rescore_multiplier": plan["params"]["rescore_multiplier"]}
        try:
            cfg = faiss.GpuIndexIVFPQConfig()
            cfg.useFloat16LookupTables = True
            ivf = faiss.GpuIndexIVFPQ(res, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT, cfg)
            gsel = torch.Generator(device="cpu").manual_seed(7)
            sample = x[torch.randperm(n, generator=gsel)[:plan["train_points"]].to(device)].contiguous()
            t0 = time.perf_counter()
            ivf.train(sample)
            R["ivfpq"]["train_seconds"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            for lo in range(0, n, 1 << 20):
                ivf.add(x[lo:lo + (1 << 20)])
            R["ivfpq"]["add_seconds"] = round(time.perf_counter() - t0, 2)
            del sample
            mult = plan["params"]["rescore_multiplier"]
            qn = 1024
            # FAISS's GPU IVF takes nprobe <= 2048 (the recipe's 3072 at 10M is refused)
            for nprobe in sorted({32, 128, 512, min(2048, plan["params"]["nprobe"])}):
                ivf.nprobe = nprobe
                B.entry(M, f"faiss_ivfpq_nprobe{nprobe}_raw", qn, lambda: ivf.search(q[:qn], k),
                        lambda: ivf.search(q[:qn], k)[1], truths, reps=2, gpu_bytes_per_vector=m + 8)

                def rescored():
                    _, cand = ivf.search(q[:qn], k * mult)
                    return eng.rescore(q[:qn], cand, k)[1]
                B.entry(M, f"faiss_ivfpq_nprobe{nprobe}_rescored_x{mult}", qn, rescored, rescored, truths, reps=2,
                        gpu_bytes_per_vector=m + 8, rescoring="float64 from the float32 vectors on the GPU "
                        "(rtv re-scores from its int8 store on the host)")
            del ivf
        except Exception as exc:  # noqa: BLE001
            R["ivfpq"]["error"] = f"{type(exc).__name__}: {exc}"
            log(traceback.format_exc())
        torch.cuda.empty_cache()
        B.save()
        # binary sign codes, exhaustive Hamming search
        try:
            codes = sign_codes(torch, x)
            bix = faiss.GpuIndexBinaryFlat(res, d)
            codes_np = codes.cpu().numpy()
            bix.add(codes_np)
            qc = sign_codes(torch, q).cpu().numpy()
            mult, qc = 20, qc[:1024]
            B.entry(M, "faiss_binary_raw", len(qc), lambda: bix.search(qc, k),
                    lambda: torch.from_numpy(bix.search(qc[:1024], k)[1]), truths, reps=2,
                    gpu_bytes_per_vector=d // 8, io="numpy")

            def brescored():
                _, cand = bix.search(qc, k * mult)
                return eng.rescore(q[:len(qc)], torch.from_numpy(cand).to(device), k)[1]
            B.entry(M, f"faiss_binary_rescored_x{mult}", len(qc), brescored, brescored, truths, reps=2,
                    gpu_bytes_per_vector=d // 8, io="numpy", rescoring="float64 from the float32 vectors on the GPU")
            del bix, codes
        except Exception as exc:  # noqa: BLE001
            M["faiss_binary"] = {"error": f"{type(exc).__name__}: {exc}"}
            log(traceback.format_exc())
        R["peak_gpu_bytes"] = peak_bytes(torch)
        del eng, x, q
        torch.cuda.empty_cache()
    except Exception as exc:  # noqa: BLE001
        R["error"] = f"{type(exc).__name__}: {exc}"
        log(traceback.format_exc())
    B.save()


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    R = results["datasets"]["random"]
    fig, axes = plt.subplots(1, 3, figsize=(19, 5))
    for ax, (title, M) in zip(axes[:2], ((f"1M: {R['n']:,} x {R['dim']}, {R['nq']:,} queries", R["methods"]),
                                         ("10M (clustered), 4,096 queries", results.get("big", {}).get("methods", {})))):
        names = [m for m, e in M.items() if "qps" in e]
        vals = [M[m]["qps"] for m in names]
        if not vals:
            continue
        bars = ax.barh(names, vals, color=["#888" if "matmul" in m or "kernel" in m else "#c44" if m.startswith("faiss")
                                           else "#36c" for m in names])
        for b_, m in zip(bars, names):
            r = M[m].get("recall_at_10_vs_float64")
            ax.text(b_.get_width(), b_.get_y() + b_.get_height() / 2,
                    f" {b_.get_width() / 1000:,.1f}k" + (f"  r={r:.4f}" if r is not None else ""), va="center", fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("queries / s")
        ax.set_title(f"{title}, k={R['k']}\n{results['gpu'].get('name', 'cpu')}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    ax = axes[2]
    bs = sorted(R.get("batches", {}), key=int)
    for meth in ("engine_fused_f32", "engine_unfused_f32", "matmul_topk", "faiss_gpu_flat_f32", "faiss_gpu_flat_f16"):
        ys = [R["batches"][b].get(meth, {}).get("qps") for b in bs]
        if any(y is not None for y in ys):
            ax.plot([int(b) for b in bs], ys, "o-", label=meth)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("queries per batch")
    ax.set_ylabel("queries / s")
    ax.set_title("batch size (1M)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    log(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--nq", type=int, default=16384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batches", default="1,4,16,64,256,1024,4096,16384")
    ap.add_argument("--huge-batch", type=int, default=100_000)
    ap.add_argument("--datasets", default="random,clustered")
    ap.add_argument("--big-n", type=int, default=10_000_000, help="the 10M comparison at this n (0: skip)")
    ap.add_argument("--commit", default=None, help="commit measured, where git is not there")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--plot-only", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="no GPU: a tiny run on the CPU to check the script "
                    "(the kernel through TRITON_INTERPRET=1, the engine through the kernel's torch stand-in)")
    args = ap.parse_args()
    png = args.out.with_suffix(".png")
    if args.plot_only:
        plot(json.loads(args.out.read_text()), png)
        return

    import torch

    if not torch.cuda.is_available() and not args.smoke:
        sys.exit("bench_gpu_search: needs a CUDA GPU (run it on the GPU machine; --smoke checks the script on a CPU)")
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 exact is float32
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        from retrieval.dense import gpu_exact

        gpu_exact.GpuExact.__init__.__defaults__ = tuple(
            "reference" if v is True else v for v in gpu_exact.GpuExact.__init__.__defaults__)
    prov = provenance()
    if args.commit:  # named by the caller: the GPU machine's copy of .git can be stale
        prov["commit"], prov["commit_dirty"] = args.commit, None
    gpu = {"name": None}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info()
        gpu = {"name": torch.cuda.get_device_name(0), "memory_bytes": int(total), "free_bytes_at_start": int(free),
               "multiprocessors": p.multi_processor_count, "cuda": torch.version.cuda}
    try:
        import triton
        gpu["triton"] = triton.__version__
    except ImportError:
        gpu["triton"] = None
    results = {"benchmark": "bench_gpu_search", **prov, "gpu": gpu, "torch": torch.__version__,
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "timing": "best of 2-5 runs after a warm-up, wall clock with torch.cuda.synchronize(); "
                         "QPS = queries / seconds",
               "floor": {"flop_per_query": 2 * args.n * args.dim,
                         "note": "compute floor = flop_per_query * QPS / the matmul rate; cublas_matmul_only "
                                 "also writes the float16 score matrix (2 n bytes a query)"}}
    def save():
        write_results(args.out, results, announce=False)  # a checkpoint after each step

    # the fused path at every batch size (the engine's default takes it from FUSED_MIN_QUERIES
    # queries a batch, the torch path below): both columns of the batch table are measured
    from retrieval.dense import gpu_exact

    results["engine_default_fused_min_queries"] = gpu_exact.FUSED_MIN_QUERIES
    gpu_exact.FUSED_MIN_QUERIES = 1
    B = Bench(torch, results, save)
    log(f"device {device} {gpu}")
    for i, kind in enumerate(args.datasets.split(",")):
        run_1m(torch, args, kind, device, full=(i == 0), results=results, B=B)
    if args.big_n:
        run_big(torch, args, device, results, B)
    save()
    try:
        plot(results, png)
    except Exception:  # noqa: BLE001
        log(traceback.format_exc())


if __name__ == "__main__":
    main()
