"""Shards built as Ray tasks on a cluster: `rtv index ... --ray [auto|ADDRESS]` (issue 12).

`RayRunner` is a runner like `build.ProcessRunner` (`runner(step, shards)` yields the shards'
outputs in shard order), so the shard plan, the per-shard step (`ShardStep.build`), the driver's
store and manifest, and the publishing are the ones of a local build, and the index is byte-identical
to a `--workers 1` build of the same corpus.

- Each shard's build is one Ray task (`_build_shard`) that writes its shard file straight into
  the build's temporary directory beside `-o`. That directory must be reachable at the same path
  from every node (NFS, Lustre, a mounted bucket); `check_shared_path` proves it before the
  first shard is sent, with one probe task pinned to each node.
- A task whose worker process or node dies is run again by Ray (`max_retries`; a retry rewrites
  the same file from the same input). An exception raised by rtv's code (bad input, a full disk)
  is not retried (`retry_exceptions=False`): it would fail the same way again, so it fails the
  job at once, with the task's own one-line error.
- Ray's scheduler decides how many shards build at once: each task asks for one CPU and the
  `memory` its build needs (`shard_build_memory`), so a node runs only as many as fit in its
  memory. --workers and --max-memory are for local builds.
- Dense: where the cluster has GPUs, one embedding actor per GPU (`_Embedder`, the model loaded
  once per actor) takes each built shard's output straight from the object store and adds its
  vectors, in a chain of Ray calls per shard. Without GPUs the driver embeds each shard as it
  comes back, as a local build does (a CPU actor would take the cores the shard builds need).
  Not Ray Data's map_batches: the vectors must come back per shard, in passage order, next to
  that shard's rows, while later shards are still building; one dataset per shard would restart
  its actors (and reload the model) every shard, and one dataset of every passage would wait for
  the last shard and hold every text at once.
- The driver reads the corpus (its uncompressed JSONL parsed by a pool of processes on the
  driver's node for the plan, readers/ranges.py; each shard's lines then travel to its task as raw
  bytes, which the task parses again), plans the shards, writes the store and, once every shard is
  in place, the manifest; it shows one progress bar for the whole job. A failure or Ctrl-C cancels
  the tasks still running (force: their workers are killed) and waits for them before the
  caller removes the temporary directory, so nothing is written at `-o` afterwards.

Ray is imported only here, and only for `--ray`: rtv without Ray installed works, and `--ray`
without it is a one-line error naming `pip install 'rtv[ray]'`.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from . import __version__
from .build import ShardInput, ShardOutput, ShardStep, _size, shard_build_memory
from .errors import InputError, RtvError, require
from .progress import bar

MAX_RETRIES = 3  # runs of a shard task after its worker or node died (Ray's system failures)
PROBE = ".ray-shared-path-probe"


def _ray():
    return require("ray", "ray")


def _quiet_worker() -> None:
    from .progress import set_silent

    set_silent(True)  # the driver shows the one bar of the job
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per task; the tasks are the parallelism


def _build_shard(step: ShardStep, shard: ShardInput) -> ShardOutput:
    """The Ray task: one shard's file (into the shared directory) and its passages."""
    _quiet_worker()
    return step.build(shard)


def _probe(directory: str, token: str) -> tuple[str, bool, str]:
    """On one node: its host name, whether it sees the driver's probe file, its rtv version."""
    try:
        seen = (Path(directory) / PROBE).read_text() == token
    except OSError:
        seen = False
    return socket.gethostname(), seen, __version__


class _Embedder:
    """A Ray actor holding the embedding model on one GPU; adds the vectors to a shard's output."""

    def __init__(self, step: ShardStep):
        from .dense import load_embedder

        _quiet_worker()
        embedder = load_embedder(step.settings.model, step.settings.device)
        self.step = ShardStep(step.directory, step.settings, step.parts, embedder, step.tokenizer, quiet=True)

    def embed(self, out: ShardOutput) -> ShardOutput:
        return self.step.embed(out)

    def device(self) -> str:
        return str(getattr(self.step.embedder, "device", "cpu"))


def connect(address: str):
    """Connect this process to the Ray cluster at `address` ("auto": the one RAY_ADDRESS or this
    machine's running cluster names); returns (ray, whether this call connected)."""
    ray = _ray()
    if ray.is_initialized():
        return ray, False
    fix = ("start one (`ray start --head` on the head node) and pass its address, or use --ray auto on a node "
           "of a running cluster")
    refused = _refused(address)
    if refused:  # Ray itself would retry a dead address for minutes
        raise InputError(f"--ray {address}: no Ray cluster answers there ({refused}); {fix}")
    try:
        ray.init(address=address, log_to_driver=False, logging_level="WARNING", configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--ray {address}: cannot connect to a Ray cluster ({first}); {fix}") from None
    return ray, True


def _refused(address: str) -> str | None:
    """Why a HOST:PORT (or ray://HOST:PORT) address takes no TCP connection within 5 s; None when it
    does, or for "auto" and addresses of another form (Ray checks those)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def check_shared_path(ray, directory: Path) -> int:
    """Every alive node with CPUs must see `directory` (the build's temporary directory) at the same
    path, and run this rtv version; returns the number of such nodes."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(16)
    probe = directory / PROBE
    probe.write_text(token)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        if not nodes:
            raise InputError("--ray: the Ray cluster has no alive node with CPUs to build shards on")
        task = ray.remote(num_cpus=0, max_retries=MAX_RETRIES)(_probe)
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(directory), token) for n in nodes]
        for node, (host, seen, version) in zip(nodes, ray.get(refs)):
            where = f"node {node.get('NodeManagerAddress', '?')} ({host})"
            if not seen:
                raise InputError(f"-o {directory.parent}: not reachable at the same path from Ray {where}; "
                                 "put -o on a file system every node mounts (NFS, Lustre, a mounted bucket)")
            if version != __version__:
                raise InputError(f"--ray: {where} runs rtv {version}, this driver {__version__}; install the "
                                 "same rtv on every node")
    finally:
        probe.unlink(missing_ok=True)
    return len(nodes)


class RayRunner:
    """Shards built as Ray tasks on the cluster at `address` (module docstring); outputs in shard
    order. `max_retries`: runs of a task after its worker or node died."""

    # the build plans JSONL documents without their text; each shard's lines are read here as raw
    # bytes (no parsing) and travel with its task, which parses them (ShardInput.portable / read)
    reads_ranges = True

    def __init__(self, address: str = "auto", max_retries: int = MAX_RETRIES):
        _ray()  # a missing ray is reported before the corpus is read
        self.address = address
        self.max_retries = max_retries
        self.nodes = 0  # nodes that build shards (set when the build starts; tests, benchmarks)
        self.embedding_actors = 0  # GPU actors that embedded (0: the driver did)
        self.embed_device: str | None = None  # the actors' device(s), for the manifest (None: the driver's)

    def __call__(self, step: ShardStep, shards: Iterable[ShardInput]) -> Iterator[ShardOutput]:
        ray, connected = connect(self.address)
        pending: deque = deque()  # (shard number, its build task, its output), in shard order
        progress = None
        ok = False
        try:
            self.nodes = check_shared_path(ray, step.directory)
            resources = ray.cluster_resources()
            largest = max((n["Resources"].get("memory", 0) for n in ray.nodes() if n.get("Alive")), default=0)
            build = ray.remote(max_retries=self.max_retries, retry_exceptions=False)(_build_shard)
            step_ref = ray.put(step.for_workers())
            embedders = self._embedders(ray, step, int(resources.get("GPU", 0)))
            self.embedding_actors = len(embedders)
            in_flight = max(2, 2 * int(resources.get("CPU", 1)))  # texts waiting in the object store
            progress = bar(desc="shards built", unit="shard")

            def collect() -> ShardOutput:
                number, _, ref = pending.popleft()
                out = _result(ray, ref, number)
                progress.update()
                return out if embedders else step.embed(out)

            for shard in shards:
                need = shard_build_memory(shard.size)
                if largest and need > largest:
                    raise InputError(f"--shard-size: shard {shard.number} ({_size(shard.size)} of text) needs "
                                     f"about {_size(need)} to build, more than any Ray node offers "
                                     f"({_size(int(largest))}); lower --shard-size")
                built = build.options(num_cpus=1, memory=need).remote(step_ref, shard.portable())
                out = embedders[shard.number % len(embedders)].embed.remote(built) if embedders else built
                pending.append((shard.number, built, out))
                del shard  # the object store holds the text until the task has built it
                while len(pending) > in_flight:
                    yield collect()
            while pending:
                yield collect()
            if embedders:  # the device each actor embedded on (each sees its own GPU as cuda:0)
                self.embed_device = ", ".join(sorted(set(ray.get([e.device.remote() for e in embedders]))))
            ok = True
        finally:
            if progress is not None:
                progress.close()
            if not ok:
                _cancel(ray, [refs for _, *refs in pending])
            if connected:
                ray.shutdown()

    def _embedders(self, ray, step: ShardStep, gpus: int) -> list:
        """One embedding actor per GPU of the cluster when the build embeds and may use CUDA."""
        if step.embedder is None or gpus == 0 or step.settings.device == "cpu":
            return []
        actor = ray.remote(num_gpus=1, num_cpus=0, max_restarts=self.max_retries,
                           max_task_retries=self.max_retries)(_Embedder)
        state = ray.put(step.for_workers())
        return [actor.remote(state) for _ in range(gpus)]


def _result(ray, ref, number: int) -> ShardOutput:
    """A task's output; its failure as rtv's own error (an RtvError raised in the task, as it was)."""
    from ray.exceptions import RayError, RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, RtvError):
            raise cause from None
        raise RtvError(f"--ray: shard {number} failed on the cluster ({_first_line(cause or exc)}); "
                       "fix the cause and run again") from None
    except RayError as exc:  # worker or node deaths beyond max_retries, lost objects
        raise RtvError(f"--ray: shard {number} failed on the cluster after {MAX_RETRIES} retries "
                       f"({_first_line(exc)}); check the nodes (`ray status`) and run again") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _cancel(ray, pending: list[list]) -> None:
    """Stop the shard tasks still running (force: their workers are killed, and cancelled tasks are
    not retried) and the embedding calls waiting on them, then wait until every one has ended,
    so none writes into the directory the caller removes next."""
    refs = []
    for built, out in pending:
        ray.cancel(built, force=True)
        if out is not built:
            ray.cancel(out)  # an actor call: cannot be force-cancelled
        refs += [built] if out is built else [built, out]
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=60)
