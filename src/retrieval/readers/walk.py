"""Directory walking: regular files in sorted order; everything left out is reported with why.

Left out (each passed to `skip(path, reason)`): hidden files and folders (names starting with
"."), anything that is not a regular file or a directory (FIFOs, sockets, devices: reading one
could block forever), dangling symbolic links and symbolic link loops, folders that cannot be
listed, files that cannot be read, folders named in `exclude` (the index being built) and rtv
index directories. Symbolic links to folders are followed, but a folder already walked (a link
back up the tree, or a second link to the same folder) is walked once.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .compression import open_binary

SNIFF_BYTES = 8192

HIDDEN = "hidden (name starts with '.')"
NOT_REGULAR = "not a regular file (FIFO, socket or device)"
DANGLING = "dangling symbolic link"
LINK_LOOP = "symbolic link loop"
UNLISTABLE = "folder cannot be listed"
UNREADABLE = "file cannot be read (permission denied)"
WALKED = "folder already walked (another symbolic link to it)"
OUTPUT = "the index being built"
AN_INDEX = "an rtv index directory"

Skip = Callable[[Path, str], None]


def is_rtv_index(path: Path) -> bool:
    try:
        return (path / "CURRENT").is_file() or ((path / "manifest.json").is_file() and (path / "meta.sqlite").is_file())
    except OSError:  # a folder that cannot be searched: the walk says so when it lists it
        return False


def walk(root: Path, skip: Skip | None = None, exclude: Iterable[Path] = ()) -> Iterator[Path]:
    """Regular files under `root`, depth first, each folder's files before its subfolders, by name."""
    skip = skip or (lambda path, reason: None)
    excluded = set()
    for p in exclude:
        try:
            st = os.stat(p)
            excluded.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    seen: set[tuple[int, int]] = set()
    try:
        st = os.stat(root)
        seen.add((st.st_dev, st.st_ino))
    except OSError:
        pass
    yield from _walk(Path(root), skip, excluded, seen, tuple(seen))


def _walk(folder: Path, skip: Skip, excluded: set, seen: set, ancestors: tuple) -> Iterator[Path]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        skip(folder, f"{UNLISTABLE} ({exc.strerror})")
        return
    subfolders = []
    for entry in entries:
        path = folder / entry.name
        if entry.name.startswith("."):
            skip(path, HIDDEN)
            continue
        try:
            st = os.stat(path)  # follows symbolic links
        except OSError as exc:
            if entry.is_symlink():
                skip(path, LINK_LOOP if exc.errno == errno.ELOOP else DANGLING)
            else:
                skip(path, f"cannot be examined ({exc.strerror})")
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in excluded:
                skip(path, OUTPUT)
            elif key in ancestors:
                skip(path, LINK_LOOP)
            elif key in seen:
                skip(path, WALKED)
            elif is_rtv_index(path):
                skip(path, AN_INDEX)
            else:
                seen.add(key)
                subfolders.append((path, key))
        elif stat.S_ISREG(st.st_mode):
            if not os.access(path, os.R_OK):
                skip(path, UNREADABLE)
            else:
                yield path
        else:
            skip(path, NOT_REGULAR)
    for sub, key in subfolders:
        yield from _walk(sub, skip, excluded, seen, (*ancestors, key))


def looks_binary(path: Path, compression: str | None = None) -> bool:
    """Whether the (decompressed) start of the file holds a NUL byte, which text never does."""
    with open_binary(path, compression) as stream:
        return b"\0" in stream.read(SNIFF_BYTES)
