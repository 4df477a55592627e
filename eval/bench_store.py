"""Rescoring stores side by side: float16 vs int8 (one scale a vector / one range a dimension) vs
PCA-reduced int8, each behind the same first stage (the pq, binary and hnsw recipes, built once per
corpus), on real vectors and real queries.

For every (corpus, recipe, store): recall@10 against exact float32 flat search, the store's bytes
per vector (the files on disk over the vectors), end-to-end CPU QPS of ``DenseIndex.search`` at the
recipe's defaults (best of --repeat, the stores timed in turn within each repeat) and the QPS of the
rescoring step alone on the same candidates; on SciFact also document-level nDCG@10 on the train
qrels (a document scores its best passage). A float32 "store" (the exact vectors, in RAM) is the
ceiling: what the first stage allows.

Corpora (all real all-MiniLM-L6-v2 embeddings):
  scifact   eval/data/scifact/vectors.npy (9,629 BEIR SciFact passages), the 809 train claims of
            /work/shared/data/scifact/queries_train.jsonl embedded here with the shipped model
  manpages  eval/data/retrieval-eval/vectors/vec-*.npy (100,006 man-page + distractor passages,
            float16), the 1,938 NAME-line queries of eval/data/retrieval-eval/data.json (test + train)

    python eval/bench_store.py                 # both corpora
    python eval/bench_store.py --corpora scifact

Prints a table; writes eval/results/bench_store.json (commit, machine).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sqlite3
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))

from bench_dense import recall_at  # noqa: E402
from provenance import provenance, write_results  # noqa: E402

SCIFACT = ROOT / "eval" / "data" / "scifact"
SHARED_SCIFACT = Path("/work/shared/data/scifact")
MANPAGES = ROOT / "eval" / "data" / "retrieval-eval"

# name -> write_store options (None: the float32 reference)
STORES = {
    "float32 (reference)": None,
    "float16": {"dtype": "float16"},
    "int8/vector": {"dtype": "int8", "scale": "vector"},
    "int8/dimension": {"dtype": "int8", "scale": "dimension"},
    "pca256-int8/dimension": {"dtype": "int8", "scale": "dimension", "pca_dim": 256},
    "pca192-int8/dimension": {"dtype": "int8", "scale": "dimension", "pca_dim": 192},
}


class Float32Store:
    """The exact vectors in RAM, behind VectorStore's scoring interface: the rescoring ceiling."""

    dtype = "float32"

    def __init__(self, x: np.ndarray):
        self.vectors = x
        self.scales = None

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def prepare(self, q):
        return np.ascontiguousarray(q, dtype=np.float32), np.zeros(len(q), np.float32)

    def gather(self, ids):
        return self.vectors[np.asarray(ids, dtype=np.int64)]

    def row_scales(self, ids):
        return None


def embed(texts: list[str]) -> tuple[np.ndarray, str]:
    from retrieval.dense import load_embedder

    emb = load_embedder(None, "cpu")
    t = time.time()
    q = emb.encode(texts)
    print(f"  embedded {len(texts)} queries in {time.time() - t:.1f}s", file=sys.stderr)
    return np.ascontiguousarray(q, dtype=np.float32), emb.model_id


def load_scifact():
    x = np.ascontiguousarray(np.load(SCIFACT / "vectors.npy"), dtype=np.float32)
    with open(SHARED_SCIFACT / "queries_train.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    qrels: dict[str, dict[str, int]] = {}
    with open(SHARED_SCIFACT / "qrels" / "train.tsv", encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            if int(r["score"]) > 0:
                qrels.setdefault(r["query-id"], {})[r["corpus-id"]] = int(r["score"])
    q, model = embed([r["text"] for r in rows])
    # passage -> SciFact document id, from the SciFact index these vectors were cached from
    doc_of = None
    gen = (SCIFACT / "index" / "CURRENT").read_text().strip() if (SCIFACT / "index" / "CURRENT").is_file() else None
    db = SCIFACT / "index" / gen / "meta.sqlite" if gen else None
    if db and db.is_file():
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        got = con.execute("SELECT p.id, d.ext_id FROM passages p JOIN documents d ON d.id = p.doc_id ORDER BY p.id").fetchall()
        if len(got) == len(x) and [i for i, _ in got] == list(range(len(x))):
            doc_of = np.array([e for _, e in got], dtype=object)
    info = {"vectors": str(SCIFACT / "vectors.npy"), "queries": str(SHARED_SCIFACT / "queries_train.jsonl"),
            "n_queries": len(rows), "ndcg": doc_of is not None}
    return x, q, model, info, {"qids": [r["_id"] for r in rows], "qrels": qrels, "doc_of": doc_of}


def load_manpages():
    parts = sorted((MANPAGES / "vectors").glob("vec-*.npy"))
    if not parts:
        raise FileNotFoundError(f"{MANPAGES / 'vectors'}: no vec-*.npy")
    x = np.concatenate([np.load(p).astype(np.float32) for p in parts])
    x /= np.linalg.norm(x, axis=1, keepdims=True)  # float16 files: back to unit length
    data = json.loads((MANPAGES / "data.json").read_text())
    texts = [r["text"] for r in data["test"] + data["train"]]
    q, model = embed(texts)
    info = {"vectors": f"{MANPAGES / 'vectors'}/vec-*.npy ({len(parts)} files, float16)",
            "queries": "data.json test + train NAME lines", "n_queries": len(texts), "ndcg": False}
    return x, q, model, info, None


def ndcg_at10(ids: np.ndarray, scores: np.ndarray, judged: dict) -> float:
    """Mean document-level nDCG@10 (a document's score is its best passage's)."""
    out = []
    for qid, row, srow in zip(judged["qids"], ids, scores):
        rel = judged["qrels"].get(qid)
        if not rel:
            continue
        docs: list[str] = []
        for i in row[row >= 0]:
            d = judged["doc_of"][i]
            if d not in docs:  # rows are sorted by score: first seen is the best passage
                docs.append(d)
            if len(docs) == 10:
                break
        dcg = sum(rel.get(d, 0) / np.log2(r + 2) for r, d in enumerate(docs))
        ideal = sum(g / np.log2(r + 2) for r, g in enumerate(sorted(rel.values(), reverse=True)[:10]))
        out.append(dcg / ideal)
    return float(np.mean(out))


def recipe_file(name: str, tmp: Path, n: int) -> str:
    """The shipped recipe, as a path; with its min_vectors lowered when the corpus is below it (the
    comparison wants the recipe's first stage, not the flat fallback)."""
    from retrieval.dense import load_recipe

    r = load_recipe(name)
    if n >= int(r.get("min_vectors", 0)):
        return name
    data = tomllib.loads(Path(r["path"]).read_text())
    lines = ["[dense]"]
    for k, v in {**data["dense"], "min_vectors": 1000}.items():
        lines.append(f"{k} = {json.dumps(v)}")
    p = tmp / f"{name}.toml"
    p.write_text("\n".join(lines) + "\n")
    return str(p)


def run_corpus(name: str, x, q, judged, args, work: Path) -> dict:
    import faiss

    from retrieval.dense import DenseIndex, build_from_vectors
    from retrieval.dense.vectors import Rescorer, VectorStore, write_store

    n, d = x.shape
    flat = faiss.IndexFlatIP(d)
    flat.add(x)
    _, truth = flat.search(q, 10)
    out = {"n": n, "dim": d, "n_queries": len(q), "recipes": {}}
    if judged and judged["doc_of"] is not None:
        s50, i50 = flat.search(q, 50)
        out["flat_float32_ndcg@10"] = round(ndcg_at10(i50, s50, judged), 4)
    for recipe in args.recipes:
        rdir = work / name / recipe
        t0 = time.time()
        section = build_from_vectors(x, rdir, recipe_file(recipe, work, n), device="cpu", quiet=True)
        print(f"  {name}/{recipe}: {section['factory']} built in {time.time() - t0:.1f}s", file=sys.stderr)
        index = DenseIndex.open(rdir, section, device="cpu")
        stores = {}
        for sname, opts in STORES.items():
            if opts is None:
                stores[sname] = (Float32Store(x), d * 4.0, None)
                continue
            sdir = rdir / ("store-" + sname.replace("/", "-"))
            sdir.mkdir()
            t = time.time()
            spec = write_store(x, sdir, **opts)
            write_s = time.time() - t
            nbytes = sum((sdir / f).stat().st_size for f in spec["files"])
            stores[sname] = (VectorStore(sdir, spec, n, d), nbytes / n, {**spec, "write_s": round(write_s, 2)})
        # the candidates the first stage hands to rescoring, at the recipe's defaults
        kc = min(10 * int(index.params.get("rescore_multiplier", 1)), n)
        _, cand = index.index.search(index.codec.encode(q), kc)
        cand = cand.astype(np.int64)
        rows = {s: {"store_bytes_per_vector": round(b, 2), "spec": spec, "qps": 0.0, "rescore_qps": 0.0}
                for s, (_, b, spec) in stores.items()}
        for _ in range(args.repeat):  # stores in turn within each repeat: load drift hits them alike
            for sname, (store, _, _) in stores.items():
                index.store, index.rescorer = store, Rescorer(store)
                t = time.perf_counter()
                _, ids = index.search(q, 10)
                rows[sname]["qps"] = max(rows[sname]["qps"], round(len(q) / (time.perf_counter() - t), 1))
                rows[sname]["recall@10"] = round(recall_at(ids, truth), 4)
                t = time.perf_counter()
                index.rescorer(q, cand, 10)
                rows[sname]["rescore_qps"] = max(rows[sname]["rescore_qps"], round(len(q) / (time.perf_counter() - t), 1))
        if judged and judged["doc_of"] is not None:
            for sname, (store, _, _) in stores.items():
                index.store, index.rescorer = store, Rescorer(store)
                s50, i50 = index.search(q, 50)
                rows[sname]["ndcg@10"] = round(ndcg_at10(i50, s50, judged), 4)
        # the first stage alone (no rescoring), for scale
        t = time.perf_counter()
        _, ids = index.search(q, 10, rescore=False)
        raw = {"recall@10": round(recall_at(ids, truth), 4), "qps": round(len(q) / (time.perf_counter() - t), 1)}
        out["recipes"][recipe] = {"factory": section["factory"], "params": section["params"],
                                  "index_file_bytes_per_vector": section["index_bytes_per_vector"],
                                  "candidates": kc, "first_stage_only": raw, "stores": rows}
    return out


def report(r: dict) -> None:
    m = r["machine"]
    for cname, c in r["corpora"].items():
        print(f"\n## Rescoring stores, {cname}: {c['n']:,} real vectors (dim {c['dim']}), {c['n_queries']} real queries "
              f"({r['model']}; CPU {r['threads']} threads, {m['cpu']}; commit {r['commit']}"
              f"{' +edits' if r.get('commit_dirty') else ''})\n")
        if "flat_float32_ndcg@10" in c:
            print(f"exact flat float32: nDCG@10 {c['flat_float32_ndcg@10']}\n")
        nd = any("ndcg@10" in s for rr in c["recipes"].values() for s in rr["stores"].values())
        print("| recipe | first stage | store | store B/vec | recall@10 vs flat | d recall vs float16 |"
              + (" nDCG@10 |" if nd else "") + " QPS | rescore-only QPS |")
        print("|---|---|---|---|---|---|" + ("---|" if nd else "") + "---|---|")
        for rname, rr in c["recipes"].items():
            f16 = rr["stores"]["float16"]["recall@10"]
            fs = rr["first_stage_only"]
            print(f"| {rname} | {rr['factory']} (x{rr['params'].get('rescore_multiplier')}) | none (first stage only) | | "
                  f"{fs['recall@10']:.4f} | |" + (" |" if nd else "") + f" {fs['qps']:,.0f} | |")
            for sname, s in rr["stores"].items():
                print(f"| {rname} | | {sname} | {s['store_bytes_per_vector']:.1f} | {s['recall@10']:.4f} | "
                      f"{s['recall@10'] - f16:+.4f} |" + (f" {s.get('ndcg@10', '')} |" if nd else "")
                      + f" {s['qps']:,.0f} | {s['rescore_qps']:,.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="*", default=["scifact", "manpages"], choices=["scifact", "manpages"])
    ap.add_argument("--recipes", nargs="*", default=["pq", "binary", "hnsw"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "eval" / "results" / "bench_store.json"))
    args = ap.parse_args()
    os.environ.setdefault("RTV_SILENT", "1")
    import faiss

    result = {**provenance(), "threads": faiss.omp_get_max_threads(), "faiss": faiss.__version__,
              "stores": {k: v for k, v in STORES.items()}, "corpora": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for cname in args.corpora:
            x, q, model, info, judged = (load_scifact if cname == "scifact" else load_manpages)()
            result["model"] = model
            print(f"{cname}: {len(x):,} vectors, {len(q)} queries", file=sys.stderr)
            result["corpora"][cname] = {**info, **run_corpus(cname, x, q, judged, args, Path(tmp))}
            write_results(Path(args.out), result)  # after each corpus
    report(result)


if __name__ == "__main__":
    main()
