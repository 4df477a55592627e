"""Split a document into overlapping passages, as UTF-8 *byte* spans of the document.

Passages share coordinates with exact (FM-index) matches: ``text.encode()[start:end]`` is the
passage. With a Hugging Face tokenizer, each passage holds at most ``max_tokens`` model tokens
(counted without special tokens, through the tokenizer's offset mapping); without one, tokens are
approximated by words and punctuation marks (``\\w+`` runs and single other non-space characters,
which is what BERT-style pre-tokenizers split on, so it never overcounts much).

Cuts prefer, within the second half of a window: a blank line, then a line break, then any
whitespace; a word is cut only when a window holds no whitespace at all.
"""

from __future__ import annotations

import re

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


_PLAIN: dict[int, tuple[object, object]] = {}


def _plain_backend(tokenizer):
    """The tokenizer's Rust backend without truncation or padding (a cached copy), or None."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode"):
        return None
    if getattr(backend, "truncation", None) is None and getattr(backend, "padding", None) is None:
        return backend
    key = id(backend)
    if key not in _PLAIN or _PLAIN[key][0] is not backend:
        import copy

        plain = copy.deepcopy(backend)
        plain.no_truncation()
        plain.no_padding()
        _PLAIN[key] = (backend, plain)
    return _PLAIN[key][1]


def _token_char_offsets(text: str, tokenizer) -> np.ndarray:
    """(n, 2) int64 char offsets of the tokens of ``text`` (no special tokens)."""
    if tokenizer is None:
        offs = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    else:
        backend = _plain_backend(tokenizer)
        if backend is not None:
            # the Rust tokenizer directly: no length warnings, no Python-side padding logic
            offs = backend.encode(text, add_special_tokens=False).offsets
        else:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            offs = enc["offset_mapping"]
    arr = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
    if len(arr):
        arr = arr[arr[:, 1] > arr[:, 0]]  # drop zero-width tokens (none expected)
    return arr


def _char_to_byte(cps: np.ndarray) -> np.ndarray | None:
    """Byte offset of every char position 0..len(text) (None when the text is ASCII)."""
    if len(cps) == 0 or int(cps.max()) < 0x80:
        return None
    lens = 1 + (cps >= 0x80).astype(np.int64) + (cps >= 0x800) + (cps >= 0x10000)
    out = np.zeros(len(cps) + 1, dtype=np.int64)
    np.cumsum(lens, out=out[1:])
    return out


def chunk_spans(text: str, max_tokens: int = 256, overlap: int = 32, tokenizer=None) -> list[tuple[int, int]]:
    """Passages of ``text`` as (start_byte, end_byte) spans of ``text.encode('utf-8')``.

    Each passage spans at most ``max_tokens`` tokens; consecutive passages share about
    ``overlap`` tokens. Spans start at a token's first byte and end at a token's last byte
    (surrounding whitespace is left out). Empty or whitespace-only text gives ``[]``.
    """
    from .errors import InputError

    if max_tokens < 1:
        raise InputError(f"max_tokens must be >= 1 (got {max_tokens})")
    if overlap < 0 or overlap >= max_tokens:
        raise InputError(f"overlap must be in [0, max_tokens) (got {overlap} with max_tokens={max_tokens})")
    if not text:
        return []
    offs = _token_char_offsets(text, tokenizer)
    n = len(offs)
    if n == 0:
        return []
    starts, ends = offs[:, 0], offs[:, 1]
    cps = np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
    # score of the boundary *before* token k (k = 1..n-1): 0 inside a word, 1 whitespace (or
    # characters the tokenizer dropped), 2 line break, 3 blank line; n is the end of the text
    newlines = np.zeros(len(cps) + 1, dtype=np.int64)
    np.cumsum(cps == 10, out=newlines[1:])
    gap_from, gap_to = ends[:-1], starts[1:]
    n_nl = newlines[gap_to] - newlines[np.minimum(gap_from, gap_to)]
    score = np.zeros(n + 1, dtype=np.int8)
    score[1:n] = np.where(gap_to > gap_from, np.where(n_nl >= 2, 3, np.where(n_nl == 1, 2, 1)), 0)
    score[n] = 4

    spans_tok: list[tuple[int, int]] = []
    i = 0
    while i < n:
        j = min(i + max_tokens, n)
        if j < n:
            lo = i + max(1, max_tokens // 2)
            window = score[lo:j + 1]
            best = int(window.max())
            if best > 0:
                # the last boundary of the best kind in the second half of the window
                j = lo + int(np.nonzero(window == best)[0][-1])
        spans_tok.append((i, j))
        if j >= n:
            break
        nxt = max(j - overlap, i + 1)
        # start the next passage at a word start if one is within the overlap
        if overlap and score[nxt] == 0:
            cand = np.nonzero(score[nxt:j + 1] > 0)[0]
            if len(cand):
                nxt = nxt + int(cand[0])
        i = nxt

    c2b = _char_to_byte(cps)
    out = []
    for a, b in spans_tok:
        s, e = int(starts[a]), int(ends[b - 1])
        if c2b is not None:
            s, e = int(c2b[s]), int(c2b[e])
        out.append((s, e))
    return out
