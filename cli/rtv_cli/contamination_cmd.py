"""`rtv contamination DIR BENCHMARK...`: verbatim overlap of benchmark entries with the corpus."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import output_options, where_option


class _ThresholdsType(click.ParamType):
    name = "SUSPICIOUS,DIRTY"

    def convert(self, value, param, ctx):
        from retrieval.contamination import Thresholds
        from retrieval.errors import InputError

        if not isinstance(value, str):
            return value
        try:
            return Thresholds.parse(value)
        except InputError as exc:
            self.fail(str(exc), param, ctx)


@click.command("contamination")
@click.argument("index_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.argument("benchmarks", metavar="BENCHMARK...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--field", "fields", multiple=True, metavar="F",
              help="Field to check (repeat for several; dotted names reach nested fields). "
                   "Default: the first of text/question/prompt/problem/input present.")
@click.option("--id-field", metavar="F", help="Field holding the entry id (default: id or task_id, else line number).")
@click.option("--unit", type=click.Choice(["chars", "tokens"]), default="chars", show_default=True,
              help="Windows of characters or of whitespace tokens.")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="Window size (default 50 characters, or 13 tokens with --unit tokens).")
@click.option("--thresholds", type=_ThresholdsType(), default="0.2,0.8", show_default=True,
              help="Lower bounds of the suspicious and dirty buckets (infini-gram mini: 0.2,0.8).")
@click.option("--max-matches", type=click.IntRange(min=0), default=5, show_default=True,
              help="Documents listed (with offsets and snippets) per suspicious/dirty entry.")
@click.option("--worst", type=click.IntRange(min=0), default=20, show_default=True,
              help="Worst entries shown in the HTML report.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, writable=True), metavar="REPORT.html",
              help="Write an HTML report (bucket table, histogram, worst entries with snippets).")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, writable=True), metavar="REPORT.md",
              help="Write a Markdown bulletin table (one row per benchmark).")
@click.option("--semantic", is_flag=True, help="Also flag near-duplicates through the dense index (reported apart).")
@click.option("--semantic-threshold", type=click.FloatRange(0, 1, min_open=True), default=0.85, show_default=True,
              help="Cosine similarity at or above which --semantic flags an entry.")
@where_option
@output_options
def contamination(index_dir, benchmarks, fields, id_field, unit, window, thresholds, max_matches, worst,
                  html_path, md_path, semantic, semantic_threshold, where, as_json):
    """Check BENCHMARK files (JSONL, JSON, CSV, parquet; .gz/.zst) against the index in DIR.

    Each entry is scored by the fraction of its overlapping windows found verbatim in the corpus
    and put in a bucket: clean, suspicious or dirty (thresholds as in infini-gram mini, 0.2 and 0.8).
    With --json, one JSON object per entry and a summary object per benchmark go to stdout;
    otherwise a summary table.
    """
    from retrieval import progress
    from retrieval.contamination import (BenchmarkRun, ContaminationConfig, SemanticChecker, html_report,
                                         markdown_bulletin, text_table)

    from .common import _write as to_stdout
    from .common import open_index

    config = ContaminationConfig(unit=unit, window=window, thresholds=thresholds, max_matches=max_matches,
                                 worst=worst, where=where)
    for b in benchmarks:  # fail on a bad file before the (slow) index open
        if not Path(b).is_file():
            raise click.ClickException(f"{b}: no such benchmark file; check the path")
    for report in (html_path, md_path):
        if report and not Path(report).resolve().parent.is_dir():
            raise click.ClickException(f"{report}: its directory does not exist; create it or choose another path")
    index = open_index(index_dir)
    if where:
        index.doc_filter(where)  # a bad expression fails here, before any benchmark is read
    checker = SemanticChecker(index, threshold=semantic_threshold, where=where) if semantic else None
    runs = [BenchmarkRun(index, b, list(fields) or None, id_field, config, checker) for b in benchmarks]
    for run in runs:  # every benchmark's fields are checked before the first one is scored
        run.reader.check()
    summaries = []
    out = sys.stdout
    for run in runs:
        bar = progress.bar(desc=run.name, unit="entry")
        for r in run:
            bar.update()
            if as_json:
                to_stdout(out.write, json.dumps(r.to_json(), ensure_ascii=False) + "\n")
        bar.close()
        summaries.append(run.summary)
        if as_json:
            to_stdout(out.write, json.dumps(run.summary.to_json(), ensure_ascii=False) + "\n")
            to_stdout(out.flush)
    desc = f"{index_dir} ({index.n_documents} documents)"
    if html_path:
        _write(html_path, html_report(summaries, desc))
    if md_path:
        _write(md_path, markdown_bulletin(summaries, desc))
    if not as_json:
        to_stdout(click.echo, text_table(summaries))


def _write(path: str, text: str) -> None:
    """Write a report whole or not at all: a temporary file beside it, renamed over it when
    complete (a full disk leaves the old report, or none, never a cut one)."""
    import os
    import tempfile

    target = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.resolve().parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot be written ({exc.strerror or exc}); free space or choose another "
                                   "path") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
