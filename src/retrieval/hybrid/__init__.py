"""Hybrid ranking: candidates from dense, lexical (BM25) and exact stages, fused, then reranked.

    search(index, queries, mode="hybrid", k=10, rerank="auto", reranker=None, fusion="weighted")
        -> list[list[Hit]]

Modes:
- hybrid: dense top-`depth` + BM25 top-`depth` + exact matches of quoted phrases / rare terms,
  fused (weighted min-max score fusion by default, or RRF k=60; see retrieval.options and
  fusion.py). A dense part that the index was built without is left out (the other stages run).
- dense / lexical: that stage alone. exact: quoted phrases (or the whole query) byte-for-byte.
Rerank: a cross-encoder rescoring the first `rerank_top_n` (default 20 on CPU, 50 on a GPU) candidates; the rest keep
their order below them. rerank="auto" (the default) reranks hybrid results when the default model
is on disk (hybrid/rerank.py: resolve_reranker, the policy the CLI and Retriever share).
Quoted phrases are constraints: passages containing more of the query's quoted phrases always
rank above passages containing fewer (so an exact phrase outranks paraphrases).

Every Hit records in `stages` the stages that found it, with its rank and score at each
("dense", "lexical", "exact", "fused", "rerank"), and in `spans` the byte spans of the query's
quoted phrases and rare terms inside the passage.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import InputError
from ..hits import Hit, join_hits
from ..options import DEFAULT_FUSION, check_options, check_queries, resolve_k

Ranked = list[tuple[int, float]]  # (passage_id, score), best first


@dataclass
class Ranking:
    """One query's candidates, best first: (passage_id, score, stages) with stages as in Hit."""

    order: list[tuple[int, float, dict]]
    phrase_count: dict[int, int] = field(default_factory=dict)  # passage -> quoted phrases it contains
    exact_spans: dict[int, list] = field(default_factory=dict)  # passage -> exact match spans
    rows: dict[int, dict] = field(default_factory=dict)  # passage rows already read (the reranked ones)

    def constrain_phrases(self, order: list[tuple[int, float, dict]]) -> list[tuple[int, float, dict]]:
        """Quoted phrases are constraints: more phrases matched ranks first (a stable sort)."""
        return sorted(order, key=lambda o: -self.phrase_count.get(o[0], 0)) if self.phrase_count else order


class _Timer:
    """Adds each stage's seconds to a caller's dict (the `timings` argument)."""

    def __init__(self, into: dict | None):
        self.into = into if into is not None else {}
        self.since = time.perf_counter()

    def tick(self, name: str) -> None:
        now = time.perf_counter()
        self.into[name] = self.into.get(name, 0.0) + now - self.since
        self.since = now


# -- stages -----------------------------------------------------------------------------------------
def dense_stage(index, queries: list[str], depth: int, doc_filter=None) -> list[Ranked]:
    """Dense top-`depth` passages of every query (one batched embedding and search), among the
    passages of the documents a retrieval.filters.DocFilter allows when one is given."""
    return _dense_lists(index, queries, depth, index.allowed_passages(doc_filter))


_blas = []  # threadpoolctl's controller of the BLAS libraries loaded, made once (it scans them)
# Batches of at most this many queries run the dense stage's BLAS on one thread. Their products are
# small (FAISS's flat search only calls BLAS from 20 queries on); bigger batches keep every thread.
ONE_BLAS_THREAD_MAX_QUERIES = 16


def _one_blas_thread(n_queries: int = 1):
    """A context in which numpy's BLAS runs one thread, for a batch of up to
    ONE_BLAS_THREAD_MAX_QUERIES queries. The dense stage's rescoring products are then small; with
    more threads, OpenBLAS's workers busy-wait for a while after each call, on the cores the
    cross-encoder then needs: reranking right after a dense search took twice as long. A larger
    batch, or no threadpoolctl: no change."""
    import contextlib

    if n_queries > ONE_BLAS_THREAD_MAX_QUERIES:
        return contextlib.nullcontext()
    if not _blas:
        try:
            from threadpoolctl import ThreadpoolController

            _blas.append(ThreadpoolController())
        except Exception:  # noqa: BLE001  (not installed, or no BLAS found: nothing to limit)
            _blas.append(None)
    return _blas[0].limit(limits=1, user_api="blas") if _blas[0] is not None else contextlib.nullcontext()


def _dense_lists(index, queries: list[str], depth: int, allowed) -> list[Ranked]:
    with _one_blas_thread(len(queries)):
        scores, ids = index.dense.search(queries, min(depth, index.n_passages), allowed=allowed)
    return [[(int(p), float(s)) for p, s in zip(row_ids, row_scores) if int(p) >= 0]
            for row_scores, row_ids in zip(scores, ids)]


class _Background:
    """A call run in its own thread while the caller does other work; `result()` joins it (and
    raises what it raised) and `seconds` is how long it ran. The dense stage (query embedding +
    vector search) runs beside BM25 and the exact stage this way: torch, FAISS and SQLite all
    release the GIL, so on a 2-core machine the hybrid stages cost about the slowest of them,
    not their sum."""

    def __init__(self, fn, *args):
        import threading

        self._out: list = []
        self.seconds = 0.0

        def run() -> None:
            t = time.perf_counter()
            try:
                self._out.append((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001  (handed to the caller by result())
                self._out.append((False, exc))
            self.seconds = time.perf_counter() - t

        self._thread = threading.Thread(target=run, name="rtv-dense", daemon=True)
        self._thread.start()

    def result(self):
        self._thread.join()
        ok, value = self._out[0]
        if not ok:
            raise value
        return value


def fuse_stages(lists: Mapping[str, Ranked], fusion: str, *, rrf_k: int,
                weights: Mapping[str, float] | None) -> list[tuple[int, float, dict]]:
    """One ranking from the stages' lists: a single stage keeps its own ranks and scores."""
    from .fusion import fuse

    if len(lists) == 1:
        stage, ranked = next(iter(lists.items()))
        return [(pid, s, {stage: {"rank": r, "score": s}}) for r, (pid, s) in enumerate(ranked, 1)]
    order = []
    for r, c in enumerate(fuse(lists, fusion, k=rrf_k, weights=weights), 1):
        order.append((c.passage_id, c.score, {**c.stages, "fused": {"rank": r, "score": c.score}}))
    return order


def rerank_stage(index, reranker, query: str, ranking: Ranking, timer: _Timer | None = None
                 ) -> list[tuple[int, float, dict]]:
    """The cross-encoder's order for the first `reranker.top_n` candidates; the rest keep their
    order below them (scored below the lowest reranked score)."""
    order = ranking.order
    n = min(reranker.top_n, len(order))
    head = order[:n]
    t = time.perf_counter()
    ranking.rows.update({r["id"]: r for r in index.passages([o[0] for o in head])})  # one batched extract
    texts = {pid: r["text"] for pid, r in ranking.rows.items()}
    if timer is not None:  # a part of the "rerank" stage, which the caller ticks
        timer.into["rerank_fetch"] = timer.into.get("rerank_fetch", 0.0) + time.perf_counter() - t
    head = [o for o in head if o[0] in texts]
    from .rerank import fitted_max_length

    reranker.prepare(index)  # an int8 model's one-time calibration, on this index's passages

    scores = reranker.score(query, [texts[o[0]] for o in head], max_length=fitted_max_length(index))
    ranked_head = sorted(zip(head, scores), key=lambda x: -float(x[1]))
    new_head = [(pid, float(s), {**st, "rerank": {"rank": r, "score": float(s)}})
                for r, ((pid, _, st), s) in enumerate(ranked_head, 1)]
    new_head = ranking.constrain_phrases(new_head)
    low = min((o[1] for o in new_head), default=0.0)
    return new_head + [(pid, low - i - 1.0, st) for i, (pid, _, st) in enumerate(order[n:])]


def to_hits(index, ranking: Ranking, k: int, patterns: Sequence[str]) -> list[Hit]:
    """The first k candidates as Hits, with the byte spans of exact matches (or of `patterns`)."""
    from .lexical import spans_in_text

    order = ranking.order[:k]
    hits = join_hits(index, [o[0] for o in order], [o[1] for o in order], [o[2] for o in order], ranking.rows)
    for h in hits:
        if h.passage_id in ranking.exact_spans:
            h.spans = [tuple(s) for s in ranking.exact_spans[h.passage_id]]
        elif patterns:
            h.spans = spans_in_text(h.text, patterns)
    return hits


# -- the search -------------------------------------------------------------------------------------
def search(index, queries: Sequence[str] | str, mode: str = "hybrid", k: int | None = None, rerank="auto",
           reranker=None, fusion: str = DEFAULT_FUSION, *, depth: int | None = None,
           rerank_top_n: int | None = None, weights: Mapping[str, float] | None = None, rrf_k: int = 60,
           rare_max: int = 50, device: str | None = None, timings: dict | None = None,
           where: str | None = None) -> list[list[Hit]]:
    """Search `queries` (a list, or one string) in an open Index; one list of Hits per query.

    rerank: "auto" | True | False (retrieval.options); reranker: a model path/id, a CrossEncoder or
    a Reranker. depth: candidates taken from each stage (default max(100, k)).
    rerank_top_n: how many fused candidates the cross-encoder rescores (default: rerank.TOP_N_CPU / TOP_N_GPU).
    weights: per-stage weights overriding fusion's defaults (retrieval.options.DEFAULT_WEIGHTS for
    weighted, equal weights for rrf).
    timings: if a dict is given, per-stage seconds are added to it: "dense" runs beside "lexical" and
    "exact" (its own seconds; "dense_wait" the part of them they did not hide); "rerank" (passage
    texts + cross-encoder) follows "fusion", "rerank_fetch" is its first part.
    where: a retrieval.filters expression over document metadata; every stage searches only the
    passages of matching documents (deleted documents are always left out), so k come back
    whenever k such passages match."""
    from .lexical import ParsedQuery, bm25, exact_candidates, parse_query
    from .rerank import resolve_reranker

    queries = check_queries(queries)
    check_options(mode, k, fusion)
    index.require("passages", f"--mode {mode}")
    if mode in ("dense", "lexical"):
        index.require(mode, f"--mode {mode}")
    k = resolve_k(k, index.n_passages)  # None: 10, or fewer on a smaller index; an explicit k must fit
    depth = max(100, k) if depth is None else int(depth)
    if depth < 1:
        raise InputError(f"depth {depth}: must be >= 1")
    rr = resolve_reranker(rerank, reranker, mode=mode, device=device, top_n=rerank_top_n)  # fails before any work
    timer = _Timer(timings)
    doc_filter = index.doc_filter(where)
    if doc_filter is not None:
        timer.tick("filter")
    dense = None
    if mode in ("hybrid", "dense") and "dense" in index.parts:
        # in its own thread (see _Background); the filter's mask is made here, from the store
        dense = _Background(_dense_lists, index, queries, depth, index.allowed_passages(doc_filter))
        if mode == "dense":
            dense.result()
            timer.tick("dense")

    staged: list[tuple[ParsedQuery, dict[str, Ranked], Ranking]] = []
    for q in queries:
        pq = parse_query(q)
        lists: dict[str, Ranked] = {}
        ranking = Ranking([])
        if mode == "lexical" or (mode == "hybrid" and "lexical" in index.parts):
            lists["lexical"] = bm25(index.store, q, depth, doc_filter)
            timer.tick("lexical")
        if mode in ("hybrid", "exact"):
            ex = exact_candidates(index, pq, whole_query=(mode == "exact"), rare_max=rare_max, k=depth, where=where)
            lists["exact"] = ex.ranked
            ranking.exact_spans, ranking.phrase_count = ex.spans, (ex.phrases_matched if pq.phrases else {})
            timer.tick("exact")
        staged.append((pq, lists, ranking))
    if dense is not None:
        dense_lists = dense.result()
        if mode != "dense":
            timer.tick("dense_wait")  # the part of the dense stage that lexical + exact did not hide
            timer.into["dense"] = timer.into.get("dense", 0.0) + dense.seconds
        staged = [(pq, {"dense": ranked, **lists}, ranking)  # the stages in fusion's usual order
                  for (pq, lists, ranking), ranked in zip(staged, dense_lists)]

    results: list[list[Hit]] = []
    for q, (pq, lists, ranking) in zip(queries, staged):
        ranking.order = ranking.constrain_phrases(fuse_stages(lists, fusion, rrf_k=rrf_k, weights=weights))
        timer.tick("fusion")
        if rr is not None and ranking.order:
            ranking.order = rerank_stage(index, rr, q, ranking, timer)
            timer.tick("rerank")
        patterns = pq.phrases if pq.phrases else ([q.strip()] if mode == "exact" else [])
        results.append(to_hits(index, ranking, k, patterns))
        timer.tick("hits")
    return results


__all__ = ["search", "dense_stage", "fuse_stages", "rerank_stage", "to_hits", "Ranking"]
