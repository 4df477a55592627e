"""Near-duplicate (paraphrase) flags through the dense index, reported apart from verbatim overlap.

Each scored entry's checked text (its fields joined with newlines, cut to `max_chars`) is embedded
and searched against the dense passages; an entry is flagged when its best passage's similarity
is >= `threshold` (cosine for the normalised MiniLM embeddings rtv builds). A flag on an entry
whose exact bucket is clean is the interesting case: a paraphrased or lightly edited test item.
"""

from __future__ import annotations

from ..errors import InputError


class SemanticChecker:
    def __init__(self, index, threshold: float = 0.85, k: int = 1, max_chars: int = 2000, snippet_chars: int = 300,
                 where: str | None = None):
        dense = getattr(index, "dense", None)
        if dense is None:
            raise InputError(
                f"{getattr(index, 'path', 'index')}: has no dense part, so --semantic cannot run; "
                f"rebuild it with `rtv index --dense` or drop --semantic"
            )
        if not 0.0 < threshold <= 1.0:
            raise InputError(f"--semantic-threshold must be in (0, 1], got {threshold}")
        self.index, self.dense = index, dense
        self.threshold, self.k, self.max_chars, self.snippet_chars = threshold, max(1, k), max_chars, snippet_chars
        # passages of live documents (matching `where`) only; None: every passage
        self.allowed = index.allowed_passages(index.doc_filter(where)) if hasattr(index, "doc_filter") else None

    def new_summary(self) -> dict:
        return {"threshold": self.threshold, "checked": 0, "flagged": 0, "flagged_exact_clean": 0}

    def count(self, summary: dict, r) -> None:
        if r.semantic is None:
            return
        summary["checked"] += 1
        if r.semantic["flagged"]:
            summary["flagged"] += 1
            if r.bucket == "clean":
                summary["flagged_exact_clean"] += 1

    def annotate(self, results, entries) -> None:
        """Set `semantic` on each scored result of one batch (one dense search for the batch)."""
        todo = [(r, "\n".join(t for _, t in e.segments if t)[: self.max_chars])
                for r, e in zip(results, entries) if r.score is not None]
        todo = [(r, q) for r, q in todo if q.strip()]
        if not todo:
            return
        scores, ids = self.dense.search([q for _, q in todo], self.k, allowed=self.allowed)
        best_ids = [int(row[0]) for row in ids]
        rows = {p["id"]: p for p in self.index.passages([i for i in best_ids if i >= 0])}
        for (r, _), row_scores, pid in zip(todo, scores, best_ids):
            if pid < 0:
                r.semantic = {"flagged": False, "score": None}
                continue
            s = float(row_scores[0])
            p = rows.get(pid, {})
            r.semantic = {
                "flagged": s >= self.threshold,
                "score": round(s, 4),
                "passage_id": pid,
                "doc_id": p.get("doc_id"),
                "text": (p.get("text") or "")[: self.snippet_chars],
            }
