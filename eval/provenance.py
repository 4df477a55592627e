"""What every benchmark's JSON records about its run: the commit measured (and whether the
tracked files had uncommitted edits) and the machine it ran on. One place for all eval/ scripts."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "eval" / "results"


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version()}


def provenance() -> dict:
    """{"commit", "commit_dirty", "machine"}: commit_dirty says the tracked files differed from it."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": _git("rev-parse", "HEAD"), "commit_dirty": bool(status) if status is not None else None,
            "machine": machine()}


def write_results(path_or_name: str | Path, data: dict, announce: bool = True) -> Path:
    """Write a benchmark's result as indented JSON and print where. A name (a str without "/",
    e.g. "bench_x.json") lands in eval/results/; a Path (e.g. a user's --out) is used as given.
    Written to a temporary file and renamed, so an interrupted run never leaves half a result."""
    if isinstance(path_or_name, str) and "/" not in path_or_name:
        path = RESULTS / path_or_name
    else:
        path = Path(path_or_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    if announce:
        print(f"wrote {path}")
    return path
