"""Issue 11, second half: leftovers of killed builds, corpus walks that hang or read the wrong
tree or skip without a word, and one-line errors (never a traceback) from the `rtv` CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrieval import Index

RTV = [sys.executable, "-m", "rtv_cli.main"]
ENV = {**os.environ, "RTV_SILENT": "0", "HF_HUB_OFFLINE": "1"}


def _write(path, marker, n=30, size=1):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"{marker}-{i}", "text": f"{marker} document {i} " + "filler text " * 20 * size}) + "\n")
    return path


def rtv(*args, timeout=120, **kw):
    return subprocess.run([*RTV, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=kw.pop("env", ENV), **kw)


def one_line_error(res, *needles):
    """exit 1, one line on stderr (after any notices) naming what is wrong, no traceback."""
    assert res.returncode == 1, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


# -- leftovers of killed builds -------------------------------------------------------------------
def _start_build(src, path, *extra):
    return subprocess.Popen([*RTV, "index", str(src), "-o", str(path), "--no-dense", "--silent", *extra])


def _wait_for(glob_dir, pattern, timeout=60):
    deadline = time.time() + timeout
    while not list(glob_dir.glob(pattern)) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    found = list(glob_dir.glob(pattern))
    assert found, f"no {pattern} appeared"
    return found


def test_sigterm_during_a_build_removes_its_temp_directory(tmp_path):
    big = _write(tmp_path / "big.jsonl", "bravo", n=4000, size=10)
    path = tmp_path / "idx"
    child = _start_build(big, path)
    _wait_for(tmp_path, ".idx.building-*")
    child.send_signal(signal.SIGTERM)
    rc = child.wait(60)
    assert rc != 0
    assert not path.exists()
    assert not list(tmp_path.glob(".idx.building-*"))


def test_sigterm_during_a_rebuild_removes_the_generation_it_was_writing(tmp_path):
    old = _write(tmp_path / "old.jsonl", "alpha")
    big = _write(tmp_path / "big.jsonl", "bravo", n=4000, size=10)
    path = tmp_path / "idx"
    Index.build([old], path, dense=False).close()
    child = _start_build(big, path, "--force")
    _wait_for(path, ".gen-*.building-*")
    child.send_signal(signal.SIGTERM)
    assert child.wait(60) != 0
    assert not list(path.glob(".gen-*.building-*"))
    assert Index.open(path).count("alpha") == 30


def test_stale_building_sibling_of_a_killed_build_is_removed_by_the_next_build(tmp_path):
    big = _write(tmp_path / "big.jsonl", "bravo", n=4000, size=10)
    small = _write(tmp_path / "small.jsonl", "alpha")
    path = tmp_path / "idx"
    child = _start_build(big, path)
    (stale,) = _wait_for(tmp_path, ".idx.building-*")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert stale.exists()
    # a sibling whose process still runs is not known to be stale: it stays
    sleeper = subprocess.Popen(["sleep", "60"])
    alive = tmp_path / f".idx.building-{sleeper.pid}"
    alive.mkdir()
    other = tmp_path / ".idxother.building-999999999"  # another index's leftover: not ours to touch
    other.mkdir()
    try:
        Index.build([small], path, dense=False).close()
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not stale.exists()
    assert alive.exists() and other.exists()
    assert Index.open(path).count("alpha") == 30
