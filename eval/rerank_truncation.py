"""How short may a (query, passage) pair be cut before the cross-encoder ranks differently?

The cross-encoder's cost is linear in the tokens it reads (eval/bench_rerank.py), so `max_length`
is the cheapest lever after the number of pairs; this measures what it costs in quality. For each
benchmark (SciFact train, zero-shot; man pages, in-domain: retrieval_eval.py's) and each query,
rtv's hybrid top 20 (defaults, no rerank) is reranked by torch fp32 at --reference-length (the
reference), and by every --backends entry at every --lengths value; nDCG@10 (ranx, on documents,
as bench_rerank.py folds them) is reported next to torch's, with the share of pairs the cut
actually shortens and the process CPU time (all threads, 2) of the scoring (tokenise + forward). Quality
does not depend on the machine's load; the CPU times do, a little (shared caches).

    python eval/rerank_truncation.py            # -> eval/results/rerank_truncation.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
import retrieval_eval as rev  # noqa: E402
from bench_rerank import load, rerank_order  # noqa: E402
from provenance import provenance, write_results  # noqa: E402

DEPTH = 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reranker", default=str(rev.DATA / "reranker"))
    ap.add_argument("--backends", default="openvino,openvino-int8")
    ap.add_argument("--lengths", default="256,192,160,128,112,96,80,64")
    ap.add_argument("--reference-length", type=int, default=256, help="torch fp32's max_length (rtv's default)")
    ap.add_argument("--queries", type=int, default=100, help="per benchmark")
    ap.add_argument("--dataset", choices=["all", "scifact", "manpage"], default="all")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    import torch
    from ranx import Qrels, Run, evaluate
    from tokenizers import Tokenizer

    from retrieval.hybrid import search
    from retrieval.hybrid.rerank import Reranker
    from retrieval.progress import bar

    torch.set_num_threads(2)
    measured, load_before = provenance(), load()
    lengths = [int(x) for x in args.lengths.split(",")]
    configs = [("torch", args.reference_length)] + [(b, n) for b in args.backends.split(",") for n in lengths]
    rrs = {c: Reranker(args.reranker, backend=c[0], device="cpu", max_length=c[1], batch_size=64) for c in configs}
    for (b, n), rr in rrs.items():
        if rr.backend != b:
            raise SystemExit(f"{b}: not installed here (fell back to {rr.backend})")
    tok = Tokenizer.from_file(str(Path(args.reranker) / "tokenizer.json"))
    tok.no_truncation()
    ns = argparse.Namespace(passages=100_000, queries=400, seed=0)
    benches = [b(ns) for name, b in (("scifact", rev.scifact_bench), ("manpage", rev.manpage_bench))
               if args.dataset in ("all", name)]
    results = {}
    for bench in benches:
        P = rev.Passages(bench.index)
        queries = bench.queries[:args.queries]
        runs = {c: {} for c in configs}
        cpu = {c: [] for c in configs}
        pair_lens = []
        progress = bar(total=len(queries), desc=bench.name, unit="query")
        for q in queries:
            fused = [h.passage_id for h in search(bench.index, [q["text"]], mode="hybrid", k=100, rerank=False)[0]]
            texts = [r["text"] for r in bench.index.passages(fused[:DEPTH])]
            pair_lens += [len(e.ids) for e in tok.encode_batch([(q["text"], t) for t in texts])]
            for c, rr in rrs.items():
                t = time.process_time()
                scores = rr.score(q["text"], texts)
                cpu[c].append(time.process_time() - t)
                runs[c][q["qid"]] = rev.fold(rerank_order(fused, scores, DEPTH), P.doc_of) or {"-": 0.0}
            progress.update()
        progress.close()
        qrels = Qrels({q["qid"]: bench.qrels[q["qid"]] for q in queries})
        ref = configs[0]
        ndcg = {c: round(float(evaluate(qrels, Run(runs[c]), "ndcg@10")), 4) for c in configs}
        lens = np.array(pair_lens)
        rows = [{"backend": b, "max_length": n, "ndcg@10": ndcg[(b, n)],
                 "ndcg@10_minus_torch": round(ndcg[(b, n)] - ndcg[ref], 4),
                 "pairs_cut_share": round(float((lens > n).mean()), 4),
                 "cpu_ms_per_query_p50": round(float(np.median(cpu[(b, n)])) * 1000, 1)} for b, n in configs]
        results[bench.name] = {"dataset": bench.description, "queries": len(queries), "depth": DEPTH,
                               "pair_tokens": {f"p{p}": int(np.percentile(lens, p)) for p in (50, 90, 99, 100)},
                               "rows": rows}
        print(f"\n{bench.name}: {len(queries)} queries, top {DEPTH} reranked; pair tokens "
              f"{results[bench.name]['pair_tokens']}; load {load()}")
        print(f"{'backend':<15}{'max_len':>8}{'nDCG@10':>9}{'vs torch':>9}{'cut':>7}{'cpu ms':>8}")
        for r in rows:
            print(f"{r['backend']:<15}{r['max_length']:>8}{r['ndcg@10']:>9.4f}{r['ndcg@10_minus_torch']:>+9.4f}"
                  f"{r['pairs_cut_share']:>7.2f}{r['cpu_ms_per_query_p50']:>8.1f}")
    write_results(f"rerank_truncation{args.tag}.json",
                  {**measured, "load_before": load_before, "load_after": load(),
                   "settings": {"reranker": args.reranker, "reference": f"torch fp32, max_length {args.reference_length}",
                                "threads": 2, "depth": DEPTH, "hybrid": "rtv defaults (weighted fusion, depth 100)"},
                   "benchmarks": results, "command": " ".join(["python"] + sys.argv)})


if __name__ == "__main__":
    main()
