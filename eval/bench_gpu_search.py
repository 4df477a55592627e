"""Exact float16 search on the GPU (retrieval.dense.gpu_exact) side by side with FAISS GpuIndexFlatIP.

On the same vectors in one run: n x d unit vectors (random normal, normalised; and a clustered set),
nq queries, k = 10. Measures QPS of

- the float16 matmul alone (Q @ X^T, tiled as the engine tiles it),
- matmul + torch.topk over each n-wide row,
- the engine's two-level selection + float32 rescoring (several block widths and tile sizes; and
  without rescoring),
- FAISS GpuIndexFlatIP with float32 and float16 storage,

recall@10 of each against float32 exact search (TF32 off), batches of 1, 64, 1024 and nq queries,
one batch of 100k queries (checked against the smaller batches' answers), and the engine at 10M.
Timings: best of a few runs after a warm-up, torch.cuda.synchronize() around each; queries and
results stay on the GPU (FAISS through faiss.contrib.torch_utils) unless the entry says "numpy".

    python eval/bench_gpu_search.py                       # on the GPU machine (faiss-gpu: shared/gpu/)
    python eval/bench_gpu_search.py --n 20000 --nq 512 --big-n 0 --out /tmp/x.json   # smoke test, CPU
    python eval/bench_gpu_search.py --plot-only           # redraw the plot from the JSON

Writes eval/results/bench_gpu_search.json and bench_gpu_search.png.
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
from provenance import provenance  # noqa: E402

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


def unit_rows(torch, x):
    return x / x.norm(dim=1, keepdim=True)


def make_data(torch, kind: str, n: int, d: int, nq: int, device, seed: int):
    g = torch.Generator(device=device).manual_seed(seed)
    if kind == "random":
        x = unit_rows(torch, torch.randn(n, d, device=device, generator=g))
        q = unit_rows(torch, torch.randn(nq, d, device=device, generator=g))
        return x, q
    # clustered: 1000 centres of uneven weight, each vector a centre plus equal-size noise
    c = torch.randn(1000, d, device=device, generator=g)
    w = torch.distributions.Dirichlet(torch.ones(1000, device=device)).sample()
    lab = torch.multinomial(w, n + nq, replacement=True, generator=g)
    x = unit_rows(torch, c[lab] + torch.randn(n + nq, d, device=device, generator=g))
    return x[:n].contiguous(), x[n:].contiguous()


def exact_f32(torch, x, q, k: int, per: int = 1024):
    """float32 exact top k (TF32 off), ids (nq, k)."""
    out = []
    for lo in range(0, len(q), per):
        out.append(torch.topk(q[lo:lo + per] @ x.T, k, dim=1).indices)
    return torch.cat(out)


def recall(torch, ids, truth) -> float:
    ids = torch.as_tensor(ids).to(truth.device)
    k = truth.shape[1]
    return round(float((ids[:, :k, None] == truth[:, None, :]).any(-1).float().sum(1).mean()) / k, 6)


def faiss_indexes(x_np, use_f16_list, device_ok: bool):
    import faiss

    out = {}
    gpu = device_ok and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    res = faiss.StandardGpuResources() if gpu else None
    for f16 in use_f16_list:
        if gpu:
            cfg = faiss.GpuIndexFlatConfig()
            cfg.useFloat16 = f16
            ix = faiss.GpuIndexFlatIP(res, x_np.shape[1], cfg)
        else:
            if f16:
                continue
            ix = faiss.IndexFlatIP(x_np.shape[1])
        ix.add(x_np)
        out["faiss_gpu_flat_f16" if f16 else ("faiss_gpu_flat_f32" if gpu else "faiss_cpu_flat_f32")] = ix
    return out, gpu, res


def run_dataset(torch, args, kind: str, device, full: bool, results: dict, save) -> None:
    from retrieval.dense.gpu_exact import DEFAULT_BLOCK, GpuExact

    n, d, nq, k = args.n, args.dim, args.nq, args.k
    t0 = time.perf_counter()
    x, q = make_data(torch, kind, n, d, nq, device, seed=1 if kind == "random" else 2)
    truth = exact_f32(torch, x, q, k)
    sync(torch)
    R = results.setdefault("datasets", {}).setdefault(kind, {"n": n, "dim": d, "nq": nq, "k": k})
    R["setup_seconds"] = round(time.perf_counter() - t0, 2)
    log(f"[{kind}] data + float32 truth in {R['setup_seconds']} s")
    eng = GpuExact(x, str(device), block=DEFAULT_BLOCK)
    x16, xt = eng.x, eng.x.t()
    per = eng.tile_rows(nq)
    R["engine"] = {"block": eng.block, "tile_bytes": eng.tile_bytes, "tile_queries": per,
                   "vector_bytes": eng.nbytes, "scores": "float32 rescoring of float16 vectors"}
    M = R.setdefault("methods", {})

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

    def entry(name, fn, ids_fn=None, reps=3, **extra):
        try:
            t = best_time(torch, fn, reps=reps)
            e = {"qps": round(nq / t, 1), "seconds": round(t, 5), **extra}
            if ids_fn is not None:
                e["recall_at_10"] = recall(torch, ids_fn(), truth)
            M[name] = e
            log(f"[{kind}] {name}: {e}")
        except Exception as exc:  # noqa: BLE001 - record and go on
            M[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"[{kind}] {name} FAILED: {traceback.format_exc()}")
        save()

    entry("matmul_only", matmul_only, what="float16 Q @ X^T per tile, nothing selected")
    entry("matmul_topk", matmul_topk, matmul_topk, what="matmul + torch.topk over each row")
    blocks = [int(b) for b in args.blocks.split(",")] if full else [eng.block]
    for b in blocks:
        eb = GpuExact(x16, str(device), block=b)
        entry(f"two_level_block{b}", lambda eb=eb: eb.search_tensor(q, k),
              lambda eb=eb: eb.search_tensor(q, k)[1], block=b, tile_queries=per)
        del eb
    entry("two_level_no_rescore", lambda: eng.search_tensor(q, k, rescore=False),
          lambda: eng.search_tensor(q, k, rescore=False)[1], block=eng.block,
          what="float16 scores returned, no float32 rescoring")
    if full:  # where the time goes: each stage added in turn (kc = the rescored candidates)
        from retrieval.dense import gpu_exact as ge

        kc = ge.candidates_for(k, n)
        xpt = eng.xp.t()

        def stages(upto):
            with torch.inference_mode():
                for lo in range(0, nq, per):
                    s = q[lo:lo + per].half() @ xpt
                    if eng.npad != n:
                        s[:, n:] = float("-inf")
                    if upto == 0:
                        continue
                    s3 = s.view(len(s), eng.npad // eng.block, eng.block)
                    bm = s3.amax(dim=2)
                    if upto == 1:
                        continue
                    _, blk = ge.topk_first(bm, kc)
                    if upto == 2:
                        continue
                    blk, _ = torch.sort(blk, dim=1)
                    cand = s3[torch.arange(len(s), device=s.device)[:, None], blk].flatten(1)
                    if upto == 3:
                        continue
                    ge.topk_first(cand, kc)
        R["breakdown_seconds"] = {}
        for i, name in enumerate(("matmul_padded", "+block_maxima", "+topk_of_blocks", "+gather_candidates",
                                  "+topk_of_candidates")):
            R["breakdown_seconds"][name] = round(best_time(torch, lambda i=i: stages(i)), 5)
        R["breakdown_seconds"]["+float32_rescoring (whole search)"] = M.get(f"two_level_block{eng.block}", {}).get("seconds")
        R["breakdown_note"] = f"block {eng.block}, {kc} candidates rescored, {per} queries a tile, cumulative"
        log(f"[{kind}] breakdown: {R['breakdown_seconds']}")
        save()
    e32 = GpuExact(x, str(device), block=eng.block, rescore_from="float32")
    entry("two_level_rescore_f32", lambda: e32.search_tensor(q, k), lambda: e32.search_tensor(q, k)[1],
          block=eng.block, what="candidates re-scored from a float32 copy on the GPU (3x the memory)")
    del e32
    if full:
        for tb in (int(t) for t in args.tiles.split(",")):
            et = GpuExact(x16, str(device), block=eng.block, tile_bytes=tb << 20)
            entry(f"two_level_tile{tb}MiB", lambda et=et: et.search_tensor(q, k), None,
                  tile_queries=et.tile_rows(nq), block=eng.block)
        q_np = q.cpu().numpy()
        entry("two_level_numpy_io", lambda: eng.search(q_np, k), lambda: torch.from_numpy(eng.search(q_np, k)[1]),
              what="engine.search on numpy queries: host->GPU copy and results back included")

    # FAISS on the same vectors
    x_np = x.cpu().numpy()
    try:
        fx, on_gpu, _res = faiss_indexes(x_np, [False, True], device.type == "cuda")
    except Exception as exc:  # noqa: BLE001
        fx, on_gpu = {}, False
        R["faiss_error"] = f"{type(exc).__name__}: {exc}"
        log(f"[{kind}] FAISS FAILED: {traceback.format_exc()}")
    torch_io = False
    if on_gpu:
        try:
            import faiss.contrib.torch_utils  # noqa: F401 - lets GPU indexes take torch tensors

            next(iter(fx.values())).search(q[:2], k)
            torch_io = True
        except Exception as exc:  # noqa: BLE001
            R["faiss_torch_io_error"] = f"{type(exc).__name__}: {exc}"
    q_np = q.cpu().numpy()
    for name, ix in fx.items():
        qq = q if torch_io else q_np
        entry(name, lambda ix=ix, qq=qq: ix.search(qq, k), lambda ix=ix, qq=qq: torch.as_tensor(ix.search(qq, k)[1]),
              io="torch tensors on the GPU" if torch_io else "numpy")
    import faiss

    R["faiss"] = {"version": faiss.__version__, "gpus": int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0,
                  "io": "torch" if torch_io else "numpy"}
    save()

    if full:
        # batch sizes: the same queries, cut into batches of B (for B = 1: the first 256 queries)
        B = R.setdefault("batches", {})
        for bs in (int(b) for b in args.batches.split(",")):
            m = min(nq, max(bs, 256 if bs == 1 else 4096 if bs <= 64 else nq))
            qs = q[:m]
            row = {"queries": m}
            fns = {"two_level": lambda qb: eng.search_tensor(qb, k),
                   "matmul_topk": lambda qb: matmul_topk(qb, eng.tile_rows(len(qb)))}
            for name, ix in fx.items():
                fns[name] = (lambda qb, ix=ix: ix.search(qb if torch_io else qb.cpu().numpy(), k))
            for name, fn in fns.items():
                try:
                    def go(fn=fn):
                        for lo in range(0, m, bs):
                            fn(qs[lo:lo + bs])
                    t = best_time(torch, go, reps=2)
                    row[name] = {"qps": round(m / t, 1), "ms_per_batch": round(1000 * t / (-(-m // bs)), 4)}
                except Exception as exc:  # noqa: BLE001
                    row[name] = {"error": f"{type(exc).__name__}: {exc}"}
            B[str(bs)] = row
            log(f"[{kind}] batch {bs}: {row}")
            save()
        # one batch of 100k queries: tiled inside; the first nq rows against the nq-batch answers
        try:
            extra = make_data(torch, "random", 16, d, args.huge_batch, device, seed=3)[1]
            qh = torch.cat([q, extra[:max(0, args.huge_batch - nq)]])
            t = best_time(torch, lambda: eng.search_tensor(qh, k), reps=1)
            _, ih = eng.search_tensor(qh, k)
            _, i0 = eng.search_tensor(q, k)
            _, i1 = eng.search_tensor(q[:1000], k)
            R["huge_batch"] = {"queries": len(qh), "qps": round(len(qh) / t, 1), "seconds": round(t, 4),
                               "same_ids_as_nq_batch": bool(torch.equal(ih[:nq], i0)),
                               "same_ids_as_1000_batch": bool(torch.equal(i0[:1000], i1)),
                               "peak_gpu_bytes": int(torch.cuda.max_memory_allocated()) if device.type == "cuda" else None}
            log(f"[{kind}] huge batch: {R['huge_batch']}")
        except Exception as exc:  # noqa: BLE001
            R["huge_batch"] = {"error": f"{type(exc).__name__}: {exc}"}
            log(traceback.format_exc())
        save()
    del fx, eng, x, q, x16, xt, truth
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_big(torch, args, device, results: dict, save) -> None:
    """The engine at args.big_n random vectors (float32 truth on 1024 queries)."""
    from retrieval.dense.gpu_exact import GpuExact

    n, d, k, nq = args.big_n, args.dim, args.k, 4096
    try:
        g = torch.Generator(device=device).manual_seed(5)
        x16 = torch.empty((n, d), dtype=torch.float16, device=device)
        x32 = torch.empty((n, d), dtype=torch.float32, device=device)
        for lo in range(0, n, 1 << 20):
            c = unit_rows(torch, torch.randn(min(1 << 20, n - lo), d, device=device, generator=g))
            x32[lo:lo + len(c)] = c
            x16[lo:lo + len(c)] = c.half()
        q = unit_rows(torch, torch.randn(nq, d, device=device, generator=g))
        truth = exact_f32(torch, x32, q[:1024], k, per=256)
        del x32
        torch.cuda.empty_cache()
        eng = GpuExact(x16, str(device))
        t = best_time(torch, lambda: eng.search_tensor(q, k), reps=2)
        rec = recall(torch, eng.search_tensor(q[:1024], k)[1], truth)
        t_mm = best_time(torch, lambda: [q[lo:lo + eng.tile_rows(nq)].half() @ x16.t()
                                         for lo in range(0, nq, eng.tile_rows(nq))], reps=2)
        results["big"] = {"n": n, "dim": d, "nq": nq, "k": k, "qps": round(nq / t, 1),
                          "matmul_only_qps": round(nq / t_mm, 1), "recall_at_10": rec,
                          "recall_queries": 1024, "vector_bytes": eng.nbytes, "block": eng.block,
                          "tile_queries": eng.tile_rows(nq)}
    except Exception as exc:  # noqa: BLE001
        results["big"] = {"n": n, "error": f"{type(exc).__name__}: {exc}"}
        log(traceback.format_exc())
    log(f"[big] {results['big']}")
    save()


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    R = results["datasets"]["random"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    names = [m for m, e in R["methods"].items() if "qps" in e]
    vals = [R["methods"][m]["qps"] for m in names]
    ax = axes[0]
    bars = ax.barh(names, vals, color=["#888" if m.startswith("matmul") else "#c44" if m.startswith("faiss") else "#36c"
                                       for m in names])
    for b_, m in zip(bars, names):
        r = R["methods"][m].get("recall_at_10")
        ax.text(b_.get_width(), b_.get_y() + b_.get_height() / 2,
                f" {b_.get_width() / 1000:,.0f}k" + (f"  r={r:.6f}" if r is not None else ""), va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("queries / s")
    ax.set_title(f"{R['n']:,} x {R['dim']} unit vectors, {R['nq']:,} queries, k={R['k']}\n"
                 f"{results['gpu'].get('name', 'cpu')}", fontsize=9)
    ax.set_xlim(0, max(vals) * 1.35)
    ax = axes[1]
    bs = sorted(R.get("batches", {}), key=int)
    for meth in ("two_level", "matmul_topk", "faiss_gpu_flat_f32", "faiss_gpu_flat_f16"):
        ys = [R["batches"][b].get(meth, {}).get("qps") for b in bs]
        if any(y is not None for y in ys):
            ax.plot([int(b) for b in bs], ys, "o-", label=meth)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("queries per batch")
    ax.set_ylabel("queries / s")
    ax.set_title("batch size", fontsize=9)
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
    ap.add_argument("--blocks", default="256,512,1024,2048,4096")
    ap.add_argument("--tiles", default="1024,2048,8192", help="score-tile sizes in MiB to try")
    ap.add_argument("--batches", default="1,64,1024,16384")
    ap.add_argument("--huge-batch", type=int, default=100_000)
    ap.add_argument("--datasets", default="random,clustered")
    ap.add_argument("--big-n", type=int, default=10_000_000, help="the engine alone at this n (0: skip)")
    ap.add_argument("--commit", default=None, help="commit measured, where git is not there")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    png = args.out.with_suffix(".png")
    if args.plot_only:
        plot(json.loads(args.out.read_text()), png)
        return

    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 truth is float32
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    prov = provenance()
    if prov.get("commit") is None and args.commit:
        prov["commit"] = args.commit
        prov["commit_dirty"] = None
    gpu = {"name": None}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(0)
        free, total = torch.cuda.mem_get_info()
        gpu = {"name": torch.cuda.get_device_name(0), "memory_bytes": int(total), "free_bytes_at_start": int(free),
               "multiprocessors": p.multi_processor_count, "cuda": torch.version.cuda}
    results = {"benchmark": "bench_gpu_search", **prov, "gpu": gpu, "torch": torch.__version__,
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "timing": "best of 2-3 runs after a warm-up, wall clock with torch.cuda.synchronize(); "
                         "QPS = queries / seconds"}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        tmp = args.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(args.out)

    log(f"device {device} {gpu}")
    for i, kind in enumerate(args.datasets.split(",")):
        run_dataset(torch, args, kind, device, full=(i == 0), results=results, save=save)
    if args.big_n and device.type == "cuda":
        run_big(torch, args, device, results, save)
    save()
    try:
        plot(results, png)
    except Exception:  # noqa: BLE001
        log(traceback.format_exc())


if __name__ == "__main__":
    main()
