"""Index directories as generations (issue 11.1-11.3): readers see one whole build, rebuilds are
published in one atomic step, a killed build changes nothing, one build per path at a time."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from retrieval import Index
from retrieval.build import build_lock
from retrieval.errors import IndexFormatError, InputError


def _write(path, marker, n=30, size=1):
    """A corpus whose every document holds `marker`, so any mix of two builds shows."""
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"{marker}-{i}", "text": f"{marker} document {i} " + "filler text " * 20 * size}) + "\n")
    return path


def _build(src, path, force=False):
    return Index.build([src], path, dense=False, overwrite=force)


def test_rebuild_publishes_a_new_generation_and_keeps_the_previous(tmp_path):
    x, y = _write(tmp_path / "x.jsonl", "alpha"), _write(tmp_path / "y.jsonl", "bravo")
    path = tmp_path / "idx"
    first = _build(x, path)
    assert (path / "CURRENT").read_text().strip() == "gen-000001" and first.root == path / "gen-000001"
    second = _build(y, path, force=True)
    assert (path / "CURRENT").read_text().strip() == "gen-000002"
    assert sorted(p.name for p in path.iterdir()) == ["CURRENT", "gen-000001", "gen-000002"]
    # the Index opened before the rebuild keeps answering from its own generation, consistently
    assert first.count("alpha") == 30 and first.count("bravo") == 0
    assert all("alpha" in r["text"] for r in first.iter_passages())
    assert second.count("bravo") == 30 and Index.open(path).count("alpha") == 0
    _build(x, path, force=True)
    assert sorted(p.name for p in path.iterdir()) == ["CURRENT", "gen-000002", "gen-000003"]
    assert Index.open(path).count("alpha") == 30
    assert not any(p.name.startswith(".idx") for p in tmp_path.iterdir())  # no lock or temp left


def test_readers_racing_rebuilds_never_mix_two_builds(tmp_path):
    """A child process rebuilds the index 8 times with --force, alternating two corpora; meanwhile
    this process opens it in a loop. Every open must be one whole build: the shards' counts and
    the store's passages name the same corpus (before generations, 5 of ~32k opens mixed them)."""
    x, y = _write(tmp_path / "x.jsonl", "alpha", n=200), _write(tmp_path / "y.jsonl", "bravo", n=200)
    path = tmp_path / "idx"
    _build(x, path).close()
    script = (f"from retrieval import Index\n"
              f"for i in range(8):\n"
              f"    Index.build([{str(y)!r} if i % 2 == 0 else {str(x)!r}], {str(path)!r}, dense=False, overwrite=True).close()\n")
    child = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "RTV_SILENT": "1"})
    opens = 0
    seen = set()
    try:
        while child.poll() is None or opens == 0:
            idx = Index.open(path, verify=False)
            try:
                marker = "alpha" if idx.count("alpha") else "bravo"
                assert idx.count(marker) == 200 and idx.count({"alpha": "bravo", "bravo": "alpha"}[marker]) == 0
                texts = [r["text"] for r in idx.iter_passages()]
                assert texts and all(marker in t for t in texts)
                assert marker in idx.extract(0) and idx.store.documents([0])[0]["ext_id"].startswith(marker)
                seen.add(marker)
            finally:
                idx.close()
            opens += 1
    finally:
        child.wait(timeout=120)
    assert child.returncode == 0
    assert opens > 5 and seen == {"alpha", "bravo"}


def test_a_killed_build_leaves_the_index_as_it_was(tmp_path):
    old = _write(tmp_path / "old.jsonl", "alpha")
    big = _write(tmp_path / "big.jsonl", "bravo", n=4000, size=10)  # ~10 MB: builds for seconds
    path = tmp_path / "idx"
    _build(old, path).close()
    child = subprocess.Popen([sys.executable, "-m", "rtv_cli.main", "index", str(big), "-o", str(path),
                              "--no-dense", "--force", "--silent"])
    deadline = time.time() + 60
    while not list(path.glob(".gen-*.building-*")) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert list(path.glob(".gen-*.building-*")), "the build was killed before it started writing"
    idx = Index.open(path)
    assert idx.count("alpha") == 30 and idx.count("bravo") == 0 and idx.n_documents == 30
    idx.close()
    # the killed holder's lock file stays behind, but the kernel released its flock: the next build
    # takes the lock and clears the killed build's leftover
    _build(old, path, force=True).close()
    assert not list(path.glob(".gen-*.building-*"))


def test_a_second_build_of_the_same_path_is_refused_with_the_holder(tmp_path):
    src = _write(tmp_path / "x.jsonl", "alpha")
    path = tmp_path / "idx"
    with build_lock(path):
        with pytest.raises(InputError, match=rf"another build is writing this index \(pid {os.getpid()} "):
            _build(src, path)
        assert not path.exists()
    _build(src, path).close()  # released: builds


def test_two_concurrent_cli_builds_one_wins_one_is_told(tmp_path):
    big = _write(tmp_path / "big.jsonl", "bravo", n=3000, size=10)
    path = tmp_path / "idx"
    cmd = [sys.executable, "-m", "rtv_cli.main", "index", str(big), "-o", str(path), "--no-dense", "--silent"]
    a = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    results = sorted([(a.wait(120), a.stderr.read()), (b.wait(120), b.stderr.read())])
    assert results[0][0] == 0
    assert results[1][0] == 1 and ("another build is writing this index" in results[1][1]
                                   or "already exists" in results[1][1])
    assert "Traceback" not in results[1][1]
    assert Index.open(path).count("bravo") == 3000


def test_format_1_index_is_refused_and_replaced_by_force(tmp_path):
    src = _write(tmp_path / "x.jsonl", "alpha")
    path = tmp_path / "idx"
    Index.build([src], path, dense=False, lexical="fts5").close()  # format 1 had no lexical/ directory
    for p in (path / "gen-000001").iterdir():  # the layout of format 1: the files at the top
        shutil.move(str(p), path / p.name)
    (path / "gen-000001").rmdir()
    (path / "CURRENT").unlink()
    with pytest.raises(IndexFormatError, match="older rtv \\(format 1\\); rebuild it with this version"):
        Index.open(path)
    idx = _build(src, path, force=True)
    assert idx.count("alpha") == 30
    assert sorted(p.name for p in path.iterdir()) == ["CURRENT", "gen-000001"]


def test_not_an_index_is_never_replaced(tmp_path):
    src = _write(tmp_path / "x.jsonl", "alpha")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an rtv index; refusing"):
        _build(src, tmp_path / "data", force=True)
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"
