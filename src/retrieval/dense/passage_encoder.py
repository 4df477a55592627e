"""Embedding many passages fast (``rtv index`` on a GPU): the same vectors as sentence-transformers'
``encode``, with the host's work off the device's critical path.

sentence-transformers' own encode runs one batch at a time in one thread: tokenize (Python around
the fast tokenizer), pad to the batch's longest, copy, run the model, copy the result back and wait
for it, then tokenize the next batch while the GPU idles. On an H200 (eval/results/bench_embed.json,
passages of up to 254 tokens) its tokenizing took 31.3 s of the 37.0 s for 50,000 passages, the
model 1.4 s: the GPU idled most of the time. Here:

- the model's own fast tokenizer (``tokenizers``, the one sentence-transformers uses, truncating to
  the model's max_seq_length; without character offsets) runs in background threads (its Rust
  code releases the GIL), a chunk of passages per task, several chunks ahead of the device;
- each chunk is sorted by token count and cut into batches of about ``token_budget`` tokens
  (passages x the batch's longest), so batches are large and carry little padding;
- token ids travel as int32 in pinned memory with non-blocking copies; the attention mask is made
  on the device from the lengths;
- the model's transformer runs in the model's dtype (float16 on a GPU: load_embedder), SDPA
  attention where transformers picks it; pooling (the model's modes) and L2 normalisation run on
  the device in float32; each batch's vectors come back by a non-blocking copy, waited for only
  a few batches later, so the device always has queued work.

Only for models whose pipeline ``embedder.pipeline`` reproduces (Transformer, Pooling,
[Normalize]) with a fast tokenizer; ``Embedder`` keeps sentence-transformers' path otherwise.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..cores import usable_cores
from .embedder import Unsupported, pipeline

TOKEN_BUDGET = 1 << 18  # tokens per batch (passages x longest): large enough to fill an H200
CHUNK_MAX = 4096  # passages per tokenizer task (sorted by length inside it)
CHUNK_MIN = 256
IN_FLIGHT = 4  # batches whose vectors are still on their way back before the oldest is waited for


def tokenizer_threads() -> int:
    """Background tokenizer threads: RTV_EMBED_WORKERS, else up to 8 (on the 16-core H200 host,
    1 / 8 / 15 threads tokenized 2.8k / 11.4k / 10.6k passages/s of ~220 tokens: bench_embed.json;
    a build's shard workers need the other cores)."""
    env = os.environ.get("RTV_EMBED_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(8, usable_cores() - 1))


class PassageEncoder:
    """``encode(texts)`` -> (n, dim) float32, in input order, for a loaded sentence-transformers
    model on ``device``. Raises Unsupported (at construction) for a model it does not reproduce."""

    def __init__(self, st_model, model_dir: str, device: str, threads: int | None = None,
                 token_budget: int = TOKEN_BUDGET):
        import torch
        from tokenizers import Tokenizer

        self.spec = pipeline(model_dir)  # Unsupported unless Transformer, Pooling[, Normalize]
        self.st_model = st_model
        self.transformer = st_model[0]
        hf_tok = getattr(st_model, "tokenizer", None)
        backend = getattr(hf_tok, "backend_tokenizer", None)
        if backend is None:
            raise Unsupported("the model's tokenizer is not a fast (tokenizers) one")
        # a private copy of exactly what sentence-transformers tokenizes with (transformers may have
        # adjusted tokenizer.json's normaliser), so its truncation setting is ours alone
        self.tokenizer = Tokenizer.from_str(backend.to_str())
        self.tokenizer.no_padding()
        # the same ids without the character offsets (tokenizers >= 0.20), a little less CPU a
        # passage (eval/results/bench_embed_tokenize.json)
        self.encode_batch = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        self.pad_id = int(hf_tok.pad_token_id or 0)
        self.with_types = "token_type_ids" in getattr(hf_tok, "model_input_names", ())
        self.dim = int(self.spec["dim"])
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.threads = threads or tokenizer_threads()
        self.token_budget = int(token_budget)
        self._max_len = None

    # -- host side: tokenizing, sorting, padding (background threads) ----------------------------------
    def _set_max_len(self) -> None:
        # sentence-transformers truncates to max_seq_length tokens, special tokens included; read at
        # every encode call, as its own encode does (a caller may change it)
        limit = int(getattr(self.st_model, "max_seq_length", None) or self.spec["max_seq_length"])
        if limit != self._max_len:
            self.tokenizer.enable_truncation(limit)
            self._max_len = limit

    def prepare(self, first: int, texts: Sequence[str]) -> list[tuple[np.ndarray, object, object]]:
        """One chunk: [(passage numbers, token ids (b, width) int32, lengths (b,) int64)], the
        chunk's passages in batches of similar length, longest first."""
        import torch

        ids = [e.ids for e in self.encode_batch(list(texts))]  # the GIL is released inside
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        order = np.argsort(-lens, kind="stable")
        out = []
        lo = 0
        while lo < len(order):
            width = int(lens[order[lo]])  # the longest of this batch: the chunk is sorted longest first
            take = order[lo:lo + max(1, self.token_budget // max(width, 1))]
            lo += len(take)
            blen = lens[take]
            flat = np.fromiter(itertools.chain.from_iterable(ids[i] for i in take), dtype=np.int32,
                               count=int(blen.sum()))
            batch = np.full((len(take), width), self.pad_id, dtype=np.int32)
            batch[np.arange(width) < blen[:, None]] = flat  # row by row, each row's tokens then padding
            tids, tlens = torch.from_numpy(batch), torch.from_numpy(blen)
            if self.cuda:
                tids, tlens = tids.pin_memory(), tlens.pin_memory()
            out.append((first + take, tids, tlens))
        return out

    def _chunks(self, n: int) -> list[tuple[int, int]]:
        # small enough that every thread has work early (a shard's few thousand passages start the
        # device after one small chunk), large enough to sort well and keep Python overhead low
        size = int(np.clip(-(-n // (2 * self.threads)), CHUNK_MIN, CHUNK_MAX))
        return [(lo, min(n, lo + size)) for lo in range(0, n, size)]

    # -- device side ----------------------------------------------------------------------------------
    def _embed(self, tids, tlens):
        import torch

        ids = tids.to(self.device, non_blocking=True).long()
        lens = tlens.to(self.device, non_blocking=True)
        mask = (torch.arange(ids.shape[1], device=self.device) < lens[:, None]).long()
        feats = {"input_ids": ids, "attention_mask": mask}
        if self.with_types:
            feats["token_type_ids"] = torch.zeros_like(ids)
        tokens = self.transformer(feats)["token_embeddings"]
        return pool(tokens, mask, self.spec["pooling"], self.spec["normalize"])

    def encode(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        import torch

        texts = texts if isinstance(texts, list) else list(texts)
        n = len(texts)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        self._set_max_len()
        pending: deque = deque()  # (passage numbers, host tensor, event), oldest first

        def land(block: bool) -> None:
            while pending and (block or len(pending) > IN_FLIGHT):
                idx, host, event = pending.popleft()
                if event is not None:
                    event.synchronize()
                out[idx] = host.numpy()
                if progress is not None:
                    progress(len(idx))

        chunks = self._chunks(n)
        ahead = 2 * self.threads
        with ThreadPoolExecutor(self.threads, thread_name_prefix="rtv-tokenize") as pool_, torch.inference_mode():
            futures: deque = deque()
            todo = iter(chunks)
            for lo, hi in itertools.islice(todo, ahead):
                futures.append(pool_.submit(self.prepare, lo, texts[lo:hi]))
            while futures:
                batches = futures.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    futures.append(pool_.submit(self.prepare, nxt[0], texts[nxt[0]:nxt[1]]))
                for idx, tids, tlens in batches:
                    vec = self._embed(tids, tlens)
                    if self.cuda:
                        host = torch.empty(vec.shape, dtype=torch.float32, pin_memory=True)
                        host.copy_(vec, non_blocking=True)
                        event = torch.cuda.Event()
                        event.record()
                    else:
                        host, event = vec, None
                    pending.append((idx, host, event))
                    land(block=False)
            land(block=True)
        return out


def pool(tokens, mask, modes: list[str], normalize: bool):
    """sentence-transformers' Pooling (the given modes, concatenated) and Normalize, on the tokens'
    device, in float32 whatever the tokens' dtype (the numpy twin: embedder._pool)."""
    import torch

    m = mask.unsqueeze(-1).to(tokens.dtype)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(tokens[:, 0].float())
        elif mode == "max":
            parts.append(tokens.float().masked_fill(m == 0, -1e9).amax(dim=1))
        else:  # mean, mean_sqrt_len_tokens: the sum over real tokens / their count (or its root)
            count = m.sum(dim=1, dtype=torch.float32).clamp(min=1e-9)
            summed = (tokens * m).sum(dim=1, dtype=torch.float32)  # exact products, float32 sums
            parts.append(summed / (count if mode == "mean" else count.sqrt()))
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    if normalize:
        out = torch.nn.functional.normalize(out, p=2, dim=1)
    return out
