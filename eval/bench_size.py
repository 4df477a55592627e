"""Index size per part, in bytes per corpus byte: today's layout (format 3) next to the previous
one (format 2) and infini-gram mini's published 0.44x, side by side in one run.

Indexes measured (each built here by `Index.build`, parts as named):
- exact-only: the real-text benchmark corpus (eval/data/real-200mb.jsonl, `--mb` of it), SA rate 32.
- exact + lexical: the same corpus.
- full hybrid (exact + lexical + dense pq + rescoring store), recipe pq (the compressed dense part
  users get at scale), on two corpora: the first `--hybrid-mb` MB of the real-text corpus, embedded
  here on the CPU once (the vectors are cached under eval/data/bench-size/, keyed by the passages'
  text, so a re-run does not embed again), and the man-page retrieval corpus with its GPU-made
  embeddings (eval/data/retrieval-eval, built by eval/retrieval_eval.py --prepare). For each, the
  dense part is also rebuilt from the same vectors with each rescoring store of DENSE_LAYOUTS
  (today's int8 store among them), and the whole index's bytes per corpus byte given with each.

The previous layout (format 2) stored every passage's text in meta.sqlite and an FTS5 index with
that text as external content, and a float16 rescoring store. Its bytes are measured by writing
exactly those tables for the same passages (the same SQLite, page size and FTS5 tokenizer) and by
the float16 store's size (n x dim x 2 + the .npy header), not estimated.

Passage text now comes from the FM-index by byte range; the cost of that, per query of k=10
passages, is timed here next to reading the text from SQLite (the previous layout).

    python eval/bench_size.py --mb 200      # writes eval/results/bench_size.json and .png
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RTV_SILENT", "1")
RESULTS = ROOT / "eval" / "results"
WORK = ROOT / "eval" / "data" / "bench-size"
INFINIGRAM_MINI = 0.44  # infini-gram mini's index / text (its paper)
# the pq recipe's first stage with other rescoring stores (recipe [dense] tables over indexes/pq.toml)
DENSE_LAYOUTS = {
    "pq + int8 store (before)": {"store": "int8", "store_scale": "vector"},
    "pq + pq128x8 store": {"store": "pq", "store_pq_dims_per_code": 3},
    "pq + pq96x8 store": {"store": "pq", "store_pq_dims_per_code": 4},
    "pq + int4 store": {"store": "int4"},
    "pq, no store": {"store": "none"},
}


def corpus_subset(mb: int) -> Path:
    """The first `mb` MB of the real-text benchmark corpus (eval/real_corpus.py builds it)."""
    from real_corpus import build_corpus

    full = build_corpus(200)
    if mb >= 200:
        return full
    out = WORK / f"real-{mb}mb.jsonl"
    if not out.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        limit, total = mb * 1_000_000, 0
        with open(full, encoding="utf-8") as src, open(out.with_suffix(".tmp"), "w", encoding="utf-8") as dst:
            for line in src:
                if total >= limit:
                    break
                dst.write(line)
                total += len(json.loads(line)["text"].encode())
        out.with_suffix(".tmp").rename(out)
    return out


def format2_bytes(index) -> dict:
    """The previous layout's bytes for this index's passages: meta.sqlite with passage text and an
    external-content FTS5 index over it (as format 2 wrote it), and a float16 rescoring store."""
    tmp = WORK / "format2.sqlite"
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    db.execute("pragma journal_mode=off")
    db.execute("create table passages (id integer primary key, doc_id integer, start integer, [end] integer, text text)")
    db.execute("create index idx_passages_doc_id on passages(doc_id)")
    rows = ((r["id"], r["doc_id"], r["start"], r["end"], r["text"]) for r in index.iter_passages())
    db.executemany("insert into passages values (?, ?, ?, ?, ?)", rows)
    db.execute("create virtual table passages_fts using fts5(text, content='passages', content_rowid='id', "
               "tokenize='porter unicode61')")
    db.execute("insert into passages_fts(rowid, text) select id, text from passages")
    db.commit()
    db.execute("vacuum")
    pages = dict(db.execute("select name, sum(pgsize) from dbstat group by name").fetchall())
    db.close()
    lexical = sum(v for k, v in pages.items() if k.startswith("passages_fts"))
    passages = pages["passages"] + pages["idx_passages_doc_id"]
    tmp.unlink()
    dense = index.manifest.get("dense")
    store16 = 0 if not dense else dense["n_vectors"] * dense["dim"] * 2 + 128
    return {"passages_with_text": passages, "lexical_external_content": lexical, "float16_store": store16}


def text_fetch_ms(index, n_queries: int = 200, k: int = 10, seed: int = 0) -> dict:
    """Milliseconds to get the text of k random passages: from the FM-index (today) vs from a
    SQLite table holding the text (the previous layout), for the same passages."""
    rng = random.Random(seed)
    n = index.n_passages
    batches = [[rng.randrange(n) for _ in range(k)] for _ in range(n_queries)]
    tmp = WORK / "texts.sqlite"
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    db.execute("create table passages (id integer primary key, text text)")
    db.executemany("insert into passages values (?, ?)", ((r["id"], r["text"]) for r in index.iter_passages()))
    db.commit()

    def fm(ids):
        return [r["text"] for r in index.passages(ids)]

    def sql(ids):
        marks = ",".join("?" * len(ids))
        got = dict(db.execute(f"select id, text from passages where id in ({marks})", ids).fetchall())
        return [got[i] for i in ids]

    out = {}
    for name, fn in (("fm_index", fm), ("sqlite_text", sql)):
        for ids in batches[:20]:
            fn(ids)  # warm: pages in the cache, as on a serving machine
        t = time.perf_counter()
        for ids in batches:
            fn(ids)
        out[name] = round((time.perf_counter() - t) / n_queries * 1000, 3)
    assert all(fm(ids) == sql(ids) for ids in batches[:20]), "the two texts differ"
    db.close()
    tmp.unlink()
    return out


def measure(name: str, index, corpus_desc: str) -> dict:
    info = index.info()
    corpus = info["corpus_bytes"]
    new = {p: v["bytes"] for p, v in info["parts"].items()}
    row = {"index": name, "corpus": corpus_desc, "corpus_bytes": corpus, "documents": info["documents"],
           "passages": info["passages"], "parts": index.parts, "new_bytes": new,
           "new_ratio": round(sum(new.values()) / corpus, 4)}
    if "passages" in new:
        old = format2_bytes(index)
        old_parts = {"exact": new["exact"], "passages": old["passages_with_text"]}
        if "lexical" in new:
            old_parts["lexical"] = old["lexical_external_content"]
        if "dense" in new:
            dense = index.manifest["dense"]
            store = sum(dense["files"][f]["bytes"] for f in (dense.get("store") or {}).get("files", []))
            old_parts["dense"] = new["dense"] - store + (old["float16_store"] if store else 0)
        row["format2_bytes"] = old_parts
        row["format2_ratio"] = round(sum(old_parts.values()) / corpus, 4)
        row["text_fetch_ms_k10"] = text_fetch_ms(index)
    return row


def scifact_text_part(n_queries: int, warmup: int = 10) -> dict:
    """The text part on the retrieval benchmark: SciFact (eval/scifact_data.py) built twice from its
    cached passage vectors, rtv's default parts with and without `text`; sizes per part, and, the
    two indexes taking turns query by query (a shared machine's load weighs on both alike), hybrid
    p50 (k = 10, no rerank: the results' texts are fetched) and the fetch of the cross-encoder's
    passages alone (the fused top TOP_N_CPU of each query, one batched call)."""
    import scifact_data
    from precomputed import precomputed_vectors

    from retrieval.hybrid import search
    from retrieval.hybrid.rerank import TOP_N_CPU

    scifact_data.open_index().close()  # builds it (and caches the vectors) when missing
    vecs = np.load(scifact_data.DATA / "vectors.npy")
    texts = json.loads((scifact_data.DATA / "vector-texts.json").read_text())
    variants = {"without text part": "exact,lexical,dense", "with text part": "exact,lexical,dense,text"}
    opened, out = {}, {"dataset": "SciFact (5,183 abstracts), train claims", "variants": {},
                       "load_at_start": os.getloadavg()[0]}
    for i, (name, parts) in enumerate(variants.items()):
        with precomputed_vectors(vecs, texts, str(scifact_data.DATA / "vectors.npy")):
            opened[name] = idx = build(scifact_data.corpus_path(), WORK / f"scifact-{i}", parts=parts, device="cpu")
        info = idx.info()
        out["variants"][name] = {"parts": idx.parts, "index_bytes": info["index_bytes"],
                                 "index_ratio": info["index_ratio"],
                                 "part_bytes": {k: v["bytes"] for k, v in info["parts"].items()},
                                 "part_ratio": {k: v["per_corpus_byte"] for k, v in info["parts"].items()}}
    out["corpus_bytes"] = info["corpus_bytes"]
    queries = [q["text"] for q in scifact_data.queries()][:n_queries]
    a, b = opened.values()
    heads = [[h.passage_id for h in search(a, [q], mode="hybrid", k=TOP_N_CPU, rerank=False)[0]] for q in queries]
    for q, ids in zip(queries, heads):  # the same passages and the same text from both
        assert [p["text"] for p in a.passages(ids)] == [p["text"] for p in b.passages(ids)], q
        assert [(h.passage_id, h.text) for h in search(a, [q], mode="hybrid", k=10, rerank=False)[0]] == \
            [(h.passage_id, h.text) for h in search(b, [q], mode="hybrid", k=10, rerank=False)[0]], q
    lat = {name: {"hybrid": [], "fetch": []} for name in opened}
    for name, idx in opened.items():
        for q in queries[:warmup]:
            search(idx, [q], mode="hybrid", k=10, rerank=False)
    names = list(opened)
    for i, (q, ids) in enumerate(zip(queries, heads)):
        for name in names[i % 2:] + names[:i % 2]:  # the order alternates from query to query
            idx = opened[name]
            t = time.perf_counter()
            search(idx, [q], mode="hybrid", k=10, rerank=False)
            lat[name]["hybrid"].append(time.perf_counter() - t)
            t = time.perf_counter()
            idx.passages(ids)
            lat[name]["fetch"].append(time.perf_counter() - t)
    for name, l in lat.items():
        v = out["variants"][name]
        v["hybrid_p50_ms"] = round(float(np.percentile(l["hybrid"], 50)) * 1000, 3)
        v["hybrid_p90_ms"] = round(float(np.percentile(l["hybrid"], 90)) * 1000, 3)
        v[f"fetch_top{TOP_N_CPU}_p50_ms"] = round(float(np.percentile(l["fetch"], 50)) * 1000, 3)
    out.update(queries=len(queries), rerank_top_n=TOP_N_CPU, load_at_end=os.getloadavg()[0])
    for idx in opened.values():
        idx.close()
    return out


@contextmanager
def cached_embeddings(cache: Path, stand_in: np.ndarray | None = None):
    """While active, Index.build's passage embedding is looked up in `cache` (one .npy a call,
    named by the SHA-256 of the passages' text) and computed (then saved) only when missing. Yields
    the list of the vectors handed to the build, one array a call. With `stand_in`, nothing is
    embedded: the build gets its rows in order instead (real vectors of another corpus, for sizes:
    the dense part's bytes depend on the number of vectors, not on their values, but for the IVF
    lists' padding)."""
    import retrieval.dense.index as dense_index

    embed = dense_index.embed_passages
    cache.mkdir(parents=True, exist_ok=True)

    def lookup(texts, n, embedder):
        texts = list(texts)
        got.append(None)
        if stand_in is not None:
            at = sum(len(g) for g in got[:-1])
            if at + n > len(stand_in):
                sys.exit(f"{n} more passages than the {len(stand_in)} stand-in vectors; use a smaller --hybrid-mb")
            v = np.asarray(stand_in[at:at + n], dtype=np.float32)
            got[-1] = v / np.linalg.norm(v, axis=1, keepdims=True)
            return got[-1]
        digest = hashlib.sha256("\0".join(texts).encode("utf-8", "surrogatepass")).hexdigest()[:24]
        path = cache / f"{embedder.model_id.replace('/', '_')}-{n}-{digest}.npy"
        if path.is_file():
            print(f"  {n} passage vectors from {path}", file=sys.stderr)
            got[-1] = np.load(path)
            return got[-1]
        t = time.time()
        vecs = embed(texts, n, embedder)
        print(f"  embedded {n} passages in {time.time() - t:.0f}s (load {os.getloadavg()[0]:.1f}); "
              f"cached in {path}", file=sys.stderr)
        np.save(path.with_suffix(".tmp.npy"), vecs)
        path.with_suffix(".tmp.npy").rename(path)
        got[-1] = vecs
        return vecs

    got: list[np.ndarray] = []  # what each call returned, in passage order
    dense_index.embed_passages = lookup
    try:
        yield got
    finally:
        dense_index.embed_passages = embed


def dense_layouts(index, vecs: np.ndarray, corpus_bytes: int) -> dict:
    """The dense part rebuilt from the vectors `vecs` the index was built from, with each
    DENSE_LAYOUTS store behind the pq recipe's first stage: its bytes and the whole index's bytes
    per corpus byte with it."""
    from bench_ivf import write_recipe

    from retrieval.dense import build_from_vectors, load_recipe

    dense = index.dense
    vecs = np.asarray(vecs, dtype=np.float32)
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    others = sum(v["bytes"] for k, v in index.info()["parts"].items() if k != "dense")
    base = {k: v for k, v in load_recipe("pq").items() if k not in ("name", "description", "path")}
    base = {k: v for k, v in base.items() if not k.startswith("store")}
    out = {}
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        for i, (name, table) in enumerate(DENSE_LAYOUTS.items()):
            d = Path(tmp) / str(i)
            section = build_from_vectors(vecs, d, write_recipe(f"layout{i}", {**base, **table}, Path(tmp)),
                                         model_id=dense.section["model"], device="cpu", quiet=True)
            b = sum(f["bytes"] for f in section["files"].values())
            store = sum(section["files"][f]["bytes"] for f in (section["store"] or {}).get("files", []))
            out[name] = {"factory": section["factory"], "store": section["store"], "dense_bytes": b,
                         "dense_bytes_per_passage": round(b / dense.n, 1),
                         "store_bytes_per_passage": round(store / dense.n, 1),
                         "dense_ratio": round(b / corpus_bytes, 4),
                         "full_hybrid_ratio": round((others + b) / corpus_bytes, 4)}
            shutil.rmtree(d)
    return out


def manpage_vectors() -> np.ndarray:
    """The man-page retrieval set's GPU-made MiniLM vectors (float16 files), in passage order."""
    import retrieval_eval

    return np.concatenate([np.load(p) for p in sorted((retrieval_eval.DATA / "vectors").glob("vec-*.npy"))])


def build(src: Path, path: Path, **kw):
    from retrieval import Index

    t = time.time()
    idx = Index.build([src], path, overwrite=path.exists(), **kw)
    print(f"  built {path.name} in {time.time() - t:.1f}s", file=sys.stderr)
    return idx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200, help="MB of the real-text corpus for the exact indexes")
    ap.add_argument("--hybrid-mb", type=int, default=20,
                    help="MB of the real-text corpus for the full hybrid index (embedded on the CPU once, then cached)")
    ap.add_argument("--vectors", choices=("embed", "manpages"), default="embed",
                    help="hybrid-real's vectors: embed its passages (CPU, cached), or stand in the man-page "
                         "set's real MiniLM vectors, in order (sizes only: where embedding is not affordable)")
    ap.add_argument("--rows", default="exact,lexical,hybrid-real,hybrid-manpages",
                    help="indexes to build: exact, lexical (exact + lexical), hybrid-real, hybrid-manpages "
                         "(needs eval/data/retrieval-eval), scifact-text (SciFact with and without the text part)")
    ap.add_argument("--scifact-queries", type=int, default=300, help="scifact-text: claims timed")
    ap.add_argument("--no-hybrid", action="store_true", help="skip both full hybrid indexes")
    ap.add_argument("--out", default="bench_size.json", help="results file (a bare name: under eval/results/)")
    args = ap.parse_args()
    from provenance import provenance, write_results

    started = {**provenance(), "load_at_start": os.getloadavg()[0]}
    todo = set(args.rows.split(","))
    if args.no_hybrid:
        todo -= {"hybrid-real", "hybrid-manpages"}
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    if "exact" in todo:
        exact = build(corpus_subset(args.mb), WORK / "exact", parts="exact")
        rows.append(measure("exact-only", exact, f"real text, {args.mb} MB"))
        exact.close()
        shutil.rmtree(WORK / "exact")
    if "lexical" in todo:
        lexical = build(corpus_subset(args.mb), WORK / "lexical", parts="exact,lexical")
        rows.append(measure("exact + lexical", lexical, f"real text, {args.mb} MB"))
        lexical.close()
        shutil.rmtree(WORK / "lexical")
    if "hybrid-real" in todo:
        stand_in = manpage_vectors() if args.vectors == "manpages" else None
        with cached_embeddings(WORK / f"vectors-real-{args.hybrid_mb}mb", stand_in) as got:
            full = build(corpus_subset(args.hybrid_mb), WORK / "hybrid-real", parts="exact,lexical,dense",
                         recipe="pq", device="cpu")
        row = measure("full hybrid (dense pq)", full, f"real text, {args.hybrid_mb} MB")
        row["vectors"] = ("its own passages' embeddings" if stand_in is None else
                          "stand-in: the first n man-page passages' real MiniLM vectors (eval/data/retrieval-eval); "
                          "sizes are those of n vectors, quality is not measured here")
        row["dense_layouts"] = dense_layouts(full, np.concatenate(got), row["corpus_bytes"])
        rows.append(row)
        full.close()
        shutil.rmtree(WORK / "hybrid-real")
    scifact = scifact_text_part(args.scifact_queries) if "scifact-text" in todo else None
    if "hybrid-manpages" in todo:
        import retrieval_eval
        from precomputed import precomputed_vectors

        meta = json.loads((retrieval_eval.DATA / "data.json").read_text())
        vec_dir = retrieval_eval.DATA / "vectors"
        vecs = manpage_vectors()
        with precomputed_vectors(vecs, retrieval_eval.passage_texts(meta), str(vec_dir)):
            full = build(retrieval_eval.DATA / "corpus.jsonl", WORK / "hybrid", parts="exact,lexical,dense",
                         recipe="pq", passage_tokens=retrieval_eval.PASSAGE_TOKENS,
                         passage_overlap=retrieval_eval.PASSAGE_OVERLAP, device="cpu")
        row = measure("full hybrid (dense pq)", full, "man pages + real distractors (retrieval eval)")
        row["dense_layouts"] = dense_layouts(full, vecs, row["corpus_bytes"])
        rows.append(row)
        full.close()
        shutil.rmtree(WORK / "hybrid")

    print(f"\n{'index':<24}{'part':<10}{'format 2':>10}{'format 3':>10}   (bytes per corpus byte)")
    for r in rows:
        c = r["corpus_bytes"]
        old = r.get("format2_bytes")  # format 2 had no exact-only index (its smallest held passages + FTS)
        for part, b in r["new_bytes"].items():
            was = f"{old[part] / c:>10.3f}" if old else f"{'-':>10}"
            print(f"{r['index']:<24}{part:<10}{was}{b / c:>10.3f}")
        was = f"{r['format2_ratio']:>10.3f}" if old else f"{'-':>10}"
        print(f"{r['index']:<24}{'total':<10}{was}{r['new_ratio']:>10.3f}")
        if "text_fetch_ms_k10" in r:
            t = r["text_fetch_ms_k10"]
            print(f"{'':<24}text of 10 passages: FM-index {t['fm_index']:.2f} ms, SQLite {t['sqlite_text']:.2f} ms")
        for name, lay in r.get("dense_layouts", {}).items():
            print(f"{'':<24}{name:<28} dense {lay['dense_bytes_per_passage']:>6} B/passage "
                  f"(store {lay['store_bytes_per_passage']:>5})  dense {lay['dense_ratio']:.3f}x  "
                  f"whole index {lay['full_hybrid_ratio']:.3f}x")
    print(f"infini-gram mini: {INFINIGRAM_MINI}x")
    if scifact:
        top = scifact["rerank_top_n"]
        print(f"\nSciFact, {scifact['queries']} queries, the two indexes in turn (load {scifact['load_at_start']:.1f} -> "
              f"{scifact['load_at_end']:.1f}):")
        for name, v in scifact["variants"].items():
            print(f"  {name:<18} {v['index_ratio']:.4f}x ({', '.join(f'{k} {r:.4f}' for k, r in v['part_ratio'].items())})"
                  f"  hybrid p50 {v['hybrid_p50_ms']:.2f} ms  text of the top {top} p50 "
                  f"{v[f'fetch_top{top}_p50_ms']:.3f} ms")
    out = {**started, "load_at_end": os.getloadavg()[0], "mb": args.mb, "hybrid_mb": args.hybrid_mb,
           "infini_gram_mini_ratio": INFINIGRAM_MINI, "rows": rows, "scifact_text_part": scifact, "command": " ".join(["python"] + sys.argv)}
    path = write_results(args.out, out)
    if rows:
        plot(rows, path.with_suffix(".png"))
        print(f"wrote {path.with_suffix('.png')}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"exact": "#4c72b0", "passages": "#dd8452", "lexical": "#55a868", "dense": "#c44e52"}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels, x = [], 0
    for r in rows:
        for layout, key in (("format 2", "format2_bytes"), ("format 3", "new_bytes")):
            parts = r.get(key)
            if parts is None:
                continue
            bottom = 0.0
            for part, b in parts.items():
                v = b / r["corpus_bytes"]
                ax.bar(x, v, bottom=bottom, color=colors[part], label=part if part not in ax.get_legend_handles_labels()[1] else None)
                bottom += v
            ax.text(x, bottom + 0.02, f"{bottom:.2f}", ha="center", fontsize=8)
            labels.append(f"{r['index']}\n{layout}")
            x += 1
    ax.axhline(INFINIGRAM_MINI, color="gray", ls=":", lw=1)
    ax.text(x - 0.5, INFINIGRAM_MINI + 0.02, "infini-gram mini 0.44x", ha="right", fontsize=8, color="gray")
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("bytes per corpus byte")
    ax.set_title("rtv index size by part")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
