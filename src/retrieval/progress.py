"""Progress bars on stderr, silenced with --silent (or RTV_SILENT=1)."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

_silent = os.environ.get("RTV_SILENT") == "1"


def set_silent(value: bool) -> None:
    global _silent
    _silent = value


def bar(total: int | None = None, desc: str = "", unit: str = "it", **kw) -> tqdm:
    """A tqdm bar on stderr that disappears when progress is silenced or stderr is not a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=_silent or None,
                dynamic_ncols=True, leave=False, **kw)


def note(message: str) -> None:
    """A one-line notice on stderr (e.g. 'corpus too small for IVF, using flat')."""
    if not _silent:
        print(f"rtv: {message}", file=sys.stderr)
