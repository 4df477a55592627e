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
from provenance import provenance, write_results  # noqa: E402
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


def child_build_rtv(corpus: str, out: str, rate: int, extension: str = "") -> None:
    """The exact index alone (what fm-index builds): texts in memory -> FM-index shard files.
    extension: an older _fm_index .so to build with instead of the installed one."""
    if extension:
        sys.modules["retrieval._fm_index"] = fm_module(extension)  # what retrieval.exact._fm() imports
    from retrieval.build import plan_shards
    from retrieval.corpus import Document
    from retrieval.exact import MAX_SHARD_BYTES, write_shard

    shutil.rmtree(out, ignore_errors=True)
    Path(out).mkdir(parents=True)
    texts = load_texts(Path(corpus))
    t, c = time.perf_counter(), time.process_time()
    docs = (Document(str(i), text, corpus) for i, text in enumerate(texts))
    shards = []
    for shard in plan_shards(docs, MAX_SHARD_BYTES):  # the shard plan and writer of `rtv index`
        shards.append({**write_shard(shard.text, Path(out), shard.file, rate, rate), "first_doc": shard.first_doc})
    section = {"sa_sample": rate, "isa_sample": rate, "shards": shards}
    build_s, build_cpu_s = time.perf_counter() - t, time.process_time() - c
    (Path(out) / "exact.json").write_text(json.dumps(section))
    print(json.dumps({"exact_bytes": sum(s["bytes"] for s in section["shards"]),
                      "text_bytes": sum(s["text_bytes"] for s in section["shards"]),
                      "build_only_s": build_s, "build_only_cpu_s": build_cpu_s}))


def child_build_sais(corpus: str, out: str, rate: int) -> None:
    """One shard with rtv's own SA-IS (the fallback when pydivsufsort is absent), to compare."""
    from retrieval.exact import _fm

    texts = load_texts(Path(corpus))
    t, c = time.perf_counter(), time.process_time()
    buffer = bytearray()
    for text in texts:
        buffer += text.encode()
        buffer += b"\xff"
    _fm().build_shard(buffer, out, rate, rate)
    build_s, build_cpu_s = time.perf_counter() - t, time.process_time() - c
    print(json.dumps({"build_only_s": build_s, "build_only_cpu_s": build_cpu_s, "exact_bytes": os.path.getsize(out)}))
    os.remove(out)


def child_build_full(corpus: str, out: str, rate: int) -> None:
    """End to end `Index.build` (reading JSONL, exact shards, meta.sqlite with FTS5), for reference."""
    from retrieval import Index

    shutil.rmtree(out, ignore_errors=True)
    Index.build([corpus], out, dense=False, id_field="id", sa_sample=rate, isa_sample=rate)
    print(json.dumps({}))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def fm_module(extension: str = ""):
    """The installed _fm_index, or with `extension` an older build's .so loaded in its place."""
    if not extension:
        from retrieval.exact import _fm

        return _fm()
    import importlib.util

    spec = importlib.util.spec_from_file_location("retrieval._fm_index", extension)
    fm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fm)
    return fm


def child_count(shard_file: str, patterns_file: str, extension: str) -> None:
    """Counts (warm: once untimed, then timed) of the length-prefixed patterns on one shard with
    the installed extension or `extension`, in this process alone."""
    data, patterns, i = Path(patterns_file).read_bytes(), [], 0
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "little")
        patterns.append(data[i + 4:i + 4 + n])
        i += 4 + n
    shard = fm_module(extension).Shard(shard_file, False)
    counts = [shard.count(p) for p in patterns]
    print(json.dumps({"counts": counts, "count_shard": pct(timed_us(shard.count, patterns)),
                      "load_average": os.getloadavg()[0]}))


def child_memory(corpus: str, out: str, rate: int, shard_mb: int, extension: str) -> None:
    """Peak RSS of building one shard (the first of plan_shards at shard_mb MB) from its text in
    memory, per text byte: the peak is reset (/proc/self/clear_refs) once the shard's text is
    all that is left, so reading the corpus does not count. A sampler thread records the largest
    RSS seen in each build stage. extension: a _fm_index .so to use instead of the installed one
    (an older build, for before/after)."""
    import gc
    import threading

    from retrieval.build import plan_shards
    from retrieval.corpus import Document
    fm = fm_module(extension)
    texts = load_texts(Path(corpus))
    docs = (Document(str(i), text, corpus) for i, text in enumerate(texts))
    shard = next(iter(plan_shards(docs, shard_mb * 1_000_000)))
    text = shard.text
    del docs, texts, shard
    gc.collect()
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand the freed corpus back, so the start is the text
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _rss()
    stages: dict[str, int] = {}
    current = ["start"]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            r = _rss()
            stages[current[0]] = max(stages.get(current[0], 0), r)
            time.sleep(0.005)

    def report(stage: str, _done: int, _total: int) -> None:
        current[0] = stage

    sampler = threading.Thread(target=sample)
    sampler.start()
    t = time.perf_counter()
    fm.build_shard(text, out, rate, rate, report)
    build_s = time.perf_counter() - t
    done.set()
    sampler.join()
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    n = len(text)
    print(json.dumps({"text_bytes": n, "build_s": build_s, "rss_before_build_bytes": before, "peak_rss_bytes": hwm,
                      "peak_rss_per_byte": hwm / n, "build_peak_over_start_per_byte": (hwm - before) / n,
                      # the text plus all the build adds: the peak less the interpreter and imports
                      "text_plus_build_per_byte": (hwm - before + n) / n,
                      "stage_rss_per_byte": {k: v / n for k, v in stages.items()},
                      "shard_bytes": os.path.getsize(out)}))


def memory_main(args) -> None:
    """--memory: peak RSS per text byte of one shard's build, current extension and (with
    --memory-before SO) an older one, same text; writes eval/results/bench_exact_memory.json."""
    import hashlib

    corpus = build_corpus(args.mb)
    runs = {}
    for name, ext in [("before", args.memory_before), ("after", "")]:
        if name == "before" and not ext:
            continue
        out = CACHE / f"memory-{name}.fmi"
        r = child(["--child-memory", str(corpus), str(out), str(args.memory_rate), str(args.shard_mb), ext])
        r["shard_sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
        out.unlink()
        runs[name] = r
        print(f"{name}: {r['text_bytes']:,} text bytes, peak RSS {r['peak_rss_per_byte']:.2f} B per text byte "
              f"(build over its start {r['build_peak_over_start_per_byte']:.2f}, text + build {r['text_plus_build_per_byte']:.2f}); by stage "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["stage_rss_per_byte"].items()))
    if len(runs) == 2:
        print("shard files identical:", runs["before"]["shard_sha256"] == runs["after"]["shard_sha256"])
    result = {"corpus": {"path": str(corpus), "mb": args.mb}, "sa_rate": args.memory_rate, "shard_mb": args.shard_mb,
              **provenance(), "before_extension": args.memory_before or None, **runs}
    if len(runs) == 2:
        result["identical_shards"] = runs["before"]["shard_sha256"] == runs["after"]["shard_sha256"]
    write_results("bench_exact_memory.json", result)


def child_build_peer(corpus: str, out: str) -> None:
    from fm_index import MultiFMIndex

    texts = load_texts(Path(corpus))
    t, c = time.perf_counter(), time.process_time()
    index = MultiFMIndex(texts, on_disk=False)
    build_s, build_cpu_s = time.perf_counter() - t, time.process_time() - c
    with open(out, "wb") as f:
        pickle.dump(index, f, protocol=pickle.HIGHEST_PROTOCOL)
    print(json.dumps({"build_only_s": build_s, "build_only_cpu_s": build_cpu_s, "index_bytes": os.path.getsize(out)}))


def open_exact(directory: Path):
    from retrieval.exact import ExactIndex

    return ExactIndex(directory, json.loads((directory / "exact.json").read_text()), verify=True)


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


def sqlite_texts(texts: list[str], path: Path):
    """The peer that keeps a second copy of the text: a SQLite table of the documents (built once
    into the data cache), opened read-only."""
    import sqlite3

    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        db = sqlite3.connect(tmp)
        db.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
        db.executemany("INSERT INTO docs VALUES (?, ?)", enumerate(texts))
        db.commit()
        db.close()
        tmp.rename(path)
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)


def extract_sample(shard, n_docs: int, n_snippets: int, width: int, seed: int = 1) -> dict:
    """The ranges bench_extract times: n_docs random whole documents and n_snippets random
    width-byte ranges within them (the same for the same shard and seed, in any process)."""
    rng = random.Random(seed)
    lens = np.asarray(shard.doc_lengths())
    docs = np.array(rng.sample(range(shard.n_docs), min(n_docs, shard.n_docs)), np.int64)
    sd = np.array([rng.choice(docs.tolist()) for _ in range(n_snippets)], np.int64)
    ss = np.array([rng.randrange(0, max(1, int(lens[d]) - width)) for d in sd.tolist()], np.int64)
    return {"docs": docs, "zeros": np.zeros(len(docs), np.int64), "ends": lens[docs].astype(np.int64),
            "total": int(lens[docs].sum()), "sd": sd, "ss": ss, "se": ss + width,
            "snip_bytes": int(np.minimum(ss + width, lens[sd]).sum() - ss.sum())}


def timed(fn, nbytes: int) -> dict:
    t, c = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"bytes": nbytes, "wall_s": wall, "cpu_s": cpu, "mb_s": nbytes / 1e6 / wall, "mb_per_cpu_s": nbytes / 1e6 / cpu}


def child_extract(shard_path: str, extension: str, n_docs: int, n_snippets: int, width: int) -> None:
    """The batch extract calls of bench_extract with an older build of the extension, in a process
    of its own (two builds of the module cannot register their types in one process)."""
    if "retrieval._fm_index" in sys.modules:
        raise SystemExit("--child-extract must run before any other _fm_index is loaded")
    shard = fm_module(extension).Shard(shard_path, False)
    s = extract_sample(shard, n_docs, n_snippets, width)
    docs, zeros, ends, sd, ss, se = s["docs"], s["zeros"], s["ends"], s["sd"], s["ss"], s["se"]
    shard.extract_ranges(docs, zeros, ends)  # warm, as in bench_extract
    out = {
        "docs_extract_ranges_1_thread": timed(lambda: shard.extract_ranges(docs, zeros, ends, 16, 1), s["total"]),
        "docs_extract_ranges": timed(lambda: shard.extract_ranges(docs, zeros, ends), s["total"]),
        "snippets_extract_ranges": timed(lambda: shard.extract_ranges(sd, ss, se), s["snip_bytes"]),
    }
    blob, _ = shard.extract_ranges(docs, zeros, ends)
    out["docs_sha256"] = __import__("hashlib").sha256(blob).hexdigest()
    print(json.dumps(out))


def bench_extract(x, texts: list[str], n_docs: int, n_snippets: int, width: int, seed: int = 1,
                  before_extension: str = "", shard_path: str = "", db=None) -> dict:
    """Extract speed, old path vs new in one run, on the same random documents and ranges:
    `one walk per range` is the previous implementation (one LF step per byte, one chain from the
    document end; extract_ranges with group=1), `extract()` is one call per document (the new
    path), `extract_ranges` is all of them in one call. before_extension: an older build of the
    extension, timed on the same shard and calls in a child process; db: the SQLite peer (the
    documents' text fetched by id, snippets by substr over the UTF-8 bytes). Wall and CPU time:
    the machine is shared."""
    shard = x.shards[0]
    s = extract_sample(shard, n_docs, n_snippets, width, seed)
    docs, zeros, ends, sd, ss, se = s["docs"], s["zeros"], s["ends"], s["sd"], s["ss"], s["se"]
    total, snip_bytes = s["total"], s["snip_bytes"]
    shard.extract_ranges(docs, zeros, ends)  # warm: fault in the mapped pages the loops touch
    shard.extract_ranges(docs, zeros, ends, 1, 1)

    out = {
        "documents": len(docs), "document_bytes": total, "snippets": n_snippets, "snippet_width": width,
        "load_average_before": os.getloadavg()[0],
        "docs_one_walk_per_range": timed(lambda: shard.extract_ranges(docs, zeros, ends, 1, 1), total),
        "docs_extract_per_call": timed(lambda: [shard.extract(int(d)) for d in docs], total),
        "docs_extract_ranges_1_thread": timed(lambda: shard.extract_ranges(docs, zeros, ends, 16, 1), total),
        "docs_extract_ranges": timed(lambda: shard.extract_ranges(docs, zeros, ends), total),
        "snippets_one_walk_per_range": timed(lambda: shard.extract_ranges(sd, ss, se, 1, 1), snip_bytes),
        "snippets_per_call": timed(lambda: [shard.snippet(int(d), int(a), width) for d, a in zip(sd, ss)], snip_bytes),
        "snippets_extract_ranges": timed(lambda: shard.extract_ranges(sd, ss, se), snip_bytes),
    }
    if before_extension:
        out["before"] = child(["--child-extract", shard_path, before_extension, str(n_docs), str(n_snippets), str(width)])
        blob = shard.extract_ranges(docs, zeros, ends)[0]
        assert out["before"].pop("docs_sha256") == __import__("hashlib").sha256(blob).hexdigest(), "before and after differ"
    if db is not None:
        first = x.first_docs[0]
        ids = [first + d for d in docs.tolist()]
        snippet_args = [(first + d, a + 1, b - a) for d, a, b in zip(sd.tolist(), ss.tolist(), se.tolist())]

        def fetch_docs():
            return [db.execute("SELECT CAST(text AS BLOB) FROM docs WHERE id = ?", (i,)).fetchone()[0] for i in ids]

        def fetch_snippets():  # substr over a BLOB counts bytes, as extract_ranges does
            return [db.execute("SELECT substr(CAST(text AS BLOB), ?, ?) FROM docs WHERE id = ?", (a, w, i)).fetchone()[0]
                    for i, a, w in snippet_args]

        fetch_docs()  # warm the page cache
        out["sqlite"] = {"docs": timed(fetch_docs, total), "snippets": timed(fetch_snippets, snip_bytes)}
        assert fetch_docs() == [texts[i].encode() for i in ids], "the SQLite copy differs from the corpus"
    out["load_average_after"] = os.getloadavg()[0]
    blob, off = shard.extract_ranges(docs, zeros, ends)
    first = x.first_docs[0]
    assert all(blob[off[i]:off[i + 1]] == texts[first + d].encode() for i, d in enumerate(docs.tolist())), \
        "extract differs from the corpus"
    return out


def bench_text_store(shard, texts: list[str], first: int, blocks: list[int], n_docs: int, n_snippets: int,
                     width: int, passage: int, batch: int, seed: int = 1) -> dict:
    """The text part (retrieval/text_store.py) against the FM-index on the same shard, ranges and
    run: for each block size (KiB; "16n": no dictionary) a store of the shard's documents is
    written to eval/data/text-store/ and its bytes per text byte, build MB/s, and these timed next
    to the FM-index shard's: whole documents in one call, snippets (`width` bytes) and
    passage-sized ranges (`passage` bytes) in one call, single-snippet latency (one call each),
    and rerank-sized batches (`batch` passage ranges per call). Every answer is checked against
    the corpus's own text (the independent oracle) and between the two."""
    from retrieval.text_store import DICT_SIZE, TextStore, write_text_store

    rng = random.Random(seed + 7)
    lens = np.asarray(shard.doc_lengths(), dtype=np.int64)
    docs_text = [texts[first + d].encode() for d in range(shard.n_docs)]
    shard_text = bytearray(b"".join(t + b"\xff" for t in docs_text))
    s = extract_sample(shard, n_docs, n_snippets, width, seed)
    pd = np.array([rng.randrange(shard.n_docs) for _ in range(n_snippets)], np.int64)
    ps = np.array([rng.randrange(0, max(1, int(lens[d]) - passage)) for d in pd.tolist()], np.int64)
    pe = ps + passage
    p_bytes = int(np.minimum(pe, lens[pd]).sum() - ps.sum())
    batches = [np.array(rng.sample(range(len(pd)), batch)) for _ in range(200)]
    out: dict = {"text_bytes": len(shard_text) - shard.n_docs, "passage_bytes": passage, "batch": batch,
                 "load_average_before": os.getloadavg()[0], "variants": {}}

    def fm_ranges(d, a, b):
        blob, off = shard.extract_ranges(d, a, b)
        return [blob[off[i]:off[i + 1]] for i in range(len(d))]

    readers = {"fm-index": (fm_ranges, lambda d, a, w: shard.snippet(d, a, w))}
    where = CACHE / "text-store"
    where.mkdir(parents=True, exist_ok=True)
    for spec in blocks:
        kib, no_dict = int(str(spec).rstrip("n")), str(spec).endswith("n")
        name = f"zstd {kib} KiB" + (" no dict" if no_dict else "")
        t, c = time.perf_counter(), time.process_time()
        entry = write_text_store(shard_text, lens.tolist(), where, f"b{spec}.zst", block_size=kib << 10,
                                 dict_size=0 if no_dict else DICT_SIZE)
        build = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}
        store = TextStore(where / f"b{spec}.zst", lens)
        out["variants"][name] = {**entry, "bytes_per_text_byte": entry["bytes"] / out["text_bytes"],
                                 "build_mb_per_cpu_s": out["text_bytes"] / 1e6 / build["cpu_s"], "build": build}
        readers[name] = (store.ranges, lambda d, a, w, st=store: st.ranges([d], [a], [a + w])[0])

    docs, zeros, ends = s["docs"], s["zeros"], s["ends"]
    sd, ss, se = s["sd"], s["ss"], s["se"]
    want_docs = [docs_text[d] for d in docs.tolist()]
    for name, (ranges, snippet) in readers.items():  # warm, and checked against the corpus
        assert ranges(docs, zeros, ends) == want_docs, f"{name}: documents differ from the corpus"
        assert ranges(pd, ps, pe) == [docs_text[d][a:b] for d, a, b in zip(pd.tolist(), ps.tolist(), pe.tolist())], name
        assert [snippet(int(d), int(a), width) for d, a in zip(sd[:200], ss[:200])] == \
            [docs_text[d][a:a + width] for d, a in zip(sd[:200].tolist(), ss[:200].tolist())], name
    for workload in ("docs", "snippets", "passages", "single_snippet", "rerank_batch"):
        for name, (ranges, snippet) in readers.items():  # the readers interleaved per workload (shared machine)
            v = out["variants"].setdefault(name, {})
            if workload == "docs":
                v["docs"] = timed(lambda: ranges(docs, zeros, ends), s["total"])
            elif workload == "snippets":
                v["snippets"] = timed(lambda: ranges(sd, ss, se), s["snip_bytes"])
            elif workload == "passages":
                v["passages"] = timed(lambda: ranges(pd, ps, pe), p_bytes)
            elif workload == "single_snippet":
                v["single_snippet"] = pct(timed_us(lambda i: snippet(int(sd[i]), int(ss[i]), width), list(range(len(sd)))))
            else:
                v["rerank_batch"] = pct(timed_us(lambda b: ranges(pd[b], ps[b], pe[b]), batches))
    out["load_average_after"] = os.getloadavg()[0]
    return out


def print_text_store(t: dict) -> None:
    print(f"\ntext part vs FM-index ({t['text_bytes'] / 1e6:.1f} MB of text; passages of {t['passage_bytes']} bytes, "
          f"rerank batches of {t['batch']}; load average {t['load_average_before']:.1f} -> {t['load_average_after']:.1f})\n")
    print("| reader | bytes / text byte | build MB/CPU-s | docs MB/s | snippets MB/s | passages MB/s | "
          "single snippet p50 µs | rerank batch p50 µs |")
    print("|---|---|---|---|---|---|---|---|")
    for name, v in t["variants"].items():
        size = f"{v['bytes_per_text_byte']:.4f}" if "bytes_per_text_byte" in v else "- (the FM-index)"
        build = f"{v['build_mb_per_cpu_s']:.1f}" if "build_mb_per_cpu_s" in v else "-"
        print(f"| {name} | {size} | {build} | {v['docs']['mb_s']:.1f} | {v['snippets']['mb_s']:.1f} | "
              f"{v['passages']['mb_s']:.1f} | {v['single_snippet']['p50_us']:.1f} | {v['rerank_batch']['p50_us']:.0f} |")


def print_extract(e: dict) -> None:
    print(f"\nextract ({e['documents']} random documents, {e['document_bytes'] / 1e6:.1f} MB; {e['snippets']} "
          f"snippets of {e['snippet_width']} bytes; load average {e['load_average_before']:.1f} -> {e['load_average_after']:.1f})\n")
    print("| path | MB/s (wall) | MB/s per CPU-s |")
    print("|---|---|---|")
    for key, name in [("docs_one_walk_per_range", "documents, one walk per range (old path)"),
                      ("docs_extract_per_call", "documents, extract() per document"),
                      ("docs_extract_ranges_1_thread", "documents, one extract_ranges call, 1 thread"),
                      ("docs_extract_ranges", "documents, one extract_ranges call (threads: auto)"),
                      ("snippets_one_walk_per_range", "snippets, one walk per range (old path)"),
                      ("snippets_per_call", "snippets, snippet() per range"),
                      ("snippets_extract_ranges", "snippets, one extract_ranges call")]:
        r = e[key]
        print(f"| {name} | {r['mb_s']:.2f} | {r['mb_per_cpu_s']:.2f} |")
    for key, name in [("docs_extract_ranges_1_thread", "before: documents, one extract_ranges call, 1 thread"),
                      ("docs_extract_ranges", "before: documents, one extract_ranges call (threads: auto)"),
                      ("snippets_extract_ranges", "before: snippets, one extract_ranges call")]:
        if "before" in e:
            r = e["before"][key]
            print(f"| {name} | {r['mb_s']:.2f} | {r['mb_per_cpu_s']:.2f} |")
    if "sqlite" in e:
        for key, name in [("docs", "SQLite text copy: documents by id"), ("snippets", "SQLite text copy: snippets (substr)")]:
            r = e["sqlite"][key]
            print(f"| {name} | {r['mb_s']:.2f} | {r['mb_per_cpu_s']:.2f} |")


def count_before_after(args, corpus: Path, out: Path, section: dict, bpatterns: list[bytes], rtv_counts: list[int]) -> dict:
    """--count-before SO: the older _fm_index build vs the installed one on the same shard file and
    patterns, each in its own process (two builds of the extension in one process share C++
    symbols), alternated --count-repeats times (the machine is shared); the p50/p99 reported per
    variant are the medians over the repeats. With --count-before-index, also both on the index
    the older extension builds (eval/data/idx-r32-before, built once), so a change of the shard
    file (the pair table) and one of the code show apart. Counts must agree everywhere."""
    if len(section["shards"]) != 1:
        raise SystemExit("--count-before: the index must have one shard")
    patterns_file = CACHE / "count-patterns.bin"
    patterns_file.write_bytes(b"".join(len(p).to_bytes(4, "little") + p for p in bpatterns))
    shards = {"": (out, section)}
    if args.count_before_index:
        before_dir = CACHE / "idx-r32-before"
        if not (before_dir / "exact.json").exists():
            child(["--child-rtv", str(corpus), str(before_dir), "32", args.count_before])
        shards["_on_before_index"] = (before_dir, json.loads((before_dir / "exact.json").read_text()))
    variants = {f"{name}{suffix}": (str(d / s["shards"][0]["file"]), ext)
                for suffix, (d, s) in shards.items() for name, ext in [("before", args.count_before), ("after", "")]}
    runs: dict[str, list] = {name: [] for name in variants}
    for _ in range(args.count_repeats):
        for name, (shard_file, ext) in variants.items():
            r = child(["--child-count", shard_file, str(patterns_file), ext])
            if r.pop("counts") != rtv_counts:
                raise SystemExit(f"--count-before: {name} counts differently")
            runs[name].append(r)
    out_json: dict = {"before_extension": args.count_before, "repeats": args.count_repeats}
    for name, rs in runs.items():
        out_json[name] = {"count_shard": {k: float(np.median([r["count_shard"][k] for r in rs])) for k in ("p50_us", "p99_us")},
                          "runs": rs, "shard_file": variants[name][0]}
    for suffix, (d, s) in shards.items():
        out_json[f"index{suffix}"] = {"dir": str(d), "exact_bytes": sum(x["bytes"] for x in s["shards"]),
                                      "ratio": sum(x["bytes"] for x in s["shards"]) / sum(x["text_bytes"] for x in s["shards"])}
    return out_json


def count_main(args, corpus: Path, texts: list[str]) -> None:
    """--count-only: count latency at SA rate 32 on the index the full run built (built here if
    missing) and the peer's on the same 1,000 patterns, in one run (the peer's pickled index
    from the full run is reused when present); writes eval/results/bench_exact_count.json."""
    out = CACHE / "idx-r32"
    if not (out / "exact.json").exists():
        child(["--child-rtv", str(corpus), str(out), "32"])
    bpatterns = [p.encode() for p in draw_patterns(texts, args.patterns)]
    idx = open_exact(out)
    shard_count = idx.shards[0].count if len(idx.shards) == 1 else idx.count
    rtv_counts = [idx.count(p) for p in bpatterns]
    result = {"corpus": {"path": str(corpus), "mb": args.mb, "documents": len(texts)}, "sa_rate": 32, **provenance(),
              "patterns": len(bpatterns), "load_average_before": os.getloadavg()[0]}
    section = json.loads((out / "exact.json").read_text())
    result["rtv"] = {"exact_bytes": sum(s["bytes"] for s in section["shards"]),
                     "text_bytes": sum(s["text_bytes"] for s in section["shards"]),
                     "count_shard": pct(timed_us(shard_count, bpatterns)),
                     "count_python_api": pct(timed_us(idx.count, bpatterns))}
    result["rtv"]["ratio"] = result["rtv"]["exact_bytes"] / result["rtv"]["text_bytes"]
    if args.count_before:
        result["rtv_before_after"] = count_before_after(args, corpus, out, section, bpatterns, rtv_counts)
    if not args.no_peer:
        pk = CACHE / "peer.pkl"
        result["peer_index_reused"] = pk.exists()
        if not pk.exists():
            child(["--child-peer", str(corpus), str(pk)])
        with open(pk, "rb") as f:
            fm = pickle.load(f)
        patterns = [p.decode() for p in bpatterns]
        peer_counts = [fm.count_all(p) for p in patterns]
        result["peer"] = {"count": pct(timed_us(fm.count_all, patterns)),
                          "count_mismatches": sum(a != b for a, b in zip(peer_counts, rtv_counts))}
    result["load_average_after"] = os.getloadavg()[0]
    write_results("bench_exact_count.json", result)
    r = result["rtv"]
    print(f"\ncount, {len(bpatterns)} patterns, load average {result['load_average_before']:.1f} -> {result['load_average_after']:.1f}\n")
    print("| system | index / corpus | count p50 µs | count p99 µs |")
    print("|---|---|---|---|")
    print(f"| rtv (shard call) | {r['ratio']:.4f} | {r['count_shard']['p50_us']:.1f} | {r['count_shard']['p99_us']:.1f} |")
    print(f"| rtv (ExactIndex.count) | {r['ratio']:.4f} | {r['count_python_api']['p50_us']:.1f} | {r['count_python_api']['p99_us']:.1f} |")
    if "rtv_before_after" in result:
        ba = result["rtv_before_after"]
        for suffix, where in [("", "this index"), ("_on_before_index", "the index the older build makes")]:
            for name in ("before", "after"):
                if f"{name}{suffix}" in ba:
                    x = ba[f"{name}{suffix}"]["count_shard"]
                    print(f"| rtv {name} (own process, {where}; median of {ba['repeats']}) | {ba['index' + suffix]['ratio']:.4f} | "
                          f"{x['p50_us']:.1f} | {x['p99_us']:.1f} |")
    if "peer" in result:
        p = result["peer"]
        print(f"| fm-index (Rust, PyPI) | - | {p['count']['p50_us']:.1f} | {p['count']['p99_us']:.1f} |  "
              f"(count mismatches: {p['count_mismatches']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=200, help="corpus size in MB (real text)")
    ap.add_argument("--patterns", type=int, default=1000)
    ap.add_argument("--rates", default="16,32,64")
    ap.add_argument("--scan-patterns", type=int, default=30, help="patterns timed with the Python scan (slow)")
    ap.add_argument("--extract-docs", type=int, default=300, help="random documents extracted per rate")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-full", action="store_true", help="skip the end-to-end Index.build reference run")
    ap.add_argument("--extract-only", action="store_true",
                    help="only the extract comparison at SA rate 32 (builds that index if missing); "
                         "writes eval/results/bench_exact_extract.json")
    ap.add_argument("--count-only", action="store_true",
                    help="only count latency at SA rate 32 (index built if missing) and the peer's, same patterns; "
                         "writes eval/results/bench_exact_count.json")
    ap.add_argument("--count-before", default="", help="with --count-only: an older _fm_index .so timed on the same index")
    ap.add_argument("--count-before-index", action="store_true",
                    help="with --count-before: also time both on the index that .so builds (eval/data/idx-r32-before)")
    ap.add_argument("--count-repeats", type=int, default=3, help="with --count-before: runs of each, alternated")
    ap.add_argument("--snippets", type=int, default=2000, help="random byte ranges for the snippet lines")
    ap.add_argument("--text-store", default="", metavar="KIB,...",
                    help="with --extract-only: also the text part (zstd blocks) at these block sizes in KiB, "
                         "'16n' for 16 KiB without a dictionary, timed beside the FM-index on the same ranges; "
                         "writes eval/results/bench_exact_text.json")
    ap.add_argument("--extract-before", default="",
                    help="with --extract-only: an older _fm_index .so whose extract_ranges is timed on the same ranges")
    ap.add_argument("--memory", action="store_true",
                    help="only the build memory of one shard (see memory_main); writes eval/results/bench_exact_memory.json")
    ap.add_argument("--memory-before", default="", help="with --memory: an older _fm_index .so to measure as 'before'")
    ap.add_argument("--memory-rate", type=int, default=32)
    ap.add_argument("--shard-mb", type=int, default=100, help="with --memory: the shard's size in MB")
    args = ap.parse_args()
    if args.memory:
        memory_main(args)
        return
    corpus = build_corpus(args.mb)
    texts = load_texts(corpus)
    if args.count_only:
        count_main(args, corpus, texts)
        return
    if args.extract_only:
        out = CACHE / "idx-r32"
        if not (out / "exact.json").exists():
            child(["--child-rtv", str(corpus), str(out), "32"])
        x = open_exact(out)
        shard_file = out / json.loads((out / "exact.json").read_text())["shards"][0]["file"]
        db = sqlite_texts(texts, CACHE / f"texts-{args.mb}mb.sqlite") if not args.no_peer else None
        e = bench_extract(x, texts, args.extract_docs, args.snippets, 200, before_extension=args.extract_before,
                          shard_path=str(shard_file), db=db)
        result = {"corpus": {"path": str(corpus), "mb": args.mb, "documents": len(texts)}, "sa_rate": 32,
                  **provenance(), "before_extension": args.extract_before or None, "extract": e}
        if args.text_store:
            result["text_store"] = bench_text_store(x.shards[0], texts, x.first_docs[0], args.text_store.split(","),
                                                    args.extract_docs, args.snippets, 200, 1200, 30)
        # with the text part: a file of its own (bench_exact_extract.json keeps the FM-index-only runs)
        write_results("bench_exact_text.json" if args.text_store else "bench_exact_extract.json", result)
        print_extract(e)
        if args.text_store:
            print_text_store(result["text_store"])
        return
    corpus_bytes = sum(len(t.encode()) for t in texts)
    patterns = draw_patterns(texts, args.patterns)
    bpatterns = [p.encode() for p in patterns]
    rates = [int(r) for r in args.rates.split(",")]
    results: dict = {"corpus": {"path": str(corpus), "bytes": corpus_bytes, "documents": len(texts)},
                     **provenance(), "rtv": {}, "peer": None}

    for rate in rates:
        out = CACHE / f"idx-r{rate}"
        r = child(["--child-rtv", str(corpus), str(out), str(rate)])
        r["ratio"] = r["exact_bytes"] / r["text_bytes"]
        results["rtv"][rate] = r
        print(f"rtv rate {rate}: {r['ratio']:.3f} x corpus, {corpus_bytes / 1e6 / r['build_only_s']:.1f} MB/s", file=sys.stderr)

    main_rate = 32 if 32 in rates else rates[0]
    results["rtv_sais_build"] = child(["--child-sais", str(corpus), str(CACHE / "sais.fmi"), str(main_rate)])
    if not args.no_full:
        results["rtv_full_build"] = child(["--child-full", str(corpus), str(CACHE / "idx-full"), str(main_rate)])
        shutil.rmtree(CACHE / "idx-full", ignore_errors=True)
    idx = open_exact(CACHE / f"idx-r{main_rate}")
    shard_count = idx.shards[0].count if len(idx.shards) == 1 else idx.count
    rtv_counts = [idx.count(p) for p in bpatterns]
    q = results["rtv"][main_rate]
    q["count_python_api"] = pct(timed_us(idx.count, bpatterns))
    q["count_shard"] = pct(timed_us(shard_count, bpatterns))
    frequent = [p for p, c in zip(bpatterns, rtv_counts) if 10 <= c <= 200_000][:100]
    results["find_patterns"] = {"patterns": len(frequent), "occurrences": None}
    for rate in rates:
        x = idx if rate == main_rate else open_exact(CACHE / f"idx-r{rate}")
        rng = random.Random(1)
        docs = rng.sample(range(x.n_docs), min(args.extract_docs, x.n_docs))
        for p in frequent[:10]:  # warm: fault in the mapped pages touched by the timed loops
            x.find(p, limit=10**9)
        for d in docs[:20]:
            x.extract(d)
        t = time.perf_counter()
        occ = sum(len(x.find(p, limit=10**9)[0]) for p in frequent)
        results["rtv"][rate]["find_ns_per_occurrence"] = (time.perf_counter() - t) * 1e9 / max(1, occ)
        results["find_patterns"]["occurrences"] = occ
        t = time.perf_counter()
        extracted = sum(len(x.extract(d)) for d in docs)
        results["rtv"][rate]["extract_mb_s"] = extracted / 1e6 / (time.perf_counter() - t)
    assert all(x.extract(d) == texts[d].encode() for d in docs[:50]), "extract differs from the corpus"
    results["extract"] = bench_extract(idx, texts, args.extract_docs, args.snippets, 200)

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

    results["patterns"] = len(patterns)
    write_results("bench_exact.json", results)
    plot(results, RESULTS / "bench_exact.png")
    print_table(results, corpus_bytes, main_rate)
    print_extract(results["extract"])


def print_table(r: dict, corpus_bytes: int, main_rate: int) -> None:
    mb = corpus_bytes / 1e6
    nan = float("nan")
    print(f"\ncorpus: {mb:.1f} MB real text, {r['corpus']['documents']} documents; {r['machine']}\n")
    print("| system | SA rate | index / corpus | build MB/s (wall) | build MB/s per CPU-s | peak RSS / corpus byte | "
          "count p50 µs | count p99 µs | find ns/occ | extract MB/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for rate, x in r["rtv"].items():
        c = x.get("count_shard", {})
        print(f"| rtv | {rate} | {x['ratio']:.3f} | {mb / x['build_only_s']:.2f} | {mb / x['build_only_cpu_s']:.2f} | "
              f"{x['peak_rss_bytes'] / corpus_bytes:.2f} | {c.get('p50_us', nan):.1f} | {c.get('p99_us', nan):.1f} | "
              f"{x.get('find_ns_per_occurrence', nan):.0f} | {x.get('extract_mb_s', nan):.2f} |")
    p = r.get("peer")
    if p:
        print(f"| fm-index (Rust, PyPI) | - | {p['ratio']:.3f} | {mb / p['build_only_s']:.2f} | {mb / p['build_only_cpu_s']:.2f} | "
              f"{p['peak_rss_bytes'] / corpus_bytes:.2f} | {p['count']['p50_us']:.1f} | {p['count']['p99_us']:.1f} | "
              f"{p['find_ns_per_occurrence']:.0f} | - |")
    s = r["scan"]
    print(f"| Python bytes.find scan ({s['patterns']} patterns) | - | 1 (the text) | - | - | - | {s['p50_us']:.0f} | {s['p99_us']:.0f} | - | - |")
    x = r["rtv"][main_rate]
    sa = r.get("rtv_sais_build")
    if sa:
        print(f"\nrtv with its own SA-IS instead of libdivsufsort (rate {main_rate}): {mb / sa['build_only_s']:.2f} MB/s wall, "
              f"{mb / sa['build_only_cpu_s']:.2f} MB/s per CPU-s, peak RSS {sa['peak_rss_bytes'] / corpus_bytes:.2f} B per corpus byte")
    full = r.get("rtv_full_build")
    if full:
        print(f"\nend-to-end Index.build at rate {main_rate} (JSONL reading, shards, meta.sqlite + FTS5): "
              f"{mb / full['wall_s']:.2f} MB/s wall, {mb / full['cpu_s']:.2f} MB/s per CPU-s, "
              f"peak RSS {full['peak_rss_bytes'] / corpus_bytes:.2f} B per corpus byte")
    print("build columns time the index construction from texts in memory (both systems); peak RSS is the "
          "whole build process, texts included")
    print(f"count latency for rtv is the shard call from Python; the ExactIndex.count wrapper adds "
          f"{x['count_python_api']['p50_us'] - x['count_shard']['p50_us']:.1f} µs at p50")
    print(f"\ntargets at SA rate {main_rate}:")
    size_ok = x["ratio"] <= 0.44
    print(f"  index <= 0.44 x corpus: {x['ratio']:.3f} -> {'met' if size_ok else 'MISSED'}")
    print(f"  count p50 <= 20 µs warm: {x['count_shard']['p50_us']:.1f} µs -> {'met' if x['count_shard']['p50_us'] <= 20 else 'MISSED'}")
    if p:
        speed = p["build_only_cpu_s"] / x["build_only_cpu_s"]
        print(f"  build >= 2x faster per core than fm-index: {speed:.2f}x -> {'met' if speed >= 2 else 'MISSED'}"
              f"  (count mismatches vs fm-index: {p['count_mismatches']} of {r['patterns']})")
    rss = x["peak_rss_bytes"] / corpus_bytes
    print(f"  peak build memory <= 10 B per corpus byte: {rss:.2f} -> {'met' if rss <= 10 else 'MISSED'}")


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted(r["rtv"], key=int)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["rtv"][k]["ratio"] for k in rates], [r["rtv"][k]["find_ns_per_occurrence"] / 1000 for k in rates], "o-", label="rtv")
    for k in rates:
        ax.annotate(f"SA rate {k}", (r["rtv"][k]["ratio"], r["rtv"][k]["find_ns_per_occurrence"] / 1000), fontsize=8)
    if r.get("peer"):
        ax.plot([r["peer"]["ratio"]], [r["peer"]["find_ns_per_occurrence"] / 1000], "s", label="fm-index (Rust)")
    ax.axvline(0.44, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ticks = [0.25, 0.5, 1, 2, 4]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("index bytes / corpus bytes (log)")
    ax.set_ylabel("find µs per occurrence")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-rtv":
        os.environ["RTV_SILENT"] = "1"
        child_build_rtv(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else "")
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-sais":
        child_build_sais(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-full":
        os.environ["RTV_SILENT"] = "1"
        child_build_full(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-count":
        child_count(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-memory":
        child_memory(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-extract":
        child_extract(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-peer":
        child_build_peer(sys.argv[2], sys.argv[3])
    else:
        main()
