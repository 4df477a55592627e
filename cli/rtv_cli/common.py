"""Shared CLI plumbing: output options, error mapping, size parsing."""

from __future__ import annotations

import functools
import json
import re
import sys

import click

from retrieval.errors import RtvError


def output_options(fn):
    """--json (one JSON object per line, in order) and --silent (no progress on stderr)."""

    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line on stdout.")
    @click.option("--silent", is_flag=True, help="No progress bars or notices on stderr.")
    @functools.wraps(fn)
    def wrapper(*args, silent: bool, **kwargs):
        from retrieval import progress

        if silent:
            progress.set_silent(True)
        check_text_arguments(kwargs)
        try:
            result = fn(*args, **kwargs)
            _write(sys.stdout.flush)  # a full device fails here, not at exit with a traceback
            return result
        except RtvError as exc:
            raise click.ClickException(str(exc)) from None
        except _StdoutError as exc:
            _drop_stdout()
            if isinstance(exc.__cause__, BrokenPipeError):  # `rtv ... | head`: the reader has what it wanted
                sys.exit(0)
            raise click.ClickException(f"cannot write to standard output ({exc.__cause__.strerror}); "
                                       "free space on its device or redirect it elsewhere") from None

    return wrapper


def where_option(fn):
    """--where EXPR: only documents whose metadata match (retrieval.filters; deleted ones never)."""
    return click.option(
        "--where", default=None, metavar="EXPR",
        help="Only documents whose metadata match EXPR, e.g. \"lang = 'en' AND year >= 2020\" "
             "(fields: metadata keys, dotted for nested ones, and id, source, doc_id, length; "
             "= != < <= > >=, IN (...), BETWEEN, IS NULL, AND/OR/NOT).")(fn)


def check_text_arguments(kwargs: dict) -> None:
    """Text arguments (patterns, queries, field names) must be UTF-8; a path may be any bytes.
    Python hands non-UTF-8 argv bytes over as lone surrogates, which nothing can encode."""
    ctx = click.get_current_context(silent=True)
    params = {p.name: p for p in ctx.command.params} if ctx else {}
    for name, value in kwargs.items():
        param = params.get(name)
        if param is not None and isinstance(param.type, click.Path):
            continue
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, str):
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    shown = v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                    what = (param.opts[-1] if param.opts and param.opts[0].startswith("-") else name.upper()) if param else name
                    raise click.ClickException(f"{what} {shown!r}: not valid UTF-8 text; pass UTF-8 "
                                               "(check the terminal's encoding, e.g. LANG=C.UTF-8)") from None


class _StdoutError(Exception):
    """Writing to stdout failed (its __cause__ is the OSError)."""


def _write(write, *args) -> None:
    try:
        write(*args)
    except OSError as exc:
        raise _StdoutError() from exc


def _drop_stdout() -> None:
    """Point fd 1 at /dev/null so that the interpreter's last flush at exit cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def emit(obj: dict, as_json: bool, text: str) -> None:
    if as_json:
        _write(sys.stdout.write, json.dumps(obj, ensure_ascii=False) + "\n")
    else:
        _write(click.echo, text)


def open_index(path: str, **kwargs):
    from retrieval import Index

    try:
        return Index.open(path, **kwargs)
    except OSError as exc:  # a file of the index that cannot be read (permissions, I/O error)
        raise click.ClickException(f"{path}: cannot read {exc.filename or 'the index'} ({exc.strerror or exc}); "
                                   "check the index's files and their permissions") from None


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20, "g": 1 << 30, "gb": 1 << 30}


class ByteSize(click.ParamType):
    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        unit = m.group(2).lower().replace("ib", "b") if m else None  # GiB == GB == G (binary)
        if unit not in _UNITS:
            self.fail(f"{value!r} is not a size like 512M or 1G", param, ctx)
        return int(float(m.group(1)) * _UNITS[unit])
