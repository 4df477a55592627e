"""The lexical part's size against its ranking (issue 8, the next lever after the dense store): the
FTS5 index rtv writes (contentless, detail=full: positions kept) next to FTS5's smaller layouts, on
the SciFact passages (eval/data/scifact/index) and the 809 SciFact train claims.

- detail=full, the SQLite page size rtv uses and 64 KiB pages (fewer, fuller b-tree pages);
- detail=column (no positions: phrase queries and the within-column term frequency are gone, so
  bm25() counts a term once per passage; on a contentless table, as rtv's is, it returns 0 for
  every row: FTS5 cannot count a phrase's instances there) and detail=none (rowids only). FTS5 refuses a query with a
  phrase there, and rtv's queries quote every token: one that FTS5's tokenizer splits in two is a
  phrase (such queries are counted as refused, with no results).

For each: the FTS5 tables' bytes (dbstat, after 'optimize' and VACUUM, as rtv's build does), the
ratio to the corpus, lexical nDCG@10 (documents scored by their best passage, depth 100), and how
many of the 809 queries get the same top 100 (ids and order) and the same BM25 scores (1e-9) as
rtv's layout. BM25 itself is FTS5's bm25() in every case.

    python eval/bench_fts5.py

Prints a table; writes eval/results/bench_fts5.json.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))
os.environ.setdefault("RTV_SILENT", "1")

from provenance import provenance, write_results  # noqa: E402

# name -> (SQLite page size, FTS5 options after the tokenizer, FTS5 leaf page size 'pgsz')
LAYOUTS = {
    "rtv: detail=full (positions)": (None, "", None),
    "detail=full, 64 KiB pages": (65536, "", 64000),
    "detail=column": (None, ", detail=column", None),
    "detail=none": (None, ", detail=none", None),
}
DEPTH = 100


def build(path: Path, texts: list[tuple[int, str]], page_size: int | None, options: str, pgsz: int | None) -> int:
    """An FTS5 table as rtv's store writes it (contentless, porter unicode61) with `options`;
    returns the bytes of its tables."""
    db = sqlite3.connect(path)
    if page_size:
        db.execute(f"pragma page_size={page_size}")
    db.execute("pragma journal_mode=off")
    db.execute(f"create virtual table fts using fts5(text, content='', tokenize='porter unicode61'{options})")
    if pgsz:
        db.execute("insert into fts(fts, rank) values ('pgsz', ?)", [pgsz])
    db.executemany("insert into fts(rowid, text) values (?, ?)", texts)
    db.execute("insert into fts(fts) values ('optimize')")
    db.commit()
    db.execute("vacuum")
    size = db.execute("select sum(pgsize) from dbstat where name like 'fts%'").fetchone()[0]
    db.close()
    return int(size)


def main() -> None:
    import scifact_data
    from ranx import Qrels, Run, evaluate
    from retrieval_eval import Passages, fold

    from retrieval.hybrid.lexical import fts_query

    index = scifact_data.open_index()
    queries, qrels = scifact_data.queries(), scifact_data.qrels()
    P = Passages(index)
    texts = list(enumerate(P.texts))  # passage ids are 0..n-1 (Passages checks it)
    corpus = index.info()["corpus_bytes"]
    rtv_lexical = index.info()["parts"]["lexical"]["bytes"]
    judged = Qrels({q["qid"]: qrels[q["qid"]] for q in queries})
    out = {**provenance(), "load_at_start": os.getloadavg()[0], "dataset": "SciFact (9,629 passages), 809 train claims",
           "corpus_bytes": corpus, "rtv_index_lexical_bytes": rtv_lexical, "depth": DEPTH, "layouts": {}}
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (page, opts, pgsz)) in enumerate(LAYOUTS.items()):
            path = Path(tmp) / f"{i}.sqlite"
            t = time.time()
            size = build(path, texts, page, opts, pgsz)
            build_s = time.time() - t
            db = sqlite3.connect(path)
            ranked, refused = {}, 0
            t = time.perf_counter()
            for q in queries:
                try:
                    ranked[q["qid"]] = db.execute("select rowid, bm25(fts) from fts where fts match ? order by rank limit ?",
                                                  [fts_query(q["text"]), DEPTH]).fetchall()
                except sqlite3.OperationalError:  # detail != full: a token FTS5 splits in two is a phrase
                    ranked[q["qid"]], refused = [], refused + 1
            query_ms = (time.perf_counter() - t) / len(queries) * 1000
            db.close()
            run = {qid: fold([(pid, -s) for pid, s in rows], P.doc_of) or {"-": 0.0} for qid, rows in ranked.items()}
            reference = reference or ranked
            same_order = sum([p for p, _ in ranked[k]] == [p for p, _ in reference[k]] for k in ranked)
            same_scores = sum(len(ranked[k]) == len(reference[k]) and
                              all(a[0] == b[0] and abs(a[1] - b[1]) <= 1e-9 for a, b in zip(ranked[k], reference[k]))
                              for k in ranked)
            row = {"bytes": size, "ratio": round(size / corpus, 4), "build_s": round(build_s, 2),
                   "lexical_ndcg@10": round(float(evaluate(judged, Run(run), "ndcg@10")), 4),
                   "queries_same_top100": same_order, "queries_same_scores": same_scores,
                   "queries_refused": refused,
                   "mean_query_ms": round(query_ms, 3)}
            out["layouts"][name] = row
            print(f"{name}: {row}", file=sys.stderr, flush=True)
    out["load_at_end"] = os.getloadavg()[0]
    print(f"\nSciFact, {len(texts)} passages, corpus {corpus} B (rtv's lexical part in the index: {rtv_lexical} B)")
    print(f"{'layout':<32}{'bytes':>10}{'x corpus':>9}{'nDCG@10':>9}{'same top100':>12}{'same scores':>12}"
          f"{'refused':>8}{'ms/query':>9}")
    for name, r in out["layouts"].items():
        print(f"{name:<32}{r['bytes']:>10}{r['ratio']:>9}{r['lexical_ndcg@10']:>9}{r['queries_same_top100']:>12}"
              f"{r['queries_same_scores']:>12}{r['queries_refused']:>8}{r['mean_query_ms']:>9}")
    write_results("bench_fts5.json", out)


if __name__ == "__main__":
    main()
