"""Exact-search benchmark: rtv's FM-index vs the PyPI `fm-index` package (Rust) and a plain Python scan.

One run, same real corpus (eval/real_corpus.py), same 1,000 patterns of 4-64 bytes drawn from it:
index size / corpus size at SA sample rates 16/32/64, build MB/s (wall and per CPU-second) and peak
RSS per corpus byte (each build in its own process, measured with wait4), count latency p50/p99
(warm), find cost per occurrence, extract MB/s. Counts are cross-checked between all three systems.
Prints a table and writes eval/results/bench_exact.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from real_corpus import CACHE, build_corpus, load_texts  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def child(argv: list[str]) -> dict:
    """Run this script in a child process; return its JSON result plus wall time, CPU time and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"child {argv} failed with status {status}")
    result = json.loads(out)
    result.update(wall_s=time.perf_counter() - start, cpu_s=usage.ru_utime + usage.ru_stime,
                  peak_rss_bytes=usage.ru_maxrss * 1024)
    return result


def child_build_rtv(corpus: str, out: str, rate: int) -> None:
    from retrieval import Index

    shutil.rmtree(out, ignore_errors=True)
    idx = Index.build([corpus], out, dense=False, id_field="id", sa_sample=rate, isa_sample=rate)
    print(json.dumps({"exact_bytes": idx.exact.index_bytes, "text_bytes": idx.exact.text_bytes}))


def child_build_peer(corpus: str, out: str) -> None:
    from fm_index import MultiFMIndex

    texts = load_texts(Path(corpus))
    t = time.perf_counter()
    index = MultiFMIndex(texts, on_disk=False)
    build_s = time.perf_counter() - t
    with open(out, "wb") as f:
        pickle.dump(index, f, protocol=pickle.HIGHEST_PROTOCOL)
    print(json.dumps({"build_only_s": build_s, "index_bytes": os.path.getsize(out)}))


def draw_patterns(texts: list[str], n: int, seed: int = 0) -> list[str]:
    """n substrings of 4-64 UTF-8 bytes starting at random places of random documents."""
    rng = random.Random(seed)
    weights = [len(t) for t in texts]
    out = []
    while len(out) < n:
        t = rng.choices(texts, weights)[0]
        want = rng.randint(4, 64)
        i = rng.randrange(0, max(1, len(t) - 64))
        s = t[i:i + want]
        while len(s.encode()) > want:
            s = s[:-1]
        if len(s.encode()) >= 4:
            out.append(s)
    return out


def timed_us(fn, items) -> np.ndarray:
    fn(items[0])
    out = np.empty(len(items))
    for i, item in enumerate(items):
        t = time.perf_counter_ns()
        fn(item)
        out[i] = (time.perf_counter_ns() - t) / 1000
    return out


def pct(a: np.ndarray) -> dict:
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99))}


def naive_count(corpus: bytes, p: bytes) -> int:
    n, i = 0, corpus.find(p)
    while i != -1:
        n += 1
        i = corpus.find(p, i + 1)
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=200, help="corpus size in MB (real text)")
    ap.add_argument("--patterns", type=int, default=1000)
    ap.add_argument("--rates", default="16,32,64")
    ap.add_argument("--scan-patterns", type=int, default=30, help="patterns timed with the Python scan (slow)")
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()
    from retrieval import Index

    corpus = build_corpus(args.mb)
    texts = load_texts(corpus)
    corpus_bytes = sum(len(t.encode()) for t in texts)
    patterns = draw_patterns(texts, args.patterns)
    bpatterns = [p.encode() for p in patterns]
    rates = [int(r) for r in args.rates.split(",")]
    results: dict = {"corpus": {"path": str(corpus), "bytes": corpus_bytes, "documents": len(texts)},
                     "machine": f"{os.uname().machine}, {os.cpu_count()} cores", "rtv": {}, "peer": None}

    for rate in rates:
        out = CACHE / f"idx-r{rate}"
        r = child(["--child-rtv", str(corpus), str(out), str(rate)])
        r["ratio"] = r["exact_bytes"] / r["text_bytes"]
        results["rtv"][rate] = r
        print(f"rtv rate {rate}: {r['ratio']:.3f} x corpus, {corpus_bytes / 1e6 / r['wall_s']:.1f} MB/s", file=sys.stderr)

    main_rate = 32 if 32 in rates else rates[0]
    idx = Index.open(CACHE / f"idx-r{main_rate}")
    shard_count = idx.exact.shards[0].count if len(idx.exact.shards) == 1 else idx.count
    rtv_counts = [idx.count(p) for p in bpatterns]
    q = results["rtv"][main_rate]
    q["count_python_api"] = pct(timed_us(idx.count, bpatterns))
    q["count_shard"] = pct(timed_us(shard_count, bpatterns))
    frequent = [p for p, c in zip(bpatterns, rtv_counts) if 10 <= c <= 200_000][:100]
    t = time.perf_counter()
    occ = sum(len(idx.find(p, limit=10**9)[0]) for p in frequent)
    q["find_ns_per_occurrence"] = (time.perf_counter() - t) * 1e9 / max(1, occ)
    rng = random.Random(1)
    docs = rng.sample(range(idx.n_documents), min(2000, idx.n_documents))
    t = time.perf_counter()
    extracted = sum(len(idx.exact.extract(d)) for d in docs)
    q["extract_mb_s"] = extracted / 1e6 / (time.perf_counter() - t)
    for rate in rates:
        if rate != main_rate:
            other = Index.open(CACHE / f"idx-r{rate}")
            t = time.perf_counter()
            occ_r = sum(len(other.find(p, limit=10**9)[0]) for p in frequent)
            results["rtv"][rate]["find_ns_per_occurrence"] = (time.perf_counter() - t) * 1e9 / max(1, occ_r)

    joined = b"\xff".join(t.encode() for t in texts)
    scan = bpatterns[: args.scan_patterns]
    scan_us = timed_us(lambda p: naive_count(joined, p), scan)
    scan_counts = [naive_count(joined, p) for p in scan]
    assert scan_counts == rtv_counts[: len(scan)], "rtv counts differ from the naive scan"
    results["scan"] = {**pct(scan_us), "patterns": len(scan)}

    if not args.no_peer:
        pk = CACHE / "peer.pkl"
        peer = child(["--child-peer", str(corpus), str(pk)])
        with open(pk, "rb") as f:
            fm = pickle.load(f)
        peer_counts = [fm.count_all(p) for p in patterns]
        mismatches = sum(a != b for a, b in zip(peer_counts, rtv_counts))
        peer.update(ratio=peer["index_bytes"] / corpus_bytes, count=pct(timed_us(fm.count_all, patterns)),
                    count_mismatches=mismatches)
        fr = [p.decode() for p in frequent]
        t = time.perf_counter()
        pocc = sum(sum(len(v) for v in fm.locate(p).values()) for p in fr)
        peer["find_ns_per_occurrence"] = (time.perf_counter() - t) * 1e9 / max(1, pocc)
        results["peer"] = peer
        del fm

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_exact.json").write_text(json.dumps(results, indent=2))
    print_table(results, corpus_bytes, main_rate)


def print_table(r: dict, corpus_bytes: int, main_rate: int) -> None:
    mb = corpus_bytes / 1e6
    print(f"\ncorpus: {mb:.1f} MB real text, {r['corpus']['documents']} documents; {r['machine']}\n")
    print("| system | SA rate | index / corpus | build MB/s (wall) | build MB/s per CPU-s | peak RSS / corpus byte | count p50 µs | count p99 µs | find ns/occ | extract MB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rate, x in r["rtv"].items():
        c = x.get("count_shard", {})
        print(f"| rtv | {rate} | {x['ratio']:.3f} | {mb / x['wall_s']:.2f} | {mb / x['cpu_s']:.2f} | "
              f"{x['peak_rss_bytes'] / corpus_bytes:.2f} | {c.get('p50_us', float('nan')):.1f} | {c.get('p99_us', float('nan')):.1f} | "
              f"{x.get('find_ns_per_occurrence', float('nan')):.0f} | {x.get('extract_mb_s', float('nan')):.1f} |")
    p = r.get("peer")
    if p:
        print(f"| fm-index (Rust, PyPI) | - | {p['ratio']:.3f} | {mb / p['wall_s']:.2f} | {mb / p['cpu_s']:.2f} | "
              f"{p['peak_rss_bytes'] / corpus_bytes:.2f} | {p['count']['p50_us']:.1f} | {p['count']['p99_us']:.1f} | "
              f"{p['find_ns_per_occurrence']:.0f} | - |")
        x = r["rtv"][main_rate]
        print(f"\nratios at rate {main_rate}: build speed per CPU-second rtv / fm-index = "
              f"{(p['cpu_s']) / x['cpu_s']:.2f}x; count p50 fm-index / rtv = {p['count']['p50_us'] / x['count_shard']['p50_us']:.2f}x; "
              f"count mismatches vs fm-index: {p['count_mismatches']}")
    s = r["scan"]
    print(f"| Python bytes.find scan | - | 1 (the text) | - | - | - | {s['p50_us']:.0f} | {s['p99_us']:.0f} | - | - |")
    print("\n(count latency for rtv is the shard call from Python; the Index.count wrapper adds "
          f"{r['rtv'][main_rate]['count_python_api']['p50_us'] - r['rtv'][main_rate]['count_shard']['p50_us']:.1f} µs at p50)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-rtv":
        os.environ["RTV_SILENT"] = "1"
        child_build_rtv(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-peer":
        child_build_peer(sys.argv[2], sys.argv[3])
    else:
        main()
