"""CPU IVF study (issue 14): why IVF needs a large share of its lists for real queries, and dense
recipes side by side with exact flat search on the same CPU, in one run.

Why (the coarse quantizer alone, no codes): for every query, the rank of each true top-10
neighbour's list in the query's list order; the lists (and the share of all vectors) to visit
for 90% / 95% of the neighbours, for real queries next to passages used as queries (their own
hit left out). Also the lists' size imbalance and the cosine of each kind of query to
its neighbours.

Recipes: each built by rtv (`build_from_vectors`, recipe TOMLs below) and searched through
`DenseIndex.search` (rescoring from the memory-mapped store included), nprobe swept; recall@10
against exact float32 flat search on all queries, QPS with --threads FAISS/BLAS threads on the
first --time-queries queries (flat timed the same way, one batch), memory per vector: the index
(codes + list ids, in RAM) and the rescoring store (memory-mapped).

Data:
  --collect N --model DIR   N passages of this machine's source/doc files (eval/bench_dense.py's
                            corpus and docstring queries: the data of issue 14's 19% figure),
                            embedded on this machine's GPU with the model in DIR (float16)
  --manpages                the 100k man-page passages' vectors and NAME-line queries
                            (eval/data/retrieval-eval), queries embedded here on the CPU

    python eval/bench_ivf.py --collect 1000000 --model eval/data/retrieval-eval/minilm-fp16  # GPU machine
    python eval/bench_ivf.py --manpages

Prints a table; writes eval/results/bench_ivf[-TAG].json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
os.environ.setdefault("RTV_SILENT", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def import_dense():
    """retrieval.dense without running retrieval/__init__ (it loads the FM-index extension and the
    SQLite store, which a GPU machine given only this source tree lacks; the dense code needs neither)."""
    if "retrieval" not in sys.modules:
        pkg = types.ModuleType("retrieval")
        pkg.__path__ = [str(ROOT / "src" / "retrieval")]
        sys.modules["retrieval"] = pkg
    from retrieval.dense import index

    return index


# name -> [dense] table of the recipe as built here ({nlist} from the corpus size, as rtv plans it);
# None: the shipped recipe of that name (indexes/NAME.toml)
INT8 = {"rescore_multiplier": 20, "store": "int8", "store_scale": "vector", "min_vectors": 10000}
RECIPES = {
    "pq": None,  # today's default: IVF + 4-bit fast-scan PQ, int8 rescoring
    "pq-before": {"factory": "IVF{nlist},PQ{m}x8np", "dims_per_code": 6, "nprobe": 32, "nprobe_fraction": 0.1875, **INT8},
    "rabitq": {"factory": "IVF{nlist},RaBitQfs", **INT8},
    "sq8-nostore": {"factory": "IVF{nlist},SQ8", "store": "none", "min_vectors": 10000},
}
FRACTIONS = (1 / 128, 1 / 64, 1 / 32, 1 / 16, 1 / 8, 3 / 16)


def write_recipe(name: str, table: dict | None, tmp: Path) -> str:
    if table is None:
        return name
    path = tmp / f"{name}.toml"
    path.write_text("[dense]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()))
    return str(path)


# -- data -------------------------------------------------------------------------------------------
def collect_and_embed(n: int, model_dir: str, n_queries: int, seed: int, device: str = "cuda") -> tuple:
    """bench_dense's corpus (files of this machine, 128-token passages) and docstring queries,
    embedded on the GPU in float16."""
    import bench_dense
    import torch

    t0 = time.time()
    files = bench_dense.list_files(bench_dense.default_roots(), seed)
    texts, _, queries = bench_dense.collect(files, n, model_dir, 128, 16, os.cpu_count(), 100_000)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(queries), min(n_queries, len(queries)), replace=False)
    qtexts = [queries[i][0] for i in pick]
    collect_s = time.time() - t0
    import_dense()
    from retrieval.dense.embedder import load_embedder

    model = load_embedder(model_dir, device)  # rtv's own build path (float16 and pooled tokenising on a GPU)
    model.model.max_seq_length = 128
    t = time.time()
    x = model.encode(texts, progress=False)
    embed_s = time.time() - t
    q = model.encode(qtexts, progress=False)
    info = {"source": "bench_dense corpus: files under " + ", ".join(bench_dense.default_roots()),
            "passages": len(texts), "mean_passage_chars": round(float(np.mean([len(s) for s in texts[:20000]])), 1),
            "queries": "first lines of docstrings of the files of the first 100k passages",
            "collect_s": round(collect_s, 1), "embed_s": round(embed_s, 1),
            "embedded_on": torch.cuda.get_device_name(0) if device.startswith("cuda") else device, "model": model_dir + " (float16)"}
    del model
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(q, np.float32), info


def load_manpages() -> tuple:
    import bench_store

    x, q, model, info, _ = bench_store.load_manpages()
    return x, q, {"source": info["vectors"], "passages": len(x), "queries": info["queries"], "model": model}


# -- why: the coarse quantizer's list order ------------------------------------------------------------
def list_ids(ivf) -> np.ndarray:
    """List number of every vector id of an IVF index."""
    import faiss

    inv = ivf.invlists
    out = np.full(ivf.ntotal, -1, dtype=np.int64)
    for lst in range(ivf.nlist):
        size = inv.list_size(lst)
        if size:
            ids = faiss.rev_swig_ptr(inv.get_ids(lst), size).copy()
            out[ids] = lst
    return out


def coverage(ivf, assign: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict:
    """Lists and share of vectors to visit (in the quantizer's order) for 90% / 95% of the true
    neighbours of `queries` to lie in visited lists."""
    nlist = ivf.nlist
    sizes = np.bincount(assign, minlength=nlist)
    _, order = ivf.quantizer.search(queries, nlist)
    rank = np.empty_like(order)
    rows = np.arange(len(queries))[:, None]
    rank[rows, order] = np.arange(nlist)[None, :]
    nb_rank = rank[rows, assign[truth]]  # (nq, 10): visit position of each neighbour's list
    hist = np.bincount(nb_rank.ravel(), minlength=nlist).cumsum() / nb_rank.size
    scanned = np.cumsum(sizes[order], axis=1).mean(axis=0) / len(assign)
    out = {}
    for target in (0.9, 0.95):
        p = int(np.argmax(hist >= target)) + 1
        out[f"{target}"] = {"nprobe": p, "lists_share": round(p / nlist, 4), "vectors_share": round(float(scanned[p - 1]), 4)}
    return out


def why(ivf, x, q, truth_q, pq_ids, truth_p) -> dict:
    assign = list_ids(ivf)
    sizes = np.bincount(assign, minlength=ivf.nlist)
    return {"nlist": int(ivf.nlist), "imbalance": round(float(ivf.nlist * (sizes.astype(float) ** 2).sum() / len(x) ** 2), 3),
            "real_queries": coverage(ivf, assign, q, truth_q),
            "passage_queries": coverage(ivf, assign, x[pq_ids], truth_p)}


# -- recipes ---------------------------------------------------------------------------------------
def best_of(repeat: int, fn) -> float:
    """Fewest seconds of `repeat` calls of fn (a shared machine's other work only ever adds time)."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def recall(ids, truth) -> float:
    return float(np.mean([len(set(a[a >= 0].tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(ids, truth)]))


def run(args, save) -> dict:
    """The study; ``save(result)`` is called after each part (a run cut short keeps what it measured)."""
    import faiss
    from provenance import provenance

    dense = import_dense()
    build_threads = os.cpu_count()
    faiss.omp_set_num_threads(build_threads)
    if args.vectors and Path(args.vectors).exists():  # saved by an earlier call (--vectors on a GPU machine)
        saved = np.load(args.vectors, allow_pickle=False)
        x, q, data = saved["x"].astype(np.float32), saved["q"].astype(np.float32), json.loads(str(saved["data"]))
    elif args.collect:
        x, q, data = collect_and_embed(args.collect, args.model, args.queries, args.seed, args.device)
        if args.vectors:  # float16 keeps it to 0.8 GB at 1M; the study runs on the float32 of these values
            np.savez(args.vectors, x=x.astype(np.float16), q=q.astype(np.float16), data=json.dumps(data))
            x, q = x.astype(np.float16).astype(np.float32), q.astype(np.float16).astype(np.float32)
            if args.embed_only:
                print(f"saved {args.vectors}", file=sys.stderr)
                return {}
    else:
        x, q, data = load_manpages()
        q = q[:args.queries]
    n, d = x.shape
    print(f"data: {n:,} x {d}, {len(q)} queries ({data})", file=sys.stderr, flush=True)
    rng = np.random.default_rng(args.seed)
    pq_ids = np.sort(rng.choice(n, 1000, replace=False))
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    s_q, truth = flat.search(q, 10)
    s_p, t_p = flat.search(x[pq_ids], 11)
    own = t_p == pq_ids[:, None]
    t_p = np.array([row[~m][:10] for row, m in zip(t_p, own)])  # each passage's own hit left out
    s_p = np.array([row[~m][:10] for row, m in zip(s_p, own)])
    qt = q[:args.time_queries]
    faiss.omp_set_num_threads(args.threads)
    flat.search(qt[:50], 10)
    flat_qps = len(qt) / best_of(args.repeat, lambda: flat.search(qt, 10))
    faiss.omp_set_num_threads(build_threads)
    matmul_qps = matmul_flat_qps(x, qt, args.threads, args.repeat)
    best_flat = max(flat_qps, matmul_qps)  # recipes are compared with the faster exact search
    out = {**provenance(), "data": data, "n": n, "dim": d, "n_queries": len(q), "time_queries": len(qt),
           "search_threads": args.threads, "timing_repeats": args.repeat, "build_threads": build_threads, "faiss": faiss.__version__,
           "cosine": {"real_queries_top1": round(float(s_q[:, 0].mean()), 4), "real_queries_10th": round(float(s_q[:, 9].mean()), 4),
                      "passage_queries_top1": round(float(s_p[:, 0].mean()), 4), "passage_queries_10th": round(float(s_p[:, 9].mean()), 4)},
           "flat": {"qps": round(flat_qps, 1), "matmul_qps": round(matmul_qps, 1), "x_flat_against": round(best_flat, 1),
                    "bytes_per_vector": d * 4}, "recipes": {}}
    save(out)
    print(f"flat: FAISS {flat_qps:.1f} QPS, torch matmul + topk {matmul_qps:.1f} ({args.threads} threads); cosine {out['cosine']}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        for name in args.recipes:
            table = RECIPES[name]
            t0 = time.time()
            section = dense.build_from_vectors(x, tmp / str(len(out["recipes"])), write_recipe(name, table, tmp),
                                               device="cpu", quiet=True)
            build_s = time.time() - t0
            index = dense.DenseIndex.open(tmp / str(len(out["recipes"])), section, device="cpu")
            ivf = faiss.extract_index_ivf(index.index)
            store_b = sum(v["bytes"] for f, v in section["files"].items() if f != dense.INDEX_FILE) / n
            row = {"factory": section["factory"],
                   "rescore_multiplier": section["params"]["rescore_multiplier"], "store": section["store"],
                   "build_s": round(build_s, 1), "train_points": section["train_points"],
                   "index_bytes_per_vector": section["code_bytes_per_vector"],
                   "store_bytes_per_vector": round(store_b, 1),
                   "memory_bytes_per_vector": round(section["code_bytes_per_vector"] + store_b, 1),
                   "why": why(ivf, x, q, truth, pq_ids, t_p), "sweep": []}
            probes = sorted({max(1, round(ivf.nlist * f)) for f in FRACTIONS})
            for p in probes:
                index.set_params(nprobe=p)
                faiss.omp_set_num_threads(build_threads)
                _, ids = index.search(q, 10)
                r = recall(ids, truth)
                faiss.omp_set_num_threads(args.threads)
                index.search(qt[:20], 10)
                qps = len(qt) / best_of(args.repeat, lambda ix=index: ix.search(qt, 10))
                row["sweep"].append({"nprobe": p, "lists_share": round(p / ivf.nlist, 4), "recall@10": round(r, 4),
                                     "qps": round(qps, 1), "x_flat": round(qps / best_flat, 2)})
                print(f"  {name}: nprobe {p} recall {r:.4f} {qps:.1f} QPS ({qps / best_flat:.1f}x flat)", file=sys.stderr, flush=True)
                if r >= 0.975:
                    break
            faiss.omp_set_num_threads(build_threads)
            ok = [s for s in row["sweep"] if s["recall@10"] >= 0.95]
            row["at_recall_0.95"] = max(ok, key=lambda s: s["qps"]) if ok else None
            out["recipes"][name] = row
            save(out)
            print(f"{name}: built in {build_s:.0f}s; why {row['why']}", file=sys.stderr, flush=True)
            del index, ivf
            for f in (tmp / str(len(out["recipes"]) - 1)).iterdir():
                f.unlink()
    return out


def matmul_flat_qps(x: np.ndarray, qt: np.ndarray, threads: int, repeat: int) -> float:
    """Exact search as a float32 matrix product + top-k in torch on `threads` cores: the work of
    FAISS's flat index through torch's BLAS (MKL/oneDNN), a second flat peer where FAISS's bundled
    BLAS is slow on a machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    xt, qq = torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(np.ascontiguousarray(qt, np.float32))

    def search():
        for lo in range(0, len(qq), 50):
            torch.topk(qq[lo:lo + 50] @ xt.T, 10, dim=1)

    try:
        search()
        return len(qt) / best_of(repeat, search)
    finally:
        torch.set_num_threads(before)


def report(r: dict) -> None:
    print(f"\n{r['n']:,} x {r['dim']} vectors, {r['n_queries']} real queries; {r['machine']['cpu']}, "
          f"{r['search_threads']} search threads; flat {r['flat']['qps']} QPS (torch matmul {r['flat'].get('matmul_qps')})")
    print(f"cosine to neighbours: {r['cosine']}")
    print(f"{'recipe':<32}{'B/vec RAM+store':>16}{'imbal':>7}{'95%: lists(real)':>18}{'(passages)':>12}"
          f"{'nprobe@0.95':>12}{'recall':>8}{'QPS':>8}{'x flat':>8}")
    for name, row in r["recipes"].items():
        w, best = row["why"], row["at_recall_0.95"] or {}
        print(f"{name:<32}{row['index_bytes_per_vector']:>7}+{row['store_bytes_per_vector']:<8}{w['imbalance']:>7}"
              f"{w['real_queries']['0.95']['lists_share']:>18}{w['passage_queries']['0.95']['lists_share']:>12}"
              f"{best.get('nprobe', '-'):>12}{best.get('recall@10', '-'):>8}{best.get('qps', '-'):>8}{best.get('x_flat', '-'):>8}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--collect", type=int, help="passages of this machine's files, embedded on its GPU")
    src.add_argument("--manpages", action="store_true", help="the man-page set's 100k vectors")
    ap.add_argument("--model", help="sentence-transformers model directory (with --collect)")
    ap.add_argument("--device", default="cuda", help="where --collect embeds (cuda; cpu to try it out)")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--time-queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2, help="FAISS/BLAS threads for the timed searches")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes over the timing queries (best kept)")
    ap.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="directory for the temporary indexes")
    ap.add_argument("--out", default=str(ROOT / "eval" / "results"))
    ap.add_argument("--tag", default="")
    ap.add_argument("--vectors", default=None, help="npz of the collected vectors: written after --collect, "
                    "read instead of collecting when it exists (split a GPU run over two calls)")
    ap.add_argument("--embed-only", action="store_true", help="with --collect --vectors: stop after saving them")
    ap.add_argument("--commit", default=None, help="commit measured, where the tree has no .git (a copy)")
    args = ap.parse_args()
    if args.collect and not args.model:
        ap.error("--collect needs --model DIR")
    path = Path(args.out) / f"bench_ivf{args.tag}.json"

    def save(result: dict) -> None:
        if args.commit:  # the source tree was copied (a device's .git, if any, is not this tree's)
            result["commit"], result["commit_dirty"] = args.commit, None
            result["commit_note"] = "commit given by --commit: the tree measured was a copy of it"
        result["command"] = "python " + " ".join(sys.argv)
        from provenance import write_results

        write_results(path, result, announce=False)  # also a checkpoint during the run

    r = run(args, save)
    if not r:  # --embed-only
        return
    save(r)
    report(r)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
