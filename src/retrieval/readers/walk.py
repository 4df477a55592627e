"""Directory walking: files in sorted order, hidden files and folders left out, binary files found."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from .compression import open_binary

SNIFF_BYTES = 8192


def walk(root: Path) -> Iterator[Path]:
    """Files under `root`, depth first, each folder's files before its subfolders, by name."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def looks_binary(path: Path, compression: str | None = None) -> bool:
    """Whether the (decompressed) start of the file holds a NUL byte, which text never does."""
    with open_binary(path, compression) as stream:
        return b"\0" in stream.read(SNIFF_BYTES)
