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


def _run_trials(target: Path, work: Path, seed: int, n: int, budget_s: float, mode: tuple = ()) -> dict:
    """Runs trials [0, n) in worker processes, starting a new one after each crash; returns
    outcome -> [(trial, mutation)]."""
    outcomes: dict[str, list] = {}
    first, deadline = 0, time.monotonic() + budget_s
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    while first < n:
        left = deadline - time.monotonic()
        assert left > 0, f"fault trials ran past {budget_s} s (a hang?); outcomes so far: {_summary(outcomes)}"
        try:
            proc = subprocess.run([sys.executable, str(HERE / "_fault_worker.py"), *mode, str(target), str(work),
                                   str(seed), str(first), str(n)], capture_output=True, text=True, timeout=left, env=env)
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


# -- items 6 and 7: a whole index -----------------------------------------------------------------------
DIM = 16


class HashEmbedder:
    """Deterministic embedder (a unit vector seeded by the text's hash): no model needed."""

    device = "cpu"
    tokenizer = None
    max_tokens = 64
    default_batch_size = 64
    dim = DIM
    model_id = "test/hash-embedder"

    def encode(self, texts, batch_size=None, progress=True):
        out = np.stack([np.random.default_rng(int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little"))
                        .standard_normal(DIM) for t in texts]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory):
    """A real index of 1,200 short documents in 3 shards, with a dense part (HNSW + float16
    store: dense/index.faiss and dense/vectors.npy), its corpus texts and a probe of queries."""
    pytest.importorskip("faiss")
    import retrieval.dense as dense

    d = tmp_path_factory.mktemp("index")
    rng = random.Random(7)
    texts = _corpus_text(rng, 1200)
    with open(d / "corpus.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"d{i}", "text": t}, ensure_ascii=False) + "\n")
    mp = pytest.MonkeyPatch()
    mp.setattr(dense, "load_embedder", lambda *a, **k: HashEmbedder())
    try:
        Index.build([d / "corpus.jsonl"], d / "idx", dense=True, recipe="hnsw", shard_size=12_000, sa_sample=4,
                    isa_sample=8, device="cpu")
    finally:
        mp.undo()
    index = Index.open(d / "idx", device="cpu")
    assert len(index.manifest["exact"]["shards"]) >= 3
    assert {"dense/index.faiss", "dense/vectors.npy"} <= set(index.manifest["files"])
    patterns = ["alpha beta", "ω", "café", "東京", "a", "mu nu", "zeta zeta"]
    probe = {"patterns": patterns, "docs": [0, 1, 599, 600, 1199], "passages": [0, 5, 700],
             "words": ["omega", "kappa"],
             "vectors": HashEmbedder().encode(["alpha", "omega psi", texts[3]]).tolist()}
    # the pristine answers, checked against the corpus itself where there is an oracle
    from _fault_worker import index_answers

    expected = index_answers(index, probe)
    data = [t.encode() for t in texts]
    assert expected["count"] == [sum(t.count(p.encode()) for t in data) for p in patterns]
    assert expected["extract"] == [texts[i] for i in probe["docs"]]
    rows = list(index.iter_passages()) if hasattr(index, "iter_passages") else list(index.store.iter_passages())
    stored = HashEmbedder().encode([r["text"] for r in rows]).astype(np.float16).astype(np.float32)
    scores = np.asarray(probe["vectors"], dtype=np.float32) @ stored.T
    found = np.take_along_axis(scores, np.asarray(expected["dense"]), axis=1)  # the oracle's scores of the hits
    np.testing.assert_allclose(found, -np.sort(-scores, axis=1)[:, :5], atol=1e-4)
    index.close()
    return d / "idx", texts, probe, expected


def test_fault_sweep_over_every_file_of_an_index(small_index, tmp_path):
    path, texts, probe, expected = small_index
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    kinds = {"CURRENT", "manifest.json", "meta.sqlite", "dense/index.faiss", "dense/vectors.npy"}
    assert kinds <= {f.split("/", 1)[1] if f.startswith("gen-") else f for f in files}
    (tmp_path / "probe.json").write_text(json.dumps(probe))
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    n = 8 * len(files)  # every file 8 times (trial i damages file i mod len(files))
    outcomes = _run_trials(path, tmp_path, seed=3, n=n, budget_s=90, mode=("index",))
    bad = {k: v[:5] for k, v in outcomes.items() if k not in ("ok", "format")}
    assert not bad, f"{_summary(outcomes)}; examples: {bad}"
    assert sum(len(v) for v in outcomes.values()) == n


def _copy(small_index, tmp_path) -> tuple[Path, Path]:
    path = tmp_path / "idx"
    shutil.copytree(small_index[0], path)
    return path, path / (path / "CURRENT").read_text().strip()


def _edit_manifest(gen: Path, edit) -> None:
    """Changes manifest.json as a consistent writer would (resealed), so the cross-checks are what
    must refuse it."""
    from retrieval.manifest import MANIFEST, write_manifest

    m = json.loads((gen / MANIFEST).read_text())
    edit(m)
    write_manifest(gen, m)


def _drop_shard(m, i):
    rel = m["exact"]["shards"].pop(i)["file"]
    del m["files"][rel]


EDITS = {  # item 6: each opened fine before and answered with wrong counts, or raised IndexError/KeyError
    "a shard dropped": lambda m: _drop_shard(m, 1),
    "the last shard dropped": lambda m: _drop_shard(m, -1),
    "a shard dropped, counts adjusted": lambda m: (m["corpus"].update(documents=m["corpus"]["documents"]
                                                                        - m["exact"]["shards"][-1]["n_docs"]),
                                                     _drop_shard(m, -1)),
    "shards: []": lambda m: m["exact"].update(shards=[]),
    "wrong first_doc": lambda m: m["exact"]["shards"][1].update(first_doc=m["exact"]["shards"][1]["first_doc"] + 1),
    "first_doc not from 0": lambda m: [s.update(first_doc=s["first_doc"] + 5) for s in m["exact"]["shards"]],
    "n_docs a string": lambda m: m["exact"]["shards"][0].update(n_docs="7"),
    "files: []": lambda m: m.update(files=[]),
    "files: {}": lambda m: m.update(files={}),
    "a shard not in files": lambda m: m["files"].pop(m["exact"]["shards"][0]["file"]),
    "meta.sqlite not in files": lambda m: m["files"].pop("meta.sqlite"),
    "a dense file not in files": lambda m: m["files"].pop("dense/vectors.npy"),
    "files entry without bytes": lambda m: m["files"]["meta.sqlite"].pop("bytes"),
    "a file outside the index": lambda m: m["files"].update({"../x": {"bytes": 0}}),
    "documents off by one": lambda m: m["corpus"].update(documents=m["corpus"]["documents"] + 1),
    "two shards swapped": lambda m: m["exact"].update(shards=m["exact"]["shards"][::-1]),
    "no exact section": lambda m: m.pop("exact"),
}


@pytest.mark.parametrize("edit", list(EDITS), ids=list(EDITS))
def test_inconsistent_manifest_is_refused_at_open(small_index, tmp_path, edit):
    path, gen = _copy(small_index, tmp_path)
    _edit_manifest(gen, EDITS[edit])
    with pytest.raises(IndexFormatError, match="manifest|rebuild") as exc:
        Index.open(path, device="cpu")
    assert "\n" not in str(exc.value) and str(gen) in str(exc.value)


def test_an_edited_manifest_that_is_not_resealed_is_refused(small_index, tmp_path):
    path, gen = _copy(small_index, tmp_path)
    m = json.loads((gen / "manifest.json").read_text())
    m["dense"]["params"]["ef_search"] = 1
    (gen / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="seal"):
        Index.open(path, device="cpu")


def test_a_store_from_another_build_is_refused(small_index, tmp_path):
    """meta.sqlite of a smaller corpus, with the manifest's entry for it updated: the store's
    documents no longer match the shards."""
    from retrieval.manifest import file_entry

    path, gen = _copy(small_index, tmp_path)
    (tmp_path / "c.jsonl").write_text('{"text": "one document"}\n')
    other = Index.build([tmp_path / "c.jsonl"], tmp_path / "other", dense=False)
    shutil.copy(other.root / "meta.sqlite", gen / "meta.sqlite")
    other.close()
    _edit_manifest(gen, lambda m: m["files"].update(file_entry(gen, "meta.sqlite")))
    with pytest.raises(IndexFormatError, match="different builds"):
        Index.open(path, device="cpu")


# -- item 7: corruption outside the shards ----------------------------------------------------------------
@pytest.mark.parametrize("rel", ["dense/vectors.npy", "dense/index.faiss", "meta.sqlite", "lexical/shard-00000.lex"])
def test_a_flipped_byte_outside_the_shards_is_found_at_open(small_index, tmp_path, rel):
    """Before: a flipped byte in vectors.npy made dense search return [], flips in meta.sqlite changed
    passage text; now every file's checksum is checked at open."""
    path, gen = _copy(small_index, tmp_path)
    f = gen / rel
    data = bytearray(f.read_bytes())
    data[len(data) * 2 // 3] ^= 0x10
    f.write_bytes(data)
    with pytest.raises(IndexFormatError, match=f"{rel}: corrupted .*checksum"):
        Index.open(path, device="cpu")
    try:
        Index.open(path, verify=False, device="cpu").close()  # verify=False: sizes only, as asked
    except IndexFormatError as exc:  # unless SQLite itself finds the page it reads at open damaged
        assert rel == "meta.sqlite" and "meta.sqlite" in str(exc), exc


def test_fast_verify_says_which_files_it_left_unchecked(small_index, tmp_path, monkeypatch, capsys):
    import retrieval.manifest as manifest
    from retrieval import progress

    path, gen = _copy(small_index, tmp_path)
    data = bytearray((gen / "dense/vectors.npy").read_bytes())
    data[-3] ^= 1
    (gen / "dense/vectors.npy").write_bytes(data)
    monkeypatch.setattr(manifest, "FAST_VERIFY_BYTES", 18_000)
    monkeypatch.setattr(progress, "_silent", False)
    big = sorted(rel for rel, f in json.loads((gen / "manifest.json").read_text())["files"].items()
                 if f["bytes"] > 18_000)
    assert "dense/vectors.npy" in big
    Index.open(path, verify="fast", device="cpu").close()
    err = capsys.readouterr().err
    assert "verify='fast' left" in err and all(rel in err for rel in big[:4])
    with pytest.raises(IndexFormatError, match="vectors.npy: corrupted"):
        Index.open(path, device="cpu")
    with pytest.raises(Exception, match="verify="):
        Index.open(path, verify="quick", device="cpu")
