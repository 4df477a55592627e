"""A search result, shared by every mode (dense, lexical, exact, hybrid)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Hit:
    passage_id: int
    doc_id: int
    text: str
    score: float
    start: int  # byte offsets of the passage in its document (same coordinates as exact matches)
    end: int
    ext_id: str | None = None
    metadata: dict = field(default_factory=dict)
    spans: list[tuple[int, int]] = field(default_factory=list)  # exact matches, bytes within the passage
    stages: dict[str, dict] = field(default_factory=dict)  # stage -> {"rank": r, "score": s}

    def to_json(self, rank: int) -> dict:
        return {
            "rank": rank, "doc_id": self.doc_id, "ext_id": self.ext_id, "passage_id": self.passage_id,
            "score": float(self.score), "text": self.text, "start": self.start, "end": self.end,
            "spans": [list(s) for s in self.spans], "stages": self.stages, "metadata": self.metadata,
        }


def join_hits(index, pids: Sequence[int], scores: Sequence[float], stages: Sequence[dict],
              known: dict[int, dict] | None = None) -> list[Hit]:
    """Hits for passage ids (in order), joined with their passage rows (text rebuilt from the
    FM-index) and document rows; ids with no passage row are dropped. `known`: passage rows
    already read (id -> row, e.g. the reranked ones), not read again."""
    known = known or {}
    rows = {r["id"]: r for r in index.passages([p for p in pids if int(p) not in known])}
    rows.update({int(p): known[int(p)] for p in pids if int(p) in known})
    docs = {d["id"]: d for d in index.store.documents({r["doc_id"] for r in rows.values()})}
    out = []
    for pid, score, st in zip(pids, scores, stages):
        row = rows.get(int(pid))
        if row is None:
            continue
        doc = docs.get(row["doc_id"], {})
        out.append(Hit(passage_id=row["id"], doc_id=row["doc_id"], text=row["text"], score=float(score),
                       start=row["start"], end=row["end"], ext_id=doc.get("ext_id"),
                       metadata=doc.get("metadata") or {}, stages=st))
    return out
