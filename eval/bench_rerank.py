"""Cross-encoder reranking on CPU, side by side in one run: torch fp32 (sentence-transformers'
CrossEncoder, the reference), ONNX Runtime fp32 and int8, OpenVINO (its CPU plugin's precision:
bf16 where the CPU has AVX512-BF16) and OpenVINO int8 (NNCF), each reranking the top 10 / 20 / 50
of rtv's hybrid ranking, on two benchmarks with real labels (eval/retrieval_eval.py's):

- SciFact train (BEIR; 9.6k passages): zero-shot for the only offline cross-encoder
  (eval/train_reranker.py fine-tunes it on man-page queries);
- man pages (100k passages): in-domain for it (its test queries, disjoint from its training ones).

Per query, the hybrid top 100 (rtv's defaults, no rerank) is computed once, then every backend in
turn (so that the shared machine's noise falls on all alike; the first --warmup queries untimed):
- depth 10 and 20: Index.search(k=10) with that backend's Reranker, timed end to end (hybrid +
  rerank), and its rerank stage (passage fetch + cross-encoder) from search's own stage timings;
- depth 50: the rerank stage alone (fetch + score of the top 50); hybrid alone (k=10, no rerank)
  is timed in the same rotation, so hybrid + rerank at 50 is about the sum of the two;
- quality: those top-50 scores rerank the first d (10/20/50) of the fused list, the rest keeping
  their fused order (what hybrid.rerank_stage does). nDCG@10 by ranx on documents (a document's
  best passage, as retrieval_eval.py folds them), and agreement with torch fp32: the share of
  torch's top 10 passages that the backend's top 10 holds, and the Pearson correlation of scores.
`uptime`'s load is recorded before and after.

Where the time goes: for the depth-20 calls, the p50 of each of search's own stage timings (dense
query embedding + vector search, which runs beside lexical and exact; the part of it they did not
hide; fusion; the rerank stage's passage-text fetch and its scoring; the hits), and for the
exported backends the tokenisation of the pairs alone (its p50, timed apart) and the padding
share of the batch (tokens that are padding to the longest pair).

Pair lengths: torch fp32 (the reference) keeps --max-length; the exported backends' pairs are held
to the index's passage size as rtv's search holds them (rerank.fitted_max_length; the rows'
max_length); `NAME@MAX_LENGTH` (e.g. `openvino-int8@96`) caps a backend lower still.
eval/rerank_truncation.py measures what each cap costs in quality.

The OpenVINO int8 export is made afresh at the start, by the path a user's first reranked query
takes: NNCF calibrates on pairs made from the passages of the index searched first
(rerank_backends.calibration_pairs; with --dataset all, SciFact's, so the man-page rows use a
calibration from another domain); the JSON names the index.

--recipe auto measures the man-page set with the dense recipe `rtv index` picks at 100k passages
(pq: IVF fast-scan codes re-scored from the int8 store) instead of retrieval_eval.py's flat
(exact) reference index; SciFact's index is rtv's defaults either way (flat below 10k passages).

    flock /tmp/rtv-bench.lock python eval/bench_rerank.py        # -> eval/results/bench_rerank.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
import retrieval_eval as rev  # noqa: E402  (sets HF_HUB_OFFLINE, sys.path; the benchmarks and folding)
from provenance import provenance, write_results  # noqa: E402

BACKENDS = ["torch", "onnx-int8", "openvino", "openvino-int8"]  # onnx fp32: --backends (= torch's numbers, slower than openvino)
DEPTHS = [10, 20, 50]  # --depths; end to end at those <= TOP_N_CPU, quality from one call at the deepest


from retrieval.hybrid.rerank import TOP_N_CPU  # noqa: E402


def load() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def rerankers(model: str, backends: list[str], max_length: int):
    """{spec: Reranker} for specs "NAME" (at max_length) or "NAME@MAX_LENGTH"."""
    from retrieval.hybrid.rerank import Reranker
    from retrieval.hybrid.rerank_backends import export_dir

    shutil.rmtree(export_dir(model) / "openvino", ignore_errors=True)  # calibrate afresh (see above)
    out = {}
    for spec in backends:
        b, _, cap = spec.partition("@")
        if cap and not cap.isdigit():
            raise SystemExit(f"--backends {spec}: write NAME@MAX_LENGTH, e.g. openvino-int8@128")
        rr = Reranker(model, backend=b, device="cpu", max_length=int(cap) if cap else max_length, batch_size=64)
        if rr.backend != b:
            print(f"{b}: not available here (fell back to {rr.backend}); left out", file=sys.stderr)
            continue
        out[spec] = rr
    return out


def pair_cap(rr, fitted: int | None) -> int | None:
    """The pair length a backend scores at in rtv's search: its own cap, lowered to the index's
    passage size (rerank.fitted_max_length) on the exported backends."""
    own = getattr(rr.model, "max_seq_length", None) or getattr(rr.model, "max_length", None)  # CrossEncoder's name first
    if rr.backend == "torch" or fitted is None or own is None:
        return own
    return min(own, fitted)


def tokenise_cost(rr, query: str, texts: list[str], cap: int | None) -> tuple[float, float] | None:
    """(seconds to tokenise the pairs, padding share of one batch of them) for an exported
    backend (its own tokenizer, truncation included); None for torch."""
    tokenizer = getattr(rr.model, "tokenizer", None)
    if not hasattr(tokenizer, "encode_batch"):
        return None
    tokenizer = rr.model.tokenizer_at(cap)  # the one predict uses at this cap
    t = time.perf_counter()
    lens = [len(e.ids) for e in tokenizer.encode_batch([(query, x) for x in texts])]
    seconds = time.perf_counter() - t
    return seconds, 1.0 - sum(lens) / (len(lens) * max(lens))


def rerank_order(fused: list[int], scores: np.ndarray, depth: int) -> list[tuple[int, float]]:
    """The first `depth` passages by score, then the rest in fused order (hybrid.rerank_stage)."""
    head = sorted(range(min(depth, len(fused))), key=lambda i: -float(scores[i]))
    rest = fused[len(head):]
    n = len(fused)
    return [(fused[i], float(n - r)) for r, i in enumerate(head)] + [(p, float(-r)) for r, p in enumerate(rest)]


def measure(bench, rrs: dict, P, n_queries: int, warmup: int, calibration_note: dict, depths: list[int]) -> dict:
    """One pass over the queries; for each, every backend in turn:
    - the hybrid top 100 without rerank (computed once per query, untimed) and hybrid alone (k=10, timed);
    - depth 10 and 20: Index.search(k=10) with that backend's Reranker end to end, its rerank stage
      (passage fetch + cross-encoder) from search's own stage timings;
    - depth 50: the rerank stage alone (fetch + score of the top 50); hybrid + rerank at 50 is
      hybrid alone + this (not timed end to end: it is the slowest cell and the target is 20);
    - quality: the top 50 scores (the depth-50 call) rerank the first d of the fused list."""
    from ranx import Qrels, Run, evaluate

    from retrieval.hybrid import search
    from retrieval.hybrid.rerank import fitted_max_length
    from retrieval.progress import bar

    queries = bench.queries[:n_queries]
    index = bench.index
    cap = fitted_max_length(index)  # what rerank_stage holds the exported backends' pairs to
    deepest, timed_depths = max(depths), [d for d in depths if d <= TOP_N_CPU]
    runs = {(b, d): {} for b in rrs for d in depths}
    runs[("none", 0)] = {}
    scores_of = {b: [] for b in rrs}
    overlap = {(b, d): [] for b in rrs for d in depths}
    alone = {(b, d): [] for b in rrs for d in depths}
    e2e = {(b, d): [] for b in rrs for d in timed_depths}
    stage_ms = {b: {} for b in rrs}  # stage -> [ms] of the depth-TOP_N_CPU calls
    padding = {b: [] for b in rrs}
    hybrid_only = []
    progress = bar(total=len(queries), desc=f"{bench.name}", unit="query")
    for i, q in enumerate(queries):
        timed = i >= warmup
        text = q["text"]
        fused = [h.passage_id for h in search(index, [text], mode="hybrid", k=100, rerank=False)[0]]
        runs[("none", 0)][q["qid"]] = rev.fold([(p, -r) for r, p in enumerate(fused)], P.doc_of) or {"-": 0.0}
        t, c = time.perf_counter(), time.process_time()
        search(index, [text], mode="hybrid", k=10, rerank=False)
        if timed:
            hybrid_only.append((time.perf_counter() - t, time.process_time() - c))
        scores = {}
        for b, rr in rrs.items():
            if getattr(rr.model, "needs_calibration", False):  # openvino-int8 not calibrated yet: a user's first query
                rr.top_n = TOP_N_CPU
                t = time.perf_counter()
                search(index, [text], mode="hybrid", k=10, reranker=rr)
                from retrieval.hybrid.rerank_backends import calibration_pairs

                calibration_note.update(source="calibration_pairs: the index's own passages", benchmark=bench.name,
                                        index=str(index.path), pairs=len(calibration_pairs(index)),
                                        first_query_seconds=round(time.perf_counter() - t, 1))
            for d in timed_depths:
                rr.top_n, stages = d, {}
                t, c = time.perf_counter(), time.process_time()
                search(index, [text], mode="hybrid", k=10, reranker=rr, timings=stages)
                if timed:
                    e2e[(b, d)].append((time.perf_counter() - t, time.process_time() - c))
                    alone[(b, d)].append((stages["rerank"], None))
                    if d == TOP_N_CPU:
                        for name, sec in stages.items():
                            stage_ms[b].setdefault(name, []).append(sec * 1000)
            if timed and deepest not in timed_depths:
                t, c = time.perf_counter(), time.process_time()
            texts = [r["text"] for r in index.passages(fused[:deepest])]
            scores[b] = rr.score(text, texts, max_length=cap)  # as rerank_stage scores them
            if timed and deepest not in timed_depths:
                alone[(b, deepest)].append((time.perf_counter() - t, time.process_time() - c))
            cost = tokenise_cost(rr, text, texts[:TOP_N_CPU], cap)
            if timed and cost:
                stage_ms[b].setdefault("rerank_tokenise", []).append(cost[0] * 1000)
                padding[b].append(cost[1])
            scores_of[b].append(scores[b])
            for d in depths:
                runs[(b, d)][q["qid"]] = rev.fold(rerank_order(fused, scores[b], d), P.doc_of) or {"-": 0.0}
        if "torch" in scores:
            for d in depths:
                ref = {p for p, _ in rerank_order(fused, scores["torch"], d)[:10]}
                for b in rrs:
                    got = {p for p, _ in rerank_order(fused, scores[b], d)[:10]}
                    overlap[(b, d)].append(len(ref & got) / max(1, len(ref)))
        progress.update()
    progress.close()
    qrels = Qrels({q["qid"]: bench.qrels[q["qid"]] for q in queries})
    ndcg = {key: round(float(evaluate(qrels, Run(run), "ndcg@10")), 4) for key, run in runs.items()}

    def pct(xs):
        """Wall-clock p50/p95, and the p50 of the process's CPU time (all its threads) where
        measured: on a shared machine, wall time includes waiting for a core, CPU time does not."""
        if not xs:
            return None
        wall = np.array([w for w, _ in xs]) * 1000
        out = {"p50_ms": round(float(np.percentile(wall, 50)), 2), "p95_ms": round(float(np.percentile(wall, 95)), 2)}
        if xs[0][1] is not None:
            out["cpu_p50_ms"] = round(float(np.percentile(np.array([c for _, c in xs]) * 1000, 50)), 2)
        return out

    rows = []
    for b in rrs:
        corr = None
        if "torch" in scores_of:
            x, y = np.concatenate(scores_of["torch"]), np.concatenate(scores_of[b])
            corr = round(float(np.corrcoef(x, y)[0, 1]), 5)
        for d in depths:
            ov = overlap[(b, d)]
            row = {"backend": b, "max_length": pair_cap(rrs[b], cap), "depth": d, "ndcg@10": ndcg[(b, d)],
                   "ndcg@10_minus_torch": round(ndcg[(b, d)] - ndcg[("torch", d)], 4)
                   if ("torch", d) in ndcg else None,
                   "top10_agreement_with_torch": round(float(np.mean(ov)), 4) if ov else None,
                   "score_pearson_with_torch": corr,
                   "rerank": pct(alone[(b, d)]), "hybrid_plus_rerank": pct(e2e.get((b, d), []))}
            if d == TOP_N_CPU and stage_ms[b]:
                row["stages_p50_ms"] = {k: round(float(np.median(v)), 2) for k, v in stage_ms[b].items()}
                if padding[b]:
                    row["padding_share_p50"] = round(float(np.median(padding[b])), 4)
            rows.append(row)
    return {"queries": len(queries), "timed_queries": len(hybrid_only), "warmup": warmup,
            "hybrid_no_rerank": {"ndcg@10": ndcg[("none", 0)], **pct(hybrid_only)}, "rows": rows}


def pair_tokens(model: str, bench, n: int = 200) -> dict:
    """How long (query, passage) pairs are in the cross-encoder's tokens (untruncated)."""
    from tokenizers import Tokenizer

    from retrieval.hybrid import search

    tok = Tokenizer.from_file(str(Path(model) / "tokenizer.json"))
    tok.no_truncation()
    lens = []
    for q in bench.queries[:n // 20]:
        for h in search(bench.index, [q["text"]], mode="hybrid", k=20, rerank=False)[0]:
            lens.append(len(tok.encode(q["text"], h.text).ids))
    return {f"p{p}": int(np.percentile(lens, p)) for p in (50, 90, 99, 100)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reranker", default=str(rev.DATA / "reranker"), help="CrossEncoder directory")
    ap.add_argument("--backends", default=",".join(BACKENDS))
    ap.add_argument("--queries", type=int, default=40, help="per benchmark (the first N of its query list)")
    ap.add_argument("--warmup", type=int, default=3, help="of those, the first N are not timed")
    ap.add_argument("--max-length", type=int, default=256, help="token cap of a pair (rtv's default)")
    ap.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime / OpenVINO threads")
    ap.add_argument("--dataset", choices=["all", "scifact", "manpage"], default="all")
    ap.add_argument("--depths", default=",".join(map(str, DEPTHS)), help="pairs reranked, comma-separated")
    ap.add_argument("--recipe", default="flat", choices=["flat", "auto"],
                    help="the man-page index's dense recipe (flat: retrieval_eval.py's reference; auto: rtv's pick)")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    depths = sorted({int(x) for x in args.depths.split(",")})

    import torch

    torch.set_num_threads(args.threads)
    measured = provenance()  # the commit that runs, not the one checked out when the JSON is written
    load_before = load()
    rrs = rerankers(args.reranker, args.backends.split(","), args.max_length)
    ns = argparse.Namespace(passages=100_000, queries=400, seed=0, recipe=args.recipe)
    benches = [b(ns) for name, b in (("scifact", rev.scifact_bench), ("manpage", rev.manpage_bench))
               if args.dataset in ("all", name)]
    calibration: dict = {}
    results = {}
    for bench in benches:
        P = rev.Passages(bench.index)
        res = measure(bench, rrs, P, args.queries, args.warmup, calibration, depths)
        results[bench.name] = {"dataset": {"name": bench.name, "description": bench.description,
                                           "passages": len(P.texts), "reranker_note": bench.reranker_note},
                               "pair_tokens": pair_tokens(args.reranker, bench), **res}
        h = res["hybrid_no_rerank"]
        print(f"\n{bench.name}: {bench.description}; {len(P.texts)} passages; {res['queries']} queries "
              f"({res['timed_queries']} timed); hybrid without rerank: nDCG@10 {h['ndcg@10']}, p50 {h['p50_ms']} ms; "
              f"load {load()}")
        print(f"{'backend':<19}{'depth':>6}{'nDCG@10':>9}{'vs torch':>9}{'top10 agr':>10}{'rerank p50':>11}"
              f"{'p95':>8}{'hyb+rr p50':>11}{'p95':>8}{'cpu p50':>9}")
        for r in res["rows"]:
            e = r["hybrid_plus_rerank"] or {"p50_ms": float("nan"), "p95_ms": float("nan"), "cpu_p50_ms": float("nan")}
            print(f"{r['backend']:<19}{r['depth']:>6}{r['ndcg@10']:>9.4f}{r['ndcg@10_minus_torch'] or 0:>+9.4f}"
                  f"{r['top10_agreement_with_torch'] or 0:>10.3f}{r['rerank']['p50_ms']:>11.1f}{r['rerank']['p95_ms']:>8.1f}"
                  f"{e['p50_ms']:>11.1f}{e['p95_ms']:>8.1f}{e['cpu_p50_ms']:>9.1f}")
        for r in res["rows"]:
            if "stages_p50_ms" in r:
                parts = ", ".join(f"{k} {v}" for k, v in r["stages_p50_ms"].items())
                print(f"  {r['backend']} at {r['depth']}, stage p50 ms: {parts}; padding {r.get('padding_share_p50')}")
    out = {**measured, "load_before": load_before, "load_after": load(),
           "settings": {"reranker": args.reranker, "manpage_recipe": args.recipe, "backends": list(rrs), "depths": depths, "threads": args.threads,
                        "max_length": args.max_length, "openvino_int8_calibration": calibration or None,
                        "hybrid": "rtv defaults (weighted fusion, depth 100), k=10 end to end"},
           "benchmarks": results, "command": " ".join(["python"] + sys.argv)}
    write_results(f"bench_rerank{args.tag}.json", out)


if __name__ == "__main__":
    main()
