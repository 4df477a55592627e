"""Hybrid ranking: candidates from dense, lexical (BM25) and exact stages, fused, then reranked.

    search(index, queries, mode="hybrid", k=10, rerank=False, reranker=None, fusion="rrf")
        -> list[list[Hit]]

Modes:
- hybrid: dense top-`depth` + BM25 top-`depth` + exact matches of quoted phrases / rare terms,
  fused (RRF k=60 by default, or weighted min-max score fusion). A dense part that the index was
  built without is left out (the other stages still run).
- dense / lexical: that stage alone. exact: quoted phrases (or the whole query) byte-for-byte.
Rerank (any mode): a cross-encoder rescoring the first `rerank_top_n` (default 50) candidates;
the rest keep their order below them.
Quoted phrases are constraints: passages containing more of the query's quoted phrases always
rank above passages containing fewer (so an exact phrase outranks paraphrases).

Every Hit records in `stages` the stages that found it, with its rank and score at each
("dense", "lexical", "exact", "fused", "rerank"), and in `spans` the byte spans of the query's
quoted phrases and rare terms inside the passage.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from ..errors import InputError
from ..hits import Hit, join_hits

MODES = ("hybrid", "dense", "lexical", "exact")
MAX_QUERY_BYTES = 8192


def check_options(mode: str, k: int, fusion: str, *, flags: bool = True) -> None:
    """Refuse an unknown mode or fusion and a k below 1; errors name the CLI flag (flags=True)
    or the Python argument."""
    from .fusion import FUSIONS

    dash1, dash2 = ("-", "--") if flags else ("", "")
    if mode not in MODES:
        raise InputError(f"{dash2}mode {mode!r}: use one of {', '.join(MODES)}")
    if fusion not in FUSIONS:
        raise InputError(f"{dash2}fusion {fusion!r}: use one of {', '.join(FUSIONS)}")
    if not isinstance(k, int) or k < 1:
        raise InputError(f"{dash1}k {k}: must be an integer >= 1")


def _check(queries: Sequence[str], mode: str, k: int, fusion: str) -> list[str]:
    check_options(mode, k, fusion)
    if isinstance(queries, str):
        queries = [queries]
    out = []
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise InputError("empty query; give some text to search for")
        if len(q.encode("utf-8")) > MAX_QUERY_BYTES:
            raise InputError(f"query of {len(q.encode('utf-8'))} bytes: longer than {MAX_QUERY_BYTES}; shorten it")
        out.append(q)
    return out


def search(index, queries: Sequence[str], mode: str = "hybrid", k: int = 10, rerank: bool = False,
           reranker=None, fusion: str = "rrf", *, depth: int | None = None, rerank_top_n: int | None = None,
           weights: Mapping[str, float] | None = None, rrf_k: int = 60, rare_max: int = 50,
           timings: dict | None = None) -> list[list[Hit]]:
    """Search `queries` (a list, or one string) in an open Index; one list of Hits per query.

    depth: candidates taken from each stage (default max(100, k)).
    rerank_top_n: how many fused candidates the cross-encoder rescores (default 50).
    weights: per-stage weights for fusion ({"dense": 1, "lexical": 1, "exact": 1}).
    timings: if a dict is given, per-stage seconds are added to it."""
    from .fusion import fuse
    from .lexical import bm25, exact_candidates, parse_query, spans_in_text

    queries = _check(queries, mode, k, fusion)
    depth = max(100, k) if depth is None else int(depth)
    if depth < 1:
        raise InputError(f"depth {depth}: must be >= 1")
    t = timings if timings is not None else {}

    def tick(name: str, since: float) -> float:
        now = time.perf_counter()
        t[name] = t.get(name, 0.0) + now - since
        return now

    rr = None
    if rerank:
        from .rerank import get_reranker

        rr = get_reranker(reranker, top_n=rerank_top_n)  # fails here, before any work, if no model
    parsed = [parse_query(q) for q in queries]

    now = time.perf_counter()
    dense_lists: list[list[tuple[int, float]]] = [[] for _ in queries]
    dense_part = index.dense if mode in ("hybrid", "dense") else None
    if mode == "dense" and dense_part is None:
        raise InputError(f"{index.path}: built without a dense part; rebuild with `rtv index --dense` or use --mode lexical/exact/hybrid")
    if dense_part is not None:
        n = index.store.n_passages
        scores, ids = dense_part.search(list(queries), min(depth, n))
        for qi in range(len(queries)):
            dense_lists[qi] = [(int(p), float(s)) for p, s in zip(ids[qi], scores[qi]) if int(p) >= 0]
        now = tick("dense", now)

    results: list[list[Hit]] = []
    for qi, q in enumerate(queries):
        pq = parsed[qi]
        lists: dict[str, list[tuple[int, float]]] = {}
        exact_spans: dict[int, list] = {}
        phrase_count: dict[int, int] = {}
        if mode in ("hybrid", "dense") and dense_part is not None:
            lists["dense"] = dense_lists[qi]
        if mode in ("hybrid", "lexical"):
            now = time.perf_counter()
            lists["lexical"] = bm25(index.store, q, depth)
            now = tick("lexical", now)
        if mode in ("hybrid", "exact"):
            now = time.perf_counter()
            ex = exact_candidates(index, pq, whole_query=(mode == "exact"), rare_max=rare_max, k=depth)
            lists["exact"] = ex.ranked
            exact_spans, phrase_count = ex.spans, ex.phrases_matched
            now = tick("exact", now)

        now = time.perf_counter()
        if len(lists) == 1:  # a single stage: its own ranking and scores
            stage, ranked = next(iter(lists.items()))
            order = [(pid, s, {stage: {"rank": r, "score": s}}) for r, (pid, s) in enumerate(ranked, 1)]
        else:
            fused = fuse(lists, fusion, k=rrf_k, weights=weights)
            order = []
            for r, c in enumerate(fused, 1):
                st = dict(c.stages)
                st["fused"] = {"rank": r, "score": c.score}
                order.append((c.passage_id, c.score, st))
        if pq.phrases:  # quoted phrases are constraints: more phrases matched ranks first (stable)
            order.sort(key=lambda o: -phrase_count.get(o[0], 0))
        now = tick("fusion", now)

        if rr is not None and order:
            n = min(rr.top_n, len(order))
            head = order[:n]
            texts = {r["id"]: r["text"] for r in index.store.passages([o[0] for o in head])}
            head = [o for o in head if o[0] in texts]
            scores = rr.score(q, [texts[o[0]] for o in head])
            ranked_head = sorted(zip(head, scores), key=lambda x: -float(x[1]))
            new_head = []
            for r, ((pid, _, st), s) in enumerate(ranked_head, 1):
                st = dict(st)
                st["rerank"] = {"rank": r, "score": float(s)}
                new_head.append((pid, float(s), st))
            if pq.phrases:
                new_head.sort(key=lambda o: -phrase_count.get(o[0], 0))
            low = min((o[1] for o in new_head), default=0.0)
            tail = [(pid, low - i - 1.0, st) for i, (pid, _, st) in enumerate(order[n:])]
            order = new_head + tail  # the tail keeps its order, scored below the reranked head
            now = tick("rerank", now)

        order = order[:k]
        pids = [o[0] for o in order]
        patterns = pq.phrases if pq.phrases else ([q.strip()] if mode == "exact" else [])
        hits = join_hits(index.store, pids, [o[1] for o in order], [o[2] for o in order])
        for h in hits:
            if h.passage_id in exact_spans:
                h.spans = [tuple(s) for s in exact_spans[h.passage_id]]
            elif patterns:
                h.spans = spans_in_text(h.text, patterns)
        tick("hits", now)
        results.append(hits)
    return results


__all__ = ["search", "check_options", "MODES"]
