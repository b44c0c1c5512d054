"""Multi-worker training: TF_CONFIG checks, bounded start-up, two local workers end to end."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lhp_tf.distribute import Cluster, cluster_for, parse_tf_config, peer_timeout, wait_for_peers
from lhp_tf.errors import LhpError

sys.path.insert(0, str(Path(__file__).parent))
from test_train import tiny_recipe  # noqa: E402

GOOD = {"cluster": {"worker": ["localhost:2001", "localhost:2002"]}, "task": {"type": "worker", "index": 1}}


def _config(**changes: object) -> str:
    doc = json.loads(json.dumps(GOOD))
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = doc
        for p in parents:
            node = node[p]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return json.dumps(doc)


def test_tf_config_ranks_chief_first() -> None:
    assert parse_tf_config(_config()) == Cluster(("localhost:2001", "localhost:2002"), 1,
                                                 ("cluster.worker[0]", "cluster.worker[1]"))
    with_chief = json.dumps({"cluster": {"chief": ["h:1"], "worker": ["h:2", "h:3"]},
                             "task": {"type": "worker", "index": 0}})
    cluster = parse_tf_config(with_chief)
    assert (cluster.rank, cluster.workers, cluster.chief) == (1, 3, False)
    assert parse_tf_config(_config(task__index=0)).chief


@pytest.mark.parametrize(("raw", "message"), [
    ('{"cluster": {"worker": ["localhost:2001"]}, "task": ', "not valid JSON"),
    ('["localhost:2001"]', "expected a JSON object"),
    (_config(cluster=None), "missing key 'cluster'"),
    (_config(task=None), "missing key 'task'"),
    (_config(task__type=None), "missing key 'task.type'"),
    (_config(task__index=None), "missing key 'task.index'"),
    (_config(task__index=2), r"task.index: 2 is out of range: cluster.worker lists 2 address\(es\)"),
    (_config(task__index=-1), "task.index: -1 is out of range"),
    (_config(task__index="1"), "task.index: expected an integer"),
    (_config(task__type="chief"), "task.type: \"chief\" is not a job of cluster \\(worker\\)"),
    (_config(cluster__ps=["localhost:2003"]), "cluster.ps: lhp train runs clusters of chief and worker"),
    (_config(cluster__worker="localhost:2001"), "cluster.worker: expected a list"),
    (_config(cluster__worker=["localhost:2001", "localhost"]), r"cluster.worker\[1\]: expected 'host:port'"),
    (_config(cluster__worker=["localhost:2001", "localhost:2001"]), "listed twice"),
    (_config(cluster__worker=[]), "lists no 'chief' or 'worker'"),
])
def test_malformed_tf_config_is_one_line_naming_the_key(raw: str, message: str) -> None:
    with pytest.raises(LhpError, match=message) as info:
        parse_tf_config(raw)
    assert str(info.value).startswith("TF_CONFIG: ") and "\n" not in str(info.value)


def test_tf_config_is_read_for_multi_worker_only(monkeypatch) -> None:
    monkeypatch.setenv("TF_CONFIG", "{not json")
    assert cluster_for("none") == Cluster() and cluster_for("mirrored").chief
    with pytest.raises(LhpError, match="TF_CONFIG: not valid JSON"):
        cluster_for("multi_worker")
    monkeypatch.delenv("TF_CONFIG")
    assert cluster_for("multi_worker").workers == 1  # no TF_CONFIG: a cluster of one


def test_peer_timeout_from_environment(monkeypatch) -> None:
    monkeypatch.delenv("LHP_PEER_TIMEOUT", raising=False)
    assert peer_timeout() == 300.0
    monkeypatch.setenv("LHP_PEER_TIMEOUT", "2.5")
    assert peer_timeout() == 2.5
    for bad in ("0", "-1", "soon", "inf"):
        monkeypatch.setenv("LHP_PEER_TIMEOUT", bad)
        with pytest.raises(LhpError, match="LHP_PEER_TIMEOUT: expected a positive number"):
            peer_timeout()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_missing_peer_fails_within_the_timeout() -> None:
    ports = _free_ports(2)
    cluster = Cluster((f"localhost:{ports[0]}", f"localhost:{ports[1]}"), 0,
                      ("cluster.worker[0]", "cluster.worker[1]"))
    start = time.monotonic()
    with pytest.raises(LhpError, match=rf"cluster.worker\[1\] \(localhost:{ports[1]}\) did not answer within 1 s"):
        wait_for_peers(cluster, 1.0)
    assert time.monotonic() - start < 5


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _train_cmd(recipe: Path, workdir: Path) -> list[str]:
    return [sys.executable, "-m", "lhp_tf.train", str(recipe), "--workdir", str(workdir)]


@pytest.mark.slow
def test_malformed_tf_config_exits_2_with_one_line(tmp_path: Path) -> None:
    recipe = tiny_recipe(tmp_path, tmp_path / "cache", distribute="multi_worker")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": _config(task__index=5)}
    proc = subprocess.run(_train_cmd(recipe, tmp_path / "run"), capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "lhp train: error: TF_CONFIG: task.index: 5 is out of range: cluster.worker lists 2 "
        "address(es) (index 0 to 1)")
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_lone_worker_stops_with_a_message_within_the_timeout(tmp_path: Path) -> None:
    """Worker 1 of two, worker 0 never started: one line naming the peer, exit 2, no hang."""
    ports = _free_ports(2)
    recipe = tiny_recipe(tmp_path, tmp_path / "cache", distribute="multi_worker")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": _tf_config(ports, 1),
           "LHP_PEER_TIMEOUT": "5"}
    start = time.monotonic()
    proc = subprocess.run(_train_cmd(recipe, tmp_path / "run"), capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lhp train: error: multi-worker: cluster.worker[0] "
                           f"(localhost:{ports[0]}) did not answer within 5 s"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 120
    assert not (tmp_path / "run").exists()  # a worker that is not the chief writes nothing


@pytest.mark.slow
def test_two_local_workers_train_and_report_one_validation_nme(tmp_path: Path) -> None:
    ports = _free_ports(2)
    recipe = tiny_recipe(tmp_path, tmp_path / "cache", distribute="multi_worker", steps_per_epoch=3)
    procs = []
    for index in (0, 1):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": _tf_config(ports, index),
               "LHP_PEER_TIMEOUT": "240"}
        procs.append(subprocess.Popen(_train_cmd(recipe, tmp_path / f"run{index}"), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-3000:]
            outs.append(out)
    finally:
        for proc in procs:
            proc.kill()
    figures = [re.findall(r"epoch (\d)/2: loss ([\d.]+), val NME ([\d.]+)%", out) for out in outs]
    assert len(figures[0]) == 2 and figures[0] == figures[1], outs
    assert "2 replica(s)" in outs[0] and "2 replica(s)" in outs[1]
    rows = [json.loads(line) for line in (tmp_path / "run0" / "metrics.jsonl").read_text().splitlines()]
    assert [f"{r['val_nme']:.2f}" for r in rows] == [f[2] for f in figures[0]]
    assert [r["step"] for r in rows] == [3, 6]
    assert (tmp_path / "run0" / "best.keras").is_file()
    assert not (tmp_path / "run1").exists()  # only the chief writes the run folder
