"""A labelled retrieval set built offline from the system's manual pages (the best real substitute
for a BEIR/TREC collection on a machine that reaches only PyPI and Debian).

No PyPI or Debian package ships a retrieval collection with relevance judgments (beir and
ir-datasets download their data at run time). Every English manual page, though, carries a
one-line summary written by its author in its NAME section (`ls - list directory contents`): the
line `apropos`/`whatis` search. Each summary is a real, human-written natural-language query, and
its page is the document it describes: a known-item judgment (one relevant document per query,
relevance 1). The NAME section is removed from the indexed text, so the query's words are not
copied verbatim into the document it must find.

Queries whose summary is shared by several pages (aliases, generated families) are dropped, as
are `.so` redirects and pages with little text. Pages are read from /usr/share/man/man{1,5,7,8}
(gzip-compressed roff, both man and mdoc macros), converted to plain text by a small roff
stripper; each page keeps its first `max_bytes` bytes.

    pages = read_manpages()                 # list[ManPage(ext_id, summary, text)]
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

MAN_ROOT = Path("/usr/share/man")
SECTIONS = ("man1", "man5", "man7", "man8")

_TEXT_MACROS = {"B", "I", "BR", "RB", "IR", "RI", "BI", "IB", "SM", "SB", "SS", "SH", "TP", "IP", "UR", "MT",
                "Nm", "Fl", "Ar", "Op", "Pa", "Xr", "Dv", "Cm", "Em", "Sy", "It", "Va", "Ev", "Li", "Ql", "Dq",
                "Sq", "Pq", "Sh", "Ss", "Nd", "Fn", "Fa", "Ft", "Ic", "Ad", "Ms", "Er", "Tn", "Aq", "Bq", "Oo",
                "D1", "Dl", "Qq", "No"}
_ESC = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[+-]?\d+"), ""),  # size changes
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), ""),  # strings
    (re.compile(r"\\\((em|en|hy)"), "-"),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\((oq|cq|aq)"), "'"),
    (re.compile(r"\\\(bu"), "*"),
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),  # other special characters
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\[&|^%c,/:]"), ""),
    (re.compile(r"\\[ ~0]"), " "),
    (re.compile(r"\\\"") , ""),
]


@dataclass
class ManPage:
    ext_id: str  # e.g. "man1/ls.1"
    summary: str  # the NAME line's description: the query
    text: str  # the page as plain text, without its NAME section


def _unescape(s: str) -> str:
    for pat, rep in _ESC:
        s = pat.sub(rep, s)
    return s


def roff_to_text(src: str) -> tuple[str, str]:
    """(NAME-section text, the rest as plain text) of a man/mdoc page."""
    name: list[str] = []
    body: list[str] = []
    section = ""
    for raw in src.splitlines():
        line = raw.rstrip()
        if line.startswith((".\\\"", "'\\\"", '.\\"')) or line in (".", "'"):
            continue
        if line.startswith((".", "'")):
            parts = line[1:].strip().split(None, 1)
            if not parts:
                continue
            macro, args = parts[0], (parts[1] if len(parts) > 1 else "")
            if macro in ("SH", "Sh"):
                section = _unescape(args).strip('"').strip().upper()
                if section != "NAME":
                    body.append("\n" + section)
                continue
            if macro == "Nd":
                name.append("- " + _unescape(args))
                continue
            if macro not in _TEXT_MACROS:
                if macro in ("PP", "P", "LP", "br", "sp", "Pp", "TP", "IP"):
                    (name if section == "NAME" else body).append("\n")
                continue
            line = args.replace('"', "")
        text = _unescape(line)
        (name if section == "NAME" else body).append(text)
    name_text = " ".join(" ".join(name).split())
    body_text = re.sub(r"[ \t]+", " ", " ".join(body))
    body_text = re.sub(r"\s*\n\s*", "\n", body_text).strip()
    return name_text, body_text


def _summary(name_text: str) -> str | None:
    m = re.search(r"\s[-\u2013\u2014]+\s+(.*)$", name_text)
    if not m:
        return None
    s = m.group(1).strip().rstrip(".").strip()
    return s or None


def read_manpages(root: Path = MAN_ROOT, sections=SECTIONS, max_bytes: int = 6000,
                  min_body: int = 300) -> list[ManPage]:
    """Every page with a unique summary of 3..25 words and at least `min_body` bytes of text."""
    pages: list[ManPage] = []
    seen_text: set[int] = set()
    for sec in sections:
        for path in sorted((root / sec).glob("*.gz")):
            try:
                src = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
            except (OSError, EOFError):
                continue
            if src.lstrip().startswith(".so ") or len(src) < 200:
                continue
            name_text, body = roff_to_text(src)
            summary = _summary(name_text)
            if not summary or not (3 <= len(summary.split()) <= 25) or len(body.encode()) < min_body:
                continue
            data = body.encode("utf-8")[:max_bytes]
            text = data.decode("utf-8", errors="ignore")
            h = hash(text)
            if h in seen_text:  # the same page under two names
                continue
            seen_text.add(h)
            pages.append(ManPage(f"{sec}/{path.name[:-3]}", summary, text))
    counts = Counter(p.summary.lower() for p in pages)
    return [p for p in pages if counts[p.summary.lower()] == 1]
