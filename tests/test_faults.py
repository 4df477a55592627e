"""Fault injection (issue 11, items 6-8): corrupted or edited index files end in a correct answer
or a one-line IndexFormatError, never a crash, a hang, a wrong answer or another exception.

- Shards opened with verify=False (no body hash): a few hundred random corruptions of a real shard
  (bit flips, lengths and offsets overwritten, zeroed ranges, header fields with a recomputed
  header checksum, truncation), every query kind run on each, in a subprocess so that a segfault
  is a failed test and not a dead pytest (tests/_fault_worker.py).
- A small real index (shards, meta.sqlite, dense/index.faiss, dense/vectors.npy, manifest.json,
  CURRENT): random byte flips in every file, opened with the default verify=True; answers are
  compared with those of the untouched index.
- manifest.json edited consistently (resealed): a shard dropped, shards: [], a wrong first_doc,
  files: [] or a file left out are refused at open.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from retrieval import Index
from retrieval.errors import IndexFormatError

HERE = Path(__file__).parent
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho "
         "sigma tau upsilon phi chi psi omega café naïve 東京 ñ").split()


def _corpus_text(rng: random.Random, n_docs: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(n_docs)]


# -- item 8: shards with verify=False ------------------------------------------------------------------
@pytest.fixture(scope="module", params=[(4, 8), (3, 5)], ids=["isa-shortcuts", "isa-rows"])
def shard_file(request, tmp_path_factory):
    """A real shard (ISA kind 2: isa a multiple of sa; kind 0 otherwise) and its text beside it."""
    from retrieval import _fm_index as fm

    sa, isa = request.param
    d = tmp_path_factory.mktemp("shard")
    docs = _corpus_text(random.Random(sa), 120)
    text = b"".join(t.encode() + b"\xff" for t in docs)
    path = d / "s.fmi"
    fm.build_shard(text, str(path), sa, isa)
    (d / "s.fmi.text").write_bytes(text)
    return path


def _run_trials(shard: Path, work: Path, seed: int, n: int, budget_s: float) -> dict:
    """Runs trials [0, n) in worker processes, starting a new one after each crash; returns
    outcome -> [(trial, mutation)]."""
    outcomes: dict[str, list] = {}
    first, deadline = 0, time.monotonic() + budget_s
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    while first < n:
        left = deadline - time.monotonic()
        assert left > 0, f"fault trials ran past {budget_s} s (a hang?); outcomes so far: {_summary(outcomes)}"
        try:
            proc = subprocess.run([sys.executable, str(HERE / "_fault_worker.py"), str(shard), str(work), str(seed),
                                   str(first), str(n)], capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            started = [ln for ln in out.splitlines() if ln.startswith("start ")]
            raise AssertionError(f"a trial hangs: {started[-1] if started else 'before the first trial'}") from None
        current = None
        for line in proc.stdout.splitlines():
            tag, i, rest = (line.split(" ", 2) + [""])[:3]
            if tag == "start":
                current = (int(i), rest)
            elif tag == "end":
                outcomes.setdefault(rest.split(":")[0], []).append(current + (rest,))
                current = None
        if proc.returncode == 0 and current is None:
            break
        assert current is not None, f"worker failed outside a trial (rc {proc.returncode}): {proc.stderr[-2000:]}"
        outcomes.setdefault(f"crash (signal {-proc.returncode})" if proc.returncode < 0 else f"exit {proc.returncode}",
                            []).append(current + (proc.stderr[-300:],))
        first = current[0] + 1
    return outcomes


def _summary(outcomes: dict) -> str:
    return ", ".join(f"{k}: {len(v)}" for k, v in sorted(outcomes.items()))


def test_corrupted_shards_opened_without_verify_raise_and_never_crash(shard_file, tmp_path):
    n = 300
    outcomes = _run_trials(shard_file, tmp_path, seed=11, n=n, budget_s=60)
    bad = {k: v[:5] for k, v in outcomes.items() if k not in ("ok", "format")}
    assert not bad, f"{_summary(outcomes)}; examples: {bad}"
    assert sum(len(v) for v in outcomes.values()) == n
    assert len(outcomes.get("format", [])) > n // 3  # most corruptions are caught as such
