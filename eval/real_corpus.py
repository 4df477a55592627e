"""A real text corpus that exists offline on these machines, written once as JSONL for the benchmarks.

Sources, in this order until the target size is reached: /usr/share/doc and /usr/share/man
(gzip-decompressed), then Python sources of the interpreter's library (stdlib + site-packages). One document per file;
files that are not valid UTF-8 or look binary are skipped. Nothing here is generated text.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import sysconfig
from pathlib import Path

PYLIB = Path(sysconfig.get_paths()["stdlib"])
ROOTS = [Path("/usr/share/doc"), Path("/usr/share/man"), PYLIB]
CACHE = Path(__file__).parent / "data"


def walk_files(root: Path, skip_pycache: bool = False):
    """Files under root in a stable (sorted) order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if skip_pycache and "__pycache__" in dirpath:
            continue
        for name in sorted(filenames):
            yield Path(dirpath) / name


def read_text_file(path: Path, *, gz: bool, sniff: int, max_bytes: int | None = None) -> str | None:
    """The file's UTF-8 text (gunzipped when gz), or None when it is unreadable, empty, larger than
    max_bytes, not UTF-8, or has a NUL byte in its first `sniff` bytes (binary)."""
    try:
        data = path.read_bytes()
        if max_bytes is not None and len(data) > max_bytes:
            return None
        if gz:
            data = gzip.decompress(data)
        if not data or b"\0" in data[:sniff]:
            return None
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


def _text(path: Path) -> str | None:
    if root_is_python(path) and path.suffix != ".py":
        return None
    return read_text_file(path, gz=path.suffix == ".gz", sniff=4096)


def root_is_python(path: Path) -> bool:
    return str(path).startswith(str(PYLIB))


def build_corpus(target_mb: int) -> Path:
    """Path of a JSONL corpus of about target_mb megabytes (cached under eval/data)."""
    out = CACHE / f"real-{target_mb}mb.jsonl"
    if out.exists():
        return out
    CACHE.mkdir(exist_ok=True)
    target = target_mb * 1_000_000
    total = 0
    tmp = out.with_suffix(".tmp")
    shares = [0.4, 0.7, 1.0]  # doc up to 40%, man up to 70% cumulative, Python sources fill the rest
    with open(tmp, "w", encoding="utf-8") as f:
        for root, share in zip(ROOTS, shares):
            for path in walk_files(root):
                if total >= target * share:
                    break
                text = _text(path)
                if text is None or ".venv" in path.parts:
                    continue
                f.write(json.dumps({"id": str(path), "text": text}, ensure_ascii=False) + "\n")
                total += len(text.encode("utf-8"))
                if total >= target:
                    break
            if total >= target:
                break
    tmp.rename(out)
    print(f"corpus: {out} ({total / 1e6:.1f} MB of text)", file=sys.stderr)
    return out


def load_texts(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=200)
    print(build_corpus(ap.parse_args().mb))
