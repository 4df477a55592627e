"""A search result, shared by every mode (dense, lexical, exact, hybrid)."""

from __future__ import annotations

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
