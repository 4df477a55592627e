"""Dense index benchmark on real text: recall@10 vs flat, bytes/vector, CPU QPS per recipe; with
--gpu, FAISS on the GPU vs the CPU at ~1M vectors (flat / IVF-PQ / binary), train time, and the
embedding rate on the GPU vs the CPU.

Corpus: source files and docs found offline (Python's standard library and site-packages,
/usr/share/doc), chunked into passages of --max-tokens model tokens. Queries: first lines of
function/class docstrings from the files of the CPU corpus (real questions-as-text, answered by
their own bodies); "own-file hit@10" counts queries whose top 10 holds a passage of their file.

    python eval/bench_dense.py --passages 100000                 # CPU part
    python eval/bench_dense.py --passages 1000000 --gpu          # + GPU comparison (GPU machine)

On a machine without a GPU, embedding 100k passages takes an hour; the GPU run can hand over its
first --passages embeddings instead (float16, in 20k-row .npy files, with the queries' vectors):

    python eval/bench_dense.py --gpu --no-cpu-part --passages 100000 --export-vectors DIR  # GPU machine
    python eval/bench_dense.py --vectors DIR                      # CPU part here, on those vectors

Prints tables; writes eval/results/bench_dense[-gpu].json and a recall/QPS plot (PNG).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))
from provenance import provenance, write_results  # noqa: E402

EXTS = {".py", ".pyi", ".md", ".rst", ".txt", ".h", ".hpp", ".cuh", ".c", ".cc", ".cpp"}
_TOK = None
_MAXTOK = 128
_OVERLAP = 16


def default_roots() -> list[str]:
    import sysconfig

    roots = {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], "/usr/share/doc"}
    for p in ("/usr/lib/python3", "/usr/local/lib", "/usr/include", "/usr/local/cuda/include"):
        roots.add(p)
    return sorted(r for r in roots if os.path.isdir(r))


def list_files(roots: list[str], seed: int) -> list[str]:
    seen, files = set(), []
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                p = os.path.join(dirpath, name)
                if os.path.splitext(name)[1] in EXTS and not os.path.islink(p):
                    try:
                        st = os.stat(p)
                    except OSError:
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key in seen or not (200 <= st.st_size <= 2_000_000):
                        continue
                    seen.add(key)
                    files.append(p)
    files.sort()
    np.random.default_rng(seed).shuffle(files)
    return files


def _init(model_dir: str, max_tokens: int, overlap: int) -> None:
    global _TOK, _MAXTOK, _OVERLAP
    from transformers import AutoTokenizer

    _TOK = AutoTokenizer.from_pretrained(model_dir)
    _MAXTOK, _OVERLAP = max_tokens, overlap


def _chunk(path: str):
    from retrieval.chunking import chunk_spans

    try:
        text = open(path, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError):
        return path, [], []
    data = text.encode()
    passages = [data[s:e].decode("utf-8", "replace") for s, e in chunk_spans(text, _MAXTOK, _OVERLAP, _TOK)]
    queries = []
    if path.endswith(".py"):
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError):
            tree = None
        for node in ast.walk(tree) if tree else ():
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                line = doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""
                if 25 <= len(line) <= 200 and len(line.split()) >= 4:
                    queries.append(line)
    return path, passages, queries


def collect(files, n_max: int, model_dir: str, max_tokens: int, overlap: int, workers: int, n_prefix: int):
    texts, doc_of, queries = [], [], []
    with Pool(workers, initializer=_init, initargs=(model_dir, max_tokens, overlap)) as pool:
        for doc, (path, passages, qs) in enumerate(pool.imap(_chunk, files, chunksize=16)):
            if not passages:
                continue
            if len(texts) < n_prefix:  # queries only from files inside the CPU corpus
                queries.extend((q, doc) for q in qs)
            texts.extend(passages)
            doc_of.extend([doc] * len(passages))
            if len(texts) >= n_max:
                pool.terminate()
                break
    return texts[:n_max], np.array(doc_of[:n_max]), queries


def timed(fn, repeat: int = 1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def recall_at(ids, truth) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / k for a, b in zip(ids, truth)]))


def own_file_hit(ids, qdoc, doc_of) -> float:
    return float(np.mean([(doc_of[row[row >= 0]] == d).any() for row, d in zip(ids, qdoc)]))


def cpu_part(args, X, Q, qdoc, doc_of, work: Path) -> dict:
    import faiss

    from retrieval.dense import DenseIndex, build_from_vectors

    n, d = X.shape
    flat = faiss.IndexFlatIP(d)
    flat.add(X)
    t_flat, (_, truth) = timed(lambda: flat.search(Q, 10))
    out = {"n": n, "dim": d, "n_queries": len(Q), "threads": faiss.omp_get_max_threads(), "recipes": {}}
    sweeps = {
        "flat": [{}],
        "pq": [{"nprobe": p, "rescore_multiplier": m} for p in (16, 32, 64, 128, 192, 256) for m in (1, 10, 20)],
        "binary": [{"rescore_multiplier": m} for m in (1, 5, 10, 20, 50)],
        "hnsw": [{"ef_search": e, "rescore_multiplier": m} for e in (32, 64, 128, 256) for m in (1, 4)],
    }
    for name, settings in sweeps.items():
        t0 = time.time()
        section = build_from_vectors(X, work / name, name, device="cpu", quiet=True)
        build_s = time.time() - t0
        index = DenseIndex.open(work / name, section, device="cpu")
        default = dict(section["params"])
        store_b = sum(v["bytes"] for f, v in section["files"].items() if f != "index.faiss") / n
        rows = []
        for s in settings + [default]:
            index.params = dict(default)
            index.set_params(**s)
            secs, (_, ids) = timed(lambda: index.search(Q, 10), repeat=2)
            rows.append({**{k: index.params.get(k) for k in ("nprobe", "ef_search", "rescore_multiplier") if k in index.params},
                         "recall@10": round(recall_at(ids, truth), 4), "qps": round(len(Q) / secs, 1),
                         "own_file_hit@10": round(own_file_hit(ids, qdoc, doc_of), 4), "default": s is default})
        index.params = dict(default)
        out["recipes"][name] = {
            "factory": section["factory"], "params": default, "build_s": round(build_s, 2),
            "train_s": section["train_seconds"],
            # both measured on the written index.faiss: beyond its fixed part (centroids,
            # codebooks), and the whole file
            "code_bytes_per_vector": section["code_bytes_per_vector"],
            "index_file_bytes_per_vector": round((work / name / "index.faiss").stat().st_size / n, 2),
            "store_bytes_per_vector": round(store_b, 1),
            "compression_vs_float32": round(d * 4 / section["code_bytes_per_vector"], 1),
            "sweep": rows[:-1], "default": rows[-1],
        }
        print(f"  {name}: {section['factory']} built in {build_s:.1f}s", file=sys.stderr)
    out["flat_exact_qps_faiss"] = round(len(Q) / t_flat, 1)
    return out


def gpu_part(args, X, Qall, work: Path) -> dict:
    """Each comparison on its own: one that fails records its error and the others still run."""
    import traceback

    out = {}
    for name, fn in (("flat", gpu_flat), ("ivfpq", gpu_ivfpq), ("binary", gpu_binary), ("ivfpq_cpu_build", cpu_ivfpq_build)):
        t = time.time()
        try:
            fn(args, X, Qall, work, out)
        except Exception as exc:  # noqa: BLE001 - recorded in the JSON, printed, the rest goes on
            traceback.print_exc()
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        print(f"  gpu part {name}: {time.time() - t:.1f}s", file=sys.stderr)
    return out


def _gpu_setup(args, X, Qall, out):
    import faiss

    from retrieval.dense.index import _gpu_resources

    n, d = X.shape
    nq = args.gpu_queries
    Q = np.ascontiguousarray(np.resize(Qall, (nq, d)))  # real queries, repeated to fill the batch
    Qc = Q[:args.cpu_queries_1m]
    out.update({"n": n, "dim": d, "gpu_queries": nq, "cpu_queries": len(Qc), "cpu_threads": faiss.omp_get_max_threads(),
                "faiss": faiss.__version__, "gpus": faiss.get_num_gpus()})
    return faiss, _gpu_resources(), Q, Qc, d


def gpu_flat(args, X, Qall, work, out):
    faiss, res, Q, Qc, d = _gpu_setup(args, X, Qall, out)
    nq = len(Q)
    cpu_flat = faiss.IndexFlatIP(d)
    cpu_flat.add(X)
    on_gpu = faiss.index_cpu_to_gpu(res, 0, cpu_flat)
    on_gpu.search(Q[:100], 10)
    tg, (_, truth) = timed(lambda: on_gpu.search(Q, 10), repeat=3)
    tc, _ = timed(lambda: cpu_flat.search(Qc, 10))
    out["flat"] = {"gpu_qps": round(nq / tg, 1), "cpu_qps": round(len(Qc) / tc, 1), "bytes_per_vector": d * 4}
    del on_gpu
    out["_truth"] = truth


def gpu_ivfpq(args, X, Qall, work, out):
    from retrieval.dense import DenseIndex, build_from_vectors

    faiss, res, Q, Qc, d = _gpu_setup(args, X, Qall, out)
    truth = out["_truth"]
    truth_c = truth[:len(Qc)]
    # IVF-PQ: trained and filled on the GPU by build_from_vectors, saved in CPU form
    section = build_from_vectors(X, work / "pq", "pq", device="auto", quiet=True)
    pq = {"factory": section["factory"], "build_device": section["build_device"], "train_points": section["train_points"],
          "train_s": section["train_seconds"], "build_s": section["build_seconds"],
          "code_bytes_per_vector": section["code_bytes_per_vector"], "sweep": []}
    gpu_ix = DenseIndex.open(work / "pq", section, device="auto")
    cpu_ix = DenseIndex.open(work / "pq", section, device="cpu")
    for nprobe in sorted({16, 32, 64, 128, 256, 512, int(section["params"]["nprobe"])}):
        row = {"nprobe": nprobe, "default": nprobe == int(section["params"]["nprobe"])}
        for ix, tag, QQ, tt in ((gpu_ix, "gpu", Q, truth), (cpu_ix, "cpu", Qc, truth_c)):
            ix.set_params(nprobe=nprobe)
            ix.index.search(QQ[:100], 10)
            secs, (_, ids) = timed(lambda: ix.index.search(QQ, 10), repeat=3 if tag == "gpu" else 1)
            row[f"{tag}_qps_raw_k10"] = round(len(QQ) / secs, 1)
            row[f"{tag}_recall_raw"] = round(recall_at(ids, tt), 4)
            kc = 10 * int(ix.params["rescore_multiplier"])  # the candidates rescoring asks for
            secs, _ = timed(lambda: ix.index.search(QQ, kc), repeat=3 if tag == "gpu" else 1)
            row[f"{tag}_qps_raw_k{kc}"] = round(len(QQ) / secs, 1)
            # warm-up on the whole batch: the first GPU rescoring copies the store to the GPU and
            # grows torch's allocator to this batch's size, which a smaller warm-up leaves for later
            ix.search(QQ, 10)
            secs, (_, ids) = timed(lambda: ix.search(QQ, 10), repeat=3 if tag == "gpu" else 1)
            row[f"{tag}_qps_rescored"] = round(len(QQ) / secs, 1)
            row[f"{tag}_recall_rescored"] = round(recall_at(ids, tt), 4)
        pq["sweep"].append(row)
        print(f"  ivfpq {row}", file=sys.stderr)
    out["ivfpq"] = pq
    del gpu_ix


def gpu_binary(args, X, Qall, work, out):
    from retrieval.dense import DenseIndex, build_from_vectors
    from retrieval.dense.index import pack_bits

    faiss, res, Q, Qc, d = _gpu_setup(args, X, Qall, out)
    truth = out["_truth"]
    truth_c = truth[:len(Qc)]
    # binary: sign bits, exhaustive Hamming, CPU vs GPU
    section = build_from_vectors(X, work / "bin", "binary", device="cpu", quiet=True)
    b = {"factory": section["factory"], "code_bytes_per_vector": section["code_bytes_per_vector"]}
    for ix, tag, QQ, tt in ((DenseIndex.open(work / "bin", section, device="auto"), "gpu", Q, truth),
                            (DenseIndex.open(work / "bin", section, device="cpu"), "cpu", Qc, truth_c)):
        codes = pack_bits(QQ)
        ix.index.search(codes[:100], 10)
        secs, _ = timed(lambda: ix.index.search(codes, 10), repeat=3 if tag == "gpu" else 1)
        b[f"{tag}_qps_raw_k10"] = round(len(QQ) / secs, 1)
        ix.search(QQ, 10)  # warm-up: the store's copy on the GPU, allocations at this batch size
        secs, (_, ids) = timed(lambda: ix.search(QQ, 10), repeat=3 if tag == "gpu" else 1)
        b[f"{tag}_qps_rescored"] = round(len(QQ) / secs, 1)
        b[f"{tag}_recall_rescored"] = round(recall_at(ids, tt), 4)
    out["binary"] = b


def cpu_ivfpq_build(args, X, Qall, work, out):
    """The same IVF-PQ recipe trained and filled on this machine's CPU: the train-time peer."""
    from retrieval.dense import build_from_vectors

    section = build_from_vectors(X, work / "pq-cpu", "pq", device="cpu", quiet=True)
    out["ivfpq_cpu_build"] = {"factory": section["factory"], "train_points": section["train_points"],
                              "train_s": section["train_seconds"], "build_s": section["build_seconds"]}


def embed_rate(embedder, texts, n: int) -> dict:
    sample = texts[:n]
    embedder.model.float()  # float32 on the CPU whatever the weights' file holds
    embedder.encode(sample[:64], progress=False)
    secs, _ = timed(lambda: embedder.encode(sample, progress=False))
    return {"device": embedder.device, "passages": len(sample), "passages_per_s": round(len(sample) / secs, 1)}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    cpu = result["cpu"]
    for name, r in cpu["recipes"].items():
        pts = sorted((row["qps"], row["recall@10"]) for row in r["sweep"])
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", ms=4,
                label=f"{name} ({r['factory']}, {r['code_bytes_per_vector']:.0f} B/vec)")
        dflt = r["default"]
        ax.plot([dflt["qps"]], [dflt["recall@10"]], "k*", ms=10)
    ax.set_xscale("log")
    ax.set_xlabel(f"CPU queries/s ({cpu['threads']} threads, batch of {cpu['n_queries']})")
    ax.set_ylabel("recall@10 vs exact flat")
    ax.set_title(f"rtv dense recipes, {cpu['n']:,} real passages ({result['model']}); * = recipe default", fontsize=9)
    ax.axhline(0.95, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_gpu(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = result["gpu"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    p = g["ivfpq"]
    for tag, style in (("gpu", "o-"), ("cpu", "s--")):
        for kind, mk in (("raw", "raw k=10"), ("rescored", "rescored")):
            xs = [row[f"{tag}_qps_{'raw_k10' if kind == 'raw' else kind}"] for row in p["sweep"]]
            ys = [row[f"{tag}_recall_{kind}"] for row in p["sweep"]]
            ax.plot(xs, ys, style, ms=4, alpha=1.0 if kind == "rescored" else 0.5,
                    label=f"{p['factory']} {tag.upper()} {mk} (nprobe {', '.join(str(r['nprobe']) for r in p['sweep'])})")
    b = g["binary"]
    for tag, mk in (("gpu", "D"), ("cpu", "d")):
        ax.plot([b[f"{tag}_qps_rescored"]], [b[f"{tag}_recall_rescored"]], mk, ms=7, label=f"binary {tag.upper()} rescored")
    for tag, mk in (("gpu", "^"), ("cpu", "v")):
        ax.plot([g["flat"][f"{tag}_qps"]], [1.0], mk, ms=8, label=f"flat {tag.upper()}")
    ax.set_xscale("log")
    ax.set_xlabel(f"queries/s (GPU batch {g['gpu_queries']}, CPU batch {g['cpu_queries']}, {g['cpu_threads']} CPU threads)")
    ax.set_ylabel("recall@10 vs exact flat")
    ax.set_title(f"rtv dense at {g['n']:,} real passages, {result.get('gpu_name')} vs its CPU", fontsize=10)
    ax.legend(fontsize=6.5, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


CHUNK_ROWS = 20000


def export_vectors(dirpath: Path, E, Q, qtexts, qdoc, doc_of, info: dict) -> None:
    dirpath.mkdir(parents=True, exist_ok=True)
    for i, lo in enumerate(range(0, len(E), CHUNK_ROWS)):
        np.save(dirpath / f"vec-{i:03d}.npy", E[lo:lo + CHUNK_ROWS].astype(np.float16), allow_pickle=False)
    np.savez(dirpath / "meta.npz", Q=Q.astype(np.float32), qdoc=qdoc, doc_of=doc_of[:len(E)],
             qtexts=np.array(qtexts), info=np.array(json.dumps(info)))


def import_vectors(dirpath: Path):
    parts = sorted(dirpath.glob("vec-*.npy"))
    if not parts:
        raise SystemExit(f"--vectors {dirpath}: no vec-*.npy files; make them with --export-vectors on the GPU machine")
    E = np.concatenate([np.load(f).astype(np.float32) for f in parts])
    E /= np.linalg.norm(E, axis=1, keepdims=True)  # float16 rounding: back to unit length
    m = np.load(dirpath / "meta.npz")
    if len(m["doc_of"]) != len(E):
        raise SystemExit(f"--vectors {dirpath}: {len(E)} vectors but {len(m['doc_of'])} passages in meta.npz; copy every vec-*.npy")
    return E, m["Q"], [str(t) for t in m["qtexts"]], m["qdoc"], m["doc_of"], json.loads(str(m["info"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=100_000, help="passages for the CPU part (and the GPU part without --gpu-passages)")
    ap.add_argument("--gpu", action="store_true", help="run the GPU vs CPU comparison (needs faiss-gpu)")
    ap.add_argument("--gpu-passages", type=int, default=1_000_000)
    ap.add_argument("--gpu-queries", type=int, default=10_000)
    ap.add_argument("--cpu-queries-1m", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--roots", nargs="*", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--cache", default=None, help="directory to cache passages' embeddings between runs")
    ap.add_argument("--out", default=str(ROOT / "eval" / "results"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-cpu-part", action="store_true", help="skip the per-recipe CPU part (with --gpu)")
    ap.add_argument("--export-vectors", default=None, help="write the first --passages embeddings (float16) and the queries here")
    ap.add_argument("--vectors", default=None, help="CPU part on vectors written by --export-vectors (no embedding here)")
    ap.add_argument("--cpu-embed-sample", type=int, default=512, help="passages for the CPU embedding rate")
    args = ap.parse_args()
    if args.vectors:
        return main_on_vectors(args)
    os.environ.setdefault("RTV_SILENT", "1")

    from retrieval.dense.embedder import default_model_dir, load_embedder

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_total = max(args.passages, args.gpu_passages if args.gpu else 0)
    roots = args.roots or default_roots()
    t0 = time.time()
    files = list_files(roots, args.seed)
    texts, doc_of, queries = collect(files, n_total, str(default_model_dir()), args.max_tokens, 16,
                                     args.workers, args.passages)
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(queries), min(args.queries, len(queries)), replace=False)
    qtexts = [queries[i][0] for i in pick]
    qdoc = np.array([queries[i][1] for i in pick])
    print(f"corpus: {len(texts):,} passages from {doc_of.max() + 1 if len(doc_of) else 0:,} files under {roots}; "
          f"{len(qtexts)} queries ({time.time() - t0:.0f}s)", file=sys.stderr)

    embedder = load_embedder(device=args.device)
    result = {"model": embedder.model_id, **provenance(),
              "roots": roots, "max_tokens": args.max_tokens, "passages_total": len(texts),
              "mean_passage_chars": round(float(np.mean([len(t) for t in texts[:20000]])), 1)}
    try:
        import torch

        result["torch"] = torch.__version__
        result["gpu_name"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    cache = Path(args.cache) / f"emb-{len(texts)}-{args.max_tokens}-{args.seed}.npy" if args.cache else None
    if cache and cache.is_file():
        E = np.load(cache)
        result["embedding"] = {"cached": str(cache)}
    else:
        bs = 512 if embedder.device.startswith("cuda") else 32
        embedder.encode(texts[:1024], batch_size=bs, progress=False)  # warm-up
        print(f"embedding {len(texts):,} passages on {embedder.device} ...", file=sys.stderr, flush=True)
        t = time.time()
        E = embedder.encode(texts, batch_size=bs, progress=True)
        secs = time.time() - t
        result["embedding"] = {"device": embedder.device, "passages": len(texts), "seconds": round(secs, 1),
                               "passages_per_s": round(len(texts) / secs, 1)}
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, E)
    Q = embedder.encode(qtexts, progress=False)
    print(f"embedding: {result['embedding']}", file=sys.stderr)
    suffix = "-gpu" if args.gpu else ""
    json_path = out_dir / f"bench_dense{suffix}.json"
    write_results(json_path, result)
    n_cpu = min(args.passages, len(E))
    if args.export_vectors:
        info = {k: result.get(k) for k in ("model", "commit", "machine", "gpu_name", "torch", "roots", "max_tokens", "embedding")}
        export_vectors(Path(args.export_vectors), E[:n_cpu], Q, qtexts, qdoc, doc_of, info)
    if embedder.device != "cpu":
        cpu_emb = load_embedder(device="cpu")
        result["embedding_cpu"] = embed_rate(cpu_emb, texts, args.cpu_embed_sample)
        print(f"embedding on CPU: {result['embedding_cpu']}", file=sys.stderr)
        write_results(json_path, result)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.no_cpu_part:
            result["cpu"] = cpu_part(args, E[:n_cpu], Q, qdoc, doc_of[:n_cpu], work / "cpu")
            write_results(json_path, result)
        if args.gpu:
            del embedder
            import torch

            torch.cuda.empty_cache()
            result["gpu"] = gpu_part(args, np.ascontiguousarray(E[:args.gpu_passages]), Q, work / "gpu")

    if "gpu" in result:
        result["gpu"].pop("_truth", None)
    write_results(json_path, result)
    if "cpu" in result:
        plot(result, out_dir / f"bench_dense{suffix}.png")
    if "gpu" in result:
        plot_gpu(result, out_dir / "bench_dense-gpu-qps.png")
    report(result)


def main_on_vectors(args) -> None:
    """The CPU part on vectors embedded elsewhere (--export-vectors); the CPU embedding rate here."""
    from retrieval.dense.embedder import default_model_dir, load_embedder

    E, Q, qtexts, qdoc, doc_of, info = import_vectors(Path(args.vectors))
    n = min(args.passages, len(E))
    roots = args.roots or default_roots()
    files = list_files(roots, args.seed)
    texts, _, _ = collect(files, args.cpu_embed_sample, str(default_model_dir()), args.max_tokens, 16, args.workers, 0)
    emb = load_embedder(device="cpu")
    result = {"model": info["model"], **provenance(),
              "vectors_from": {**info, "dir": str(args.vectors),
                               "note": "passages, queries and their embeddings made by --export-vectors on the GPU machine"},
              "roots": info["roots"], "max_tokens": info["max_tokens"], "passages_total": n,
              "embedding_cpu": {**embed_rate(emb, texts, args.cpu_embed_sample),
                                "corpus": f"{len(texts)} passages of this machine's files ({roots})"}}
    if info.get("model") != emb.model_id:
        raise SystemExit(f"--vectors {args.vectors}: made with {info.get('model')}, not {emb.model_id}")
    print(f"vectors: {n:,} from {args.vectors} ({info.get('gpu_name')}); CPU embedding {result['embedding_cpu']}", file=sys.stderr)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result["cpu"] = cpu_part(args, np.ascontiguousarray(E[:n]), Q, qdoc, doc_of[:n], Path(tmp) / "cpu")
    write_results(out_dir / "bench_dense.json", result)
    plot(result, out_dir / "bench_dense.png")
    report(result)


def report(r: dict) -> None:
    cpu = r.get("cpu")
    if cpu:
        report_cpu(r, cpu)
    e = r.get("embedding", {})
    print(f"\nembedding: {e}; CPU: {r.get('embedding_cpu')}")
    report_gpu(r)


def report_cpu(r: dict, cpu: dict) -> None:
    m = r.get("machine")
    where = f"{m.get('cpu')}, {m.get('host')}" if isinstance(m, dict) else m
    print(f"\n## Dense recipes on {cpu['n']:,} real passages, {cpu['n_queries']} real queries "
          f"({r['model']}, dim {cpu['dim']}, CPU {cpu['threads']} threads, {where}, commit {r.get('commit')})\n")
    print("| recipe | factory | index file B/vec | code B/vec | x smaller | store B/vec | params | recall@10 vs flat | "
          "own-file hit@10 | CPU QPS | build s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, x in cpu["recipes"].items():
        dflt = x["default"]
        params = ", ".join(f"{k}={v}" for k, v in x["params"].items())
        print(f"| {name} | {x['factory']} | {x['index_file_bytes_per_vector']:.1f} | {x['code_bytes_per_vector']:.1f} | "
              f"{x['compression_vs_float32']} | {x['store_bytes_per_vector']:.0f} | {params} | {dflt['recall@10']:.4f} | "
              f"{dflt['own_file_hit@10']:.3f} | {dflt['qps']:,.0f} | {x['build_s']} |")


def report_gpu(r: dict) -> None:
    try:
        _report_gpu(r)
    except (KeyError, TypeError) as exc:  # a part that failed: its error is in the JSON
        print(f"(GPU report incomplete: {exc!r}; errors: {[k for k, v in r.get('gpu', {}).items() if isinstance(v, dict) and 'error' in v]})")
    c = r.get("gpu", {}).get("ivfpq_cpu_build")
    if c and "train_s" in c:
        print(f"IVF-PQ on the CPU ({r['gpu'].get('cpu_threads')} threads): trained in {c['train_s']} s, built in {c['build_s']} s")


def _report_gpu(r: dict) -> None:
    g = r.get("gpu")
    if g:
        print(f"\n## GPU vs CPU at {g['n']:,} vectors ({r.get('gpu_name')}; GPU batch {g['gpu_queries']}, CPU batch {g['cpu_queries']}, {g['cpu_threads']} CPU threads)\n")
        print(f"flat: GPU {g['flat']['gpu_qps']:,.0f} QPS, CPU {g['flat']['cpu_qps']:,.0f} QPS")
        p = g["ivfpq"]
        print(f"IVF-PQ {p['factory']}: trained on {p['build_device']} ({p['train_points']:,} points) in {p['train_s']} s, "
              f"built in {p['build_s']} s, {p['code_bytes_per_vector']} B/vec")
        print("| nprobe | GPU QPS raw | GPU recall raw | GPU QPS rescored | GPU recall rescored | CPU QPS raw | CPU QPS rescored | CPU recall rescored |")
        print("|---|---|---|---|---|---|---|---|")
        for row in p["sweep"]:
            print(f"| {row['nprobe']} | {row['gpu_qps_raw_k10']:,.0f} | {row['gpu_recall_raw']} | {row['gpu_qps_rescored']:,.0f} | "
                  f"{row['gpu_recall_rescored']} | {row['cpu_qps_raw_k10']:,.0f} | {row['cpu_qps_rescored']:,.0f} | {row['cpu_recall_rescored']} |")
        b = g["binary"]
        print(f"binary {b['factory']}: GPU {b['gpu_qps_raw_k10']:,.0f} QPS raw / {b['gpu_qps_rescored']:,.0f} rescored "
              f"(recall {b['gpu_recall_rescored']}); CPU {b['cpu_qps_raw_k10']:,.0f} raw / {b['cpu_qps_rescored']:,.0f} rescored")


if __name__ == "__main__":
    main()
