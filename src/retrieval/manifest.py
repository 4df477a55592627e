"""manifest.json: what an index directory holds, checked before anything is mapped."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import IndexFormatError

FORMAT_NAME = "rtv-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def write_manifest(directory: Path, manifest: dict) -> None:
    path = directory / MANIFEST
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def read_manifest(directory: Path) -> dict:
    """The validated manifest of an index directory, or an IndexFormatError saying what is wrong."""
    if not directory.is_dir():
        raise IndexFormatError(f"{directory}: no such index directory; build one with `rtv index SOURCE -o {directory}`")
    path = directory / MANIFEST
    if not path.is_file():
        raise IndexFormatError(f"{directory}: not an rtv index (no {MANIFEST}); build one with `rtv index SOURCE -o {directory}`")
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
            f"{directory}: written by a newer rtv (format {version} > {FORMAT_VERSION}); upgrade rtv (pip install -U rtv)"
        )
    for rel, info in manifest.get("files", {}).items():
        file = directory / rel
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
