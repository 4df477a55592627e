"""rtv serve under load: a bounded httpx load test on 127.0.0.1, next to the cold CLI in the same run.

    flock /tmp/rtv-bench.lock python eval/bench_serve.py [--index DIR] [--requests 400] [--clients 1,8,32]

Starts `rtv serve DIR --no-rerank` (a free port on 127.0.0.1), then for 1, 8 and 32 concurrent
clients (asyncio + httpx, keep-alive connections) sends a fixed number of requests, a round-robin
mix of count / find / dense query / hybrid query (no rerank), each level also capped in time.
Measures end-to-end latency per request (client side), throughput, errors (any non-200), and the
server's RSS before and after each level. Then times the cold CLI (`rtv count`, `rtv query --mode
dense`, `rtv query` hybrid; a new process each, as a user runs them) on the same inputs.
Without --index it builds one (exact + dense, flat) from CPython's email, json, http, urllib and
logging packages. Writes eval/results/bench_serve.json (commit, machine, every number) and a plot.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))
from provenance import provenance, write_results  # noqa: E402

RESULTS = ROOT / "eval" / "results"
OPS = ("count", "find", "dense", "hybrid")
TARGETS_P50_MS = {"count": 2.0, "dense": 30.0, "hybrid": 60.0}  # issue 13, c = 1, end to end
STDLIB_PACKAGES = ("email", "json", "http", "urllib", "logging")


def rtv(*args, **kw):
    return subprocess.run([sys.executable, "-m", "rtv_cli.main", *args], capture_output=True, text=True, **kw)


def build_default(out: Path) -> tuple[Path, str]:
    """The default index (built once into `out`, reused when it is there)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    desc = f"CPython {platform.python_version()} packages {', '.join(STDLIB_PACKAGES)} (sources)"
    if (out / "CURRENT").is_file():
        return out, desc
    r = rtv("index", *[str(stdlib / p) for p in STDLIB_PACKAGES], "-o", str(out), "--recipe", "flat", "--silent")
    if r.returncode:
        sys.exit(r.stderr)
    return out, desc


class Server:
    def __init__(self, index: Path, threads: int):
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "rtv_cli.main", "serve", str(index), "--port", "0",
                                      "--no-rerank", "--threads", str(threads)], stderr=subprocess.PIPE, text=True)
        self.url = None
        seen = []
        for line in self.proc.stderr:
            seen.append(line)
            m = re.search(r"rtv serve: (http://\S+?)/ ", line)
            if m:
                self.url = m.group(1)
                break
        if self.url is None:
            sys.exit("rtv serve did not start:\n" + "".join(seen))
        self.start_s = time.perf_counter() - t0
        self.name = index.name

    def rss(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)


def workload(url: str, name: str, seed: int) -> dict[str, list[dict]]:
    """Request bodies per op, drawn from the served documents: substrings for count/find, docstring
    first lines (else word windows) for the searches."""
    import httpx

    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=60) as c:
        n_docs = c.get(f"/v1/{name}/info").json()["documents"]
        ids = rng.sample(range(n_docs), min(n_docs, 40))
        texts = [r["text"] for r in c.post(f"/v1/{name}/extract", json={"doc_ids": ids}).json()["results"]]
    patterns, queries = [], []
    for t in texts:
        data = t.encode()
        for _ in range(10):
            n = rng.randint(6, 32)
            if len(data) > n:
                s = rng.randrange(len(data) - n)
                patterns.append(data[s:s + n].decode("utf-8", "ignore") or "def ")
        queries += [q.strip() for q in re.findall(r'"""\s*([A-Z][^"\n]{15,120})', t)]
        words = t.split()
        for _ in range(3):
            if len(words) > 8:
                s = rng.randrange(len(words) - 8)
                queries.append(" ".join(words[s:s + 8]))
    rng.shuffle(patterns)
    rng.shuffle(queries)
    patterns = [p for p in patterns if p.strip()]
    queries = [q for q in queries if q.strip()][:400]
    return {
        "count": [{"query": p} for p in patterns],
        "find": [{"query": p, "limit": 10} for p in patterns],
        "dense": [{"query": q, "k": 10, "mode": "dense", "rerank": False} for q in queries],
        "hybrid": [{"query": q, "k": 10, "mode": "hybrid", "rerank": False} for q in queries],
    }


PATHS = {"count": "count", "find": "find", "dense": "query", "hybrid": "query"}


async def load(url: str, name: str, work: dict, clients: int, requests: int, cap_s: float) -> dict:
    import httpx

    plan = [(OPS[i % len(OPS)], work[OPS[i % len(OPS)]][(i // len(OPS)) % len(work[OPS[i % len(OPS)]])])
            for i in range(requests)]
    it = iter(plan)
    lat = {op: [] for op in OPS}
    server_ms = {op: [] for op in OPS}
    errors: list[str] = []
    deadline = time.perf_counter() + cap_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        async def worker():
            for op, body in it:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    r = await c.post(f"/v1/{name}/{PATHS[op]}", json=body)
                    ok = r.status_code == 200
                    if ok:
                        server_ms[op].append(r.json()["latency_ms"])
                    else:
                        errors.append(f"{op}: {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    ok = False
                    errors.append(f"{op}: {type(exc).__name__}: {exc}")
                if ok:
                    lat[op].append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    done = sum(len(v) for v in lat.values()) + len(errors)
    return {"clients": clients, "requests_planned": requests, "requests_done": done, "wall_s": round(wall, 3),
            "throughput_rps": round(done / wall, 1), "errors": len(errors), "error_examples": errors[:5],
            "per_op": {op: stats(lat[op], server_ms[op]) for op in OPS},
            "all": stats([x for v in lat.values() for x in v], [x for v in server_ms.values() for x in v])}


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 3)


def stats(xs: list[float], server: list[float]) -> dict:
    return {"n": len(xs), "p50_ms": pct(xs, 0.5), "p99_ms": pct(xs, 0.99),
            "mean_ms": round(statistics.fmean(xs), 3) if xs else None, "server_p50_ms": pct(server, 0.5)}


def cold_cli(index: Path, work: dict, repeat: int) -> dict:
    """A new `rtv` process per query, as a user types them (wall seconds, median of `repeat`)."""
    out = {}
    cases = {"count": ["count", str(index), work["count"][0]["query"], "--json"],
             "dense": ["query", str(index), work["dense"][0]["query"], "--mode", "dense", "--no-rerank", "--json"],
             "hybrid": ["query", str(index), work["hybrid"][0]["query"], "--no-rerank", "--json"]}
    for op, args in cases.items():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = rtv(*args, "--silent")
            times.append(time.perf_counter() - t0)
            if r.returncode:
                sys.exit(f"rtv {' '.join(args)} failed: {r.stderr}")
        out[op] = {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times]}
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result["levels"]
    xs = [lv["clients"] for lv in levels]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for op in OPS:
        a.plot(xs, [lv["per_op"][op]["p50_ms"] for lv in levels], marker="o", label=f"{op} p50")
        a.plot(xs, [lv["per_op"][op]["p99_ms"] for lv in levels], marker="x", linestyle=":", label=f"{op} p99")
    a.set_xscale("log", base=2)
    a.set_yscale("log")
    a.set_xticks(xs, [str(x) for x in xs])
    a.set_xlabel("concurrent clients")
    a.set_ylabel("end-to-end latency, ms")
    a.legend(fontsize=7, ncol=2)
    a.set_title("rtv serve latency (mixed load)")
    b.bar([str(x) for x in xs], [lv["throughput_rps"] for lv in levels], color="#4b7bd1")
    b.set_xlabel("concurrent clients")
    b.set_ylabel("requests / s (count, find, dense, hybrid mix)")
    cold = result["cold_cli"]
    b.set_title("throughput; cold CLI: " + ", ".join(f"{op} {v['median_s']:.1f} s" for op, v in cold.items()), fontsize=9)
    fig.suptitle(f"{result['index']['documents']} documents, {result['index']['passages']} passages; "
                 f"{result['machine']['cores']} cores", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", type=Path, help="an index directory (default: the one --build-into holds)")
    ap.add_argument("--build-into", type=Path, default=Path(tempfile.gettempdir()) / "rtv-bench-serve-index",
                    help="where the default index (CPython packages) is built once and reused")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the client levels (RSS: growth or plateau)")
    ap.add_argument("--requests", type=int, default=400, help="requests per concurrency level")
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--cap-s", type=float, default=180.0, help="most seconds per level")
    ap.add_argument("--threads", type=int, default=4, help="the server's --threads")
    ap.add_argument("--cold-repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_serve.json")
    args = ap.parse_args()

    corpus = None
    index = args.index
    if index is None:
        index, corpus = build_default(args.build_into)
    server = Server(index, args.threads)
    try:
        import httpx

        info = httpx.get(f"{server.url}/v1/{server.name}/info", timeout=60).json()
        work = workload(server.url, server.name, args.seed)
        asyncio.run(load(server.url, server.name, work, 4, 80, 60))  # warm-up, not recorded
        rss_start = server.rss()
        load_before = os.getloadavg()
        levels, rounds = [], []
        for rnd in range(args.rounds):
            for c in [int(x) for x in args.clients.split(",")]:
                before = server.rss()
                lv = asyncio.run(load(server.url, server.name, work, c, args.requests, args.cap_s))
                lv["round"] = rnd + 1
                lv["rss_before_mib"] = round(before / 2**20, 1)
                lv["rss_after_mib"] = round(server.rss() / 2**20, 1)
                (levels if rnd == 0 else rounds).append(lv)
                print(f"round {rnd + 1}, {c:>3} clients: {lv['throughput_rps']:>7.1f} req/s, errors {lv['errors']}, "
                      + ", ".join(f"{op} p50/p99 {lv['per_op'][op]['p50_ms']}/{lv['per_op'][op]['p99_ms']} ms" for op in OPS)
                      + f", RSS {lv['rss_before_mib']} -> {lv['rss_after_mib']} MiB", flush=True)
        rss_end = server.rss()
        load_after = os.getloadavg()
    finally:
        server.stop()
    cold = cold_cli(index, work, args.cold_repeat)
    one = levels[0]["per_op"]
    result = {
        **provenance(),
        "what": "rtv serve: bounded load test over HTTP on 127.0.0.1 (asyncio + httpx keep-alive clients), "
                "round-robin mix of count / find (limit 10, snippets) / dense query (k 10) / hybrid query "
                "(k 10, no rerank); latency end to end at the client; cold CLI = one new rtv process per query",
        "index": {"documents": info["documents"], "passages": info["passages"], "corpus_bytes": info["corpus_bytes"],
                  "dense": (info.get("dense") or {}).get("recipe") or bool(info.get("dense")), "corpus": corpus},
        "server": {"start_s": round(server.start_s, 2), "threads": args.threads, "rss_start_mib": round(rss_start / 2**20, 1),
                   "rss_end_mib": round(rss_end / 2**20, 1)},
        "machine_load": {"loadavg_1_5_15_before": [round(x, 2) for x in load_before],
                         "loadavg_1_5_15_after": [round(x, 2) for x in load_after],
                         "note": "the machine is shared: other processes' load competes with server and clients"},
        "levels": levels,
        "later_rounds": rounds,
        "errors_total": sum(lv["errors"] for lv in levels + rounds),
        "cold_cli": cold,
        "warm_vs_cold": {op: {"warm_p50_ms": one[op]["p50_ms"], "cold_cli_s": cold[op]["median_s"],
                              "speedup": round(cold[op]["median_s"] * 1000 / one[op]["p50_ms"], 1)} for op in cold},
        "targets_p50_ms_at_1_client": {op: {"target": t, "measured": one[op]["p50_ms"], "met": one[op]["p50_ms"] <= t}
                                       for op, t in TARGETS_P50_MS.items()},
    }
    write_results(args.out, result)
    plot(result, args.out.with_suffix(".png"))
    print("cold CLI: " + ", ".join(f"{op} {v['median_s']} s" for op, v in cold.items()))
    print(f"server RSS {result['server']['rss_start_mib']} -> {result['server']['rss_end_mib']} MiB; "
          f"wrote {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
