"""Filtered search (issue 10): dense recall@10 and latency under a document filter at 1%, 10% and
50% selectivity against unfiltered search, for a flat and an IVF-PQ recipe; filtered exact counts
and lexical (BM25) latency.

Data: the man-page set (eval/data/retrieval-eval/index-100000: 11,644 pages, 100,006 passages, real
MiniLM vectors in its flat dense part) and its 400 test queries (embedded here with the index's
model). The IVF-PQ index is built here from the same vectors (recipe "pq"). A filter at
selectivity s allows a random s of the documents (seeded); truth = the exact inner-product top 10
over the allowed passages' float32 vectors (ties counted: a hit scoring the 10th best is right). The same filter goes through `Index.doc_filter` for the
exact and lexical timings (`doc_id IN` a random set is not expressible in the where language
without thousands of values, so those use `doc_id < N*s`, a range of pages, through the real
where path, SQL included).

    python eval/bench_filter.py            # prints tables, writes eval/results/bench_filter.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))
from provenance import provenance, write_results  # noqa: E402

DATA = ROOT / "eval" / "data" / "retrieval-eval"
SELECTIVITIES = (0.01, 0.1, 0.5)
K = 10


def recall(ids: np.ndarray, kth: np.ndarray, x: np.ndarray, q: np.ndarray) -> float:
    """Recall@k that counts ties: a returned passage is right when its exact score reaches the k-th
    best allowed score (the man pages hold duplicate passages, whose order among equals is arbitrary)."""
    hits = []
    for row, t, qq in zip(ids, kth, q):
        row = row[row >= 0]
        hits.append(float(((x[row] @ qq) >= t - 1e-5).sum()) / K)
    return float(np.mean(hits))


def kth_best(x: np.ndarray, q: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """The k-th best exact score of each query over passages `ids`."""
    s = q @ x[ids].T
    return -np.partition(-s, k - 1, axis=1)[:, k - 1]


def per_query_ms(fn, queries: np.ndarray) -> tuple[float, float]:
    """(p50, p90) milliseconds of fn(one query) over the queries."""
    times = []
    for i in range(len(queries)):
        t = time.perf_counter()
        fn(queries[i:i + 1])
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return round(statistics.median(times), 3), round(times[int(0.9 * (len(times) - 1))], 3)


def dense_part(index, q: np.ndarray, x: np.ndarray, work: Path, n_timed: int) -> dict:
    from retrieval.dense.index import BRUTE_FORCE_MAX, DenseIndex, build_from_vectors

    passage_docs = index.passage_docs
    rng = np.random.default_rng(10)
    masks = {}
    for s in SELECTIVITIES:
        doc_ok = rng.random(index.n_documents) < s
        masks[s] = doc_ok[passage_docs]
    t0 = time.time()
    section = build_from_vectors(x, work / "pq", "pq", device="cpu", quiet=True)
    pq_build = time.time() - t0
    engines = {"flat": index.dense, "pq": DenseIndex.open(work / "pq", section, device="cpu")}
    out = {"brute_force_max": BRUTE_FORCE_MAX, "pq_factory": section["factory"], "pq_params": section["params"],
           "pq_build_s": round(pq_build, 1), "recipes": {}}
    everything = np.arange(len(x))
    truth_all = kth_best(x, q, everything, K)
    for name, dense in engines.items():
        rows = []
        _, ids = dense.search(q, K)
        p50, p90 = per_query_ms(lambda qq: dense.search(qq, K), q[:n_timed])
        rows.append({"selectivity": 1.0, "allowed_passages": len(x), "recall@10": round(recall(ids, truth_all, x, q), 4),
                     "p50_ms": p50, "p90_ms": p90, "path": "unfiltered"})
        for s, mask in masks.items():
            allowed_ids = np.flatnonzero(mask)
            truth = kth_best(x, q, allowed_ids, K)
            _, ids = dense.search(q, K, allowed=mask)
            assert mask[ids[ids >= 0]].all()
            full = float(np.mean((ids >= 0).sum(axis=1) == min(K, len(allowed_ids))))
            p50, p90 = per_query_ms(lambda qq: dense.search(qq, K, allowed=mask), q[:n_timed])
            path = ("torch mask" if dense.engine is not None else
                    "exact over allowed" if len(allowed_ids) <= BRUTE_FORCE_MAX and dense.store is not None
                    else "FAISS IDSelector")
            rows.append({"selectivity": s, "allowed_passages": int(len(allowed_ids)),
                         "recall@10": round(recall(ids, truth, x, q), 4), "full_k_rate": full,
                         "p50_ms": p50, "p90_ms": p90, "path": path})
        out["recipes"][name] = {"factory": dense.section["factory"], "rows": rows}
    return out


def exact_lexical_part(index, queries: list[str], n_timed: int) -> dict:
    from retrieval.hybrid.lexical import bm25

    patterns = {"rare": "addr2line", "medium": "SIGTERM", "frequent": "the "}
    out = {"patterns": {k: {"pattern": p, "count": int(index.count(p))} for k, p in patterns.items()}, "rows": []}
    n = index.n_documents
    for s in (1.0,) + SELECTIVITIES:
        where = None if s == 1.0 else f"doc_id < {int(n * s)}"
        t = time.perf_counter()
        flt = index.doc_filter(where)
        filter_ms = (time.perf_counter() - t) * 1000
        view = index.exact_view(where)
        row = {"selectivity": s, "where": where, "filter_ms": round(filter_ms, 2),
               "side_index": getattr(view, "side_kind", None)}
        for name, p in patterns.items():
            t = time.perf_counter()
            first = view.count(p)  # the first count under a filter may build its side index
            row[f"count_{name}_first_ms"] = round((time.perf_counter() - t) * 1000, 2)
            times = []
            for _ in range(5):
                t = time.perf_counter()
                c = view.count(p)
                times.append((time.perf_counter() - t) * 1000)
            assert c == first
            row[f"count_{name}_ms"] = round(statistics.median(times), 3)
            row[f"count_{name}"] = int(c)
        times = []
        for qtext in queries[:n_timed]:
            t = time.perf_counter()
            bm25(index.store, qtext, K, flt)
            times.append((time.perf_counter() - t) * 1000)
        row["bm25_p50_ms"] = round(statistics.median(times), 3)
        out["rows"].append(row)
    out["tombstones"] = tombstone_part(index, patterns)
    return out


def tombstone_part(index, patterns: dict) -> dict:
    """Counts with 10 random documents deleted: the view a tombstoned index gives every query
    (built here from the mask, as Index.doc_filter builds it from the deleted table)."""
    from retrieval.exact_filtered import FilteredExact
    from retrieval.filters import combine

    deleted = np.sort(np.random.default_rng(11).choice(index.n_documents, 10, replace=False))
    view = FilteredExact(index.exact, combine(index.n_documents, deleted, None))
    row = {"deleted_documents": 10, "side_index": view.side_kind, "side_bytes": view.side_bytes}
    for name, p in patterns.items():
        t = time.perf_counter()
        first = view.count(p)
        row[f"count_{name}_first_ms"] = round((time.perf_counter() - t) * 1000, 2)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            assert view.count(p) == first
            times.append((time.perf_counter() - t) * 1000)
        row[f"count_{name}_ms"] = round(statistics.median(times), 3)
        row[f"count_{name}"] = int(first)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default=str(DATA / "index-100000"))
    ap.add_argument("--queries", type=int, default=400, help="test queries used for recall")
    ap.add_argument("--timed", type=int, default=100, help="queries timed one at a time")
    ap.add_argument("--out", default=str(ROOT / "eval" / "results" / "bench_filter.json"))
    args = ap.parse_args()

    import faiss

    from retrieval import Index
    from retrieval.dense.index import _flat_vectors

    index = Index.open(args.index, verify=False, device="cpu")
    if index.dense is None or index.dense.section["factory"] != "Flat":
        raise SystemExit(f"{args.index}: needs a flat dense part")
    x = np.ascontiguousarray(_flat_vectors(index.dense.index), dtype=np.float32)
    tests = json.loads((DATA / "data.json").read_text())["test"][:args.queries]
    texts = [t["text"] for t in tests]
    q = index.dense.embed(texts)
    print(f"{index.n_documents} documents, {len(x)} passages, {len(q)} queries; faiss threads "
          f"{faiss.omp_get_max_threads()}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-filter-") as tmp:
        dense = dense_part(index, q, x, Path(tmp), args.timed)
    exact = exact_lexical_part(index, texts, args.timed)
    import os

    result = {"benchmark": "bench_filter", **provenance(), "load_avg": os.getloadavg(),
              "index": str(Path(args.index).relative_to(ROOT)) if Path(args.index).is_relative_to(ROOT) else args.index,
              "documents": index.n_documents, "passages": len(x), "queries": len(q), "k": K,
              "dense": dense, "exact_lexical": exact}
    write_results(Path(args.out), result)

    print(f"\nDense search under a document filter (recall@10 vs exact top 10 of the allowed passages; "
          f"p50/p90 ms per single query; {dense['pq_factory']} {dense['pq_params']})")
    print(f"{'recipe':8} {'selectivity':>11} {'allowed':>8} {'recall@10':>9} {'full k':>6} {'p50 ms':>8} {'p90 ms':>8}  path")
    for name, r in dense["recipes"].items():
        for row in r["rows"]:
            print(f"{name:8} {row['selectivity']:>11.2f} {row['allowed_passages']:>8} {row['recall@10']:>9.4f} "
                  f"{row.get('full_k_rate', 1.0):>6.2f} {row['p50_ms']:>8.2f} {row['p90_ms']:>8.2f}  {row['path']}")
    print("\nExact counts and BM25 under a where filter (doc_id < N*s; ms, median; first = with the side index build)")
    pats = exact["patterns"]
    print("patterns: " + ", ".join(f"{k} {v['pattern']!r} ({v['count']} occurrences)" for k, v in pats.items()))
    print(f"{'selectivity':>11} {'filter ms':>9} {'side':>9} " + " ".join(f"{k + ' ms':>12} {'first':>8}" for k in pats)
          + f" {'bm25 p50':>9}")
    for row in exact["rows"]:
        print(f"{row['selectivity']:>11.2f} {row['filter_ms']:>9.2f} {str(row['side_index']):>9} "
              + " ".join(f"{row[f'count_{k}_ms']:>12.3f} {row[f'count_{k}_first_ms']:>8.1f}" for k in pats)
              + f" {row['bm25_p50_ms']:>9.3f}")
    t = exact["tombstones"]
    print(f"\n10 deleted documents (side index over them: {t['side_bytes']} bytes): "
          + ", ".join(f"{k} {t[f'count_{k}_ms']:.3f} ms (first {t[f'count_{k}_first_ms']:.1f})" for k in pats))
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
