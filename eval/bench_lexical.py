"""The lexical part's two layouts side by side (issue 8): postings files (retrieval.postings, the
default) against the contentless FTS5 table rtv wrote before, on SciFact train (809 claims).

Two real builds of the same SciFact corpus with the same passages (`Index.build(lexical=...)`, the
passage vectors taken from eval/data/scifact/vectors.npy instead of embedding again), under
eval/data/scifact/lexical-{postings,fts5}/. For each:

- bytes per part (`rtv info`), the full hybrid index with the 8-bit PQ rescoring store (the
  "IVF-PQ96x4fs + pq128x8 x20" layout of eval/bench_dense_size.py, built once from the same vectors
  and used by both) per corpus byte;
- lexical-only nDCG@10 and hybrid nDCG@10 (depth 100, folded to documents as retrieval_eval.py
  does, no rerank), and how many queries get the same top 100 (ids and order) and the same scores
  (1e-9) as FTS5;
- the same on a derived phrase set: each claim with its first two adjacent content words quoted
  (what a quoted phrase costs the postings layout, which leaves multi-token phrases out of BM25);
- latency p50 / p90 of the BM25 stage alone (`lexical.bm25`) and of `search(mode="lexical")`, the two
  layouts taking turns query by query (the order alternating), after a warm-up; load at start/end.

With --manpage, also the man-page known-item set of eval/retrieval_eval.py (its corpus.jsonl in
eval/data/retrieval-eval/, 128-token passages): exact + lexical builds with each layout (no dense),
their lexical bytes, lexical nDCG@10 and the same interleaved latency over its test queries.

    python eval/bench_lexical.py [--rebuild] [--manpage]

Prints a table; writes eval/results/bench_lexical.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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

from bench_dense_size import LAYOUTS as DENSE_LAYOUTS  # noqa: E402
from bench_ivf import write_recipe  # noqa: E402
from provenance import provenance, write_results  # noqa: E402

LAYOUTS = ("fts5", "postings")
PQ_LAYOUT = "IVF-PQ96x4fs + pq128x8 x20"
DEPTH = 100


def build(kind: str, rebuild: bool):
    """The SciFact index with lexical=`kind`, built once from the cached vectors."""
    import scifact_data
    from precomputed import precomputed_vectors

    from retrieval import Index
    from retrieval.errors import IndexFormatError

    path = scifact_data.DATA / f"lexical-{kind}"
    if not rebuild:
        try:
            index = Index.open(path, verify=False, device="cpu")
            return index, index.manifest.get("build_seconds")  # built by an earlier run
        except IndexFormatError:
            pass
    vec_file, texts_file = scifact_data.DATA / "vectors.npy", scifact_data.DATA / "vector-texts.json"
    if not vec_file.exists():
        scifact_data.open_index().close()  # embeds once and caches the vectors
    t = time.time()
    with precomputed_vectors(np.load(vec_file), json.loads(texts_file.read_text()), str(vec_file)):
        index = Index.build([scifact_data.corpus_path()], path, dense=True, device="cpu", overwrite=path.exists(),
                            lexical=kind)
    return index, round(time.time() - t, 1)


class CachedEmbedder:
    """The index's embedder with the queries' vectors computed once up front (both layouts see the
    same query vectors; as in eval/bench_dense_size.py)."""

    def __init__(self, embedder, texts: list[str], vectors: np.ndarray):
        self.model_id, self.dim, self.device = embedder.model_id, embedder.dim, "cpu"
        self._rows = {t: v for t, v in zip(texts, vectors)}

    def encode(self, texts, **_):
        return np.stack([self._rows[t] for t in texts]).astype(np.float32)


def phrase_query(text: str) -> str | None:
    """The claim with its first two adjacent content words (letters, >= 3 long) in quotes."""
    from retrieval.hybrid.lexical import STOPWORDS

    words = text.split()
    for i in range(len(words) - 1):
        a, b = words[i], words[i + 1]
        if all(re.fullmatch(r"[A-Za-z]{3,}", w) and w.lower() not in STOPWORDS for w in (a, b)):
            return " ".join(words[:i] + [f'"{a} {b}"'] + words[i + 2:])
    return None


def lexical_run(indexes: dict, queries: list[dict], judged, doc_of, fold, evaluate, Run) -> dict:
    """Per layout: lexical nDCG@10 at DEPTH, and the runs (for the same-ranking counts)."""
    from retrieval.hybrid.lexical import bm25

    out = {}
    for kind, index in indexes.items():
        lex = {q["qid"]: bm25(index.store, q["text"], DEPTH) for q in queries}
        out[kind] = (round(float(evaluate(judged, Run({k: fold(v, doc_of) or {"-": 0.0} for k, v in lex.items()}),
                                          "ndcg@10")), 4), lex)
    return out


def same_counts(ref: dict, got: dict) -> tuple[int, int]:
    """Queries with the same top DEPTH (ids and order), and with the same scores too (1e-9)."""
    order = sum([p for p, _ in got[k]] == [p for p, _ in ref[k]] for k in ref)
    scores = sum(len(got[k]) == len(ref[k]) and all(a[0] == b[0] and abs(a[1] - b[1]) <= 1e-9
                                                    for a, b in zip(got[k], ref[k])) for k in ref)
    return order, scores


def interleaved_latency(indexes: dict, queries: list[dict], warmup: int) -> dict:
    """p50 / p90 ms of the BM25 stage and of search(mode="lexical"), the layouts taking turns on each
    query (the order alternating), after a warm-up."""
    from retrieval.hybrid import search
    from retrieval.hybrid.lexical import bm25

    kinds = list(indexes)
    lat = {kind: {"bm25": [], "lexical_search": []} for kind in kinds}
    for q in queries[:warmup]:
        for index in indexes.values():
            bm25(index.store, q["text"], DEPTH)
            search(index, [q["text"]], mode="lexical", k=10, rerank=False)
    load0 = os.getloadavg()[0]
    for i, q in enumerate(queries):
        for kind in (kinds if i % 2 == 0 else kinds[::-1]):
            index = indexes[kind]
            t = time.perf_counter()
            bm25(index.store, q["text"], DEPTH)
            lat[kind]["bm25"].append(time.perf_counter() - t)
            t = time.perf_counter()
            search(index, [q["text"]], mode="lexical", k=10, rerank=False)
            lat[kind]["lexical_search"].append(time.perf_counter() - t)
    out = {"queries": len(queries), "load_at_start": load0, "load_at_end": os.getloadavg()[0]}
    for kind in kinds:
        out[kind] = {}
        for what, xs in lat[kind].items():
            ms = np.array(xs) * 1000
            out[kind][f"{what}_p50_ms"] = round(float(np.percentile(ms, 50)), 3)
            out[kind][f"{what}_p90_ms"] = round(float(np.percentile(ms, 90)), 3)
    return out


def manpage(args, out: dict) -> None:
    """The man-page set: exact + lexical builds with each layout, sizes, nDCG@10, latency."""
    from ranx import Qrels, Run, evaluate
    from retrieval_eval import DATA, PASSAGE_OVERLAP, PASSAGE_TOKENS, Passages, fold

    from retrieval import Index
    from retrieval.errors import IndexFormatError

    meta = json.loads((DATA / "data.json").read_text())
    queries = meta["test"]
    judged = Qrels({q["qid"]: {q["doc"]: 1} for q in queries})
    indexes, build_s = {}, {}
    for kind in LAYOUTS:
        path = ROOT / "eval" / "data" / f"manpage-lexical-{kind}"
        try:
            if args.rebuild:
                raise IndexFormatError("rebuild")
            indexes[kind] = Index.open(path, verify=False)
            build_s[kind] = indexes[kind].manifest.get("build_seconds")  # built by an earlier run
        except IndexFormatError:
            t = time.time()
            indexes[kind] = Index.build([DATA / "corpus.jsonl"], path, parts="exact,lexical", overwrite=path.exists(),
                                        passage_tokens=PASSAGE_TOKENS, passage_overlap=PASSAGE_OVERLAP, lexical=kind)
            build_s[kind] = round(time.time() - t, 1)
    P = Passages(indexes["fts5"])
    doc_of = P.doc_of
    runs = lexical_run(indexes, queries, judged, doc_of, fold, evaluate, Run)
    res = {"queries": len(queries), "passages": indexes["fts5"].n_passages, "layouts": {}}
    for kind, index in indexes.items():
        info = index.info()
        res["layouts"][kind] = {"build_s": build_s[kind], "corpus_bytes": info["corpus_bytes"],
                                "lexical_bytes": info["parts"]["lexical"]["bytes"],
                                "lexical_per_corpus_byte": info["parts"]["lexical"]["per_corpus_byte"],
                                "lexical_ndcg@10": runs[kind][0]}
    order, scores = same_counts(runs["fts5"][1], runs["postings"][1])
    res["layouts"]["postings"].update(queries_same_top100=order, queries_same_scores=scores)
    res["timing"] = interleaved_latency(indexes, queries[:args.timing_queries], args.warmup)
    for index in indexes.values():
        index.close()
    out["manpage"] = res
    print(f"man-page: {json.dumps(res)}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rebuild", action="store_true", help="build both indexes again")
    ap.add_argument("--timing-queries", type=int, default=809)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--manpage", action="store_true", help="also the man-page set (exact + lexical builds)")
    ap.add_argument("--manpage-only", action="store_true", help="only the man-page set")
    ap.add_argument("--out", default=str(ROOT / "eval" / "results" / "bench_lexical.json"))
    args = ap.parse_args()

    load0 = os.getloadavg()[0]
    if args.manpage_only:
        out = {**provenance(), "load_at_start": load0}
        manpage(args, out)
        out["load_at_end"] = os.getloadavg()[0]
        write_results(Path(args.out), out)
        return
    import scifact_data
    from ranx import Qrels, Run, evaluate
    from retrieval_eval import Passages, fold

    from retrieval.dense import DenseIndex, build_from_vectors
    from retrieval.hybrid import search
    from retrieval.hybrid.lexical import bm25
    indexes, build_s = {}, {}
    for kind in LAYOUTS:
        indexes[kind], build_s[kind] = build(kind, args.rebuild)
    queries, qrels = scifact_data.queries(), scifact_data.qrels()
    judged = Qrels({q["qid"]: qrels[q["qid"]] for q in queries})
    P = Passages(indexes["fts5"])
    assert Passages(indexes["postings"]).texts == P.texts, "the two builds must have the same passages"
    x = np.ascontiguousarray(np.load(scifact_data.DATA / "vectors.npy"), dtype=np.float32)
    emb0 = indexes["fts5"].dense.embedder
    phrased = [(q, phrase_query(q["text"])) for q in queries]
    phrased = [{"qid": q["qid"], "text": p} for q, p in phrased if p]
    texts = [q["text"] for q in queries] + [q["text"] for q in phrased]
    emb = CachedEmbedder(emb0, texts, emb0.encode(texts, progress=False))
    recipe = write_recipe("pq128", DENSE_LAYOUTS[PQ_LAYOUT], Path(tempfile.mkdtemp()))  # bench_dense_size's table

    out = {**provenance(), "load_at_start": load0, "dataset": "SciFact train (809 claims)", "depth": DEPTH,
           "dense_layout": PQ_LAYOUT, "phrase_queries": len(phrased), "layouts": {}}
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        section = build_from_vectors(x, tmp / "dense", str(recipe),
                                     model_id=indexes["fts5"].manifest["dense"]["model"], device="cpu", quiet=True)
        pq_bytes = sum(f["bytes"] for f in section["files"].values())
        for kind, index in indexes.items():
            info = index.info()
            corpus = info["corpus_bytes"]
            parts = {k: v["bytes"] for k, v in info["parts"].items()}
            on_disk = sum(f.stat().st_size for f in index.root.rglob("*") if f.is_file())
            assert sum(parts.values()) == on_disk, (kind, parts, on_disk)
            index._dense = DenseIndex.open(tmp / "dense", section, device="cpu", embedder=emb)
            row = {"build_s": build_s[kind], "passages": info["passages"], "corpus_bytes": corpus, "parts_bytes": parts,
                   "lexical_bytes": parts["lexical"], "lexical_per_corpus_byte": round(parts["lexical"] / corpus, 4),
                   "pq128_dense_bytes": pq_bytes,
                   "full_hybrid_pq128_bytes": sum(v for k, v in parts.items() if k != "dense") + pq_bytes}
            row["full_hybrid_pq128_per_corpus_byte"] = round(row["full_hybrid_pq128_bytes"] / corpus, 4)
            runs[kind] = {}
            for label, qs in (("", queries), ("phrase_", phrased)):
                judged = Qrels({q["qid"]: qrels[q["qid"]] for q in qs})
                lex = {q["qid"]: bm25(index.store, q["text"], DEPTH) for q in qs}
                runs[kind][label] = lex
                row[f"{label}lexical_ndcg@10"] = round(float(evaluate(judged, Run(
                    {k: fold(v, P.doc_of) or {"-": 0.0} for k, v in lex.items()}), "ndcg@10")), 4)
                hyb = {q["qid"]: [(h.passage_id, h.score) for h in
                                  search(index, [q["text"]], mode="hybrid", k=DEPTH, rerank=False)[0]] for q in qs}
                row[f"{label}hybrid_ndcg@10"] = round(float(evaluate(judged, Run(
                    {k: fold(v, P.doc_of) or {"-": 0.0} for k, v in hyb.items()}), "ndcg@10")), 4)
            out["layouts"][kind] = row
            print(f"{kind}: {row}", file=sys.stderr, flush=True)
        for label in ("", "phrase_"):
            order, scores = same_counts(runs["fts5"][label], runs["postings"][label])
            out["layouts"]["postings"].update({f"{label}queries_same_top100": order, f"{label}queries_same_scores": scores})
        timing = interleaved_latency(indexes, queries[:args.timing_queries], args.warmup)
        for kind in LAYOUTS:
            out["layouts"][kind].update(timing.pop(kind))
        out["timing"] = timing
        for index in indexes.values():
            index._dense = None
            index.close()
    if args.manpage:
        manpage(args, out)
    out["load_at_end"] = os.getloadavg()[0]
    p = out["layouts"]["postings"]
    print(f"\nSciFact train, {p['passages']} passages, corpus {p['corpus_bytes']} B; load {out['load_at_start']:.2f} -> "
          f"{out['load_at_end']:.2f}")
    print(f"{'layout':<10}{'lexical B':>11}{'x corpus':>9}{'full pq128 x':>13}{'lex nDCG':>9}{'hyb nDCG':>9}"
          f"{'phr lex':>8}{'phr hyb':>8}{'bm25 p50':>9}{'lex p50':>8}")
    for kind, r in out["layouts"].items():
        print(f"{kind:<10}{r['lexical_bytes']:>11}{r['lexical_per_corpus_byte']:>9}{r['full_hybrid_pq128_per_corpus_byte']:>13}"
              f"{r['lexical_ndcg@10']:>9}{r['hybrid_ndcg@10']:>9}{r['phrase_lexical_ndcg@10']:>8}"
              f"{r['phrase_hybrid_ndcg@10']:>8}{r['bm25_p50_ms']:>9}{r['lexical_search_p50_ms']:>8}")
    print(f"postings vs FTS5: same top 100 in {p['queries_same_top100']} of {len(queries)} queries, same scores in "
          f"{p['queries_same_scores']}; phrase set: {p['phrase_queries_same_top100']} / {p['phrase_queries_same_scores']}"
          f" of {len(phrased)}")
    if "manpage" in out:
        m = out["manpage"]
        print(f"\nman-page set, {m['passages']} passages, {m['queries']} queries; timing load "
              f"{m['timing']['load_at_start']:.2f} -> {m['timing']['load_at_end']:.2f}")
        for kind, r in m["layouts"].items():
            t = m["timing"][kind]
            print(f"{kind:<10}{r['lexical_bytes']:>11}{r['lexical_per_corpus_byte']:>9}{'':>13}{r['lexical_ndcg@10']:>9}"
                  f"{'':>25}{t['bm25_p50_ms']:>9}{t['lexical_search_p50_ms']:>8}")
    write_results(Path(args.out), out)


if __name__ == "__main__":
    main()
