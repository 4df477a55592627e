"""The torch-free query embedder (dense/embedder.py ExportedEmbedder: ONNX Runtime / OpenVINO) against
sentence-transformers (torch), the embedder the SciFact index's vectors were built with, in one run:

- the 809 judged SciFact training claims embedded both ways: max |difference|, least cosine;
- dense retrieval with each set of query vectors over the SciFact index (9,629 passages): are the
  top 10 and top 100 passage ids identical (and in the same order), largest score difference;
  hybrid (dense + lexical, no rerank) top 10 documents through rtv's own search with each embedder;
- 500 of the index's own passages embedded by the exported model against the vectors stored in the
  index (built by sentence-transformers): query vectors must live in the corpus's space;
- per-query embedding time (one query a call, p50) and the load time in this process.

    python eval/bench_query_embedder.py        # -> eval/results/bench_query_embedder.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from provenance import provenance, write_results  # noqa: E402
from scifact_data import DATA, open_index, queries  # noqa: E402


def load() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def per_query_ms(embedder, texts: list[str]) -> float:
    times = []
    for t in texts:
        start = time.perf_counter()
        embedder.encode([t], progress=False)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 2)


def compare(index, ref: np.ndarray, got: np.ndarray) -> dict:
    out = {"max_abs_diff": float(np.abs(got - ref).max()), "min_cosine": float((got * ref).sum(axis=1).min())}
    for k in (10, 100):
        s_ref, i_ref = index.dense.search(ref, k)
        s_got, i_got = index.dense.search(got, k)
        same = (i_ref == i_got).all(axis=1)
        out[f"top{k}_identical_queries"] = int(same.sum())
        out[f"top{k}_max_score_diff"] = float(np.abs(s_ref - s_got).max())
    return out


def hybrid_docs(index, embedder, texts: list[str]) -> list[list[int]]:
    index.dense.embedder = embedder
    return [[h.doc_id for h in index.search(t, k=10, mode="hybrid", rerank=False)] for t in texts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=500, help="index passages re-embedded and compared")
    ap.add_argument("--timed", type=int, default=100, help="queries timed one at a time")
    args = ap.parse_args()
    from retrieval.dense.embedder import DEFAULT_MODEL_ID, ExportedEmbedder, default_model_dir, load_embedder

    measured = provenance()
    load_before = load()
    index = open_index()
    texts = [q["text"] for q in queries()]
    t = time.perf_counter()
    st = load_embedder(None, "cpu")
    loads = {"sentence-transformers": round(time.perf_counter() - t, 3)}
    runtimes = [r for r in ("onnxruntime", "openvino") if __import__("importlib").util.find_spec(r)]
    exported = {}
    for r in runtimes:
        t = time.perf_counter()
        exported[r] = ExportedEmbedder(default_model_dir(), DEFAULT_MODEL_ID, runtime=r)
        loads[r] = round(time.perf_counter() - t, 3)
    ref = st.encode(texts, progress=False)
    stored = np.load(DATA / "vectors.npy", mmap_mode="r")
    passage_texts = json.loads((DATA / "vector-texts.json").read_text())
    pick = np.random.default_rng(0).choice(len(passage_texts), min(args.passages, len(passage_texts)), replace=False)
    pick.sort()
    hybrid_ref = hybrid_docs(index, st, texts)
    rows = {}
    for r, emb in exported.items():
        got = emb.encode(texts, progress=False)
        row = compare(index, ref, got)
        pv = emb.encode([passage_texts[i] for i in pick], progress=False)
        row["passages_vs_index_vectors"] = {"passages": len(pick), "max_abs_diff": float(np.abs(pv - stored[pick]).max()),
                                            "min_cosine": float((pv * stored[pick]).sum(axis=1).min())}
        hyb = hybrid_docs(index, emb, texts)
        row["hybrid_top10_identical_queries"] = sum(a == b for a, b in zip(hyb, hybrid_ref))
        row["per_query_ms_p50"] = per_query_ms(emb, texts[:args.timed])
        rows[r] = row
    st_ms = per_query_ms(st, texts[:args.timed])
    print(f"SciFact: {len(texts)} queries, {index.dense.n} passages; load {load_before} -> {load()}")
    print(f"{'embedder':<22}{'max|diff|':>11}{'min cos':>11}{'top10 same':>12}{'top100 same':>13}"
          f"{'hybrid same':>13}{'passages max|diff|':>20}{'ms/query':>10}{'load s':>8}")
    print(f"{'sentence-transformers':<22}{'':>11}{'':>11}{'':>12}{'':>13}{'':>13}{'':>20}{st_ms:>10.2f}"
          f"{loads['sentence-transformers']:>8.3f}")
    for r, row in rows.items():
        print(f"{r:<22}{row['max_abs_diff']:>11.2e}{row['min_cosine']:>11.7f}{row['top10_identical_queries']:>12}"
              f"{row['top100_identical_queries']:>13}{row['hybrid_top10_identical_queries']:>13}"
              f"{row['passages_vs_index_vectors']['max_abs_diff']:>20.2e}{row['per_query_ms_p50']:>10.2f}{loads[r]:>8.3f}")
    write_results("bench_query_embedder.json", {
        **measured, "load_before": load_before, "load_after": load(),
        "settings": {"index": str(DATA / "index"), "queries": len(texts), "passages": index.dense.n,
                     "model": DEFAULT_MODEL_ID, "timed_queries": args.timed, "threads": "all cores (2)"},
        "peer": {"sentence-transformers": {"per_query_ms_p50": st_ms, "load_s": loads["sentence-transformers"]}},
        "exported": {r: {**row, "load_s": loads[r]} for r, row in rows.items()},
        "command": " ".join(["python"] + sys.argv)})


if __name__ == "__main__":
    main()
