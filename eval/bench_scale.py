"""Scaling on one node (issue 12): build throughput against --workers, and count/find latency over
a multi-shard index with the shard fan-out serial vs parallel, side by side in one run.

Build: the first --mb of eval/data/real-200mb.jsonl (whole lines; --data for another file: a file
shorter than --mb is repeated, its ids suffixed `#k` in the k-th copy, and the JSON says so),
--shard-size so that there are --shards shards, parts exact and exact+lexical (--lexical-mb: a
smaller corpus for the slower exact+lexical runs), --workers 1 and 2 (or --workers-list). Each build
runs in its own subprocess (`rtv index`), so its wall time includes reading the corpus and
starting the workers. Peak memory: the driver's and the largest worker's (RUSAGE_CHILDREN of the
build's process), and the whole process tree's (the sum of its processes' RSS, sampled every 50 ms
with psutil) next to what the budget reserves for the shards building at once (--max-memory's
BUILD_BYTES_PER_TEXT_BYTE per text byte) and the default budget itself. Every parallel build is
checked byte-identical to the --workers 1 one (every file but manifest.json).

Queries: an exact-only index of --query-mb in --query-shards shards; 500 patterns (words and
phrases of 1-4 words sampled from the corpus, plus absent ones); count and find(limit=10) each
timed per call with the ExactIndex's threads=1 (the serial loop) and threads=default (the pool),
interleaved in one process.

    python eval/bench_scale.py              # writes eval/results/bench_scale.json and .png
    python eval/bench_scale.py --mb 360 --shards 64 --parts exact --workers-list 1,2,4,8,16 --no-queries \
        --fixed-mb 1 --commit SHA --label "GPU machine" --out ...   # the 16-core run (and --parts
        exact+lexical --mb 30 --no-probe for the lexical one; --query-mb 1000 for the queries)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RTV_SILENT", "1")

from provenance import provenance, write_results  # noqa: E402

DATA = ROOT / "eval" / "data" / "real-200mb.jsonl"
WORK = ROOT / "eval" / "data" / "bench-scale"
OUT = ROOT / "eval" / "results" / "bench_scale.json"

# run as `python -c CHILD ARGS...`: one build, then its time and peak memory as JSON
CHILD = r"""
import json, resource, sys, threading, time
from click.testing import CliRunner
import psutil
tree_peak = [0]
sampler_cpu = [0.0]
done = threading.Event()
def sample():  # the sum of the RSS of this process and its workers, every 50 ms
    # children(recursive=True) reads every process of the machine: the list is refreshed every
    # 0.5 s only (workers live for the whole build), so the sampler takes little of the driver's
    # core, and its own CPU is reported (sampler_cpu_s) and left out of driver_cpu_s
    me = psutil.Process()
    procs, listed = [me], 0.0
    while not done.wait(0.05):
        now = time.monotonic()
        if now - listed > 0.5:
            procs, listed = [me, *me.children(recursive=True)], now
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        tree_peak[0] = max(tree_peak[0], total)
        sampler_cpu[0] = time.thread_time()
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
from rtv_cli.main import cli
res = CliRunner().invoke(cli, sys.argv[1:], catch_exceptions=False)
wall = time.perf_counter() - t
done.set()
if res.exit_code:
    sys.stderr.write(res.output); sys.exit(res.exit_code)
usage = resource.getrusage(resource.RUSAGE_SELF)
children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the worker processes, reaped by now
me = usage.ru_maxrss * 1024
kids = children.ru_maxrss * 1024
print(json.dumps({"wall_s": wall, "driver_peak_bytes": me, "worker_peak_bytes": kids, "tree_peak_bytes": tree_peak[0],
                  "driver_cpu_s": usage.ru_utime + usage.ru_stime - sampler_cpu[0], "sampler_cpu_s": sampler_cpu[0],
                  "workers_cpu_s": children.ru_utime + children.ru_stime}))
"""


# the driver's part of a build with --workers N alone: read the corpus (its JSONL parsed by N
# worker processes from N = 2 on, as `rtv index` does: readers/ranges.py; without the texts where
# the tree's shard workers read them again), plan the shards, pickle each shard as the process
# pool does to send it to a worker (no shard is built)
DRIVER = r"""
import inspect, json, pickle, sys, time
from retrieval.build import plan_shards
from retrieval.corpus import ReadOptions, read_documents
try:
    from retrieval.readers.ranges import read_documents_parallel
except ImportError:  # a tree from before it (for a before/after run): the driver parses everything
    def read_documents_parallel(sources, opts, workers):
        return read_documents(sources, opts)
if __name__ == "__main__":
    t, cpu = time.perf_counter(), time.process_time()
    n, workers = 0, int(sys.argv[3])
    textless = workers > 1 and "text" in inspect.signature(read_documents_parallel).parameters
    docs = read_documents_parallel([sys.argv[1]], ReadOptions(), workers, **({"text": False} if textless else {}))
    for shard in plan_shards(docs, int(sys.argv[2])):
        n += len(pickle.dumps(shard))
    # cpu_s: this process only (not its parse workers): what caps a build however many cores build
    print(json.dumps({"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - cpu, "pickled_bytes": n}))
"""


# one shard's build alone, started at a given time (argv: text file, out dir, start time): the
# probe runs k of these at once to see how k concurrent suffix sorts share the machine
PROBE = r"""
import json, sys, time
from pathlib import Path
from retrieval.exact import write_shard
text = bytearray(Path(sys.argv[1]).read_bytes())
while time.time() < float(sys.argv[3]):
    time.sleep(0.002)
t, cpu = time.perf_counter(), time.process_time()
write_shard(text, Path(sys.argv[2]), "probe.fmi", 32, 32, progress=False)
print(json.dumps({"build_s": time.perf_counter() - t, "cpu_s": time.process_time() - cpu}))
"""


def probe(corpus: Path, shard_size: int, counts: list[int]) -> dict:
    """k identical shard builds at once in k processes (no driver, no reading, no IPC), for each k
    in `counts`: their throughput over one build alone is the ceiling that the machine's memory
    system and cores put on k workers' speed-up, whatever the driver does."""
    from retrieval.build import plan_shards
    from retrieval.corpus import ReadOptions, read_documents

    text_file = WORK / "probe-shard.bin"
    shard = next(iter(plan_shards(read_documents([corpus], ReadOptions()), shard_size)))
    text_file.write_bytes(shard.text)
    path = os.pathsep.join([str(ROOT / "src")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    env = {**os.environ, "RTV_SILENT": "1", "PYTHONPATH": path}
    rows = []
    for k in counts:
        outs = [WORK / f"probe-{i}" for i in range(k)]
        start_at = time.time() + 1.5 + 0.05 * k  # every process has imported rtv by then
        procs = [subprocess.Popen([sys.executable, "-c", PROBE, str(text_file), str(o), str(start_at)],
                                  stdout=subprocess.PIPE, text=True, env=env) for o in outs]
        got = [json.loads(pr.communicate()[0].strip().splitlines()[-1]) for pr in procs]
        if any(pr.returncode for pr in procs):
            raise SystemExit("probe build failed")
        for o in outs:
            shutil.rmtree(o, ignore_errors=True)
        times = [g["build_s"] for g in got]
        rows.append({"concurrent": k, "build_s_mean": round(sum(times) / k, 3), "build_s_max": round(max(times), 3),
                     "cpu_s_mean": round(sum(g["cpu_s"] for g in got) / k, 3)})
    one = rows[0]["build_s_max"] if rows[0]["concurrent"] == 1 else None
    for r in rows:  # k builds in the time of the slowest, against one build alone
        r["throughput_x"] = round(r["concurrent"] * one / r["build_s_max"], 3) if one else None
        print(f"probe: {r['concurrent']:2d} shard builds at once: mean {r['build_s_mean']:.2f} s, slowest "
              f"{r['build_s_max']:.2f} s, throughput {r['throughput_x']}x one build", flush=True)
    return {"shard_bytes": len(shard.text), "rows": rows}


def lscpu() -> dict:
    """The CPU topology lines of lscpu (threads per core: whether 'cores' are hyperthreads; caches)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    keep = ("Model name", "Thread(s) per core", "Core(s) per socket", "Socket(s)", "NUMA node(s)", "L2 cache",
            "L3 cache", "Hypervisor vendor", "CPU max MHz")
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if k.strip() in keep}


def subset(mb: float, data: Path = DATA) -> tuple[Path, int]:
    """The first `mb` MB of `data` in whole lines, and how many copies of `data` that took (a file
    shorter than `mb` is repeated; the k-th copy's ids get the suffix `#k`, so they stay unique)."""
    path = WORK / f"corpus-{mb:g}mb{'' if data == DATA else '-' + data.stem}.jsonl"
    copies_file = path.with_suffix(".copies")
    if path.exists() and copies_file.exists():
        return path, int(copies_file.read_text())
    WORK.mkdir(parents=True, exist_ok=True)

    def lines():  # (copy number from 1, line), the file over and over
        for copy in itertools.count(1):
            with data.open("rb") as src:
                for line in src:
                    if copy > 1:
                        doc = json.loads(line)
                        doc["id"] = f"{doc.get('id', '')}#{copy - 1}"
                        line = (json.dumps(doc, ensure_ascii=False) + "\n").encode()
                    yield copy, line

    limit, n, copies = int(mb * 1e6), 0, 0
    with path.open("wb") as out:
        for copy, line in lines():
            if n + len(line) > limit:
                break
            out.write(line)
            n += len(line)
            copies = copy
    copies_file.write_text(str(copies))
    return path, copies


def text_bytes(corpus: Path) -> int:
    return sum(len(json.loads(line)["text"].encode()) for line in corpus.open())


def child(code: str, *args: str) -> dict:
    """Run `code` in a fresh interpreter on this tree; its last stdout line as JSON."""
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT / "cli")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    env = {**os.environ, "RTV_SILENT": "1", "PYTHONPATH": path}
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"child failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def build(corpus: Path, out: Path, parts: str, shard_size: int, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    return child(CHILD, "index", str(corpus), "-o", str(out), "--parts", parts, "--shard-size", str(shard_size),
                 "--workers", str(workers), "--json")


def same_files(a: Path, b: Path) -> bool:
    ga, gb = a / (a / "CURRENT").read_text().strip(), b / (b / "CURRENT").read_text().strip()
    fa = sorted(str(p.relative_to(ga)) for p in ga.rglob("*") if p.is_file() and p.name != "manifest.json")
    fb = sorted(str(p.relative_to(gb)) for p in gb.rglob("*") if p.is_file() and p.name != "manifest.json")
    return fa == fb and all((ga / f).read_bytes() == (gb / f).read_bytes() for f in fa)


def patterns(corpus: Path, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = corpus.read_text().splitlines()
    out = []
    while len(out) < n * 9 // 10:
        words = json.loads(rng.choice(lines))["text"].split()
        if len(words) < 8:
            continue
        k = rng.randint(1, 4)
        i = rng.randrange(len(words) - k)
        out.append(" ".join(words[i:i + k]))
    out += [f"zq{rng.randrange(10**9)}xj" for _ in range(n - len(out))]
    rng.shuffle(out)
    return out


def latency(exact, pats: list[str], threads_modes: dict[str, int], repeats: int = 4) -> dict:
    """Per-call latency of count and find(limit=10) for each mode: each round passes over all
    patterns in one mode, then in the other, the first mode alternating between rounds. (Modes
    interleaved per pattern favoured the second: it found the first's cache lines warm, which
    showed the serial and the parallel count, the same code, 2.6x apart.)"""
    times = {(op, mode): [] for op in ("count", "find") for mode in threads_modes}
    for r in range(repeats):
        order = list(threads_modes.items())
        for mode, threads in (order if r % 2 == 0 else order[::-1]):
            exact.threads = threads
            for p in pats:
                t = time.perf_counter()
                exact.count(p)
                times[("count", mode)].append(time.perf_counter() - t)
                t = time.perf_counter()
                exact.find(p, 0, 10)
                times[("find", mode)].append(time.perf_counter() - t)
    out = {}
    for (op, mode), ts in times.items():
        a = np.array(ts) * 1e6
        out.setdefault(op, {})[mode] = {"p50_us": round(float(np.percentile(a, 50)), 1),
                                        "p90_us": round(float(np.percentile(a, 90)), 1),
                                        "mean_us": round(float(a.mean()), 1), "calls": len(a)}
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(16, 4.3))
    corpora = results["build"].get("corpora", {})
    all_ws = sorted({r["workers"] for rows in results["build"]["runs"].values() for r in rows})
    for parts, rows in results["build"]["runs"].items():
        ws = [r["workers"] for r in rows]
        mb = corpora.get(parts, results["build"])["corpus_mb"]
        ax1.plot(ws, [r["mb_per_s"] for r in rows], marker="o", label=f"{parts} ({mb:.0f} MB)")
        ax3.plot(ws, [r["speedup"] for r in rows], marker="o", label=parts)
    for ax in (ax1, ax3):
        ax.set_xlabel("--workers")
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_ws, [str(w) for w in all_ws])
    ax3.plot(all_ws, all_ws, ls=":", color="grey", label="ideal (N)")
    ax3.plot(all_ws, [0.85 * w for w in all_ws], ls="--", color="grey", label="target 0.85 N")
    ax3.set_yscale("log", base=2)
    ax3.set_ylabel("speed-up over --workers 1")
    ax3.set_title("build speed-up")
    ax3.legend(fontsize=8)
    ax1.set_ylabel("build MB/s of corpus text")
    where = results["machine"].get("label") or f"{results['machine']['host']}, {results['machine']['usable_cores']} cores"
    ax1.set_title(f"build, {results['build']['shards']} shards ({where})")
    ax1.legend(fontsize=8)
    q = results["query"]
    if q is None:
        ax2.set_axis_off()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        return
    ops = list(q["latency"])
    modes = list(q["latency"][ops[0]])
    x = np.arange(len(ops))
    for i, mode in enumerate(modes):
        ax2.bar(x + i * 0.38, [q["latency"][op][mode]["p50_us"] for op in ops], 0.38, label=mode)
    ax2.set_xticks(x + 0.19)
    ax2.set_xticklabels([f"{op} p50" for op in ops])
    ax2.set_ylabel("microseconds")
    ax2.set_title(f"queries, {q['corpus_mb']:.0f} MB in {q['shards']} shards")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="JSONL corpus to take the text from")
    ap.add_argument("--mb", type=float, default=100, help="corpus MB for the build runs")
    ap.add_argument("--lexical-mb", type=float, default=None, help="corpus MB for the exact+lexical runs (default --mb)")
    ap.add_argument("--shards", type=int, default=4, help="shards of the build runs (>= 4)")
    ap.add_argument("--workers-list", default="1,2")
    ap.add_argument("--parts", default="exact,exact+lexical")
    ap.add_argument("--query-mb", type=float, default=200)
    ap.add_argument("--query-shards", type=int, default=8)
    ap.add_argument("--patterns", type=int, default=500)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--commit", default=None, help="the commit measured, where the tree has no git (the GPU machine)")
    ap.add_argument("--label", default=None, help="what the machine is, recorded in the JSON (e.g. 'GPU machine')")
    ap.add_argument("--plot-only", action="store_true", help="redraw the plot from --out's JSON")
    ap.add_argument("--queries-only", action="store_true", help="only the query latencies (no builds, no plot)")
    ap.add_argument("--no-queries", action="store_true", help="only the builds (and the probe)")
    ap.add_argument("--no-probe", action="store_true", help="skip the concurrent shard builds without a driver")
    ap.add_argument("--no-driver-only", action="store_true", help="skip the driver's part measured alone")
    ap.add_argument("--fixed-mb", type=float, default=0,
                    help="also build this small corpus (same shard count) at each --workers: the fixed costs of a build")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads(args.out.read_text()), args.out.with_suffix(".png"))
        return

    from retrieval import Index
    from retrieval.build import BUILD_BYTES_PER_TEXT_BYTE, default_max_memory, shard_build_memory

    workers_list = [int(w) for w in args.workers_list.split(",")]
    load_at_start = os.getloadavg()
    runs: dict[str, list] = {}
    corpora: dict[str, dict] = {}
    for parts in [] if args.queries_only else args.parts.split(","):
        flag = parts.replace("+", ",")
        mb = args.lexical_mb if parts != "exact" and args.lexical_mb else args.mb
        corpus, copies = subset(mb, args.data)
        n_text = text_bytes(corpus)
        shard_size = n_text // args.shards + 1
        corpora[parts] = {"corpus": str(corpus.relative_to(ROOT)), "corpus_mb": n_text / 1e6, "copies_of_data": copies,
                          "shard_size": shard_size}
        by_workers = {}
        for w in [] if args.no_driver_only else workers_list:
            driver = child(DRIVER, str(corpus), str(shard_size), str(w))
            by_workers[str(w)] = {"wall_s": round(driver["wall_s"], 2), "mb_per_s": round(n_text / 1e6 / driver["wall_s"], 2),
                                  "cpu_s": round(driver["cpu_s"], 2),
                                  "mb_per_cpu_s": round(n_text / 1e6 / driver["cpu_s"], 2)}
            print(f"{parts:14s} driver only, workers {w:2d} (read, plan, pickle; no build): {driver['wall_s']:.2f} s  "
                  f"{n_text / 1e6 / driver['wall_s']:.2f} MB/s; its own CPU {driver['cpu_s']:.2f} s, "
                  f"{n_text / 1e6 / driver['cpu_s']:.2f} MB per CPU-second", flush=True)
        corpora[parts]["driver_only"] = by_workers.get(str(workers_list[0]))
        corpora[parts]["driver_only_by_workers"] = by_workers
        rows = []
        for w in workers_list:
            out = WORK / f"build-{parts}-w{w}"
            r = build(corpus, out, flag, shard_size, w)
            r.update(workers=w, mb_per_s=round(n_text / 1e6 / r["wall_s"], 2), wall_s=round(r["wall_s"], 2),
                     driver_cpu_s=round(r["driver_cpu_s"], 2), workers_cpu_s=round(r["workers_cpu_s"], 2),
                     sampler_cpu_s=round(r["sampler_cpu_s"], 2),
                     driver_mb_per_cpu_s=round(n_text / 1e6 / r["driver_cpu_s"], 2))
            # the whole build's CPU-seconds over the cores' time it had: how busy the workers kept them
            r["cores_busy"] = round((r["driver_cpu_s"] + r["workers_cpu_s"]) / (r["wall_s"] * w), 3)  # sampler left out
            r["identical_to_workers_1"] = True if w == workers_list[0] else same_files(WORK / f"build-{parts}-w{workers_list[0]}", out)
            manifest = json.loads((out / (out / "CURRENT").read_text().strip() / "manifest.json").read_text())
            r["shards"] = len(manifest["exact"]["shards"])
            r["worker_peak_bytes_per_shard_text_byte"] = round(r["worker_peak_bytes"] / shard_size, 2) if w > 1 else None
            # what --max-memory's accounting reserves for the shards building at once, and the default budget
            r["reserved_bytes"] = min(w, r["shards"]) * shard_build_memory(shard_size)
            r["default_budget_bytes"] = default_max_memory()
            r["tree_peak_within_default_budget"] = r["tree_peak_bytes"] <= r["default_budget_bytes"]
            rows.append(r)
            print(f"{parts:14s} workers {w:2d}: {r['wall_s']:7.2f} s  {r['mb_per_s']:7.2f} MB/s  driver CPU "
                  f"{r['driver_cpu_s']:.2f} s ({r['driver_mb_per_cpu_s']:.1f} MB/CPU-s)  workers CPU "
                  f"{r['workers_cpu_s']:.2f} s  cores busy {r['cores_busy']:.2f}  driver peak "
                  f"{r['driver_peak_bytes'] / 1e9:.2f} GB  worker peak {r['worker_peak_bytes'] / 1e9:.2f} GB  tree peak "
                  f"{r['tree_peak_bytes'] / 1e9:.2f} GB (reserved {r['reserved_bytes'] / 1e9:.2f})  "
                  f"identical {r['identical_to_workers_1']}", flush=True)
        base = rows[0]["mb_per_s"]
        for r in rows:
            r["speedup"] = round(r["mb_per_s"] / base, 3)
        runs[parts] = rows

    fixed = None
    if args.fixed_mb and runs:  # start-up, spawning, per-shard hand-offs, the store and manifest: no real build work
        corpus, _ = subset(args.fixed_mb, args.data)
        n_text = text_bytes(corpus)
        fixed = {"corpus_mb": n_text / 1e6, "shards": args.shards, "wall_s": {}}
        for w in workers_list:
            r = build(corpus, WORK / f"build-fixed-w{w}", "exact", n_text // args.shards + 1, w)
            fixed["wall_s"][str(w)] = round(r["wall_s"], 2)
            print(f"fixed costs: {n_text / 1e6:.1f} MB in {args.shards} shards, workers {w:2d}: {r['wall_s']:.2f} s", flush=True)

    probed = None
    if runs and not args.no_probe:
        exact = corpora.get("exact", corpora[next(iter(corpora))])
        probed = probe(ROOT / exact["corpus"], exact["shard_size"], workers_list)

    query = None
    if not args.no_queries:
        qcorpus, qcopies = subset(args.query_mb, args.data)
        q_text = text_bytes(qcorpus)
        qdir = WORK / f"query-{args.query_mb:g}mb-{args.query_shards}"
        if not qdir.exists():
            Index.build([qcorpus], qdir, parts="exact", shard_size=q_text // args.query_shards + 1,
                        workers=max(workers_list)).close()
        idx = Index.open(qdir)
        pats = patterns(qcorpus, args.patterns)
        default_threads = idx.exact.threads
        modes = {"serial": 1, f"parallel ({default_threads} threads)": default_threads}
        idx.exact.threads = 1  # identical answers first
        serial = [(idx.exact.count(p), [a.tolist() for a in idx.exact.find(p, 0, 10)]) for p in pats]
        idx.exact.threads = default_threads
        parallel = [(idx.exact.count(p), [a.tolist() for a in idx.exact.find(p, 0, 10)]) for p in pats]
        lat = latency(idx.exact, pats, modes)
        query = {"corpus_mb": q_text / 1e6, "copies_of_data": qcopies, "shards": len(idx.exact.shards), "patterns": len(pats),
                 "threads": default_threads, "answers_identical": serial == parallel, "latency": lat}
        idx.close()
        for op, by_mode in lat.items():
            for mode, v in by_mode.items():
                print(f"{op:5s} {mode:24s} p50 {v['p50_us']:9.1f} us  p90 {v['p90_us']:9.1f} us  mean {v['mean_us']:9.1f} us")

    prov = provenance()
    if args.commit:  # the copy on the GPU machine may carry no (or a stale) .git
        prov["commit"] = args.commit
    first = next(iter(runs), None)
    results = {**prov, "machine": {**prov["machine"], "usable_cores": len(os.sched_getaffinity(0)), "label": args.label,
                                   "lscpu": lscpu(),
                                   "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()},
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "data": str(args.data),
               "build": {**corpora[first], "shards": runs[first][0]["shards"], "corpora": corpora,
                         "budget_bytes_per_text_byte": BUILD_BYTES_PER_TEXT_BYTE, "runs": runs} if runs else None,
               "query": query, "probe": probed, "fixed_costs": fixed}
    write_results(args.out, results)
    if runs:
        plot(results, args.out.with_suffix(".png"))
        print(f"wrote {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
