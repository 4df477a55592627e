"""Which documents a query may return: `--where` expressions over document metadata, tombstones,
and the `DocFilter` that every stage honours.

The where language (case-insensitive keywords):

    year >= 2020 AND lang = 'en'
    source != 'a.jsonl' OR NOT (tags.kind IN ('x', 'y'))
    score BETWEEN 0.5 AND 1 AND reviewed = true AND note IS NULL

- fields: `name` or dotted `a.b.c` for nested JSON objects (JSONL fields other than the text and
  id, parquet / CSV columns, kept as JSON in documents.metadata); `` `odd name` `` in backticks for
  a key with other characters. Built-in fields: `id` (the external id), `source` (the file),
  `doc_id` (the internal id), `length` (bytes of text); `metadata.NAME` reaches a metadata field
  that has one of those names.
- comparisons `= != < <= > >=` (also `==`, `<>`) against one literal: 'string' or "string"
  (backslash escapes, or the quote doubled: 'O''Reilly'), numbers, true, false, null; `IN (v, ...)`, `BETWEEN lo AND hi`,
  `IS [NOT] NULL`, each with NOT; AND binds tighter than OR; parentheses.

Semantics (a two-valued logic, the same in SQL and in `evaluate`, the pure-Python reference):
a comparison is true only when the field exists and holds a value of the literal's kind (a
number for a number, a string for a string, a boolean for true/false), so `year > 2000` is false
for a document whose year is the string "2001" or missing; `!=`, `NOT IN`, `NOT BETWEEN` are the
NOT of `=`, `IN`, `BETWEEN` (so they hold for a missing field); `= null` and `IS NULL` hold for a
missing field or a JSON null. Strings compare by code point (SQLite's BINARY collation of UTF-8).

Compiled into parameterised SQLite: every value and every JSON path is a bound parameter, never
pasted into the SQL text; field names are validated. The allowed document ids are materialised
once per query (one scan of documents, cached per open index) into a `DocFilter`: a mask over
document ids that the exact, lexical, dense and hybrid stages apply inside their search.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .errors import InputError

MAX_WHERE_CHARS = 4096
MAX_DEPTH = 64  # nesting of parentheses / NOT
MAX_ATOMS = 256  # comparisons (each binds a few SQL parameters; SQLite's limit is 32766)

# built-in fields: the documents table's own columns, and the kind of literal they compare with
BUILTINS = {"id": ("ext_id", "text"), "source": ("source", "text"), "doc_id": ("id", "number"),
            "length": ("length", "number")}
METADATA_PREFIX = "metadata"

_KEYWORDS = {"and", "or", "not", "in", "between", "is", "null", "true", "false"}
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_\-]*)
  | (?P<quoted>`[^`]*`)
  | (?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
  | (?P<op>==|!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),.])
""", re.VERBOSE | re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0"}
_BAD_KEY = re.compile(r'["\x00-\x1f]')  # cannot appear in a SQLite JSON path label


@dataclass(frozen=True)
class _Tok:
    kind: str  # number, name, quoted, string, op, punct, end
    text: str
    pos: int  # 0-based character offset in the expression
    value: object = None


class _Parser:
    """Tokenizer + recursive descent over the grammar

        expr    := and ('OR' and)*
        and     := unary ('AND' unary)*
        unary   := 'NOT' unary | '(' expr ')' | test
        test    := field ( op literal | ['NOT'] 'IN' '(' literal (',' literal)* ')'
                         | ['NOT'] 'BETWEEN' literal 'AND' literal | 'IS' ['NOT'] 'NULL' )
        field   := part ('.' part)*      part := name | `quoted`

    producing a small tree: ("or", [..]), ("and", [..]), ("not", x), ("cmp", field, op, value),
    ("in", field, [values]), ("between", field, lo, hi), ("null", field)."""

    def __init__(self, text: str, what: str):
        self.text, self.what = text, what
        self.toks = self._tokenize()
        self.i = 0
        self.atoms = 0

    def fail(self, tok: _Tok, expected: str):
        found = "the end of the expression" if tok.kind == "end" else repr(tok.text)
        raise InputError(f"{self.what} {self.text!r}: at character {tok.pos + 1}, expected {expected}, found {found}")

    def _tokenize(self) -> list[_Tok]:
        out, pos, text = [], 0, self.text
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                bad = text[pos]
                hint = "an unterminated string" if bad in "'\"`" else "a character the where language does not use"
                raise InputError(f"{self.what} {text!r}: at character {pos + 1}, {hint} ({bad!r}); "
                                 "quote strings with '...' and field names with `...`")
            kind = m.lastgroup
            tok = m.group()
            if kind != "ws":
                value = None
                if kind == "number":
                    value = float(tok) if any(c in tok for c in ".eE") else int(tok)
                    if isinstance(value, float) and not math.isfinite(value):
                        raise InputError(f"{self.what} {text!r}: at character {pos + 1}, number {tok} is out of range")
                elif kind == "string":
                    q = tok[0]  # backslash escapes, or the quote doubled (SQL's 'O''Reilly')
                    value = re.sub(r"\\(.)|" + q + q, lambda e: q if e.group(1) is None else _ESCAPES.get(e.group(1), e.group(1)),
                                   tok[1:-1], flags=re.DOTALL)
                elif kind == "quoted":
                    value = tok[1:-1]
                elif kind == "name":
                    value = tok
                out.append(_Tok(kind, tok, pos, value))
            pos = m.end()
        out.append(_Tok("end", "", len(text)))
        return out

    # -- helpers ---------------------------------------------------------------------------------
    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok.kind == "name" and tok.text.lower() == word:
            self.i += 1
            return True
        return False

    def expect_keyword(self, word: str, expected: str) -> None:
        if not self.keyword(word):
            self.fail(self.peek(), expected)

    # -- grammar ---------------------------------------------------------------------------------
    def parse(self):
        if not self.text.strip():
            raise InputError(f"{self.what}: empty expression; give a condition such as \"lang = 'en'\"")
        if len(self.text) > MAX_WHERE_CHARS:
            raise InputError(f"{self.what}: {len(self.text)} characters, more than {MAX_WHERE_CHARS}; shorten it")
        tree = self.expr(0)
        if self.peek().kind != "end":
            self.fail(self.peek(), "AND, OR or the end of the expression")
        return tree

    def expr(self, depth: int):
        items = [self.conj(depth)]
        while self.keyword("or"):
            items.append(self.conj(depth))
        return items[0] if len(items) == 1 else ("or", items)

    def conj(self, depth: int):
        items = [self.unary(depth)]
        while self.keyword("and"):
            items.append(self.unary(depth))
        return items[0] if len(items) == 1 else ("and", items)

    def unary(self, depth: int):
        if depth > MAX_DEPTH:
            self.fail(self.peek(), f"at most {MAX_DEPTH} levels of NOT and parentheses")
        if self.keyword("not"):
            return ("not", self.unary(depth + 1))
        tok = self.peek()
        if tok.kind == "punct" and tok.text == "(":
            self.next()
            inner = self.expr(depth + 1)
            close = self.next()
            if close.kind != "punct" or close.text != ")":
                self.fail(close, "')'")
            return inner
        return self.test()

    def field(self) -> tuple[str, ...]:
        parts = []
        while True:
            tok = self.next()
            if tok.kind == "quoted" or (tok.kind == "name" and tok.text.lower() not in _KEYWORDS):
                if not tok.value or _BAD_KEY.search(tok.value):
                    self.fail(tok, "a field name without double quotes or control characters")
                parts.append(tok.value)
            else:
                self.fail(tok, "a field name (e.g. lang, meta.year or `odd name`)" if not parts else
                          "a field name after '.'")
            nxt = self.peek()
            if not (nxt.kind == "punct" and nxt.text == "."):
                return tuple(parts)
            self.next()

    def literal(self):
        tok = self.next()
        if tok.kind in ("number", "string"):
            return tok.value
        if tok.kind == "name" and tok.text.lower() in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[tok.text.lower()]
        self.fail(tok, "a value: a 'string', a number, true, false or null")

    def test(self):
        start = self.peek()
        name = self.field()
        self.atoms += 1
        if self.atoms > MAX_ATOMS:
            self.fail(start, f"at most {MAX_ATOMS} comparisons")
        field = _Field.of(name, self, start)
        tok = self.peek()
        if tok.kind == "op":
            self.next()
            op = {"==": "=", "<>": "!="}.get(tok.text, tok.text)
            vtok = self.peek()
            value = self.literal()
            field.check(value, op, self, vtok)
            return ("cmp", field, op, value)
        negate = self.keyword("not")
        if self.keyword("in"):
            open_ = self.next()
            if open_.kind != "punct" or open_.text != "(":
                self.fail(open_, "'(' after IN")
            values = []
            while True:
                vtok = self.peek()
                value = self.literal()
                field.check(value, "=", self, vtok)
                values.append(value)
                sep = self.next()
                if sep.kind == "punct" and sep.text == ")":
                    break
                if not (sep.kind == "punct" and sep.text == ","):
                    self.fail(sep, "',' or ')' in the IN list")
            node = ("in", field, values)
        elif self.keyword("between"):
            ltok = self.peek()
            lo = self.literal()
            field.check(lo, "<=", self, ltok)
            self.expect_keyword("and", "AND between the two bounds of BETWEEN")
            htok = self.peek()
            hi = self.literal()
            field.check(hi, "<=", self, htok)
            if _kind(lo) != _kind(hi):
                self.fail(htok, f"an upper bound of the same kind as the lower one ({_kind(lo)})")
            node = ("between", field, lo, hi)
        elif not negate and self.keyword("is"):
            negate = self.keyword("not")
            self.expect_keyword("null", "NULL after IS / IS NOT")
            node = ("null", field)
        else:
            self.fail(self.peek(), "a comparison (= != < <= > >=), IN, BETWEEN or IS NULL after the field name"
                      if not negate else "IN or BETWEEN after NOT")
        return ("not", node) if negate else node


def _kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "text"


@dataclass(frozen=True)
class _Field:
    path: tuple[str, ...]  # metadata keys, outermost first; () for a built-in column
    column: str | None = None  # the documents table's column for a built-in field
    column_kind: str | None = None

    @classmethod
    def of(cls, parts: tuple[str, ...], parser: _Parser, tok: _Tok) -> "_Field":
        if len(parts) == 1 and parts[0] in BUILTINS and tok.kind == "name":
            column, kind = BUILTINS[parts[0]]
            return cls((), column, kind)
        if parts[0] == METADATA_PREFIX and tok.kind == "name" and len(parts) > 1:
            parts = parts[1:]
        return cls(parts)

    @property
    def name(self) -> str:
        return next(k for k, (c, _) in BUILTINS.items() if c == self.column) if self.column else ".".join(self.path)

    @property
    def json_path(self) -> str:
        return "$" + "".join(f'."{p}"' for p in self.path)

    def check(self, value, op: str, parser: _Parser, tok: _Tok) -> None:
        kind = _kind(value)
        if op in ("<", "<=", ">", ">=") and kind not in ("number", "text"):
            parser.fail(tok, f"a number or a string to order by (not {kind})")
        if self.column and kind != "null" and kind != self.column_kind:
            quote = " (quote it: '...')" if self.column_kind == "text" else ""
            parser.fail(tok, f"a {'string' if self.column_kind == 'text' else 'number'} for the built-in field "
                             f"{self.name}{quote}")


# -- SQL -------------------------------------------------------------------------------------------
_TYPES = {"number": "('integer', 'real')", "text": "('text')"}


def _atom_sql(field: _Field, op: str, value, params: list) -> str:
    """One comparison, always 0 or 1 (never NULL), so NOT / AND / OR stay two-valued."""
    kind = _kind(value)
    if op == "!=":
        return f"(1 - {_atom_sql(field, '=', value, params)})"
    if field.column:
        if kind == "null":
            return f"({field.column} IS NULL)"
        params.append(value)
        return f"coalesce({field.column} {op} ?, 0)"
    if kind == "null":
        params.append(field.json_path)
        return "coalesce(json_type(metadata, ?) = 'null', 1)"
    if kind == "bool":
        params.append(field.json_path)
        return f"coalesce(json_type(metadata, ?) = '{'true' if value else 'false'}', 0)"
    params += [field.json_path, field.json_path, value]
    return f"coalesce(json_type(metadata, ?) IN {_TYPES[kind]} AND json_extract(metadata, ?) {op} ?, 0)"


def _sql(node, params: list) -> str:
    tag = node[0]
    if tag in ("and", "or"):
        return "(" + f" {tag.upper()} ".join(_sql(n, params) for n in node[1]) + ")"
    if tag == "not":
        return f"(NOT {_sql(node[1], params)})"
    if tag == "cmp":
        return _atom_sql(node[1], node[2], node[3], params)
    if tag == "in":
        return "(" + " OR ".join(_atom_sql(node[1], "=", v, params) for v in node[2]) + ")"
    if tag == "between":
        return f"({_atom_sql(node[1], '>=', node[2], params)} AND {_atom_sql(node[1], '<=', node[3], params)})"
    if tag == "null":
        return _atom_sql(node[1], "=", None, params)
    raise AssertionError(tag)


@dataclass(frozen=True)
class Where:
    """A parsed where expression: its text, tree, and SQL condition over the documents table."""

    text: str
    tree: tuple
    sql: str  # a condition on the columns of `documents`, with `?` placeholders
    params: tuple


def parse_where(text: str, what: str = "--where") -> Where:
    """Parse and compile a where expression; InputError (one line, naming the character and what
    was expected) when it is not one. `what` names the argument in messages (--where, where=)."""
    if not isinstance(text, str):
        raise InputError(f"{what}: expected a string expression, got {type(text).__name__}")
    tree = _Parser(text, what).parse()
    params: list = []
    sql = _sql(tree, params)
    return Where(text, tree, sql, tuple(params))


# -- the pure-Python reference (tests' oracle, and the documentation of the semantics) --------------
def _lookup(doc: dict, field: _Field):
    """(found, value) of a field in a document row {id, ext_id, source, length, metadata}."""
    if field.column:
        return True, doc[field.column]
    value = doc["metadata"]
    for key in field.path:
        if not isinstance(value, dict) or key not in value:
            return False, None
        value = value[key]
    return True, value


def _same_kind(stored, value) -> bool:
    kind = _kind(value)
    if kind == "bool":
        return isinstance(stored, bool)
    if kind == "number":
        return isinstance(stored, (int, float)) and not isinstance(stored, bool)
    return isinstance(stored, str)


def _cmp(doc: dict, field: _Field, op: str, value) -> bool:
    if op == "!=":
        return not _cmp(doc, field, "=", value)
    found, stored = _lookup(doc, field)
    if value is None:
        return not found or stored is None
    if not found or not _same_kind(stored, value):
        return False
    if isinstance(value, bool):
        return stored is value
    return {"=": stored == value, "<": stored < value, "<=": stored <= value, ">": stored > value,
            ">=": stored >= value}[op]


def evaluate(where: Where | str, doc: dict) -> bool:
    """Whether a document row ({id, ext_id, source, length, metadata: dict}) matches `where`,
    computed in Python: the reference the SQL is tested against."""
    tree = parse_where(where).tree if isinstance(where, str) else where.tree

    def ev(node) -> bool:
        tag = node[0]
        if tag == "and":
            return all(ev(n) for n in node[1])
        if tag == "or":
            return any(ev(n) for n in node[1])
        if tag == "not":
            return not ev(node[1])
        if tag == "cmp":
            return _cmp(doc, node[1], node[2], node[3])
        if tag == "in":
            return any(_cmp(doc, node[1], "=", v) for v in node[2])
        if tag == "between":
            return _cmp(doc, node[1], ">=", node[2]) and _cmp(doc, node[1], "<=", node[3])
        if tag == "null":
            return _cmp(doc, node[1], "=", None)
        raise AssertionError(tag)

    return ev(tree)


# -- the filter every stage applies ---------------------------------------------------------------
class DocFilter:
    """The documents a query may return: `mask[doc_id]` is True for an allowed document (live, and
    matching the where expression if one was given). Built by `Index.doc_filter`, which returns
    None instead when nothing is excluded, so unfiltered queries keep their fast paths."""

    def __init__(self, mask: np.ndarray, where: Where | None = None, has_tombstones: bool = False,
                 doc_lengths: np.ndarray | None = None):
        self.mask = np.ascontiguousarray(mask, dtype=bool)
        self.where = where
        self.has_tombstones = has_tombstones
        self.doc_lengths = doc_lengths  # bytes of text of every document (the exact stage's cost model)
        self.n_docs = len(self.mask)
        self.n_allowed = int(self.mask.sum())
        self._passages: tuple[int, np.ndarray] | None = None
        self._exact = None

    @property
    def allowed_ids(self) -> np.ndarray:
        return np.flatnonzero(self.mask).astype(np.int64)

    @property
    def excluded_ids(self) -> np.ndarray:
        return np.flatnonzero(~self.mask).astype(np.int64)

    def allows(self, doc_ids) -> np.ndarray:
        """Boolean array: which of `doc_ids` (global document ids) are allowed."""
        d = np.asarray(doc_ids, dtype=np.int64)
        return self.mask[d] if len(d) else np.zeros(0, dtype=bool)

    def keep(self, doc_ids) -> np.ndarray:
        """The allowed ones of `doc_ids`, in order."""
        d = np.asarray(doc_ids, dtype=np.int64)
        return d[self.allows(d)]

    def passage_mask(self, passage_docs: np.ndarray, n: int | None = None) -> np.ndarray:
        """Boolean mask over passage ids 0..n-1 (default: len(passage_docs)) from the document of
        every passage (Index.passage_docs; -1 for an id with no passage row, which is never allowed)."""
        n = len(passage_docs) if n is None else n
        out = np.zeros(n, dtype=bool)
        docs = np.asarray(passage_docs[:n], dtype=np.int64)
        known = docs >= 0
        out[:len(docs)][known] = self.mask[docs[known]]
        return out

    def sql(self, column: str) -> tuple[str, list]:
        """A SQL condition "document `column` is allowed" (tombstones and the where expression as
        subqueries on documents / deleted; values bound, never pasted), with its parameters."""
        parts, params = [], []
        if self.has_tombstones:
            parts.append(f"{column} NOT IN (SELECT doc_id FROM deleted)")
        if self.where is not None:
            parts.append(f"{column} IN (SELECT id FROM documents WHERE {self.where.sql})")
            params += list(self.where.params)
        return (" AND ".join(parts) or "1"), params

    def __repr__(self) -> str:
        what = f"where {self.where.text!r}" if self.where else "live documents"
        return f"DocFilter({what}: {self.n_allowed} of {self.n_docs} documents)"


def combine(n_docs: int, deleted: np.ndarray, matching: np.ndarray | None, where: Where | None = None,
            doc_lengths: np.ndarray | None = None) -> DocFilter | None:
    """The DocFilter of documents not in `deleted` and (when given) in `matching` (ids), or None
    when it would allow every document."""
    mask = np.ones(n_docs, dtype=bool) if matching is None else np.zeros(n_docs, dtype=bool)
    if matching is not None and len(matching):
        mask[np.asarray(matching, dtype=np.int64)] = True
    if len(deleted):
        mask[np.asarray(deleted, dtype=np.int64)] = False
    if mask.all():
        return None
    return DocFilter(mask, where if matching is not None else None, bool(len(deleted)), doc_lengths)


__all__ = ["Where", "parse_where", "evaluate", "DocFilter", "combine", "BUILTINS"]
