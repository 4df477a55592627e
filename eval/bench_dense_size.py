"""The dense part's size against retrieval quality (issue 8): for each dense layout (first stage +
rescoring store), bytes per vector and per corpus byte, dense recall@10 against exact float32
search, and document-level nDCG@10 of dense alone and of rtv's default hybrid, on SciFact train
(the 809 training claims; ranx, folded to documents as eval/retrieval_eval.py does, depth 300),
side by side in one run. The flat (float32) row is what rtv's defaults build at SciFact's size
(9,629 passages: below the pq recipe's 10,000) and what eval/results/retrieval_eval.json measured.

Each layout is built by rtv (`build_from_vectors`, from the SciFact index's own vectors) and swapped
in as that index's dense part; lexical and exact stages are the index's own. Hybrid p50 latency is
one query at a time on this CPU after a warm-up, the query's embedding computed once beforehand
(the same for every layout, so the difference is the dense search itself).

    python eval/bench_dense_size.py

Prints a table; writes eval/results/bench_dense_size.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RTV_SILENT", "1")

from bench_ivf import write_recipe
from provenance import provenance, write_results

INT8 = {"store": "int8", "store_scale": "vector"}
PQ4FS = {"factory": "IVF{nlist},PQ{m}x4fs", "dims_per_code": 4, "nprobe": 32,
         "nprobe_fraction": 0.125, "min_vectors": 1000}
# name -> the recipe's [dense] table (min_vectors lowered so that SciFact's 9,629 passages get the
# compressed first stage rather than the flat fallback)
LAYOUTS = {
    "flat float32 (default at this size)": {"factory": "Flat", "store": "none"},
    "pq before: IVF-PQ64x8 + int8 x20": {"factory": "IVF{nlist},PQ{m}x8np", "dims_per_code": 6, "nprobe": 32,
                                         "nprobe_fraction": 0.1875, "rescore_multiplier": 20, **INT8,
                                         "min_vectors": 1000},
    "IVF-PQ96x4fs + float16 x20": {**PQ4FS, "rescore_multiplier": 20, "store": "float16"},
    "IVF-PQ96x4fs + int8 x20": {**PQ4FS, "rescore_multiplier": 20, **INT8},
    "IVF-PQ96x4fs + pca128-int8 x20": {**PQ4FS, "rescore_multiplier": 20, "store": "int8", "store_scale": "dimension",
                                       "store_pca_dim": 128},
    "IVF-PQ96x4fs + pca192-int8 x20": {**PQ4FS, "rescore_multiplier": 20, "store": "int8", "store_scale": "dimension",
                                       "store_pca_dim": 192},
    "IVF-PQ96x4fs + int4 x20": {**PQ4FS, "rescore_multiplier": 20, "store": "int4"},
    "IVF-PQ96x4fs + pca256-int4 x20": {**PQ4FS, "rescore_multiplier": 20, "store": "int4", "store_pca_dim": 256},
    "IVF-PQ96x4fs + pq96x8 x20": {**PQ4FS, "rescore_multiplier": 20, "store": "pq", "store_pq_dims_per_code": 4},
    "IVF-PQ96x4fs + pq128x8 x20": {**PQ4FS, "rescore_multiplier": 20, "store": "pq", "store_pq_dims_per_code": 3},
    "IVF-PQ96x4fs + pq192x8 x20": {**PQ4FS, "rescore_multiplier": 20, "store": "pq", "store_pq_dims_per_code": 2},
    "IVF-PQ48x4fs + pq128x8 x20": {**PQ4FS, "dims_per_code": 8, "rescore_multiplier": 20, "store": "pq",
                                   "store_pq_dims_per_code": 3},
    "IVF-PQ96x4fs, no store": {**PQ4FS, "store": "none"},
    "IVF-PQ192x4fs, no store": {**PQ4FS, "dims_per_code": 2, "store": "none"},
    "IVF-PQ48x4fs, no store": {**PQ4FS, "dims_per_code": 8, "store": "none"},
    "IVF-SQ8, no store": {"factory": "IVF{nlist},SQ8", "nprobe": 32, "nprobe_fraction": 0.125,
                          "store": "none", "min_vectors": 1000},
    "binary + int8 x20": {"kind": "binary", "factory": "BFlat", "rescore_multiplier": 20, **INT8},
}


INT8_ROW = "IVF-PQ96x4fs + int8 x20"  # the pq recipe's store before this comparison: the 'd int8' column


class CachedEmbedder:
    """The index's embedder with the queries' vectors computed once up front (every layout sees the
    same query vectors, and the loop times retrieval, not the model)."""

    def __init__(self, embedder, texts: list[str], vectors: np.ndarray):
        self.model_id, self.dim, self.device = embedder.model_id, embedder.dim, "cpu"
        self._rows = {t: v for t, v in zip(texts, vectors)}

    def encode(self, texts, **_):
        return np.stack([self._rows[t] for t in texts]).astype(np.float32)


def main() -> None:
    import bench_store
    import faiss
    import scifact_data
    from ranx import Qrels, Run, evaluate
    from retrieval_eval import Passages, fold

    from retrieval.dense import DenseIndex, build_from_vectors
    from retrieval.hybrid import search

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", nargs="*", default=list(LAYOUTS), choices=list(LAYOUTS))
    ap.add_argument("--depth", type=int, default=100, help="passages per query, folded to documents (retrieval_eval: 300)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--interleave", type=int, default=0, metavar="N",
                    help="then time N queries with every layout in turn (query by query, the layouts' order "
                         "rotating), so that a shared machine's load weighs on all of them alike")
    ap.add_argument("--no-quality", action="store_true", help="skip the nDCG passes (for a timing run)")
    ap.add_argument("--out", default=str(ROOT / "eval" / "results" / "bench_dense_size.json"))
    args = ap.parse_args()

    index = scifact_data.open_index()
    x = np.ascontiguousarray(np.load(scifact_data.DATA / "vectors.npy"), dtype=np.float32)
    queries, qrels = scifact_data.queries(), scifact_data.qrels()
    P = Passages(index)
    info = index.info()
    corpus_bytes = info["corpus_bytes"]
    other_parts = {k: v["bytes"] for k, v in info["parts"].items() if k != "dense"}
    qv = index.dense.embedder.encode([q["text"] for q in queries], progress=False)
    emb = CachedEmbedder(index.dense.embedder, [q["text"] for q in queries], qv)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    _, truth = flat.search(qv, 10)
    n = len(x)
    out = {**provenance(), "dataset": "SciFact train (809 claims, 9,629 passages)", "n": n,
           "corpus_bytes": corpus_bytes, "other_parts_bytes": other_parts,
           "other_parts_per_corpus_byte": round(sum(other_parts.values()) / corpus_bytes, 4),
           "load_at_start": os.getloadavg()[0], "depth": args.depth, "layouts": {}}
    judged = Qrels({q["qid"]: qrels[q["qid"]] for q in queries})
    opened = {}  # layout -> its DenseIndex, for the interleaved timing
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.layouts:
            d = tmp / str(len(out["layouts"]))
            t0 = time.time()
            section = build_from_vectors(x, d, write_recipe(f"layout{len(out['layouts'])}", LAYOUTS[name], tmp),
                                         model_id=index.manifest["dense"]["model"], device="cpu", quiet=True)
            build_s = time.time() - t0
            index._dense = opened[name] = DenseIndex.open(d, section, device="cpu", embedder=emb)
            dense_bytes = sum(f["bytes"] for f in section["files"].values())
            store_bytes = sum(section["files"][f]["bytes"] for f in (section["store"] or {}).get("files", []))
            _, top10 = index.dense.search(qv, 10)
            row = {"factory": section["factory"], "params": section["params"], "store": section["store"],
                   "build_s": round(build_s, 1), "dense_bytes": dense_bytes,
                   "bytes_per_vector": round(dense_bytes / n, 1),
                   "store_bytes_per_vector": round(store_bytes / n, 1),
                   "dense_per_corpus_byte": round(dense_bytes / corpus_bytes, 4),
                   "full_hybrid_per_corpus_byte": round((dense_bytes + sum(other_parts.values())) / corpus_bytes, 4),
                   "dense_recall@10_vs_float32": round(bench_store.recall_at(top10, truth), 4)}
            if args.no_quality:
                out["layouts"][name] = row
                continue
            scores, ids = index.dense.search(qv, args.depth)
            run = {q["qid"]: fold([(int(i), float(v)) for i, v in zip(r, sc) if i >= 0], P.doc_of) or {"-": 0.0}
                   for q, r, sc in zip(queries, ids, scores)}
            row["dense_ndcg@10"] = round(float(evaluate(judged, Run(run), "ndcg@10")), 4)
            for q in queries[:args.warmup]:
                search(index, [q["text"]], mode="hybrid", k=args.depth, rerank=False)
            run, lat = {}, []
            for q in queries:
                t = time.perf_counter()
                hits = search(index, [q["text"]], mode="hybrid", k=args.depth, rerank=False)[0]
                lat.append(time.perf_counter() - t)
                run[q["qid"]] = fold([(h.passage_id, h.score) for h in hits], P.doc_of) or {"-": 0.0}
            row["hybrid_ndcg@10"] = round(float(evaluate(judged, Run(run), "ndcg@10")), 4)
            row["hybrid_p50_ms"] = round(float(np.percentile(np.array(lat) * 1000, 50)), 2)
            row["load_1min"] = round(os.getloadavg()[0], 2)  # a shared machine: timings move with it
            out["layouts"][name] = row
            print(f"{name}: {row}", file=sys.stderr, flush=True)
            write_results(Path(args.out), out, announce=False)  # a checkpoint after each layout
        if args.interleave:
            interleaved(index, opened, queries[:args.interleave], qv, args, out)
    base = out["layouts"].get(args.layouts[0], {})
    int8 = out["layouts"].get(INT8_ROW, {})
    print(f"\nSciFact train, {n} passages; {out['machine']['cpu']}, {out['machine']['cores']} cores; "
          f"exact + passages + lexical = {sum(other_parts.values()) / corpus_bytes:.4f}x the corpus")
    print(f"{'layout':<34}{'B/vec':>7}{'store':>7}{'dense x':>8}{'hybrid x':>9}{'recall@10':>10}{'dense nDCG':>11}"
          f"{'hyb nDCG':>9}{'d first':>8}{'d int8':>8}{'p50 ms':>8}")
    for name, r in out["layouts"].items():
        if "hybrid_ndcg@10" not in r:
            r = {**r, "dense_ndcg@10": "-", "hybrid_ndcg@10": 0.0, "hybrid_p50_ms": "-"}
        print(f"{name:<34}{r['bytes_per_vector']:>7}{r['store_bytes_per_vector']:>7}{r['dense_per_corpus_byte']:>8}"
              f"{r['full_hybrid_per_corpus_byte']:>9}{r['dense_recall@10_vs_float32']:>10}{r['dense_ndcg@10']:>11}"
              f"{r['hybrid_ndcg@10']:>9}{r['hybrid_ndcg@10'] - base.get('hybrid_ndcg@10', 0):>+8.4f}"
              f"{r['hybrid_ndcg@10'] - int8.get('hybrid_ndcg@10', 0):>+8.4f}{r['hybrid_p50_ms']:>8}")
    if "interleaved" in out:
        t = out["interleaved"]
        print(f"\ninterleaved timing, {t['queries']} queries, load {t['load_at_start']} -> {t['load_at_end']}:")
        for name, r in t["layouts"].items():
            print(f"  {name:<34} dense p50 {r['dense_p50_ms']:>8} ms   hybrid p50 {r['hybrid_p50_ms']:>8} ms")
    write_results(Path(args.out), out)


def interleaved(index, opened: dict, queries: list, qv: np.ndarray, args, out: dict) -> None:
    """p50 of dense search alone (the query's vector, k = depth) and of the whole hybrid search per
    layout, the layouts taking turns on each query (their order rotating from query to query)."""
    from retrieval.hybrid import search

    names = list(opened)
    lat = {name: {"dense": [], "hybrid": []} for name in names}
    load0 = os.getloadavg()[0]
    for name in names:  # warm each: pages of its files in the cache, FAISS and the model ready
        index._dense = opened[name]
        for q in queries[:args.warmup]:
            search(index, [q["text"]], mode="hybrid", k=args.depth, rerank=False)
    for i, q in enumerate(queries):
        for name in names[i % len(names):] + names[:i % len(names)]:
            index._dense = opened[name]
            t = time.perf_counter()
            index.dense.search(qv[i:i + 1], args.depth)
            lat[name]["dense"].append(time.perf_counter() - t)
            t = time.perf_counter()
            search(index, [q["text"]], mode="hybrid", k=args.depth, rerank=False)
            lat[name]["hybrid"].append(time.perf_counter() - t)
    out["interleaved"] = {
        "queries": len(queries), "load_at_start": round(load0, 2), "load_at_end": round(os.getloadavg()[0], 2),
        "layouts": {name: {f"{part}_p50_ms": round(float(np.percentile(np.array(v) * 1000, 50)), 2)
                           for part, v in lat[name].items()} for name in names}}


if __name__ == "__main__":
    main()
