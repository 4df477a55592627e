"""Readers during rtv add / delete / compact (issue 10): threads and processes open and query the
index in a loop while a writer adds, deletes (tombstones, --replace) and compacts it. Every answer
must be one whole state, the one before or after some change (each state recorded by the writer
right after publishing it), never a mix, and no reader may see an error. A reader that keeps one
Index open all along keeps answering from its own generation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from retrieval import Index
from retrieval.update import add, compact, delete

HERE = Path(__file__).parent


def write_jsonl(path: Path, docs) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for ext_id, text in docs:
            f.write(json.dumps({"id": ext_id, "text": text}) + "\n")
    return path


def answer(index: Index) -> str:
    """One reader's view of the index, as a canonical string: counts, documents of a word, the
    document count and a lexical search (external ids and scores)."""
    hits = index.search("bravo charlie", k=8, mode="lexical", rerank=False)
    return json.dumps({"count": [index.count(w) for w in ("alpha", "bravo", "charlie")],
                       "docs": sorted(d["ext_id"] for d in index.store.documents(index.docs("charlie").tolist())),
                       "documents": len(index.store.live_doc_ids()),
                       "lexical": sorted((round(h.score, 9), h.ext_id) for h in hits)})


def read_loop(path: str, out: str, stop: str) -> None:
    """A reader process: open, answer, close, until the stop file appears; answers or errors as lines."""
    with open(out, "w") as f:
        while not os.path.exists(stop):
            try:
                idx = Index.open(path, verify=False)
                try:
                    line = answer(idx)
                finally:
                    idx.close()
                f.write("ok " + line + "\n")
            except Exception as exc:  # reported to the test, which fails on it
                f.write(f"error {type(exc).__name__}: {exc}\n")


def test_readers_see_one_whole_state_during_add_delete_compact(tmp_path):
    path = tmp_path / "idx"
    docs = [(f"a{i}", f"alpha document {i} " + "filler words " * 30) for i in range(150)]
    Index.build([write_jsonl(tmp_path / "a.jsonl", docs)], path, parts="exact,lexical", shard_size=4096).close()
    states = [answer(Index.open(path))]  # after each change, in order
    held = Index.open(path)  # kept open through every change
    held_state = answer(held)

    stop = threading.Event()
    seen: list[str] = []
    errors: list[str] = []

    def reader_thread():
        while not stop.is_set():
            try:
                idx = Index.open(path, verify=False)
                try:
                    seen.append(answer(idx))
                finally:
                    idx.close()
                if answer(held) != held_state:
                    errors.append("the Index held open changed its answer")
            except Exception as exc:  # noqa: BLE001 - any error fails the test
                errors.append(f"{type(exc).__name__}: {exc}")

    stop_file = tmp_path / "stop"
    env = {**os.environ, "RTV_SILENT": "1", "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", "import sys, test_update_concurrent as t; t.read_loop(*sys.argv[1:])",
                               str(path), str(tmp_path / f"proc-{i}.txt"), str(stop_file)], env=env) for i in range(2)]
    threads = [threading.Thread(target=reader_thread) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        changes = [
            lambda: add(path, [write_jsonl(tmp_path / "b.jsonl", [(f"b{i}", f"bravo charlie {i} " * 20) for i in range(40)])]),
            lambda: delete(path, [f"a{i}" for i in range(0, 150, 3)] + ["b1", "b2"]),
            lambda: add(path, [write_jsonl(tmp_path / "c.jsonl", [("b5", "charlie replaced " * 10), ("c1", "charlie " * 5)])],
                        replace=True),
            lambda: compact(path),
            lambda: delete(path, ["c1", "b7"]),
            lambda: add(path, [write_jsonl(tmp_path / "d.jsonl", [(f"d{i}", f"alpha bravo {i}") for i in range(30)])]),
            lambda: compact(path),
        ]
        for change in changes:
            change()
            states.append(answer(Index.open(path)))  # the state just published (the writer is the only one)
    finally:
        stop.set()
        stop_file.write_text("stop")
        for t in threads:
            t.join(timeout=120)
        for p in procs:
            p.wait(timeout=120)
    lines = [ln for i in range(2) for ln in (tmp_path / f"proc-{i}.txt").read_text().splitlines()]
    errors += [ln for ln in lines if not ln.startswith("ok ")]
    seen += [ln[3:] for ln in lines if ln.startswith("ok ")]
    assert not errors, errors[:5]
    # every add and delete changed the answers, and each compaction answers as the state before it
    assert len(set(states)) == 6 and states[4] == states[3] and states[7] == states[6]
    assert seen and all(s in states for s in seen), [s for s in seen if s not in states][:2]
    assert len(set(seen)) >= 2  # the readers really ran while the index changed
    assert answer(held) == held_state
