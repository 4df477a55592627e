"""meta.sqlite: documents, passages and their metadata, through sqlite-utils.

Passages are byte spans of their documents (no text: the text lives once, in the FM-index, and
`Index.passages` rebuilds it by byte range). The lexical part is postings files beside the store
(retrieval.postings, reached through `Store.postings`), or, in an index built with lexical="fts5"
or before those existed, a contentless FTS5 table here (its postings only), filled at build time
from the texts the builder has in hand.

Schema changes are numbered migrations (applied in order, recorded in `_migrations`), so an
index written by an older rtv can be upgraded in place and a newer one is recognised.
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

if "pandas" in sys.modules or "sqlite_utils" in sys.modules:
    import sqlite_utils
else:
    # sqlite-utils imports pandas whenever it is installed, only to accept pandas-typed values,
    # which rtv never writes; that import is about a second of every cold `rtv` command (issue 14).
    # Hidden for sqlite_utils' own import only: a later `import pandas` works as usual.
    sys.modules["pandas"] = None  # type: ignore[assignment]  # makes `import pandas` raise ImportError
    try:
        import sqlite_utils
    finally:
        del sys.modules["pandas"]

from .errors import IndexFormatError

FTS_TABLE = "passages_fts"  # BM25 over passages (SQLite FTS5)
# The tables of each index part, for `rtv info`'s bytes per part (SQLite's dbstat); the rest of the
# file (schema, migrations) is counted with the exact part, which every index has.
PART_TABLES = {"exact": ("documents", "deleted"), "passages": ("passages", "idx_passages_doc_id"),
               "lexical": tuple(f"{FTS_TABLE}_{t}" for t in ("data", "idx", "docsize", "config", "content"))}


def _m001_documents_passages(db: sqlite_utils.Database) -> None:
    db["documents"].create(
        {"id": int, "ext_id": str, "source": str, "length": int, "metadata": str}, pk="id"
    )
    db["passages"].create(
        {"id": int, "doc_id": int, "start": int, "end": int, "text": str}, pk="id"
    )
    db["passages"].create_index(["doc_id"])


def _m002_passages_fts(db: sqlite_utils.Database) -> None:
    # BM25 over passages (SQLite FTS5), with the passage text as its external content (format 1).
    db["passages"].enable_fts(["text"], fts_version="FTS5", tokenize="porter unicode61", create_triggers=False)


def _m003_passages_without_text(db: sqlite_utils.Database) -> None:
    # The text lives once, in the FM-index (extracted by byte range at query time); the full-text
    # index becomes contentless: it keeps its postings and lengths (all bm25() needs), not a copy.
    db.execute(f"drop table {FTS_TABLE}")
    db.execute("alter table passages drop column text")
    db.execute(f"create virtual table {FTS_TABLE} using fts5(text, content='', tokenize='porter unicode61')")


def _m004_deleted(db: sqlite_utils.Database) -> None:
    # Tombstones: documents deleted since they were indexed (`rtv delete`). Every query leaves them
    # out (Index.doc_filter); their text stays in the shards until `rtv compact` drops it.
    db.execute("create table deleted (doc_id INTEGER PRIMARY KEY)")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _m001_documents_passages,
    _m002_passages_fts,
    _m003_passages_without_text,
    _m004_deleted,
]
# Migrations an index may lack and still be read as it is: a store without the `deleted` table
# (written before tombstones existed) simply has none.
OPTIONAL_ON_READ = frozenset({4})


def _finite(value):
    """A JSON-able value with every NaN or infinite float (Python's json reads NaN, Infinity) as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class Store:
    """Documents and passages of one index. Document ids are the global FM-index doc ids."""

    def __init__(self, path: str | Path, create: bool = False):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise IndexFormatError(f"{self.path}: missing; rebuild the index with `rtv index`")
        try:
            if create:
                conn = sqlite3.connect(str(self.path), check_same_thread=False)
            else:  # query time: read-only, so opening never modifies an index
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            # the lexical part when it is postings files (retrieval.postings, set by Index.open);
            # None: the FTS5 table below is the lexical part
            self.postings = None
            if create:
                self.db.execute("PRAGMA journal_mode=OFF")
                self.db.execute("PRAGMA synchronous=OFF")
            self._migrate(create)
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"{self.path}: not a readable SQLite database ({exc}); rebuild the index") from None

    def _migrate(self, create: bool) -> None:
        if "_migrations" not in self.db.table_names():
            if not create:
                raise IndexFormatError(f"{self.path}: has no rtv schema; rebuild the index")
            self.db["_migrations"].create({"version": int}, pk="version")
        done = {row["version"] for row in self.db["_migrations"].rows}
        if done and max(done) > len(MIGRATIONS):
            raise IndexFormatError(
                f"{self.path}: written by a newer rtv (schema {max(done)} > {len(MIGRATIONS)}); upgrade rtv"
            )
        pending = [v for v in range(1, len(MIGRATIONS) + 1) if v not in done]
        if not create:
            pending = [v for v in pending if v not in OPTIONAL_ON_READ]
        if pending and not create:
            raise IndexFormatError(f"{self.path}: written by an older rtv (schema {max(done, default=0)}); rebuild the index")
        for version, migrate in enumerate(MIGRATIONS, start=1):
            if version in pending:
                with self.db.conn:
                    migrate(self.db)
                    self.db["_migrations"].insert({"version": version})

    # -- writing -------------------------------------------------------------------------------
    def add_documents(self, rows: Iterable[dict]) -> None:
        """rows: dicts with id, ext_id, source, length, metadata (a dict, stored as JSON; NaN and
        infinities as null, since SQLite's json_extract, which --where filters use, rejects them)."""
        self.db["documents"].insert_all(
            ({**r, "metadata": json.dumps(_finite(r.get("metadata") or {}), ensure_ascii=False, allow_nan=False,
                                          default=str)} for r in rows),
            batch_size=2000,
        )

    def add_passages(self, rows: Iterable[tuple[int, int, int]], texts: Iterable[str] | None = None) -> int:
        """rows: (doc_id, start_byte, end_byte); ids are assigned n, n+1, ... in order (n: the
        passages so far), which is returned. With `texts` (the passages' texts, in the same order),
        they are added to the full-text index too (the texts themselves are not stored)."""
        first = self.n_passages
        rows = list(rows)
        self.db.conn.executemany('insert into passages (id, doc_id, start, "end") values (?, ?, ?, ?)',
                                 ((first + i, d, s, e) for i, (d, s, e) in enumerate(rows)))
        if texts is not None:
            self.db.conn.executemany(f"insert into {FTS_TABLE} (rowid, text) values (?, ?)",
                                     ((first + i, t) for i, t in enumerate(texts)))
        self.db.conn.commit()
        return first

    def tombstone(self, doc_ids: Iterable[int], fts_rows: Iterable[tuple[int, str]] = ()) -> None:
        """Mark documents deleted (rtv delete, add --replace) and take their passages out of the
        full-text index: `fts_rows` are (passage id, the text it was indexed with), which a contentless
        FTS5 table needs for its 'delete' command (SQLite 3.40 has no contentless_delete), so its
        BM25 statistics become those of the live passages alone."""
        self.db.conn.executemany("insert into deleted (doc_id) values (?)", ((int(d),) for d in doc_ids))
        fts_rows = [(int(p), t) for p, t in fts_rows]
        if fts_rows:  # none where postings files are the lexical part (the FTS5 table is gone)
            self.db.conn.executemany(f"insert into {FTS_TABLE} ({FTS_TABLE}, rowid, text) values ('delete', ?, ?)",
                                     fts_rows)
        self.db.conn.commit()

    def _live(self) -> str:
        """The WHERE clause that leaves tombstoned documents out (none in a store without tombstones)."""
        return "where id not in (select doc_id from deleted)" if "deleted" in self.db.table_names() else ""

    def live_ext_ids(self) -> dict[str, int]:
        """External id -> document id of every document not deleted."""
        return dict(self.db.execute(f"select ext_id, id from documents {self._live()}"))

    def live_doc_ids(self) -> list[int]:
        """Ids of the documents not deleted, ascending."""
        return [r[0] for r in self.db.execute(f"select id from documents {self._live()} order by id")]

    def drop_fulltext(self) -> None:
        """Drop the (empty) FTS5 table: postings files are the lexical part (retrieval.postings).
        An older rtv then says the store has no full-text index, instead of finding nothing in it."""
        self.db.execute(f"drop table if exists {FTS_TABLE}")
        self.db.conn.commit()

    def finish(self, merge: bool = True) -> None:
        """After the last row: compact the file (no free pages, so its size is what its tables hold).
        merge=False (rtv add / delete): only commit; the full-text segments the change wrote stay
        for FTS5's own automerge and the next `rtv compact` (which builds afresh), as rewriting the
        whole full-text index and file cost more than the change itself (answers are the same)."""
        if not merge:
            self.db.conn.commit()
            return
        if FTS_TABLE in self.db.table_names():
            self.db.execute(f"insert into {FTS_TABLE}({FTS_TABLE}) values ('optimize')")
        self.db.conn.commit()
        self.db.execute("vacuum")

    def part_bytes(self) -> dict[str, int]:
        """Bytes of the file held by each part's tables (PART_TABLES), summing to the file's size."""
        pages = dict(self.db.execute("select name, sum(pgsize) from dbstat group by name").fetchall())
        out = {part: sum(pages.pop(t, 0) for t in tables) for part, tables in PART_TABLES.items()}
        out["exact"] += self.path.stat().st_size - sum(out.values())
        return out

    # -- reading -------------------------------------------------------------------------------
    @property
    def n_documents(self) -> int:
        return self.db["documents"].count

    @property
    def n_passages(self) -> int:
        return self.db["passages"].count

    def deleted_doc_ids(self) -> np.ndarray:
        """Tombstoned document ids, sorted (int64); empty for a store written before tombstones."""
        if "deleted" not in self.db.table_names():
            return np.zeros(0, dtype=np.int64)
        rows = self.db.execute("select doc_id from deleted order by doc_id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def matching_doc_ids(self, sql: str, params) -> np.ndarray:
        """Sorted ids of the documents satisfying a condition on the documents table (a compiled
        where expression: retrieval.filters; its values are bound parameters)."""
        try:
            rows = self.db.execute(f"select id from documents where {sql} order by id", list(params)).fetchall()
        except sqlite3.OperationalError as exc:
            from .errors import InputError

            raise InputError(f"--where: SQLite cannot evaluate it over {self.path} ({exc})") from None
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def passage_doc_ids(self) -> np.ndarray:
        """The document id of every passage, indexed by passage id (int64)."""
        rows = self.db.execute("select id, doc_id from passages order by id").fetchall()
        out = np.full(len(rows) and rows[-1][0] + 1, -1, dtype=np.int64)
        if rows:
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            out[ids] = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        return out

    def id_ranges(self, with_passages: bool) -> dict[str, tuple[int | None, int | None]]:
        """(min id, max id) of the documents (and passages) tables, (None, None) when empty."""
        try:
            out = {"documents": self.db.execute("select min(id), max(id) from documents").fetchone()}
            if with_passages and "passages" in self.db.table_names():
                out["passages"] = self.db.execute("select min(id), max(id) from passages").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexFormatError(f"{self.path}: unreadable ({exc}); rebuild the index") from None
        return out

    @staticmethod
    def quick_check(path: Path) -> None:
        """SQLite's own PRAGMA quick_check of a store file (for one without a checksum in the manifest)."""
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                result = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            result = str(exc)
        if result != "ok":
            raise IndexFormatError(f"{path}: corrupted (SQLite quick_check: {result}); rebuild the index")

    def documents(self, ids: Iterable[int]) -> list[dict]:
        """Rows for the given document ids, in the given order (metadata decoded)."""
        return self._rows("documents", ids, decode_metadata=True)

    def passages(self, ids: Iterable[int]) -> list[dict]:
        """Rows (id, doc_id, start, end) for the given passage ids, in the given order (Index.passages
        adds their text)."""
        return self._rows("passages", ids, decode_metadata=False)

    def iter_passages(self) -> Iterator[dict]:
        """Every passage row (id, doc_id, start, end), in id order."""
        yield from self.db.query('select id, doc_id, start, "end" from passages order by id')

    def bm25(self, match: str, k: int, doc_filter=None) -> list[tuple[int, float]]:
        """Top-k passages for an FTS5 MATCH expression as (passage_id, FTS5 rank); lower rank is better.
        With a retrieval.filters.DocFilter, only passages of the documents it allows (a join on
        passages.doc_id with its SQL condition, values bound), so k come back whenever k such
        passages match. Raises sqlite3.OperationalError for an expression FTS5 cannot parse.
        With postings files as the lexical part, the expression's quoted strings are its phrases,
        joined with OR (what lexical.fts_query writes), ranked as FTS5 would rank them."""
        if self.postings is not None:
            from .postings import match_phrases

            allowed = None if doc_filter is None else doc_filter.passage_mask(self.postings.passage_docs(),
                                                                              self.postings.n_passages)
            return [(pid, -score) for pid, score in self.postings.search(match_phrases(match), k, allowed)]
        try:
            if doc_filter is None:
                return self.db.execute(f"select rowid, rank from {FTS_TABLE} where {FTS_TABLE} match ? "
                                       "order by rank limit ?", [match, int(k)]).fetchall()
            cond, params = doc_filter.sql("p.doc_id")
            return self.db.execute(f"select f.rowid, f.rank from {FTS_TABLE} f join passages p on p.id = f.rowid "
                                   f"where {FTS_TABLE} match ? and {cond} order by f.rank limit ?",
                                   [match, *params, int(k)]).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise IndexFormatError(f"{self.path}: has no full-text index ({exc}); rebuild the index with `rtv index`") from None
            raise

    def passage_spans(self, doc_ids: Iterable[int]) -> dict[int, list[tuple[int, int, int]]]:
        """doc_id -> [(passage_id, start, end)] sorted by start (through the passages(doc_id) index)."""
        out: dict[int, list[tuple[int, int, int]]] = {}
        ids = sorted({int(d) for d in doc_ids})
        for i in range(0, len(ids), 900):
            part = ids[i:i + 900]
            marks = ",".join("?" * len(part))
            for pid, doc, s, e in self.db.execute(
                f"select id, doc_id, start, end from passages where doc_id in ({marks}) order by doc_id, start", part
            ):
                out.setdefault(doc, []).append((pid, s, e))
        return out

    def _rows(self, table: str, ids: Iterable[int], decode_metadata: bool) -> list[dict]:
        ids = [int(i) for i in ids]
        found: dict[int, dict] = {}
        for chunk in range(0, len(ids), 900):
            part = ids[chunk:chunk + 900]
            marks = ",".join("?" * len(part))
            for row in self.db.query(f"select * from {table} where id in ({marks})", part):
                if decode_metadata:
                    row["metadata"] = json.loads(row["metadata"] or "{}")
                found[row["id"]] = row
        return [found[i] for i in ids if i in found]

    def close(self) -> None:
        self.db.conn.close()
