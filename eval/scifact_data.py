"""BEIR SciFact (training split) for eval/retrieval_eval.py: a real benchmark nobody here wrote.

The data lives beside the project in ../shared/data/scifact (BEIR's corpus, byte-identical, with
the 809 training claims and their 919 judgments; see its README). The usual BEIR protocol: title
and text indexed as one field, all 5,183 abstracts searched, nDCG@10 and recall@100 per document
(a document's score is its best passage's).

The index is built by rtv's own pipeline with its default settings (`Index.build`: default
passages, default dense recipe, the shipped all-MiniLM-L6-v2), so the numbers are what a user
gets from `rtv index corpus.jsonl`. Embedding ~8,600 passages takes some minutes on a 2-core CPU;
the index is cached under eval/data/scifact/.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "scifact"
DATA = ROOT / "eval" / "data" / "scifact"


def _check_source() -> None:
    for name in ("corpus.jsonl", "queries_train.jsonl", "qrels/train.tsv"):
        if not (SHARED / name).is_file():
            sys.exit(f"{SHARED / name}: missing; SciFact is expected in ../shared/data/scifact (see its README)")


def corpus_path() -> Path:
    """corpus.jsonl with {"_id", "text": title + text} (BEIR indexes both as one field)."""
    _check_source()
    out = DATA / "corpus.jsonl"
    if out.exists():
        return out
    DATA.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with open(SHARED / "corpus.jsonl", encoding="utf-8") as src, open(tmp, "w", encoding="utf-8") as dst:
        for line in src:
            d = json.loads(line)
            text = f"{d['title']}\n{d['text']}" if d.get("title") else d["text"]
            dst.write(json.dumps({"_id": d["_id"], "text": text}, ensure_ascii=False) + "\n")
    tmp.rename(out)
    return out


def queries() -> list[dict]:
    """The training claims that have judgments, as [{"qid", "text"}] in file order."""
    judged = qrels()
    out = []
    with open(SHARED / "queries_train.jsonl", encoding="utf-8") as f:
        for line in f:
            q = json.loads(line)
            if q["_id"] in judged:
                out.append({"qid": q["_id"], "text": q["text"]})
    return out


def qrels() -> dict[str, dict[str, int]]:
    _check_source()
    out: dict[str, dict[str, int]] = {}
    with open(SHARED / "qrels" / "train.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if int(row["score"]) > 0:
                out.setdefault(row["query-id"], {})[row["corpus-id"]] = int(row["score"])
    return out


def open_index():
    """The SciFact index, built once with rtv's defaults (dense on, ids from the corpus's `_id`).

    The passage embeddings are cached in vectors.npy (with the passages they belong to): a rebuild
    (e.g. after an index format change) reuses them when the passages are the same, instead of
    embedding again for minutes. Any difference in the passages means embedding afresh."""
    sys.path.insert(0, str(ROOT / "src"))
    sys.path.insert(0, str(ROOT / "eval"))
    import numpy as np

    from retrieval import Index
    from retrieval.errors import IndexFormatError

    path = DATA / "index"
    try:
        return Index.open(path, verify=False)
    except IndexFormatError as exc:
        if path.exists():
            print(f"rebuilding the SciFact index ({exc})", file=sys.stderr)
    vec_file, texts_file = DATA / "vectors.npy", DATA / "vector-texts.json"
    build = dict(dense=True, device="cpu", overwrite=path.exists())
    if vec_file.exists() and texts_file.exists():
        from precomputed import precomputed_vectors

        print(f"building the SciFact index at {path} from the cached vectors {vec_file}", file=sys.stderr)
        with precomputed_vectors(np.load(vec_file), json.loads(texts_file.read_text()), str(vec_file)):
            index = Index.build([corpus_path()], path, **build)
    else:
        print(f"building the SciFact index at {path} (embeds every passage on this CPU: minutes)", file=sys.stderr)
        index = Index.build([corpus_path()], path, **build)
    if not vec_file.exists():
        texts = [r["text"] for r in index.iter_passages()]
        flat = index.dense.index  # the default recipe for this size is flat: it holds the vectors
        np.save(vec_file, flat.reconstruct_n(0, flat.ntotal))
        texts_file.write_text(json.dumps(texts))
    return index


if __name__ == "__main__":
    idx = open_index()
    print(json.dumps({"documents": idx.n_documents, "passages": idx.store.n_passages,
                      "queries": len(queries()), "judgments": sum(map(len, qrels().values()))}))
