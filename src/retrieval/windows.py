"""Sliding windows over a text, as UTF-8 byte ranges for the exact index.

The exact index counts byte strings, but windows are defined on characters (50 characters) or on
whitespace tokens (13 tokens). These helpers turn a text into one UTF-8 buffer plus the byte
`starts` and `lengths` of every window, ready for `Index.count_windows(buf, starts, lengths)`.

Conventions (shared by `ngram_counts` and `rtv contamination`):

- Character windows: every run of `n` consecutive characters (stride 1). A character is one
  Unicode code point; its byte range is found from the UTF-8 encoding, so windows never cut a
  multi-byte character.
- Token windows: tokens are maximal runs of non-whitespace (`str.split()` semantics, Unicode
  whitespace). A window of `n` tokens is the *verbatim* span from the first byte of token `i` to
  the last byte of token `i+n-1`, with the original whitespace between them (the index is exact:
  it is searched as it appears in the text, not re-joined with single spaces).
- A text shorter than one window gives **no window** by default (`short="skip"`): a short
  string that occurs verbatim somewhere (an answer "4", a keyword) is no evidence of
  contamination. `short="whole"` gives one window covering the whole text instead (used by
  callers that want every non-empty text counted). An empty text never gives a window.
- Characters that cannot be encoded (lone surrogates from JSON) are replaced by `?`, one byte
  each, so character positions are kept.
"""

from __future__ import annotations

import re

import numpy as np

from .errors import InputError

_TOKEN_RE = re.compile(r"\S+")
_EMPTY = np.zeros(0, dtype=np.int64)


def encode(text: str) -> bytes:
    """UTF-8 bytes of `text`; unencodable characters (lone surrogates) become one `?` each."""
    return text.encode("utf-8", "replace")


def char_byte_offsets(data: bytes, n_chars: int | None = None) -> np.ndarray:
    """Byte offset of every character of UTF-8 `data`, plus len(data) at the end (int64).

    For pure ASCII this is arange(len+1); otherwise the character starts are the bytes that are
    not UTF-8 continuation bytes (0b10xxxxxx).
    """
    if n_chars is not None and n_chars == len(data):
        return np.arange(len(data) + 1, dtype=np.int64)
    arr = np.frombuffer(data, dtype=np.uint8)
    starts = np.flatnonzero((arr & 0xC0) != 0x80).astype(np.int64)
    return np.append(starts, np.int64(len(data)))


def _check(n: int, short: str) -> None:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"window size must be a positive integer, got {n!r}; pass e.g. --window 50")
    if short not in ("skip", "whole"):
        raise InputError(f"short must be 'skip' or 'whole', got {short!r}")


def char_window_ranges(data: bytes, n: int, short: str = "skip", n_chars: int | None = None):
    """(starts, lengths) of the n-character windows of UTF-8 `data` (byte ranges, int64)."""
    _check(n, short)
    if not data:
        return _EMPTY, _EMPTY
    offs = char_byte_offsets(data, n_chars)
    count = len(offs) - 1  # characters
    if count < n:
        if short == "skip":
            return _EMPTY, _EMPTY
        return np.zeros(1, dtype=np.int64), np.array([len(data)], dtype=np.int64)
    starts = offs[: count - n + 1]
    lengths = offs[n:] - starts
    return starts, lengths


def token_window_ranges(text: str, data: bytes, n: int, short: str = "skip"):
    """(starts, lengths) of the n-token windows of `text` (whose UTF-8 bytes are `data`)."""
    _check(n, short)
    spans = [(m.start(), m.end()) for m in _TOKEN_RE.finditer(text)]
    if not spans:
        return _EMPTY, _EMPTY
    tok = np.asarray(spans, dtype=np.int64)
    if len(data) != len(text):  # map character positions to byte positions
        offs = char_byte_offsets(data)
        tok = offs[tok]
    if len(tok) < n:
        if short == "skip":
            return _EMPTY, _EMPTY
        return tok[:1, 0].copy(), np.array([tok[-1, 1] - tok[0, 0]], dtype=np.int64)
    starts = tok[: len(tok) - n + 1, 0]
    ends = tok[n - 1 :, 1]
    return starts.copy(), ends - starts


def char_windows(text: str, n: int, short: str = "skip"):
    """(bytes, starts, lengths): every window of `n` consecutive characters of `text`."""
    data = encode(text)
    starts, lengths = char_window_ranges(data, n, short, n_chars=len(text))
    return data, starts, lengths


def token_windows(text: str, n: int, short: str = "skip"):
    """(bytes, starts, lengths): every window of `n` consecutive whitespace tokens of `text`."""
    data = encode(text)
    starts, lengths = token_window_ranges(text, data, n, short)
    return data, starts, lengths


def byte_windows(data: bytes, n: int, short: str = "skip"):
    """(bytes, starts, lengths): every window of `n` consecutive bytes."""
    _check(n, short)
    if not data:
        return data, _EMPTY, _EMPTY
    if len(data) < n:
        if short == "skip":
            return data, _EMPTY, _EMPTY
        return data, np.zeros(1, dtype=np.int64), np.array([len(data)], dtype=np.int64)
    starts = np.arange(len(data) - n + 1, dtype=np.int64)
    return data, starts, np.full(len(starts), n, dtype=np.int64)


def windows(text: str | bytes, n: int, unit: str = "chars", short: str = "skip"):
    """Dispatch on unit: "chars", "tokens" or "bytes"."""
    if unit == "chars":
        return char_windows(text, n, short)
    if unit == "tokens":
        return token_windows(text, n, short)
    if unit == "bytes":
        return byte_windows(text if isinstance(text, bytes) else encode(text), n, short)
    raise InputError(f"unknown window unit {unit!r}; use chars, tokens or bytes")
