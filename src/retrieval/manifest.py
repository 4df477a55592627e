"""The index directory and its generations; manifest.json, checked before anything is mapped.

An index directory holds immutable generations and a pointer to the live one:

    NAME/CURRENT          the live generation's name ("gen-000002"), replaced by one atomic rename
    NAME/gen-000002/      manifest.json, meta.sqlite, exact/, dense/: one whole build
    NAME/gen-000001/      the previous generation, kept so that a reader that read CURRENT just
                          before a rebuild published still finds its files; older ones are removed

A reader resolves CURRENT once and opens every file of that generation, so it never pairs files
of two builds, and a rebuild never leaves the path without a complete index.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import IndexFormatError

FORMAT_NAME = "rtv-index"
FORMAT_VERSION = 2  # 2: generations (CURRENT + gen-NNNNNN/); 1 had the files at the top level
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
_GENERATION = re.compile(r"gen-(\d{6,})")


def generation_name(number: int) -> str:
    return f"gen-{number:06d}"


def generation_number(name: str) -> int | None:
    m = _GENERATION.fullmatch(name)
    return int(m.group(1)) if m else None


def live_generation(directory: Path) -> Path:
    """The directory of the live generation of an index, or an IndexFormatError saying what to do."""
    if not directory.is_dir():
        raise IndexFormatError(f"{directory}: no such index directory; build one with `rtv index SOURCE -o {directory}`")
    pointer = directory / CURRENT
    if not pointer.is_file():
        if (directory / MANIFEST).is_file():
            raise IndexFormatError(f"{directory}: built by an older rtv (format 1); rebuild it with this version "
                                   f"(`rtv index SOURCE -o {directory} --force`)")
        raise IndexFormatError(f"{directory}: not an rtv index (no {CURRENT}); build one with `rtv index SOURCE -o {directory}`")
    name = pointer.read_text(encoding="utf-8", errors="replace").strip()
    if generation_number(name) is None:
        raise IndexFormatError(f"{pointer}: names no generation ({name[:40]!r}); rebuild the index")
    gen = directory / name
    if not gen.is_dir():
        raise IndexFormatError(f"{gen}: the live generation is missing; rebuild the index")
    return gen


def generations(directory: Path) -> list[int]:
    """Numbers of the complete generation directories in an index directory, ascending."""
    if not directory.is_dir():
        return []
    return sorted(n for p in directory.iterdir() if p.is_dir() and (n := generation_number(p.name)) is not None)


def publish(directory: Path, name: str) -> None:
    """Make generation `name` the live one: CURRENT is replaced by one atomic rename, made durable."""
    tmp = directory / f".{CURRENT}.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / CURRENT)
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path, manifest: dict) -> None:
    path = directory / MANIFEST
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def read_manifest(gen: Path) -> dict:
    """The validated manifest of a generation directory, or an IndexFormatError saying what is wrong."""
    path = gen / MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"{gen}: has no {MANIFEST} (an incomplete generation); rebuild the index")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"{path}: unreadable ({exc}); rebuild the index") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path}: not an rtv manifest; rebuild the index")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise IndexFormatError(f"{path}: has no format version; rebuild the index")
    if version > FORMAT_VERSION:
        raise IndexFormatError(
            f"{path}: written by a newer rtv (format {version} > {FORMAT_VERSION}); upgrade rtv (pip install -U rtv)"
        )
    if version < FORMAT_VERSION:
        raise IndexFormatError(f"{path}: written by an older rtv (format {version}); rebuild it with this version")
    for rel, info in manifest.get("files", {}).items():
        file = gen / rel
        if not file.is_file():
            raise IndexFormatError(f"{file}: missing; the index is incomplete, rebuild it")
        size = file.stat().st_size
        if size != info["bytes"]:
            raise IndexFormatError(
                f"{file}: {size} bytes, manifest says {info['bytes']} (truncated or modified); rebuild the index"
            )
    return manifest


def file_entry(directory: Path, rel: str, **extra) -> dict:
    return {rel: {"bytes": (directory / rel).stat().st_size, **extra}}
