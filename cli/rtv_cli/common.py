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
        try:
            return fn(*args, **kwargs)
        except RtvError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def emit(obj: dict, as_json: bool, text: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    else:
        click.echo(text)


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
