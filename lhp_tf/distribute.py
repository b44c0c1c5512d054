"""``train.distribute`` -> a ``tf.distribute`` strategy, and the cluster it runs on.

One training loop serves all three: ``none`` is TensorFlow's default (single-device) strategy,
so the loop always runs inside ``strategy.scope()`` and ``strategy.run`` and there is no
second code path to drift out of sync.

- ``none``: the default strategy (one device).
- ``mirrored``: ``MirroredStrategy`` over the local GPUs (or over every logical CPU device when
  there is no GPU, which is how the tests exercise it).
- ``multi_worker``: ``MultiWorkerMirroredStrategy``; the cluster comes from ``TF_CONFIG``
  (``{"cluster": {"chief": [...], "worker": ["host:port", ...]}, "task": {"type": "worker",
  "index": 0}}``; the chief, or worker 0 when there is none, writes the run folder).

Multi-worker start-up is bounded: TensorFlow's coordination service waits for every task of the
cluster for up to an hour, holding the Python interpreter, so a missing worker looked like a
hang. Before the strategy is built each worker therefore listens on its own address and waits
until it can reach every peer's (:func:`wait_for_peers`), for ``LHP_PEER_TIMEOUT`` seconds
(default 300), and stops with one line naming the peer that never answered.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from lhp_tf.errors import LhpError
from lhp_tf.kinds import DISTRIBUTE_KINDS as KINDS

#: jobs ``lhp train`` runs (every task trains; no parameter servers, no side-car evaluator)
JOBS = ("chief", "worker")
#: environment variable: seconds a worker waits for its peers at start-up
PEER_TIMEOUT_ENV = "LHP_PEER_TIMEOUT"
DEFAULT_PEER_TIMEOUT = 300.0


@dataclass(frozen=True)
class Cluster:
    """The training processes: addresses in rank order (chief first) and this process's rank.

    A single process (``none``, ``mirrored``, or ``multi_worker`` without ``TF_CONFIG``) is a
    cluster of one with no addresses.
    """

    addresses: tuple[str, ...] = ()
    rank: int = 0
    #: ``TF_CONFIG`` key of each address, for messages (``cluster.worker[1]``)
    keys: tuple[str, ...] = ()

    @property
    def workers(self) -> int:
        return max(1, len(self.addresses))

    @property
    def chief(self) -> bool:
        """Whether this process writes the run folder."""
        return self.rank == 0


def _fail(text: str) -> LhpError:
    return LhpError(f"TF_CONFIG: {text}")


def _address(value: Any, key: str) -> str:
    host, _, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _fail(f"{key}: expected 'host:port', got {json.dumps(value)}")
    return value


def parse_tf_config(raw: str) -> Cluster:
    """Check ``TF_CONFIG`` and return its cluster; every problem is one line naming the key."""
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _fail(f"not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise _fail(f"expected a JSON object with 'cluster' and 'task', got {type(config).__name__}")
    for key in ("cluster", "task"):
        if key not in config:
            raise _fail(f"missing key '{key}'")
        if not isinstance(config[key], dict):
            raise _fail(f"{key}: expected an object, got {json.dumps(config[key])}")
    cluster, task = config["cluster"], config["task"]
    unknown = sorted(set(cluster) - set(JOBS))
    if unknown:
        raise _fail(f"cluster.{unknown[0]}: lhp train runs clusters of {' and '.join(JOBS)} "
                    f"tasks only (every task trains)")
    if not any(cluster.get(job) for job in JOBS):
        raise _fail("cluster: lists no 'chief' or 'worker' addresses")
    addresses: list[str] = []
    keys: list[str] = []
    for job in JOBS:
        listed = cluster.get(job, [])
        if not isinstance(listed, list):
            raise _fail(f"cluster.{job}: expected a list of 'host:port', got {json.dumps(listed)}")
        if job == "chief" and len(listed) > 1:
            raise _fail(f"cluster.chief: at most one chief, got {len(listed)}")
        for i, value in enumerate(listed):
            key = f"cluster.{job}[{i}]"
            address = _address(value, key)
            if address in addresses:
                raise _fail(f"{key}: {address} is listed twice")
            addresses.append(address)
            keys.append(key)
    if "type" not in task:
        raise _fail("missing key 'task.type'")
    if task["type"] not in JOBS or not cluster.get(task["type"]):
        raise _fail(f"task.type: {json.dumps(task['type'])} is not a job of cluster "
                    f"({', '.join(j for j in JOBS if cluster.get(j))})")
    if "index" not in task:
        raise _fail("missing key 'task.index'")
    index = task["index"]
    count = len(cluster[task["type"]])
    if isinstance(index, bool) or not isinstance(index, int):
        raise _fail(f"task.index: expected an integer, got {json.dumps(index)}")
    if not 0 <= index < count:
        raise _fail(f"task.index: {index} is out of range: cluster.{task['type']} lists "
                    f"{count} address(es) (index 0 to {count - 1})")
    rank = index + (len(cluster.get("chief", [])) if task["type"] == "worker" else 0)
    return Cluster(tuple(addresses), rank, tuple(keys))


def cluster_for(kind: str) -> Cluster:
    """The cluster of ``train.distribute == kind`` (``TF_CONFIG`` is read for multi-worker only)."""
    if kind not in KINDS:
        raise LhpError(f"train.distribute: expected one of {', '.join(KINDS)}, got {kind!r}")
    raw = os.environ.get("TF_CONFIG")
    if kind != "multi_worker" or not raw:
        return Cluster()
    return parse_tf_config(raw)


def peer_timeout() -> float:
    """``LHP_PEER_TIMEOUT`` in seconds (default 300)."""
    raw = os.environ.get(PEER_TIMEOUT_ENV)
    if raw is None or raw == "":
        return DEFAULT_PEER_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise LhpError(f"{PEER_TIMEOUT_ENV}: expected a positive number of seconds, got {raw!r}")
    return value


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def wait_for_peers(cluster: Cluster, timeout: float) -> None:
    """Return once every peer's address accepts a connection; LhpError after ``timeout`` s.

    Each worker listens on its own port meanwhile, so peers that start in any order find each
    other; a peer already past this point answers from TensorFlow's server on the same port.
    """
    if cluster.workers < 2:
        return
    own_key = cluster.keys[cluster.rank]
    _, port = _split(cluster.addresses[cluster.rank])
    try:
        listener = socket.create_server(("", port), reuse_port=False, backlog=64)
    except OSError as exc:
        raise _fail(f"{own_key}: cannot listen on port {port} of this machine ({exc.strerror or exc}); "
                    f"is another process using it?") from None
    deadline = time.monotonic() + timeout
    try:
        for address, key in zip(cluster.addresses, cluster.keys, strict=True):
            if key == own_key:
                continue
            host, peer_port = _split(address)
            while True:
                left = deadline - time.monotonic()
                try:
                    socket.create_connection((host, peer_port), timeout=max(0.1, min(2.0, left))).close()
                    break
                except OSError as exc:
                    if left <= 0:
                        raise LhpError(
                            f"multi-worker: {key} ({address}) did not answer within {timeout:g} s "
                            f"({exc.strerror or exc}); start every task of TF_CONFIG, or raise "
                            f"{PEER_TIMEOUT_ENV}") from None
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    finally:
        listener.close()


def make_strategy(kind: str, cluster: Cluster | None = None) -> Any:
    """The strategy of ``train.distribute``; multi-worker waits (bounded) for its peers first."""
    cluster = cluster or cluster_for(kind)
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    wait_for_peers(cluster, peer_timeout())
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(kind: str) -> bool:
    """Whether this process writes the run folder (the chief, worker 0, or the only process)."""
    return cluster_for(kind).chief


def sum_over_workers(strategy: Any, cluster: Cluster, values: np.ndarray) -> np.ndarray:
    """``values`` (float64, one vector per worker) summed over the workers, on every worker.

    One all-reduce through the strategy: each worker's first local replica contributes its
    ``values``, the others zeros, so a worker with several devices is counted once.
    """
    values = np.asarray(values, dtype=np.float64)
    if cluster.workers < 2:
        return values
    import tensorflow as tf

    local = max(1, strategy.num_replicas_in_sync // cluster.workers)

    def contribute(v: Any) -> Any:
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        return v * tf.cast(tf.equal(replica % local, 0), v.dtype)

    total = strategy.reduce(tf.distribute.ReduceOp.SUM,
                            strategy.run(tf.function(contribute), args=(tf.constant(values),)), axis=None)
    return np.asarray(total, dtype=np.float64)


def average_over_workers(strategy: Any, cluster: Cluster, variables: list[Any]) -> None:
    """Set ``variables`` to their mean over the workers (no-op for a single process).

    Gradients are all-reduced, so trainable weights agree; a layer's own statistics (batch
    norm moving mean and variance) are updated from each worker's shard of the batch and
    drift apart, which made each worker validate a different model.
    """
    if cluster.workers < 2 or not variables:
        return
    local = [np.asarray(v.numpy()) for v in variables]
    flat = np.concatenate([a.astype(np.float64).ravel() for a in local])
    mean = sum_over_workers(strategy, cluster, flat) / cluster.workers
    offset = 0
    for v, a in zip(variables, local, strict=True):
        v.assign(mean[offset:offset + a.size].reshape(a.shape).astype(a.dtype))
        offset += a.size
