"""Search options in one place: the modes, fusions and rerank policies, their defaults, and the
checks on queries and k. The CLI's click choices, `Index.search`, `Retriever` and
`retrieval.hybrid.search` all read them from here, so they cannot drift apart.

Errors name the CLI flag (`flags=True`) or the Python argument.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InputError

MODES = ("hybrid", "dense", "lexical", "exact")
DEFAULT_MODE = "hybrid"
# Fusion: "weighted" (the sum of each stage's min-max normalised scores, times its weight) is the
# default: on both labelled benchmarks it ranks above RRF and above each stage alone
# (eval/results/retrieval_fusion.json: SciFact train 0.732 vs RRF 0.697 and BM25 0.693 nDCG@10;
# man pages 0.764 vs 0.747 and dense 0.700). The exact stage weighs half: on natural-language
# queries its matches add little to BM25 (weight 0 scored 0.001 higher on average, weight 1 0.006
# lower), but it is what finds quoted phrases and identifiers that BM25's tokenizer splits.
FUSIONS = ("weighted", "rrf")
DEFAULT_FUSION = "weighted"
DEFAULT_WEIGHTS = {"dense": 1.0, "lexical": 1.0, "exact": 0.5}
# rerank: "auto" reranks hybrid results with the default cross-encoder when it is on disk (a
# notice, once, when it is not); True must rerank (a missing model is an error); False never does.
DEFAULT_RERANK = "auto"
DEFAULT_K = 10
MAX_QUERY_BYTES = 8192


def check_options(mode: str, k: int, fusion: str, *, flags: bool = True) -> None:
    """Refuse an unknown mode or fusion and a k that is not an integer >= 1 (None: the default k)."""
    dash1, dash2 = ("-", "--") if flags else ("", "")
    if mode not in MODES:
        raise InputError(f"{dash2}mode {mode!r}: use one of {', '.join(MODES)}")
    if fusion not in FUSIONS:
        raise InputError(f"{dash2}fusion {fusion!r}: use one of {', '.join(FUSIONS)}")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise InputError(f"{dash1}k {k!r}: must be >= 1 (a whole number of results)")


def check_rerank(rerank) -> None:
    if not (rerank == "auto" or rerank is True or rerank is False):  # not 1/0: those compare equal to bools
        raise InputError(f"rerank {rerank!r}: use 'auto', True or False")


def resolve_k(k: int | None, n_passages: int) -> int:
    """The number of results to return: k None (not given) is DEFAULT_K, or every passage when
    the index holds fewer; a k given explicitly that is larger than the index is an error."""
    if k is None:
        return min(DEFAULT_K, n_passages)
    if k > n_passages:
        raise InputError(f"-k {k}: the index holds only {n_passages} passages; ask for at most {n_passages}")
    return k


def check_queries(queries: Sequence[str] | str) -> list[str]:
    """The queries as a list; an empty or oversized query is an error."""
    if isinstance(queries, str):
        queries = [queries]
    out = []
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise InputError("empty query; give some text to search for")
        size = len(q.encode("utf-8"))
        if size > MAX_QUERY_BYTES:
            raise InputError(f"query of {size} bytes: longer than {MAX_QUERY_BYTES}; shorten it")
        out.append(q)
    return out
