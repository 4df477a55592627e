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
import mmap
import os
import re
from pathlib import Path

from .errors import IndexFormatError, InputError

FORMAT_NAME = "rtv-index"
FORMAT_VERSION = 3  # 3: parts, passages without text; 2: generations (CURRENT + gen-NNNNNN/); 1: files at the top
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
    """Writes manifest.json, sealed: its `seal` is the checksum of the rest of its content."""
    path = directory / MANIFEST
    sealed = {k: v for k, v in manifest.items() if k != SEAL}
    sealed[SEAL] = _seal(sealed)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(sealed, f, indent=2, sort_keys=False)
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
    if SEAL in manifest and manifest[SEAL] != _seal({k: v for k, v in manifest.items() if k != SEAL}):
        raise IndexFormatError(f"{path}: corrupted or edited (its seal does not match its content); rebuild the index")
    check_manifest(gen, manifest)
    for rel, info in manifest["files"].items():
        file = gen / rel
        if not file.is_file():
            raise IndexFormatError(f"{file}: missing; the index is incomplete, rebuild it")
        size = file.stat().st_size
        if size != info["bytes"]:
            raise IndexFormatError(
                f"{file}: {size} bytes, manifest says {info['bytes']} (truncated or modified); rebuild the index"
            )
    return manifest


# -- cross-checks and checksums (issue 11, items 6 and 7) ----------------------------------------------
SEAL = "seal"  # manifest.json's own checksum, over the rest of its content
FAST_VERIFY_BYTES = 64 << 20  # verify="fast" leaves files larger than this unhashed (and says so)
_CHECKSUM = "xxh64:"  # XXH64 (seed 0) of the file, hex: rtv's C++ core (several GB/s), as shard bodies


def _seal(content: dict) -> str:
    from . import _fm_index

    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"{_CHECKSUM}{_fm_index.checksum64(text.encode('ascii')):016x}"


def file_checksum(path: Path) -> str:
    """The checksum of a file's bytes, read through a read-only memory map."""
    from . import _fm_index

    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return f"{_CHECKSUM}{_fm_index.checksum64(b''):016x}"
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = memoryview(m)
            try:
                return f"{_CHECKSUM}{_fm_index.checksum64(view):016x}"
            finally:
                view.release()


def _is_shard(rel: str) -> bool:
    return rel.startswith("exact/") and rel.endswith(".fmi")


def file_entry(directory: Path, rel: str, **extra) -> dict:
    """A file's entry in the manifest's `files`: its size and checksum. A shard gets no checksum
    here: its header carries a hash of its body, which opening checks (the shard's own entry in
    `exact.shards` records it), so it is not hashed twice."""
    entry = {"bytes": (directory / rel).stat().st_size, **extra}
    if not _is_shard(rel):
        entry["checksum"] = file_checksum(directory / rel)
    return {rel: entry}


def _fail(path: Path, what: str) -> None:
    raise IndexFormatError(f"{path}: {what}; the manifest does not describe this index, rebuild it")


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest(gen: Path, m: dict) -> None:
    """Cross-checks the manifest's parts against each other: every file is listed with its size,
    every shard file is listed, shards cover documents 0..N-1 in order, and N is the corpus's
    document count. Any other shape is an IndexFormatError, never a KeyError or IndexError."""
    path = gen / MANIFEST
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        _fail(path, "lists no files")
    for rel, info in files.items():
        parts = Path(rel).parts
        if not isinstance(info, dict) or not _int(info.get("bytes")) or not parts or Path(rel).is_absolute() \
                or ".." in parts or not isinstance(info.get("checksum", ""), str):
            _fail(path, f"has a bad entry for file {rel!r}")
    if "meta.sqlite" not in files:
        _fail(path, "does not list meta.sqlite")
    corpus, exact = m.get("corpus"), m.get("exact")
    if not isinstance(corpus, dict) or not _int(corpus.get("documents")):
        _fail(path, "has no corpus document count")
    if not exact:
        _fail(path, "has no exact part")
    if not isinstance(exact, dict) or not isinstance(exact.get("shards"), list) or not exact["shards"]:
        _fail(path, "lists no exact shards")
    next_doc = 0
    for i, shard in enumerate(exact["shards"]):
        if not isinstance(shard, dict) or not isinstance(shard.get("file"), str) or not _int(shard.get("n_docs")) \
                or not _int(shard.get("first_doc")) or not isinstance(shard.get("checksum"), str) \
                or shard["n_docs"] == 0:
            _fail(path, f"has a bad entry for shard {i}")
        if shard["file"] not in files or not _is_shard(shard["file"]):
            _fail(path, f"shard {i} ({shard['file']}) is not among its files")
        if shard["first_doc"] != next_doc:
            _fail(path, f"shard {i} starts at document {shard['first_doc']}, the shards before it end at {next_doc}")
        next_doc += shard["n_docs"]
    if "text" in (m.get("parts") or ()):  # the text part: one file per shard, each among the files
        for i, shard in enumerate(exact["shards"]):
            text = shard.get("text")
            if not isinstance(text, dict) or not isinstance(text.get("file"), str) or text["file"] not in files:
                _fail(path, f"shard {i} has no text-part file among its files")
    listed = {rel for rel in files if _is_shard(rel)}
    if listed != {s["file"] for s in exact["shards"]}:
        _fail(path, f"files lists shards that exact.shards does not: {sorted(listed - {s['file'] for s in exact['shards']})}")
    if next_doc != corpus["documents"]:
        _fail(path, f"its shards hold {next_doc} documents, the corpus {corpus['documents']}")
    dense = m.get("dense")
    if dense is not None:
        if not isinstance(dense, dict) or not isinstance(dense.get("files"), dict):
            _fail(path, "has a bad dense section")
        missing = [name for name in dense["files"] if f"dense/{name}" not in files]
        if missing:
            _fail(path, f"dense files {missing} are not among its files")


def verify_files(gen: Path, manifest: dict, verify: bool | str = True) -> None:
    """Checks every file's checksum against the manifest. verify=True: all of them (shards are
    checked by their own body hash when opened); "fast": only files up to FAST_VERIFY_BYTES, with a
    notice naming the ones left unchecked (shards too); False: none (the sizes are still checked)."""
    from .progress import note
    from .store import Store

    if verify not in (True, False, "fast"):
        raise InputError(f"verify={verify!r}: give True, False or 'fast'")
    if verify is False:
        return
    skipped, unsealed = [], []
    for rel, info in manifest["files"].items():
        if verify == "fast" and info["bytes"] > FAST_VERIFY_BYTES:
            skipped.append(rel)
            continue
        if _is_shard(rel):
            continue
        want = info.get("checksum")
        if want is None:
            unsealed.append(rel)
            if rel == "meta.sqlite" and info["bytes"] <= FAST_VERIFY_BYTES:
                Store.quick_check(gen / rel)
            continue
        if file_checksum(gen / rel) != want:
            raise IndexFormatError(f"{gen / rel}: corrupted (its checksum does not match manifest.json); rebuild the index")
    if skipped:
        note(f"{gen}: verify='fast' left {len(skipped)} file(s) over {FAST_VERIFY_BYTES >> 20} MiB unchecked "
             f"({', '.join(skipped[:4])}{', ...' if len(skipped) > 4 else ''}); open with verify=True to check them")
    if unsealed:
        note(f"{gen}: {len(unsealed)} file(s) have no checksum (built by an earlier rtv) and were not verified; "
             "rebuild the index to have them checked")


def check_store(gen: Path, manifest: dict, store) -> None:
    """The store holds documents 0..N-1 (N the manifest's document count) and, when the manifest
    counts passages, passages 0..P-1: a store from another build, or cut short, is refused."""
    corpus = manifest["corpus"]
    found = store.id_ranges(with_passages=bool(_int(corpus.get("passages"))))
    for table, (lo, hi) in found.items():
        want = corpus[table]
        have = 0 if hi is None else hi + 1
        if have != want or (want and lo != 0):
            store.close()
            raise IndexFormatError(f"{store.path}: holds {table} {lo}..{hi}, manifest.json counts {want}; "
                                   "the store and the manifest are from different builds, rebuild the index")


# -- segments (rtv add / delete / compact) ------------------------------------------------------------
def segments(manifest: dict) -> list[dict]:
    """The manifest's segments: what each build or `rtv add` contributed (its shards, its document
    and passage ranges; vector ids are passage ids). An index built before segments were recorded,
    or freshly built or compacted, is one segment."""
    if manifest.get("segments"):
        return manifest["segments"]
    corpus = manifest["corpus"]
    return [{"generation": manifest.get("generation", 1), "kind": "build", "first_doc": 0,
             "n_docs": corpus["documents"], "first_passage": 0, "n_passages": corpus.get("passages") or 0,
             "shards": [s["file"] for s in manifest["exact"]["shards"]]}]
