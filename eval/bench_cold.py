"""Cold and warm latency of each command, in one run: a new `rtv` process per command as a user
types them (cold: Python start, imports, index open, model load, the query), and the same call
repeated inside one process that has everything open (warm). Then where a cold dense query's time
goes: `python -X importtime` of that command (the heavy modules' cumulative import time) and the
steps of a fresh process (imports, Index.open, FAISS, the query embedder, first and second search).
The dense and hybrid rows are measured twice: with the torch-free query embedder (the default) and,
in the same run, with sentence-transformers (RTV_QUERY_EMBEDDER=torch: the query path before).

The OS page cache is warm in both cases (the machine is shared: caches are not dropped); `uptime`'s
load is recorded before and after.

    flock /tmp/rtv-bench.lock python eval/bench_cold.py          # -> eval/results/bench_cold.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from provenance import provenance, write_results  # noqa: E402

RTV = [sys.executable, "-m", "rtv_cli.main"]
HEAVY = ["torch", "sentence_transformers", "transformers", "faiss", "sklearn", "scipy", "onnxruntime",
         "openvino", "tokenizers", "numpy", "sqlite_utils", "retrieval", "rtv_cli"]


def load() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def commands(index: str, query: str, word: str, reranker: str | None) -> dict[str, list[str]]:
    cases = {
        "count": ["count", index, word],
        "find": ["find", index, word, "--limit", "10"],
        "query lexical": ["query", index, query, "--mode", "lexical"],
        "query exact": ["query", index, word, "--mode", "exact"],
        "query dense": ["query", index, query, "--mode", "dense"],
        "query hybrid (no rerank)": ["query", index, query, "--no-rerank"],
    }
    if reranker:
        cases["query hybrid + rerank"] = ["query", index, query, "--reranker", reranker]
    for name in ("query dense", "query hybrid (no rerank)"):  # the same commands, queries embedded as before
        cases[name + BEFORE] = cases[name]
    return cases


# rows measured with the query embedder of before (sentence-transformers with torch, forced by
# RTV_QUERY_EMBEDDER=torch) in the same run as the torch-free one (ONNX Runtime / OpenVINO)
BEFORE = " [before: torch query embedder]"


def env_for(name: str) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", **({"RTV_QUERY_EMBEDDER": "torch"} if name.endswith(BEFORE) else {})}


def warm_calls(idx, query: str, word: str, reranker, before_idx):
    from retrieval.hybrid.rerank import Reranker

    rr = Reranker(reranker) if reranker else None
    calls = {
        "count": lambda: idx.count(word),
        "find": lambda: idx.find(word, limit=10),
        "query lexical": lambda: idx.search(query, mode="lexical"),
        "query exact": lambda: idx.search(word, mode="exact"),
        "query dense": lambda: idx.search(query, mode="dense"),
        "query hybrid (no rerank)": lambda: idx.search(query, rerank=False),
        **({"query hybrid + rerank": lambda: idx.search(query, reranker=rr)} if rr else {}),
    }
    calls["query dense" + BEFORE] = lambda: before_idx.search(query, mode="dense")
    calls["query hybrid (no rerank)" + BEFORE] = lambda: before_idx.search(query, rerank=False)
    return calls


def cold(cases: dict, repeat: int) -> dict:
    out = {}
    for name, args in cases.items():
        env = env_for(name)
        subprocess.run(RTV + args + ["--silent"], capture_output=True, env=env)  # any first-time export
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            r = subprocess.run(RTV + args + ["--silent"], capture_output=True, text=True, env=env)
            times.append(time.perf_counter() - t)
            if r.returncode:
                sys.exit(f"rtv {' '.join(args)}: {r.stderr.strip()}")
        out[name] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                     "runs_s": [round(t, 3) for t in times]}
    return out


def warm(index: str, query: str, word: str, reranker: str | None, repeat: int) -> dict:
    from retrieval import Index

    idx = Index.open(index)
    before_idx = Index.open(index)
    out = {}
    for name, fn in warm_calls(idx, query, word, reranker, before_idx).items():
        os.environ.pop("RTV_QUERY_EMBEDDER", None)
        if name.endswith(BEFORE):
            os.environ["RTV_QUERY_EMBEDDER"] = "torch"  # read when before_idx loads its query embedder
        fn()  # opens what the command needs (model, FAISS index, reranker)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = {"median_ms": round(statistics.median(times) * 1000, 2), "min_ms": round(min(times) * 1000, 2)}
    os.environ.pop("RTV_QUERY_EMBEDDER", None)
    idx.close()
    before_idx.close()
    return out


def importtime(args: list[str], env: dict) -> dict:
    """Cumulative import time (ms) of the heavy top-level modules in one cold run of `args`."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "rtv_cli.main", *args, "--silent"],
                       capture_output=True, text=True, env=env)
    got = {}
    for line in r.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|", 2)
        name = name.rstrip()
        if name.strip() in HEAVY and name.strip() not in got:
            try:
                got[name.strip()] = round(int(cumulative) / 1000, 1)
            except ValueError:
                pass
    return got


STEPS = """
import json, sys, time
t0 = time.perf_counter(); steps = {}
import retrieval
from retrieval import Index
steps["import retrieval"] = time.perf_counter() - t0; t = time.perf_counter()
idx = Index.open(sys.argv[1])
steps["Index.open"] = time.perf_counter() - t; t = time.perf_counter()
idx.dense
steps["dense part open (FAISS import + read)"] = time.perf_counter() - t; t = time.perf_counter()
steps["query embedder"] = repr(idx.dense.embedder)
steps["query embedder load"] = time.perf_counter() - t; t = time.perf_counter()
idx.search(sys.argv[2], mode="dense")
steps["first dense search"] = time.perf_counter() - t; t = time.perf_counter()
idx.search(sys.argv[2], mode="dense")
steps["second dense search"] = time.perf_counter() - t
steps["torch imported"] = "torch" in sys.modules
print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in steps.items()}))
"""


def dense_steps(index: str, query: str, env: dict) -> dict:
    r = subprocess.run([sys.executable, "-c", STEPS, index, query], capture_output=True, text=True,
                       env={**env, "RTV_SILENT": "1"})
    if r.returncode:
        sys.exit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default=str(ROOT / "eval" / "data" / "scifact" / "index"))
    ap.add_argument("--query", default="protein folding in cells")
    ap.add_argument("--word", default="protein")
    ap.add_argument("--reranker", default=str(ROOT / "eval" / "data" / "retrieval-eval" / "reranker"),
                    help="cross-encoder directory for the hybrid + rerank row ('' to leave it out)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    reranker = args.reranker if args.reranker and Path(args.reranker).is_dir() else None

    measured = provenance()  # the commit that runs, not the one checked out when the JSON is written
    load_before = load()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"])
    python_s = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"])
        python_s.append(time.perf_counter() - t)
    cases = commands(args.index, args.query, args.word, reranker)
    cold_res = cold(cases, args.repeat)
    warm_res = warm(args.index, args.query, args.word, reranker, args.repeat)
    imports = {name: importtime(cases[name], env_for(name)) for name in ("count", "query dense", "query dense" + BEFORE)}
    steps = {name: dense_steps(args.index, args.query, env_for(name)) for name in ("query dense", "query dense" + BEFORE)}
    print(f"index {args.index}; {args.repeat} runs each; load {load_before} -> {load()}; "
          f"python -c pass: {statistics.median(python_s):.3f} s")
    print(f"{'command':<60}{'cold median s':>14}{'cold min s':>12}{'warm median ms':>16}")
    for name in cases:
        print(f"{name:<60}{cold_res[name]['median_s']:>14.3f}{cold_res[name]['min_s']:>12.3f}"
              f"{warm_res[name]['median_ms']:>16.2f}")
    print("import ms (cumulative, one cold run):", json.dumps(imports))
    print("cold dense query, steps in one fresh process (s):", json.dumps(steps))
    out = {**measured, "load_before": load_before, "load_after": load(),
           "settings": {"index": args.index, "query": args.query, "word": args.word, "reranker": reranker,
                        "repeat": args.repeat, "page_cache": "warm (not dropped: shared machine)"},
           "python_startup_s": round(statistics.median(python_s), 3), "cold": cold_res, "warm": warm_res,
           "cold_imports_ms": imports, "cold_dense_steps_s": steps,
           "wall_s": round(time.perf_counter() - start, 1), "command": " ".join(["python"] + sys.argv)}
    write_results(f"bench_cold{args.tag}.json", out)


if __name__ == "__main__":
    main()
