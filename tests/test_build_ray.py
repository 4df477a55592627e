"""`rtv index --ray`: shards built as tasks on a real Ray cluster give the local build byte for byte.

The cluster is Ray's own test cluster with every node on 127.0.0.1 (a head and one more node of
one CPU each, shared by the module; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 for the cluster and the
driver, no dashboard, small object stores). The oracle is the local `--workers 1` build of the same
corpus: every file of the generation, the manifest apart from its timings, and the store's rows.
Faults are real: a worker process killed with SIGKILL while it builds a shard, and a whole node
removed while one of its workers builds a shard; Ray's retries must still give the identical index.
"""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

# Before ray is imported (it reads the variable then): nodes bind 127.0.0.1, never the outward address
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # for the cluster and for this process, the driver
ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from retrieval import Index  # noqa: E402
from retrieval.build import BuildSettings, build_index  # noqa: E402

from test_build_parallel import _assert_identical, _corpus, _generation  # noqa: E402

NODE = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "object_store_memory": 80 << 20}
TASK_TITLE = "ray::_build_shard"  # Ray's process title of a worker while it runs the shard task
RTV = [sys.executable, "-m", "rtv_cli.main"]


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    assert c.address.startswith("127.0.0.1:"), c.address  # loopback only
    c.add_node(**NODE)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _rows(index_dir: Path) -> dict:
    db = sqlite3.connect(_generation(index_dir) / "meta.sqlite")
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' AND name IN "
                                           "('documents', 'passages')")]
        assert tables, "the store has neither documents nor passages"
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    finally:
        db.close()


def _assert_same_index(local: Path, built: Path) -> None:
    _assert_identical(local, built)
    assert _rows(local) == _rows(built)


def _build(corpus: Path, out: Path, shard_size: int, **settings) -> None:
    build_index([corpus], out, BuildSettings(parts="exact,lexical", shard_size=shard_size, **settings))


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A corpus of ~6 MB of varied text in 8 shards (each build long enough to be hit mid-way), and
    its local build: the oracle of the fault tests."""
    d = tmp_path_factory.mktemp("big")
    rng = random.Random(7)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyzé") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    with (d / "big.jsonl").open("w") as f:
        for i in range(3000):
            f.write(json.dumps({"id": f"b{i}", "text": " ".join(rng.choice(vocab) for _ in range(330))},
                               ensure_ascii=False) + "\n")
    corpus = d / "big.jsonl"
    size = corpus.stat().st_size // 8 + 1
    _build(corpus, d / "local", size)
    return corpus, size, d / "local"


@pytest.mark.parametrize("workers", [1, 2])
def test_cluster_build_is_byte_identical_to_a_local_build(tmp_path, cluster, workers):
    """workers 2: the driver parses the JSONL for the plan only (documents without their text) and
    each shard's lines travel to its task as raw bytes, which the task parses again."""
    corpus = _corpus(tmp_path / "c.jsonl")
    size = corpus.stat().st_size // 6
    _build(corpus, tmp_path / "local", size)
    _build(corpus, tmp_path / "ray", size, ray=cluster.address, workers=workers)
    shards = json.loads((_generation(tmp_path / "ray") / "manifest.json").read_text())["exact"]["shards"]
    assert len(shards) >= 5
    _assert_same_index(tmp_path / "local", tmp_path / "ray")
    idx = Index.open(tmp_path / "ray")  # and it answers as the corpus says
    try:
        assert idx.count("alpha") == sum(json.loads(line)["text"].count("alpha") for line in corpus.open())
    finally:
        idx.close()


def _build_while(corpus, out, size, address, fault) -> tuple[list, list]:
    """Build with --ray in a thread; `fault(worker_pid, worker_parent_pid)` is called for the first
    worker seen running the shard task and returns whether it struck. Returns (struck, errors)."""
    errors: list = []

    def run():
        try:
            _build(corpus, out, size, ray=address)
        except BaseException as exc:  # noqa: BLE001 -- reported by the test
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    struck: list = []
    while t.is_alive() and not struck:
        ps = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
        for line in ps.splitlines():
            pid, ppid, args = line.split(None, 2)
            if args.startswith(TASK_TITLE) and fault(int(pid), int(ppid)):
                struck.append(int(pid))
                break
        time.sleep(0.01)
    t.join(timeout=300)
    assert not t.is_alive()
    return struck, errors


def test_worker_killed_mid_build_still_gives_the_identical_index(tmp_path, cluster, big):
    corpus, size, local = big

    def kill(pid, ppid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it finished first
            return False
        return True

    struck, errors = _build_while(corpus, tmp_path / "ray", size, cluster.address, kill)
    assert not errors, errors
    assert struck, "no worker was ever seen building a shard (nothing was killed)"
    _assert_same_index(local, tmp_path / "ray")


def test_node_removed_mid_build_still_gives_the_identical_index(tmp_path, cluster, big):
    corpus, size, local = big
    doomed = cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    raylet = doomed.all_processes["raylet"][0].process.pid

    def remove(pid, ppid):  # only once a worker of that node is building a shard
        if ppid != raylet:
            return False
        cluster.remove_node(doomed)
        return True

    struck, errors = _build_while(corpus, tmp_path / "ray", size, cluster.address, remove)
    if not struck:  # the build never used the extra node: take it away before the next test
        cluster.remove_node(doomed)
    assert not errors, errors
    assert struck, "no worker of the extra node was ever seen building a shard (the node was not removed mid-build)"
    _assert_same_index(local, tmp_path / "ray")


@pytest.mark.model
def test_gpu_nodes_embed_in_actors_as_the_driver_would(tmp_path, cluster):
    """A node that offers a GPU gets the embedding actor; its vectors are the driver's (this machine
    has no CUDA, so the actor's model runs on the CPU: the same model, the same passages)."""
    pytest.importorskip("sentence_transformers")
    from retrieval.build import ShardStep, plan_shards, run_serial
    from retrieval.build_ray import RayRunner
    from retrieval.corpus import ReadOptions, read_documents
    from retrieval.dense import load_embedder

    corpus = _corpus(tmp_path / "c.jsonl", 30)
    embedder = load_embedder(None, "cpu")
    settings = BuildSettings(parts="exact,lexical,dense", shard_size=corpus.stat().st_size // 3,
                             passage_tokens=min(256, embedder.max_tokens))

    def outputs(runner, directory: Path) -> list:
        directory.mkdir()
        step = ShardStep(directory, settings, settings.resolve_parts(), embedder)
        return list(runner(step, plan_shards(read_documents([corpus], ReadOptions()), settings.shard_size)))

    local = outputs(run_serial, tmp_path / "local")
    gpu_node = cluster.add_node(**{**NODE, "num_cpus": 0}, num_gpus=1)
    cluster.wait_for_nodes()
    try:
        runner = RayRunner(cluster.address)
        remote = outputs(runner, tmp_path / "ray")
    finally:
        cluster.remove_node(gpu_node)
    assert runner.embedding_actors == 1
    assert runner.embed_device == "cpu"  # the actor's device (this machine has no CUDA), for the manifest
    assert len(local) == len(remote) >= 3
    for a, b in zip(local, remote):
        assert (a.number, a.passages, a.texts, a.exact) == (b.number, b.passages, b.texts, b.exact)
        assert a.vectors.shape == b.vectors.shape and a.vectors.shape[0] == len(a.passages) > 0
        np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


def test_bad_input_fails_the_whole_job_and_leaves_nothing(tmp_path, cluster, big):
    corpus, size, _ = big
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x1", "text": "fine"}\n{"id": "x2", "text": "broken\n')
    out = tmp_path / "out"
    env = {**os.environ, "RTV_SILENT": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([*RTV, "index", str(corpus), str(bad), "-o", str(out), "--parts", "exact,lexical",
                          "--shard-size", str(size), "--ray", cluster.address],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 1, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in res.stderr, res.stderr
    time.sleep(1)  # a task still running would write its shard after the driver left
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]  # no .out.building-* or lock left


def test_an_address_without_a_cluster_is_a_one_line_error(tmp_path):
    corpus = _corpus(tmp_path / "c.jsonl", 5)
    res = subprocess.run([*RTV, "index", str(corpus), "-o", str(tmp_path / "out"), "--parts", "exact",
                          "--ray", "127.0.0.1:1"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "RTV_SILENT": "1"})
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "--ray 127.0.0.1:1: no Ray cluster" in res.stderr
    assert not (tmp_path / "out").exists()


def test_without_ray_installed_the_flag_names_the_extra(tmp_path):
    corpus = _corpus(tmp_path / "c.jsonl", 5)
    code = ("import sys; sys.modules['ray'] = None\n"  # as if ray were not installed
            "from rtv_cli.main import cli\n"
            f"cli(['index', {str(corpus)!r}, '-o', {str(tmp_path / 'out')!r}, '--parts', 'exact', '--ray', 'auto'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "RTV_SILENT": "1"}, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "pip install 'rtv[ray]'" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "out").exists()
    # and without --ray, rtv works as before without ray
    code = code.replace(", '--ray', 'auto'", "")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "RTV_SILENT": "1"}, timeout=120)
    assert res.returncode == 0, res.stderr
