"""Fusing ranked candidate lists from several stages (dense, lexical, exact).

Every stage gives a ranked list of (passage_id, score), best first. Fusion returns one list of
`Fused` candidates, best first, each remembering its rank and score at every stage that found it.

- `rrf`: reciprocal rank fusion, score = sum over stages of w / (k + rank), k = 60 by default
  (Cormack, Clarke & Buettcher 2009). Scores of the stages are ignored; only ranks count.
- `weighted` (the default): each stage's scores are min-max normalised to [0, 1] within the list,
  then summed with per-stage weights; a stage that did not find a passage contributes 0.
Weights: `weighted` starts from retrieval.options.DEFAULT_WEIGHTS (dense 1, lexical 1, exact 0.5;
why is written there), RRF from equal weights, as published; the caller's `weights` override
either per stage. Ties are broken by the best rank at any stage, then by passage id, so fusion is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import InputError
from ..options import DEFAULT_FUSION, DEFAULT_WEIGHTS, FUSIONS

RRF_K = 60


@dataclass
class Fused:
    passage_id: int
    score: float
    stages: dict[str, dict] = field(default_factory=dict)  # stage -> {"rank": r (1-based), "score": s}

    @property
    def best_rank(self) -> int:
        return min((s["rank"] for s in self.stages.values()), default=1 << 30)


Ranked = Sequence[tuple[int, float]]


def _collect(lists: Mapping[str, Ranked]) -> dict[int, Fused]:
    out: dict[int, Fused] = {}
    for stage, ranked in lists.items():
        seen: set[int] = set()
        rank = 0
        for pid, score in ranked:
            pid = int(pid)
            if pid < 0 or pid in seen:  # padding, or a duplicate within one stage: keep its best rank
                continue
            seen.add(pid)
            rank += 1
            out.setdefault(pid, Fused(pid, 0.0)).stages[stage] = {"rank": rank, "score": float(score)}
    return out


def _weights(lists: Mapping[str, Ranked], weights: Mapping[str, float] | None,
             defaults: Mapping[str, float] | None = None) -> dict[str, float]:
    weights = dict(weights or {})
    unknown = set(weights) - set(lists)
    if unknown and not set(weights) & set(lists) and lists:
        raise InputError(f"fusion weights {sorted(unknown)}: no such stage; stages are {sorted(lists)}")
    for name, w in weights.items():
        if w < 0:
            raise InputError(f"fusion weight {name}={w}: must be >= 0")
    return {stage: float(weights.get(stage, (defaults or {}).get(stage, 1.0))) for stage in lists}


def _sorted(cands: dict[int, Fused], limit: int | None) -> list[Fused]:
    out = sorted(cands.values(), key=lambda c: (-c.score, c.best_rank, c.passage_id))
    return out if limit is None else out[:limit]


def rrf(lists: Mapping[str, Ranked], k: int = RRF_K, weights: Mapping[str, float] | None = None,
        limit: int | None = None) -> list[Fused]:
    """Reciprocal rank fusion: sum over stages of weight / (k + rank)."""
    if k < 0:
        raise InputError(f"rrf k {k}: must be >= 0")
    w = _weights(lists, weights)
    cands = _collect(lists)
    for c in cands.values():
        c.score = sum(w[stage] / (k + s["rank"]) for stage, s in c.stages.items())
    return _sorted(cands, limit)


def weighted(lists: Mapping[str, Ranked], weights: Mapping[str, float] | None = None,
             limit: int | None = None) -> list[Fused]:
    """Weighted sum of min-max normalised stage scores (1.0 for a stage whose scores are all equal)."""
    w = _weights(lists, weights, DEFAULT_WEIGHTS)
    cands = _collect(lists)
    bounds: dict[str, tuple[float, float]] = {}
    for stage in lists:
        scores = [c.stages[stage]["score"] for c in cands.values() if stage in c.stages]
        if scores:
            bounds[stage] = (min(scores), max(scores))
    for c in cands.values():
        total = 0.0
        for stage, s in c.stages.items():
            lo, hi = bounds[stage]
            norm = (s["score"] - lo) / (hi - lo) if hi > lo else 1.0
            total += w[stage] * norm
        c.score = total
    return _sorted(cands, limit)


def fuse(lists: Mapping[str, Ranked], method: str = DEFAULT_FUSION, *, k: int = RRF_K,
         weights: Mapping[str, float] | None = None, limit: int | None = None) -> list[Fused]:
    if method == "rrf":
        return rrf(lists, k=k, weights=weights, limit=limit)
    if method == "weighted":
        return weighted(lists, weights=weights, limit=limit)
    raise InputError(f"--fusion {method!r}: use one of {', '.join(FUSIONS)}")
