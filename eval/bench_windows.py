"""Batched backward searches: one after another (group=1) vs interleaved in lockstep (group=16).

Same shard, same inputs, in one run, so the ratio is the claim. Workloads:
- `count_many`: patterns of 8-64 bytes cut at random places of the indexed corpus (scattered).
- `scattered windows`: 12- and 50-byte windows at random places of held-out text (existence).
- `sliding windows`: every 50-byte window of held-out text, stride 1 (the contamination pass);
  `auto` (the default, group=0) keeps these serial.
Results must agree between modes (checked). Prints a table and writes eval/results/bench_windows.json.
(rtv contamination no longer counts sliding windows one by one: it decides them by maximal matches,
Shard.windows_present, measured by eval/bench_contamination.py.)

    flock /tmp/rtv-bench.lock python eval/bench_windows.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
DATA = HERE / "data"
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))
from provenance import provenance, write_results  # noqa: E402

INDEXES = {
    "real-200mb (idx-r32)": (DATA / "idx-r32", DATA / "real-200mb.jsonl"),
    "contam-1000mb": (DATA / "contam-1000mb-idx", DATA / "contam-1000mb.jsonl"),
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


def shard_file(index_dir: Path) -> Path:
    """The first exact shard of an index: in its live generation (or at the top, the old layout)."""
    from retrieval.errors import IndexFormatError
    from retrieval.manifest import live_generation

    try:
        return live_generation(index_dir) / "exact" / "shard-00000.fmi"
    except IndexFormatError:
        return index_dir / "exact" / "shard-00000.fmi"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="patterns / windows per workload")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from retrieval.exact import _fm

    fm = _fm()
    rng = random.Random(0)
    result = {**provenance(), "cores": os.cpu_count(),
              "n": args.n, "repeats": args.repeats, "indexes": {}}
    print("| index | workload | group=1 /s | group=16 /s | ratio | auto /s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (index_dir, corpus) in INDEXES.items():
        shard_path = shard_file(index_dir)
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
    write_results("bench_windows.json", result)


if __name__ == "__main__":
    main()
