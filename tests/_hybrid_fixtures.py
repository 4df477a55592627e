"""Shared helpers for the hybrid tests: a tiny cross-encoder trained here, and small corpora.

No cross-encoder's weights ship in a PyPI or Debian package, so the rerank stage is tested with
a real sentence-transformers CrossEncoder (2-layer BERT) trained in a few seconds on a topic
task: the query names a topic ("animals" / "colors" / "tools") and a passage is relevant when
its words belong to that topic. Its WordPiece vocabulary is just the words used here.
"""

from __future__ import annotations

import random
from pathlib import Path

TOPICS = {
    "animals": "dog cat horse cow sheep goat lion tiger bear wolf fox rabbit mouse eagle owl".split(),
    "colors": "red blue green yellow purple orange pink brown black white gray violet cyan".split(),
    "tools": "hammer saw drill wrench screwdriver chisel pliers shovel rake axe ladder file".split(),
}
FILLER = "the a of and with in on some many few".split()


def topic_passage(rng: random.Random, topic: str, n: int = 8) -> str:
    words = [rng.choice(TOPICS[topic]) for _ in range(n)] + [rng.choice(FILLER) for _ in range(3)]
    rng.shuffle(words)
    return " ".join(words)


def train_tiny_cross_encoder(out_dir: Path, steps: int = 300, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(seed)
    rng = random.Random(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "list", *TOPICS, *FILLER,
             *(w for ws in TOPICS.values() for w in ws)]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=64, num_labels=1,
                        # BERT's default init (0.02) and dropout leave this tiny model stuck at chance
                        initializer_range=0.2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertForSequenceClassification(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    names = list(TOPICS)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend
    for _ in range(steps):
        qs, ps, ys = [], [], []
        for _ in range(32):
            q = rng.choice(names)
            p = q if rng.random() < 0.5 else rng.choice([n for n in names if n != q])
            qs.append(rng.choice(["", "list "]) + q)  # "list tools" is a query in the tests too
            ps.append(topic_passage(rng, p))
            ys.append(float(p == q))
        batch = tok(qs, ps, padding=True, truncation=True, max_length=64, return_tensors="pt")
        loss = loss_fn(model(**batch).logits[:, 0], torch.tensor(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
