"""Lexical candidates: BM25 over passages and exact matches from the FM-index.

BM25 is FTS5's bm25(), over the index's postings files (retrieval.postings, the default) or, in an
index built with lexical="fts5" (or before postings files existed), its SQLite FTS5 table: the same
scores for term queries; Store.bm25 picks the one the index has.

Query syntax understood here (everything else is plain text):
- `"a quoted phrase"`: the phrase must occur byte-for-byte (case-sensitive) in a passage for the
  exact stage; BM25 over an FTS5 table also scores it as an FTS5 phrase (postings files have no
  positions and leave it out; its words are OR terms either way).
- every other word is a BM25 term (OR semantics, ranked by FTS5's bm25(); English stop words are
  left out unless the query has nothing else). Terms that the FTS tokenizer splits apart
  (identifiers and codes such as ERR_CONN_RESET, IL-10, std::move) and that are rare in the corpus
  (at most `rare_max` occurrences in the FM-index) are also looked up exactly. A plain rare word
  is not: BM25 already weighs it by its rarity, and searching it again only double-counts it
  (on SciFact train that cost 0.02-0.03 nDCG@10 in fusion; eval/results/retrieval_fusion.json).

Nothing in the user's query reaches FTS5 as syntax: every token is passed as a double-quoted
FTS5 string (embedded quotes doubled), joined with OR.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import InputError

_PHRASE = re.compile(r'"([^"]+)"')
_WORD = re.compile(r"[^\W_]+", re.UNICODE)  # FTS5 unicode61: letters and digits are token chars
_STRIP = ".,;:!?()[]{}<>'\"`"
MAX_TERMS = 64
# Lucene's English stop words. As OR terms they add little to BM25 (low idf) but cost the most:
# FTS5 walks their long posting lists and scores every passage on them (measured in
# eval/retrieval_eval.py). Quoted phrases keep them.
STOPWORDS = frozenset("a an and are as at be but by for if in into is it no not of on or such that the their "
                      "then there these they this to was will with".split())


@dataclass
class ParsedQuery:
    text: str
    phrases: list[str] = field(default_factory=list)  # quoted phrases, without the quotes
    terms: list[str] = field(default_factory=list)  # whitespace tokens outside quotes, punctuation stripped


def parse_query(text: str) -> ParsedQuery:
    phrases = [p.strip() for p in _PHRASE.findall(text) if p.strip()]
    rest = _PHRASE.sub(" ", text)
    terms: list[str] = []
    for tok in rest.split():
        tok = tok.strip(_STRIP)
        if tok and tok not in terms:
            terms.append(tok)
    return ParsedQuery(text, phrases, terms)


def fts_query(text: str) -> str:
    """A safe FTS5 MATCH expression for free text: quoted tokens and phrases joined with OR ('' if none)."""
    q = parse_query(text)
    parts: list[str] = []
    for phrase in q.phrases:
        words = _WORD.findall(phrase)
        if len(words) > 1:
            parts.append('"' + " ".join(words).replace('"', '""') + '"')
    words = _WORD.findall(_PHRASE.sub(" ", text) + " " + " ".join(q.phrases))
    content = [w for w in words if w.lower() not in STOPWORDS]
    for word in content or words:  # stopwords only when the query has nothing else
        token = '"' + word.replace('"', '""') + '"'
        if token not in parts:
            parts.append(token)
    return " OR ".join(parts[:MAX_TERMS])


def bm25(store, query: str, k: int = 100, doc_filter=None) -> list[tuple[int, float]]:
    """Top-k passages by FTS5 BM25 as (passage_id, score), higher is better (of the documents a
    retrieval.filters.DocFilter allows, when one is given)."""
    if k <= 0:
        return []
    match = fts_query(query)
    if not match:
        return []
    try:
        rows = store.bm25(match, k, doc_filter)
    except sqlite3.OperationalError as exc:
        raise InputError(f"query {query!r}: cannot be searched lexically ({exc})") from None
    return [(int(pid), -float(rank)) for pid, rank in rows]  # FTS5 rank = bm25(): lower is better


# -- exact matches -> passages ---------------------------------------------------------------------

def map_occurrences(store, doc_ids, offsets, length: int) -> dict[int, list[tuple[int, int]]]:
    """passage_id -> [(start, end)] byte spans within the passage, for occurrences (doc, offset) of a
    pattern of `length` bytes. An occurrence belongs to every passage that contains it whole; one
    that no passage holds whole (it crosses a cut between passages) belongs to every passage it
    overlaps, with its span clipped to the passage, so exact search never loses what `find` finds."""
    by_doc = store.passage_spans(doc_ids)
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for doc, off in zip(doc_ids, offsets):
        doc, off = int(doc), int(off)
        end = off + length
        overlapping = []
        for pid, s, e in by_doc.get(doc, ()):  # sorted by start
            if s >= end:
                break
            if off < e:
                overlapping.append((pid, s, e))
        whole = [(pid, s, e) for pid, s, e in overlapping if s <= off and end <= e]
        for pid, s, e in whole or overlapping:
            out[pid].append((max(off, s) - s, min(end, e) - s))
    return out


@dataclass
class ExactCandidates:
    ranked: list[tuple[int, float]]  # (passage_id, score) best first
    spans: dict[int, list[tuple[int, int]]]  # passage_id -> byte spans within the passage
    phrases_matched: dict[int, int]  # passage_id -> number of distinct quoted phrases it contains


def fts_splits(term: str) -> bool:
    """Does the FTS tokenizer see `term` as something other than one token (so BM25 cannot match it whole)?"""
    return _WORD.findall(term) != [term]


def exact_candidates(index, query: str | ParsedQuery, *, whole_query: bool = False, rare_max: int = 50,
                     limit: int = 1000, k: int = 100, split_terms_only: bool = True,
                     where: str | None = None) -> ExactCandidates:
    """Passages that contain the query's quoted phrases or rare terms byte-for-byte.

    whole_query: with no quoted phrase, search the whole query text as one phrase (mode 'exact').
    split_terms_only: look up only rare terms that the FTS tokenizer splits (see the module doc);
    False looks up every rare term (what rtv did before; kept to measure the difference).
    Score: 2 per distinct quoted phrase + log(1 + n_docs / count) per rare term, + a small bonus
    for repeated occurrences; passages are ranked by it. `where` (a retrieval.filters expression):
    only the documents it allows; rarity is counted in them too, as in a fresh index of them."""
    q = parse_query(query) if isinstance(query, str) else query
    searcher = index if where is None else index.exact_view(where)  # counts and finds of allowed documents
    phrases = list(q.phrases)
    if whole_query and not phrases and q.text.strip():
        phrases = [q.text.strip()]
    patterns: list[tuple[str, float, bool]] = [(p, 2.0, True) for p in phrases]
    if not whole_query or q.phrases:
        flt = index.doc_filter(where) if where is not None else None
        n_docs = max(1, flt.n_allowed if flt is not None else int(getattr(index, "n_documents", 1)))
        for term in q.terms:
            if len(term.encode("utf-8")) < 3 or (split_terms_only and not fts_splits(term)):
                continue
            count = int(searcher.count(term))
            if 0 < count <= rare_max:
                patterns.append((term, math.log1p(n_docs / count), False))
    scores: dict[int, float] = defaultdict(float)
    spans: dict[int, list[tuple[int, int]]] = defaultdict(list)
    phrases_matched: dict[int, int] = defaultdict(int)
    for pattern, weight, is_phrase in patterns:
        data = pattern.encode("utf-8")
        docs, offs = searcher.find(data, 0, limit)
        if len(docs) == 0:
            continue
        for pid, sp in map_occurrences(index.store, docs, offs, len(data)).items():
            scores[pid] += weight + 0.1 * math.log(len(sp))
            spans[pid].extend(sp)
            if is_phrase:
                phrases_matched[pid] += 1
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    keep = {pid for pid, _ in ranked}
    return ExactCandidates(
        ranked=ranked,
        spans={pid: sorted(set(s)) for pid, s in spans.items() if pid in keep},
        phrases_matched={pid: n for pid, n in phrases_matched.items() if pid in keep},
    )


def spans_in_text(text: str, patterns: Sequence[str]) -> list[tuple[int, int]]:
    """Byte spans of every occurrence of the patterns in a passage's text (case-sensitive)."""
    data = text.encode("utf-8")
    out: set[tuple[int, int]] = set()
    for p in patterns:
        pat = p.encode("utf-8")
        if not pat:
            continue
        i = data.find(pat)
        while i >= 0:
            out.add((i, i + len(pat)))
            i = data.find(pat, i + 1)
    return sorted(out)
