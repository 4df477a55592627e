"""Living indexes (issue 10): `rtv add` of 1% and 10% new documents against a full rebuild of the
grown corpus (time, bytes written), and query latency with 1, 10 and 50 segments before and after
`rtv compact`, on real text (eval/data/real-200mb.jsonl: documentation, man pages, Python sources).

    python eval/bench_update.py                 # writes eval/results/bench_update.json
    python eval/bench_update.py --mb 20 --segments-mb 5 --dense-mb 1

- update: a base index of --mb MB (exact + lexical), then for 1% and 10% more documents: the add
  (new shard, new store rows, hard links to the rest) against `rtv index` of base + new (the
  rebuild a build-once index needs). Bytes written: the add's new files (its shard, the copied
  store, the manifest) vs every file of the rebuilt generation. The two indexes' answers to the
  same counts are compared (they must be equal). With --dense-mb, the same on a smaller slice with
  the dense part (all-MiniLM-L6-v2 on this CPU; the add embeds only the new passages).
- segments: the same --segments-mb MB of documents as 1 segment (one build), 10 and 50 segments
  (a build of the first share, then adds of equal shares), each queried as it is, with 5% of its
  documents deleted, and after compaction: count and find (limit 10) of 200 substrings of the
  corpus, lexical (BM25) search of 50 two-word queries; per-call p50 and mean in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))
from provenance import provenance, write_results  # noqa: E402

CORPUS = ROOT / "eval" / "data" / "real-200mb.jsonl"


def sample_docs(mb: float, seed: int, skip: set | None = None) -> list[str]:
    """JSONL lines of about `mb` MB of text, drawn at random (fixed seed) from the real corpus."""
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    random.Random(seed).shuffle(lines)
    out, total = [], 0
    for line in lines:
        if skip and line in skip:
            continue
        n = len(json.loads(line)["text"].encode("utf-8"))
        if total + n > mb * 1e6 and out:
            break
        out.append(line)
        total += n
    return out


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def gen_bytes(path: Path) -> int:
    gen = path / (path / "CURRENT").read_text().strip()
    return sum(f.stat().st_size for f in gen.rglob("*") if f.is_file())


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def probe_patterns(lines: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = [json.loads(line)["text"] for line in lines]
    out = []
    while len(out) < n:
        t = rng.choice(texts)
        if len(t) < 40:
            continue
        a = rng.randrange(len(t) - 12)
        p = t[a:a + rng.randint(6, 12)]
        if p.strip() and "\n" not in p:
            out.append(p)
    return out


def probe_queries(lines: list[str], n: int, seed: int) -> list[str]:
    import re

    rng = random.Random(seed)
    words = [w for line in lines[:2000] for w in re.findall(r"[A-Za-z]{5,}", json.loads(line)["text"])[:50]]
    return [" ".join(rng.sample(words, 2)) for _ in range(n)]


def bench_update(tmp: Path, mb: float, fractions: list[float], parts: str, seed: int) -> list[dict]:
    from retrieval import Index
    from retrieval.update import add

    base_lines = sample_docs(mb, seed)
    base_text = sum(len(json.loads(x)["text"].encode()) for x in base_lines)
    base = write(tmp / "base.jsonl", base_lines)
    build_s, _ = timed(lambda: Index.build([base], tmp / "base", parts=parts, device="cpu").close())
    print(f"base: {len(base_lines)} documents, {base_text / 1e6:.1f} MB, built in {build_s:.1f} s ({parts})", file=sys.stderr)
    rows = []
    extra_pool = sample_docs(mb * max(fractions) * 3, seed + 1, skip=set(base_lines))
    patterns = probe_patterns(base_lines, 50, seed)
    for f in fractions:
        target = base_text * f
        extra, total = [], 0
        for line in extra_pool:  # documents that keep the added text within 5% of the target
            if total >= target * 0.95:
                break
            n = len(json.loads(line)["text"].encode())
            if total + n <= target * 1.05:
                extra.append(line)
                total += n
        new = write(tmp / f"new-{f}.jsonl", extra)
        grown = tmp / f"added-{f}"
        shutil.copytree(tmp / "base", grown)
        add_s, summary = timed(lambda: add(grown, [new], device="cpu"))
        rebuild_s, _ = timed(lambda: Index.build([base, new], tmp / f"rebuilt-{f}", parts=parts, device="cpu").close())
        a, b = Index.open(grown), Index.open(tmp / f"rebuilt-{f}")
        equal = a.count_many(patterns).tolist() == b.count_many(patterns).tolist() and a.n_documents == b.n_documents
        row = {"parts": parts, "base_documents": len(base_lines), "base_text_bytes": base_text, "fraction": f,
               "added_documents": len(extra), "added_text_bytes": total,
               "added_share_of_text": round(total / base_text, 4),
               "add_seconds": round(add_s, 3), "rebuild_seconds": round(rebuild_s, 3),
               "speedup": round(rebuild_s / add_s, 2),
               "add_bytes_written": summary["bytes_written"], "rebuild_bytes_written": gen_bytes(tmp / f"rebuilt-{f}"),
               "answers_equal": equal}
        row["bytes_ratio"] = round(row["add_bytes_written"] / row["rebuild_bytes_written"], 4)
        rows.append(row)
        print(f"  +{f:.0%}: add {add_s:.2f} s / rebuild {rebuild_s:.2f} s, bytes {row['add_bytes_written']:,} / "
              f"{row['rebuild_bytes_written']:,}, answers equal: {equal}", file=sys.stderr)
        for p in (grown, tmp / f"rebuilt-{f}"):
            shutil.rmtree(p)
    shutil.rmtree(tmp / "base")
    return rows


def latencies(index, patterns: list[str], queries: list[str]) -> dict:
    def per_call(fn, items):
        for x in items[:10]:  # warm: pages of the shards and the store in the cache
            fn(x)
        ts = []
        for x in items:
            t = time.perf_counter()
            fn(x)
            ts.append((time.perf_counter() - t) * 1e3)
        return {"p50_ms": round(statistics.median(ts), 4), "mean_ms": round(statistics.fmean(ts), 4)}

    return {"count": per_call(index.count, patterns),
            "find": per_call(lambda p: index.find(p, 0, 10), patterns),
            "lexical": per_call(lambda q: index.search(q, k=10, mode="lexical", rerank=False), queries)}


def bench_segments(tmp: Path, mb: float, counts: list[int], deleted_fraction: float, seed: int) -> list[dict]:
    from retrieval import Index
    from retrieval.update import add, compact, delete

    lines = sample_docs(mb, seed + 2)
    patterns = probe_patterns(lines, 200, seed)
    queries = probe_queries(lines, 50, seed)
    ids = [json.loads(x)["id"] for x in lines]
    rows = []
    for n_seg in counts:
        path = tmp / f"seg-{n_seg}"
        shares = [lines[i * len(lines) // n_seg:(i + 1) * len(lines) // n_seg] for i in range(n_seg)]
        t0 = time.perf_counter()
        Index.build([write(tmp / "s0.jsonl", shares[0])], path, parts="exact,lexical").close()
        for i, share in enumerate(shares[1:], 1):
            add(path, [write(tmp / f"s{i}.jsonl", share)])
        made_s = time.perf_counter() - t0
        idx = Index.open(path)
        row = {"segments": len(idx.info()["segments"]), "shards": len(idx.manifest["exact"]["shards"]),
               "documents": len(lines), "text_mb": mb, "made_seconds": round(made_s, 2),
               "as_built": latencies(idx, patterns, queries)}
        idx.close()
        gone = random.Random(seed + n_seg).sample(ids, int(len(ids) * deleted_fraction))
        delete(path, gone)
        idx = Index.open(path)
        row["with_deleted"] = {"deleted_documents": len(gone), **latencies(idx, patterns, queries)}
        idx.close()
        compact_s, _ = timed(lambda: compact(path))
        idx = Index.open(path)
        row["compacted"] = {"compact_seconds": round(compact_s, 2), "segments": len(idx.info()["segments"]),
                            **latencies(idx, patterns, queries)}
        idx.close()
        rows.append(row)
        print(f"  {n_seg} segments: count p50 {row['as_built']['count']['p50_ms']} ms, find "
              f"{row['as_built']['find']['p50_ms']}, lexical {row['as_built']['lexical']['p50_ms']}; with "
              f"{deleted_fraction:.0%} deleted: {row['with_deleted']['count']['p50_ms']} / "
              f"{row['with_deleted']['find']['p50_ms']} / {row['with_deleted']['lexical']['p50_ms']}; compacted "
              f"({compact_s:.1f} s): {row['compacted']['count']['p50_ms']} / {row['compacted']['find']['p50_ms']} / "
              f"{row['compacted']['lexical']['p50_ms']}", file=sys.stderr)
        shutil.rmtree(path)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=20, help="base corpus of the add vs rebuild runs (exact + lexical)")
    ap.add_argument("--dense-mb", type=float, default=1, help="base corpus of the dense runs (0: none)")
    ap.add_argument("--segments-mb", type=float, default=5, help="corpus of the segment-count latency runs")
    ap.add_argument("--segments", default="1,10,50")
    ap.add_argument("--deleted-fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "eval" / "results" / "bench_update.json"))
    args = ap.parse_args()
    from retrieval import progress

    progress.set_silent(True)
    load_before = os.getloadavg()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-update-", dir=ROOT / "eval" / "data") as d:
        tmp = Path(d)
        update = bench_update(tmp, args.mb, [0.01, 0.10], "exact,lexical", args.seed)
        if args.dense_mb > 0:
            update += bench_update(tmp, args.dense_mb, [0.01, 0.10], "exact,lexical,dense", args.seed)
        segs = bench_segments(tmp, args.segments_mb, [int(x) for x in args.segments.split(",")],
                              args.deleted_fraction, args.seed)
    out = {**provenance(), "command": " ".join(["python"] + sys.argv), "corpus": str(CORPUS.relative_to(ROOT)),
           "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
           "seconds": round(time.time() - started, 1), "update": update, "segments": segs}
    write_results(Path(args.out), out)

    print(f"\nadd vs full rebuild (load {load_before[0]:.1f})")
    print(f"{'parts':<22}{'base MB':>8}{'added':>7}{'add s':>9}{'rebuild s':>11}{'speedup':>9}{'add MB written':>16}"
          f"{'rebuild MB':>12}{'equal':>7}")
    for r in update:
        print(f"{r['parts']:<22}{r['base_text_bytes'] / 1e6:>8.1f}{r['fraction']:>7.0%}{r['add_seconds']:>9.2f}"
              f"{r['rebuild_seconds']:>11.2f}{r['speedup']:>8.1f}x{r['add_bytes_written'] / 1e6:>16.2f}"
              f"{r['rebuild_bytes_written'] / 1e6:>12.2f}{str(r['answers_equal']):>7}")
    print(f"\nquery latency p50 ms (count / find / lexical), {args.segments_mb} MB")
    print(f"{'segments':>9}{'shards':>8}{'as built':>26}{'with deleted':>26}{'compacted':>26}")
    for r in segs:
        cells = [" / ".join(f"{r[k][q]['p50_ms']:.3f}" for q in ("count", "find", "lexical"))
                 for k in ("as_built", "with_deleted", "compacted")]
        print(f"{r['segments']:>9}{r['shards']:>8}" + "".join(f"{c:>26}" for c in cells))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
