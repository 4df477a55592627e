"""Passage embedding throughput on a GPU, through the code path `rtv index` uses
(retrieval.dense.embed_passages), before and after PassageEncoder, side by side in one run; where
the time goes; and the vectors' agreement with sentence-transformers in float32.

    python eval/bench_embed.py --model DIR --passages 200000        # on the GPU machine
    python eval/bench_embed.py --report eval/results/bench_embed.json  # the table (and plot) again

Corpus: bench_dense's collector (source files and docs of this machine) chunked into passages of
--max-tokens model tokens with --overlap (rtv's defaults for the shipped model: 254 and 32).
Queries: first lines of docstrings of those files (bench_dense), for the neighbour agreement.

Rows (passages/s, MB/s of passage text):
- st_encode: sentence-transformers' encode of the float16 model, batch 1024 (what
  eval/bench_ivf.py's collect_and_embed and the old measurement used);
- rtv_before: embed_passages with the Embedder's sentence-transformers path (PassageEncoder off):
  what `rtv index` did before;
- rtv_after: embed_passages with PassageEncoder (float16 model, as load_embedder loads it on a GPU).
Breakdown: the host part alone (tokenizing: sentence-transformers' preprocess vs PassageEncoder's
threads), the device part alone (the model on batches already on the device), by token budget.
Agreement (on the first --agree passages): max |diff| and min cosine vs sentence-transformers'
float32 encode (TF32 off), and each query's top 10 by inner product over those passages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))
from provenance import provenance, write_results  # noqa: E402


def rate(n: int, nbytes: int, secs: float) -> dict:
    return {"passages": n, "seconds": round(secs, 3), "passages_per_s": round(n / secs, 1),
            "mb_per_s": round(nbytes / secs / 1e6, 3)}


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t


def collect(args):
    import bench_dense

    files = bench_dense.list_files(bench_dense.default_roots(), args.seed)
    texts, _, queries = bench_dense.collect(files, args.passages, args.model, args.max_tokens, args.overlap,
                                            os.cpu_count(), args.agree)
    rng = np.random.default_rng(args.seed)
    pick = rng.choice(len(queries), min(args.queries, len(queries)), replace=False) if queries else []
    return texts, [queries[i][0] for i in pick]


def st_breakdown(st, texts, device: str, batch: int) -> dict:
    """sentence-transformers' encode in its two parts: preprocess (tokenize + pad, on the host) and
    the model (Transformer, Pooling, Normalize) on features already on the device."""
    import torch

    order = np.argsort([-len(t) for t in texts], kind="stable")  # encode's own length sort
    batches = [[texts[i] for i in order[lo:lo + batch]] for lo in range(0, len(texts), batch)]
    tokenize = getattr(st, "preprocess", None) or st.tokenize
    feats, tok_s = timed(lambda: [tokenize(b) for b in batches], "cpu")
    on_dev = [{k: v.to(device) for k, v in f.items() if isinstance(v, torch.Tensor)} for f in feats]
    sync(device)

    def run():
        with torch.inference_mode():
            return [st(f)["sentence_embedding"] for f in on_dev]

    _, model_s = timed(run, device)
    padded = sum(int(f["input_ids"].numel()) for f in feats)
    real = sum(int(f["attention_mask"].sum()) for f in feats)
    return {"tokenize_s": round(tok_s, 3), "tokenize_passages_per_s": round(len(texts) / tok_s, 1),
            "model_s": round(model_s, 3), "model_passages_per_s": round(len(texts) / model_s, 1),
            "padding_fraction": round(1 - real / padded, 4)}


def pe_breakdown(pe, texts, device: str, budgets: list[int], threads: list[int]) -> dict:
    """PassageEncoder's two parts: tokenizing into sorted batches (threads), and the model + pooling
    on batches already on the device, by token budget."""
    import torch
    from concurrent.futures import ThreadPoolExecutor

    out = {"tokenize": [], "device": []}
    chunks = pe._chunks(len(texts))
    for t in threads:
        with ThreadPoolExecutor(t) as ex:
            _, secs = timed(lambda: list(ex.map(lambda c: pe.prepare(c[0], texts[c[0]:c[1]]), chunks)), "cpu")
        out["tokenize"].append({"threads": t, "seconds": round(secs, 3), "passages_per_s": round(len(texts) / secs, 1)})
    keep = pe.token_budget
    for budget in budgets:
        pe.token_budget = budget
        batches = [b for c in chunks for b in pe.prepare(c[0], texts[c[0]:c[1]])]
        on_dev = [(t.to(device), n.to(device)) for _, t, n in batches]
        padded = sum(int(t.numel()) for t, _ in on_dev)
        real = sum(int(n.sum()) for _, n in on_dev)

        def run():
            with torch.inference_mode():
                return [pe._embed(t, n) for t, n in on_dev]

        run()  # warm-up at this shape mix
        _, secs = timed(run, device)
        out["device"].append({"token_budget": budget, "batches": len(on_dev), "seconds": round(secs, 3),
                              "passages_per_s": round(len(texts) / secs, 1), "padding_fraction": round(1 - real / padded, 4),
                              "real_tokens_per_s": round(real / secs, 1)})
    pe.token_budget = keep
    return out


def top_k(q: np.ndarray, x: np.ndarray, k: int = 10) -> np.ndarray:
    """Each query's k best passages by inner product, best first."""
    s = q @ x.T
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return np.take_along_axis(part, np.argsort(-np.take_along_axis(s, part, 1), axis=1, kind="stable"), 1)


def tokenize_only(args) -> None:
    """CPU-seconds a passage of PassageEncoder.prepare (one thread) with encode_batch (offsets
    computed) and encode_batch_fast (none), interleaved, best of --repeat; and that both give the
    same token ids."""
    from retrieval.dense import load_embedder
    from retrieval.dense.embedder import default_model_dir
    from retrieval.dense.passage_encoder import PassageEncoder

    args.model = args.model or str(default_model_dir())
    load_start = os.getloadavg()
    texts, _ = collect(args)
    emb = load_embedder(args.model, "cpu")
    pe = PassageEncoder(emb.model, emb.source, "cpu", threads=1)
    pe._set_max_len()
    variants = {"encode_batch": pe.tokenizer.encode_batch, "encode_batch_fast": pe.tokenizer.encode_batch_fast}
    best = {k: float("inf") for k in variants}
    for _ in range(3):
        for name, fn in variants.items():
            pe.encode_batch = fn
            t = time.process_time()
            pe.prepare(0, texts)
            best[name] = min(best[name], time.process_time() - t)
    same = all(a.ids == b.ids for a, b in zip(pe.tokenizer.encode_batch(texts), pe.tokenizer.encode_batch_fast(texts)))
    nbytes = sum(len(t.encode()) for t in texts)
    r = {**provenance(), "model": args.model, "passages": len(texts), "mb": round(nbytes / 1e6, 2),
         "max_tokens": args.max_tokens, "same_ids": same, "load_start": load_start, "load_end": os.getloadavg(),
         "tokenizers": __import__("tokenizers").__version__,
         "rows": {k: {"cpu_s": round(v, 3), "us_per_passage": round(v / len(texts) * 1e6, 1),
                      "mb_per_cpu_s": round(nbytes / v / 1e6, 3)} for k, v in best.items()}}
    if args.commit:
        r["commit"], r["commit_dirty"] = args.commit, None
    write_results("bench_embed_tokenize.json", r)
    for k, v in r["rows"].items():
        print(f"{k}: {v['us_per_passage']} us a passage, {v['mb_per_cpu_s']} MB per CPU-second")
    print(f"same ids: {same}; load {r['load_start']} -> {r['load_end']}")


def agreement(vecs: np.ndarray, ref: np.ndarray, q: np.ndarray, k: int = 10) -> dict:
    diff = np.abs(vecs - ref)
    cos = np.sum(vecs * ref, axis=1)
    ref_top, top = top_k(q, ref, k), top_k(q, vecs, k)
    same_set = [set(a) == set(b) for a, b in zip(top, ref_top)]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top, ref_top)]
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()), "min_cosine": float(cos.min()),
            "queries": len(q), "top10_same_set": round(float(np.mean(same_set)), 4),
            "top10_same_order": round(float(np.mean([np.array_equal(a, b) for a, b in zip(top, ref_top)])), 4),
            "top10_overlap": round(float(np.mean(overlap)), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="sentence-transformers model directory (default: the shipped one)")
    ap.add_argument("--passages", type=int, default=200_000, help="passages for rtv_after")
    ap.add_argument("--before", type=int, default=50_000, help="passages for st_encode and rtv_before (slower)")
    ap.add_argument("--agree", type=int, default=50_000, help="passages for the float32 agreement")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=254)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--budgets", default="32768,65536,131072,262144,524288")
    ap.add_argument("--threads", default="1,4,8,15")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--commit", help="the commit measured (a device's copy of .git may be stale)")
    ap.add_argument("--out", default="bench_embed.json")
    ap.add_argument("--report", help="print the table of this JSON (and write its plot) instead of running")
    ap.add_argument("--tokenize-only", action="store_true",
                    help="only PassageEncoder's tokenizing, with and without character offsets, in CPU-seconds of "
                         "one thread (no GPU needed); writes bench_embed_tokenize.json")
    args = ap.parse_args()
    if args.tokenize_only:
        return tokenize_only(args)
    if args.report:
        r = json.loads(Path(args.report).read_text())
        report(r)
        plot(r, Path(args.report).with_suffix(".png"))
        return

    import torch
    from sentence_transformers import SentenceTransformer

    from retrieval.dense import embed_passages, load_embedder
    from retrieval.dense.embedder import default_model_dir

    args.model = args.model or str(default_model_dir())
    t0 = time.time()
    texts, qtexts = collect(args)
    nbytes = [len(t.encode()) for t in texts]
    print(f"{len(texts):,} passages ({sum(nbytes) / 1e6:.1f} MB, mean {np.mean(nbytes):.0f} B), {len(qtexts)} "
          f"queries in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    r = {**provenance(), "model": args.model, "device": args.device,
         "gpu_name": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
         "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                      "sentence_transformers": __import__("sentence_transformers").__version__,
                      "tokenizers": __import__("tokenizers").__version__},
         "corpus": {"passages": len(texts), "mb": round(sum(nbytes) / 1e6, 2), "mean_bytes": round(float(np.mean(nbytes)), 1),
                    "max_tokens": args.max_tokens, "overlap": args.overlap, "queries": len(qtexts),
                    "source": "bench_dense collector: files of this machine"},
         "load_start": os.getloadavg()}
    if args.commit:
        r["commit"], r["commit_dirty"] = args.commit, None

    emb = load_embedder(args.model, args.device)
    if emb.passage_encoder is None:  # the CPU (trying the script out): rtv keeps sentence-transformers there
        from retrieval.dense.passage_encoder import PassageEncoder

        emb.passage_encoder = PassageEncoder(emb.model, emb.source, args.device)
    pe = emb.passage_encoder
    r["attention"] = getattr(emb.model[0].auto_model.config, "_attn_implementation", None)
    r["model_dtype"] = str(next(emb.model.parameters()).dtype)
    r["tokenizer_threads"], r["token_budget"] = pe.threads, pe.token_budget
    warm = texts[:4096]
    nb, nb_all = sum(nbytes[:args.before]), sum(nbytes)
    sub = texts[:args.before]
    rows = {}

    # after: embed_passages with PassageEncoder (what rtv index runs now)
    embed_passages(warm, len(warm), emb)
    after, secs = timed(lambda: embed_passages(texts, len(texts), emb), args.device)
    rows["rtv_after"] = rate(len(texts), nb_all, secs)
    print("rtv_after", rows["rtv_after"], file=sys.stderr, flush=True)
    after_sub, secs = timed(lambda: embed_passages(sub, len(sub), emb), args.device)
    rows["rtv_after_same_passages"] = rate(len(sub), nb, secs)
    # before: the Embedder's sentence-transformers path through embed_passages
    emb.passage_encoder = None
    embed_passages(warm, len(warm), emb)
    before, secs = timed(lambda: embed_passages(sub, len(sub), emb), args.device)
    rows["rtv_before"] = rate(len(sub), nb, secs)
    print("rtv_before", rows["rtv_before"], file=sys.stderr, flush=True)
    emb.passage_encoder = pe
    # sentence-transformers' encode, batch 1024 (the earlier measurement)
    st = emb.model
    st.encode(warm, batch_size=1024, normalize_embeddings=True, convert_to_numpy=True)
    st_vecs, secs = timed(lambda: st.encode(sub, batch_size=1024, normalize_embeddings=True, convert_to_numpy=True),
                          args.device)
    rows["st_encode"] = rate(len(sub), nb, secs)
    print("st_encode", rows["st_encode"], file=sys.stderr, flush=True)
    r["rows"] = rows
    r["speedup_after_vs_before"] = round(rows["rtv_after_same_passages"]["passages_per_s"] / rows["rtv_before"]["passages_per_s"], 2)
    r["speedup_after_vs_st_encode"] = round(rows["rtv_after_same_passages"]["passages_per_s"] / rows["st_encode"]["passages_per_s"], 2)
    r["st_breakdown"] = st_breakdown(st, sub, args.device, 1024)
    print("st_breakdown", r["st_breakdown"], file=sys.stderr, flush=True)
    r["after_breakdown"] = pe_breakdown(pe, sub, args.device, [int(b) for b in args.budgets.split(",")],
                                        [int(t) for t in args.threads.split(",")])
    print("after_breakdown", r["after_breakdown"], file=sys.stderr, flush=True)

    # agreement with sentence-transformers in float32 (TF32 off), on the first --agree passages
    n_ag = min(args.agree, len(sub))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref_model = SentenceTransformer(args.model, device=args.device).float()
    ref_model.max_seq_length = st.max_seq_length
    ref = ref_model.encode(sub[:n_ag], batch_size=256, normalize_embeddings=True, convert_to_numpy=True)
    q = ref_model.encode(qtexts, batch_size=256, normalize_embeddings=True, convert_to_numpy=True)
    r["agreement_vs_st_float32"] = {
        "passages": n_ag,
        "rtv_after": agreement(after_sub[:n_ag], ref, q),
        "rtv_before": agreement(before[:n_ag], ref, q),
        "st_encode_float16": agreement(st_vecs[:n_ag], ref, q),
        "rtv_after_vs_rtv_before_max_abs_diff": float(np.abs(after_sub[:n_ag] - before[:n_ag]).max()),
        "rtv_after_run_to_run_max_abs_diff": float(np.abs(after[:n_ag] - after_sub[:n_ag]).max()),
    }
    r["load_end"] = os.getloadavg()
    r["wall_s"] = round(time.time() - t0, 1)
    write_results(args.out if "/" in args.out else args.out, r)
    report(r)


def report(r: dict) -> None:
    print(f"\n{r.get('gpu_name') or r['device']}, {r['model_dtype']}, attention {r['attention']}, "
          f"{r['corpus']['passages']:,} passages of <= {r['corpus']['max_tokens']} tokens "
          f"(mean {r['corpus']['mean_bytes']:.0f} B); load {r['load_start']} -> {r['load_end']}")
    print("| path | passages | s | passages/s | MB/s |\n| --- | --- | --- | --- | --- |")
    for name, row in r["rows"].items():
        print(f"| {name} | {row['passages']:,} | {row['seconds']:.2f} | {row['passages_per_s']:,.0f} | {row['mb_per_s']:.2f} |")
    b = r["st_breakdown"]
    print(f"sentence-transformers alone: tokenize {b['tokenize_passages_per_s']:,.0f}/s, model "
          f"{b['model_passages_per_s']:,.0f}/s, padding {b['padding_fraction']:.1%}")
    a = r.get("after_breakdown") or {}
    for t in a.get("tokenize", []):
        print(f"PassageEncoder tokenize, {t['threads']} threads: {t['passages_per_s']:,.0f}/s")
    for d in a.get("device", []):
        print(f"PassageEncoder device only, budget {d['token_budget']}: {d['passages_per_s']:,.0f}/s "
              f"(padding {d['padding_fraction']:.1%}, {d['batches']} batches)")
    for name, g in r["agreement_vs_st_float32"].items():
        print(f"agreement {name}: {g}")


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["rows"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.barh(names, [r["rows"][n]["passages_per_s"] for n in names], color="#4c72b0")
    for i, n in enumerate(names):
        ax.text(r["rows"][n]["passages_per_s"], i, f" {r['rows'][n]['mb_per_s']:.1f} MB/s", va="center", fontsize=8)
    ax.set_xlabel("passages / s")
    ax.set_title(f"embedding on {r.get('gpu_name') or r['device']} ({r['corpus']['max_tokens']}-token passages)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
