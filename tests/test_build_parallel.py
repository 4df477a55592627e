"""`rtv index --workers N`: shards built in worker processes give the --workers 1 index byte for byte.

The oracle is the serial build (run_serial in this process): every file of the generation must be
identical, and the manifest too apart from its timings (*_seconds), created and the seal over them."""

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval import Index
from retrieval.build import (BUILD_BYTES_PER_TEXT_BYTE, BuildSettings, ProcessRunner, ShardStep, build_index,
                             default_runner, plan_shards, run_serial, shard_build_memory)
from retrieval.corpus import Document
from retrieval.errors import InputError

RTV = [sys.executable, "-m", "rtv_cli.main"]
ENV = {**os.environ, "RTV_SILENT": "0", "HF_HUB_OFFLINE": "1"}
VOLATILE = {"created", "seal"}  # and every "*_seconds" timing, at any depth


def _scrub(value):
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items() if k not in VOLATILE and not k.endswith("_seconds")}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _corpus(path: Path, n: int = 90) -> Path:
    words = ["alpha", "beta", "gamma", "delta", "épsilon", "ζeta", "eta", "theta", "iota", "kappa"]
    docs = [{"id": f"d{i}", "text": " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(20 + i % 13))
             + f" doc{i}.\n\nsecond paragraph {i % 5}", "n": i} for i in range(n)]
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    return path


def _generation(index_dir: Path) -> Path:
    gen = (index_dir / "CURRENT").read_text().strip()
    return index_dir / gen


def _assert_identical(a_dir: Path, b_dir: Path) -> None:
    a, b = _generation(a_dir), _generation(b_dir)
    files_a = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    files_b = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel == "manifest.json":
            ma, mb = (json.loads((d / rel).read_text()) for d in (a, b))
            assert _scrub(ma) == _scrub(mb)
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _corpus(tmp_path_factory.mktemp("corpus") / "c.jsonl")


@pytest.mark.parametrize("parts", ["exact", "exact,lexical"])
def test_workers_give_a_byte_identical_generation(tmp_path, corpus, parts):
    size = corpus.stat().st_size // 6  # about six shards
    built = {}
    for workers in (1, 2, 3):
        out = tmp_path / f"w{workers}"
        Index.build([corpus], out, parts=parts, shard_size=size, workers=workers).close()
        built[workers] = out
    shards = json.loads((_generation(built[1]) / "manifest.json").read_text())["exact"]["shards"]
    assert 5 <= len(shards) <= 8
    _assert_identical(built[1], built[2])
    _assert_identical(built[1], built[3])
    idx = Index.open(built[3])
    try:
        assert idx.count("alpha") == sum(json.loads(line)["text"].count("alpha") for line in corpus.open())
    finally:
        idx.close()


def test_default_runner_follows_the_settings():
    assert default_runner(BuildSettings(workers=1)) is run_serial
    runner = default_runner(BuildSettings(workers=3, max_memory=10 << 20))
    assert isinstance(runner, ProcessRunner) and runner.workers == 3 and runner.max_memory == 10 << 20
    assert runner.strict
    assert not default_runner(BuildSettings(workers=2)).strict  # the default budget: an oversize shard runs alone
    assert BuildSettings().resolve_workers() == 1  # the library builds in-process unless asked
    assert BuildSettings(workers=None).resolve_workers() == len(os.sched_getaffinity(0))  # the CLI's default
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="--workers"):
            BuildSettings(workers=bad).check()
    with pytest.raises(InputError, match="--max-memory"):
        BuildSettings(max_memory=0).check()
    assert shard_build_memory(1000) == int(1000 * BUILD_BYTES_PER_TEXT_BYTE)


def test_the_budget_limits_how_many_shards_build_at_once(tmp_path, corpus):
    """A budget that holds one shard's build never has two reserved at once; a generous one has
    several; both give the serial runner's shards."""
    docs = [Document(str(i), line, "c") for i, line in enumerate(corpus.read_text().splitlines())]
    needs = [shard_build_memory(len(s.text)) for s in plan_shards(iter(docs), 2000)]
    assert len(needs) >= 4

    def run(runner, out):
        step = ShardStep(out, BuildSettings(parts="exact"), ("exact",))
        return [o.exact for o in runner(step, plan_shards(iter(docs), 2000))]

    serial = run(run_serial, tmp_path / "s")
    tight = ProcessRunner(3, max(needs))
    assert run(tight, tmp_path / "t") == serial
    assert max(needs) <= tight.peak_reserved <= max(needs)  # one at a time
    generous = ProcessRunner(3, 100 * max(needs))
    assert run(generous, tmp_path / "g") == serial
    assert generous.peak_reserved >= needs[0] + needs[1]  # the first two were submitted together


def test_max_memory_too_small_for_one_shard_is_a_clear_error(tmp_path, corpus):
    res = subprocess.run([*RTV, "index", str(corpus), "-o", str(tmp_path / "idx"), "--parts", "exact",
                          "--shard-size", "4K", "--workers", "2", "--max-memory", "8K"],
                         capture_output=True, text=True, timeout=120, env=ENV)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    assert "--max-memory 8.0 KiB" in errors[0] and "shard 0" in errors[0] and "--shard-size" in errors[0]
    assert str(BUILD_BYTES_PER_TEXT_BYTE) in errors[0]
    assert not (tmp_path / "idx").exists() and not list(tmp_path.glob(".idx*"))
    help_text = subprocess.run([*RTV, "index", "--help"], capture_output=True, text=True, env=ENV).stdout
    assert "--workers" in help_text and f"{BUILD_BYTES_PER_TEXT_BYTE} bytes per byte" in help_text


def test_a_failing_worker_fails_the_build_and_leaves_nothing(tmp_path):
    """Shard 3 is one large document whose shard file exceeds the file-size limit (ulimit -f):
    the worker building it fails with EFBIG; the build ends with the usual one-line error naming
    that shard's file, and nothing is left at -o or beside it."""
    import resource

    src = tmp_path / "c.jsonl"
    small = [{"text": f"small document {i} " * 20} for i in range(9)]  # ~380 bytes each
    big = {"text": " ".join(f"w{i * 7919 % 100003}" for i in range(250_000))}  # ~1.6 MB, its own shard
    rows = small[:6] + [big] + small[6:]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))

    res = subprocess.run([*RTV, "index", str(src), "-o", str(tmp_path / "idx"), "--parts", "exact",
                          "--shard-size", "800", "--workers", "2"],
                         capture_output=True, text=True, timeout=180, env=ENV, preexec_fn=limit)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    assert "shard-00003.fmi" in errors[0] and "ulimit -f" in errors[0]
    assert not (tmp_path / "idx").exists() and not list(tmp_path.glob(".idx*"))
    # the same corpus without the limit builds, and shard 3 is the large document
    Index.build([src], tmp_path / "ok", parts="exact", shard_size=800, workers=2).close()
    shards = json.loads((_generation(tmp_path / "ok") / "manifest.json").read_text())["exact"]["shards"]
    assert shards[3]["n_docs"] == 1 and shards[3]["text_bytes"] > 1_000_000


def test_bad_input_while_workers_run_fails_and_stops_them(tmp_path):
    """Invalid UTF-8 in a document of shard 3, read while workers build shards 0-2: an InputError
    naming the line, no index, no temporary directory, no worker process left running."""
    src = tmp_path / "c.jsonl"
    lines = [json.dumps({"text": f"document {i} " * 30}).encode() for i in range(12)]
    lines[9] = b'{"text": "bad \xff\xfe byte"}'
    src.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(InputError, match="line 10"):
        build_index([src], tmp_path / "idx", BuildSettings(parts="exact", shard_size=1000, workers=2))
    assert not (tmp_path / "idx").exists() and not list(tmp_path.glob(".idx*"))
    assert multiprocessing.active_children() == []


@pytest.mark.model
def test_workers_with_the_real_dense_model_are_byte_identical(tmp_path):
    """Chunking with the model's tokenizer in the workers, embedding in the driver: the passages,
    vectors and FAISS files equal the --workers 1 build's."""
    pytest.importorskip("sentence_transformers")
    src = _corpus(tmp_path / "c.jsonl", n=40)
    size = src.stat().st_size // 4
    for workers in (1, 2):
        Index.build([src], tmp_path / f"w{workers}", parts="exact,lexical,dense", shard_size=size,
                    workers=workers, device="cpu", passage_tokens=24, passage_overlap=4).close()
    _assert_identical(tmp_path / "w1", tmp_path / "w2")
    manifest = json.loads((_generation(tmp_path / "w2") / "manifest.json").read_text())
    assert len(manifest["exact"]["shards"]) >= 3 and manifest["passages"]["tokenizer"] != "words"
    assert manifest["corpus"]["passages"] > 40  # several passages a document: the model's tokens, 24 at most


@pytest.mark.model
def test_the_manifest_names_the_device_the_runner_embedded_on(tmp_path, corpus):
    """A runner whose own actors embedded (Ray's GPU actors) names their device in the manifest;
    otherwise the manifest names the driver's embedder's device."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("faiss")

    class ActorRunner:  # run_serial, as a runner that reports where its actors embedded
        embed_device = "cuda:0"

        def __call__(self, step, shards):
            return run_serial(step, shards)

    settings = dict(parts="exact,dense", device="cpu", shard_size=corpus.stat().st_size // 2)
    build_index([corpus], tmp_path / "actors", BuildSettings(**settings), runner=ActorRunner())
    build_index([corpus], tmp_path / "driver", BuildSettings(**settings), runner=run_serial)
    devices = [json.loads((_generation(tmp_path / d) / "manifest.json").read_text())["dense"]["embed_device"]
               for d in ("actors", "driver")]
    assert devices == ["cuda:0", "cpu"]
