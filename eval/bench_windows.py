"""Batched backward searches: one after another (group=1) vs interleaved in lockstep (group=16).

Same shard, same inputs, in one run, so the ratio is the claim. Workloads:
- `count_many`: patterns of 8-64 bytes cut at random places of the indexed corpus (scattered).
- `scattered windows`: 12- and 50-byte windows at random places of held-out text (existence).
- `sliding windows`: every 50-byte window of held-out text, stride 1 (the contamination pass);
  `auto` (the default, group=0) keeps these serial.
Results must agree between modes (checked). Prints a table and writes eval/results/bench_windows.json.
`--contamination`: also `BenchmarkRun` entries/s (as in eval/bench_contamination.py speed) on the
1 GB index with every count_windows call forced to group=1 vs the default, alternating.

    flock /tmp/rtv-bench.lock python eval/bench_windows.py --contamination
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
DATA = HERE / "data"
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))
from provenance import write_results  # noqa: E402

INDEXES = {
    "real-200mb (idx-r32)": (DATA / "idx-r32" / "exact" / "shard-00000.fmi", DATA / "real-200mb.jsonl"),
    "contam-1000mb": (DATA / "contam-1000mb-idx" / "exact" / "shard-00000.fmi", DATA / "contam-1000mb.jsonl"),
}
HELDOUT = DATA / "bench-1000mb-5000-0.jsonl"


def texts(path: Path, n: int) -> list[str]:
    with open(path) as f:
        return [json.loads(line)["text"] for line, _ in zip(f, range(n))]


def best_rate(fn, n_items: int, repeats: int) -> tuple[float, np.ndarray]:
    out, best = None, float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return n_items / best, np.asarray(out)


def workloads(corpus: Path, rng: random.Random, n: int) -> dict:
    docs = [t.encode() for t in texts(corpus, 20000) if len(t.encode()) > 80]
    patterns = []
    while len(patterns) < n:
        d = rng.choice(docs)
        i = rng.randrange(len(d) - 64)
        patterns.append(d[i:i + rng.randint(8, 64)])
    held = "\n".join(texts(HELDOUT, 3000)).encode()
    out = {"count_many": ("many", patterns, None, None, False)}
    for width in (12, 50):
        st = np.array(sorted(rng.sample(range(len(held) - width), n)), dtype=np.int64)
        out[f"scattered {width}-byte windows"] = ("windows", held, st, np.full(n, width, dtype=np.int64), True)
    sl = held[: n + 49]
    st = np.arange(0, len(sl) - 49, dtype=np.int64)
    out["sliding 50-byte windows"] = ("windows", sl, st, np.full(len(st), 50, dtype=np.int64), True)
    return out


def contamination_ab() -> dict:
    """entries/s of the contamination pipeline with count_windows pinned to group=1 vs the default."""
    from bench_contamination import get_index, timed_run
    from retrieval.exact import _fm

    shard_cls = _fm().Shard
    default = shard_cls.count_windows
    index, _ = get_index(DATA / "contam-1000mb.jsonl", "contam-1000mb-idx")
    rows = {}
    print("| benchmark | count_windows group=1 entries/s | default (auto) entries/s | ratio |")
    print("|---|---:|---:|---:|")
    for bench in ("bench-1000mb-5000-0.jsonl", "bench-1000mb-5000-10.jsonl"):
        rates = {}
        for _ in range(2):
            for mode in ("group=1", "default"):
                shard_cls.count_windows = (default if mode == "default" else
                                           lambda self, t, s, l, e=False, g=1: default(self, t, s, l, e, 1))
                try:
                    r = timed_run(index, DATA / bench, ["text"], repeat=1)
                finally:
                    shard_cls.count_windows = default
                rates[mode] = max(rates.get(mode, 0.0), r["entries_per_s"])
        rows[bench] = {"group1_entries_per_s": rates["group=1"], "default_entries_per_s": rates["default"],
                       "ratio": rates["default"] / rates["group=1"]}
        print(f"| {bench} | {rates['group=1']:,.1f} | {rates['default']:,.1f} | {rates['default'] / rates['group=1']:.2f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="patterns / windows per workload")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--contamination", action="store_true", help="also time rtv contamination runs, group=1 vs default")
    args = ap.parse_args()
    from retrieval.exact import _fm

    fm = _fm()
    rng = random.Random(0)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "n": args.n, "repeats": args.repeats, "indexes": {}}
    print("| index | workload | group=1 /s | group=16 /s | ratio | auto /s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (shard_path, corpus) in INDEXES.items():
        if not shard_path.exists():
            print(f"skipping {name}: {shard_path} is missing (build it first)", file=sys.stderr)
            continue
        shard = fm.Shard(str(shard_path), False)
        rows = {}
        for wname, (kind, a, st, ln, ex) in workloads(corpus, rng, args.n).items():
            def run(group):
                if kind == "many":
                    return lambda: shard.count_many(a, group)
                return lambda: shard.count_windows(a, st, ln, ex, group)
            items = len(a) if kind == "many" else len(st)
            rates, outs = {}, {}
            for _ in range(2):  # alternate modes so drift hits both
                for group in (1, 16, 0):
                    r, o = best_rate(run(group), items, args.repeats)
                    rates[group] = max(rates.get(group, 0.0), r)
                    outs[group] = o
            assert (outs[1] == outs[16]).all() and (outs[1] == outs[0]).all(), f"{name}/{wname}: modes disagree"
            rows[wname] = {"items": items, "serial_per_s": rates[1], "interleaved16_per_s": rates[16],
                           "auto_per_s": rates[0], "ratio_16_vs_1": rates[16] / rates[1]}
            print(f"| {name} | {wname} | {rates[1]:,.0f} | {rates[16]:,.0f} | {rates[16] / rates[1]:.2f} | {rates[0]:,.0f} |")
        result["indexes"][name] = {"index_bytes": shard.index_bytes, "text_bytes": shard.text_bytes, "workloads": rows}
    if args.contamination:
        result["contamination"] = contamination_ab()
    write_results("bench_windows.json", result)


if __name__ == "__main__":
    main()
