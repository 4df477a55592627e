"""Reports of contamination runs: Markdown bulletin, HTML report, plain-text table.

Every report states the window size and the bucket thresholds it used. Everything taken from the
benchmark or the corpus (ids, matched text, snippets, sources) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Sequence

from .scoring import BUCKETS, HIST_BINS, Summary


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f}%"


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_bulletin(summaries: Sequence[Summary], index_desc: str = "") -> str:
    """A contamination bulletin: one row per benchmark."""
    if not summaries:
        return ""
    cfg = summaries[0].config
    sem = any(s.semantic is not None for s in summaries)
    lines = [
        "# Contamination bulletin",
        "",
        f"Index: {index_desc}" if index_desc else "",
        "",
        f"Method: fraction of each entry's {cfg.describe()} found verbatim in the corpus (exact FM-index). "
        f"Buckets (infini-gram mini): {cfg.thresholds.describe()}.",
        "",
    ]
    head = ["Benchmark", "Fields", "Entries", "Scored", "Clean", "Suspicious", "Dirty", "Dirty %", "Mean score"]
    if sem:
        head += ["Semantic flags", "…of exact-clean"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:" if i > 1 else "---" for i in range(1, len(head))]) + "|")
    for s in summaries:
        d = s.to_json()
        row = [
            _md_cell(s.benchmark), _md_cell(", ".join(s.fields)), d["entries"], d["scored"],
            d["buckets"]["clean"], d["buckets"]["suspicious"], d["buckets"]["dirty"], _pct(d["rates"]["dirty"]),
            "—" if d["mean_score"] is None else f"{d['mean_score']:.3f}",
        ]
        if sem:
            se = s.semantic or {}
            row += [se.get("flagged", "—"), se.get("flagged_exact_clean", "—")]
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    notes = [f"{s.benchmark}: {s.counts['empty']} empty, {s.counts['too_short']} shorter than one window (not scored)"
             for s in summaries if s.counts["empty"] or s.counts["too_short"]]
    if notes:
        lines += ["", *[f"- {_md_cell(n)}" for n in notes]]
    if sem:
        t = next(s.semantic["threshold"] for s in summaries if s.semantic is not None)
        lines += ["", f"Semantic flags (reported apart from verbatim overlap): best dense passage with cosine >= {t:g}."]
    lines.append("")
    return "\n".join(line for i, line in enumerate(lines) if line or i == 0 or lines[i - 1] != "")


def text_table(summaries: Sequence[Summary]) -> str:
    """A plain table for the terminal."""
    rows = [("benchmark", "entries", "clean", "suspicious", "dirty", "dirty%", "mean", "entries/s")]
    for s in summaries:
        d = s.to_json()
        rows.append((s.benchmark, str(d["entries"]), str(d["buckets"]["clean"]), str(d["buckets"]["suspicious"]),
                     str(d["buckets"]["dirty"]), _pct(d["rates"]["dirty"]),
                     "-" if d["mean_score"] is None else f"{d['mean_score']:.3f}", str(d["entries_per_s"] or "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    if summaries:
        cfg = summaries[0].config
        out.append(f"({cfg.describe()}; {cfg.thresholds.describe()})")
    return "\n".join(out)


def histogram_png(summary: Summary) -> bytes:
    """PNG of the score histogram (matplotlib, Agg), with the thresholds drawn."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 2.8), dpi=100)
    width = 1.0 / HIST_BINS
    t = summary.config.thresholds
    colors = []
    for i in range(HIST_BINS):
        x = i * width
        colors.append("#2e7d32" if x < t.suspicious else ("#f9a825" if x < t.dirty else "#c62828"))
    ax.bar([i * width for i in range(HIST_BINS)], summary.hist.tolist(), width=width, align="edge", color=colors,
           edgecolor="none")
    for x in (t.suspicious, t.dirty):
        ax.axvline(x, color="#444", linestyle="--", linewidth=0.8)
    ax.set_xlim(0, 1)
    if summary.hist.max() > 20 * max(1, sorted(summary.hist.tolist())[-2] if HIST_BINS > 1 else 1):
        ax.set_yscale("symlog")
    ax.set_xlabel("score: fraction of windows found in the corpus")
    ax.set_ylabel("entries")
    ax.set_title(f"{summary.benchmark} ({summary.scored} scored entries)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right}.clean{color:#2e7d32}.suspicious{color:#b26a00}.dirty{color:#c62828}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font-size:.85em;max-height:12em;overflow:auto}
mark{background:#ffe082}.muted{color:#777;font-size:.9em}
"""


def _snippet_html(snippet: str | None, needle: str | None) -> str:
    if not snippet:
        return ""
    if needle and needle in snippet:
        a = snippet.index(needle)
        return (html.escape(snippet[:a]) + "<mark>" + html.escape(needle) + "</mark>"
                + html.escape(snippet[a + len(needle):]))
    return html.escape(snippet)


def html_report(summaries: Sequence[Summary], index_desc: str = "", title: str = "rtv contamination report") -> str:
    """One self-contained HTML page: per benchmark the bucket table, a histogram and the worst entries."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"]
    if summaries:
        cfg = summaries[0].config
        parts.append(
            f"<p>Index: <code>{esc(index_desc)}</code><br>Score = fraction of an entry's {esc(cfg.describe())} "
            f"found verbatim in the corpus. Buckets (as in infini-gram mini): "
            f"<b>{esc(cfg.thresholds.describe())}</b>.<br><span class='muted'>Generated "
            f"{esc(time.strftime('%Y-%m-%d %H:%M:%S'))}.</span></p>"
        )
        parts.append("<h2>Summary</h2>")
        parts.append(_summary_table(summaries))
    for s in summaries:
        parts.append(_benchmark_section(s))
    parts.append("</body></html>")
    return "\n".join(parts)


def _summary_table(summaries: Sequence[Summary]) -> str:
    esc = html.escape
    rows = ["<table><tr><th>benchmark</th><th>fields</th><th>entries</th><th>scored</th>"
            + "".join(f"<th class='{b}'>{b}</th>" for b in BUCKETS)
            + "<th>dirty rate</th><th>mean score</th><th>not scored (empty / too short)</th></tr>"]
    for s in summaries:
        d = s.to_json()
        rows.append(
            f"<tr><td>{esc(s.benchmark)}</td><td>{esc(', '.join(s.fields))}</td><td class=n>{d['entries']}</td>"
            f"<td class=n>{d['scored']}</td>"
            + "".join(f"<td class=n>{d['buckets'][b]} ({_pct(d['rates'][b])})</td>" for b in BUCKETS)
            + f"<td class=n>{_pct(d['rates']['dirty'])}</td>"
            f"<td class=n>{'—' if d['mean_score'] is None else format(d['mean_score'], '.3f')}</td>"
            f"<td class=n>{d['empty']} / {d['too_short']}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def _benchmark_section(s: Summary) -> str:
    esc = html.escape
    d = s.to_json()
    out = [f"<h2>{esc(s.benchmark)}</h2>",
           f"<p class='muted'>{esc(s.path)} — fields {esc(', '.join(s.fields))} — {d['entries']} entries in "
           f"{d['elapsed_s']} s ({d['entries_per_s']} entries/s)</p>"]
    png = base64.b64encode(histogram_png(s)).decode("ascii")
    out.append(f"<img alt='score histogram of {esc(s.benchmark)}' src='data:image/png;base64,{png}'>")
    if s.semantic is not None:
        se = s.semantic
        out.append(f"<p>Semantic near-duplicates (dense index, reported apart from verbatim overlap): "
                   f"{se['flagged']} of {se['checked']} entries have a passage with cosine &ge; {se['threshold']:g}; "
                   f"{se['flagged_exact_clean']} of them are clean by verbatim overlap.</p>")
    worst = s.worst()
    if not worst:
        out.append("<p>No entry has any window found in the corpus.</p>")
        return "\n".join(out)
    out.append(f"<h3>Worst entries (top {len(worst)} by score)</h3>")
    out.append("<table><tr><th>id</th><th>score</th><th>bucket</th><th>longest matched text</th>"
               "<th>where (document, offset, snippet)</th></tr>")
    for r in worst:
        where = []
        for m in r.matches:
            label = m.get("ext_id") or m.get("source") or ""
            where.append(f"<div>doc {m['doc_id']} <span class='muted'>{esc(str(label))}</span> @ {m['offset']}"
                         f"<pre>{_snippet_html(m.get('snippet'), r.matched_text)}</pre></div>")
        if r.match_count and r.match_count > len(r.matches):
            where.append(f"<div class='muted'>… {r.match_count} occurrences in all</div>")
        sem = ""
        if r.semantic and r.semantic.get("flagged"):
            sem = f"<div class='muted'>semantic: cosine {r.semantic['score']} (passage {r.semantic['passage_id']})</div>"
        out.append(
            f"<tr><td>{esc(r.id)}</td><td class=n>{r.score:.3f}<br><span class='muted'>{r.found}/{r.windows}</span></td>"
            f"<td class='{r.bucket}'>{r.bucket}</td><td><pre>{esc(r.matched_text or '')}</pre></td>"
            f"<td>{''.join(where) or sem or '<span class=muted>(matches listed for suspicious and dirty entries)</span>'}{sem if where else ''}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)
