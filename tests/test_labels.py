from __future__ import annotations

import os
import socket
import subprocess
import sys

from pytest_k3s import labels


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _labels(owner: labels.Owner, **extra: str) -> dict[str, str]:
    found = labels.labels_for("k3s-x", "server", run="r1", spec_hash="h", owner=owner)
    return {**found, **extra}


def test_every_object_carries_cluster_role_run_spec_and_owner() -> None:
    owner = labels.Owner("host", 42, "1234")
    assert labels.labels_for(
        "k3s-x", "agent", run="r1", spec_hash="abc", owner=owner
    ) == {
        "io.pytest-k3s.cluster": "k3s-x",
        "io.pytest-k3s.role": "agent",
        "io.pytest-k3s.run": "r1",
        "io.pytest-k3s.spec": "abc",
        "io.pytest-k3s.owner": "host/42/1234",
    }


def test_owner_round_trips_and_rejects_garbage() -> None:
    owner = labels.Owner.current()
    assert labels.Owner.parse(str(owner)) == owner
    assert labels.Owner.parse("nonsense") is None
    assert labels.Owner.parse("host/notapid/1") is None


def test_live_owner_is_never_swept() -> None:
    assert not labels.sweepable(_labels(labels.Owner.current()))


def test_dead_owner_is_swept_unless_kept() -> None:
    dead = labels.Owner(socket.gethostname(), _dead_pid(), "1")
    assert labels.sweepable(_labels(dead))
    kept = _labels(dead, **{labels.KEEP: "true"})
    assert not labels.sweepable(kept)
    assert labels.sweepable(kept, include_kept=True)


def test_recycled_pid_with_another_start_time_counts_as_dead() -> None:
    me = labels.Owner.current()
    assert me.started, "this test needs /proc"
    impostor = labels.Owner(me.host, os.getpid(), str(int(me.started) + 1))
    assert labels.owner_alive(impostor) is False
    assert labels.sweepable(_labels(impostor))


def test_other_hosts_and_foreign_objects_are_left_alone() -> None:
    elsewhere = labels.Owner("another-host", _dead_pid(), "1")
    assert labels.owner_alive(elsewhere) is None
    assert not labels.sweepable(_labels(elsewhere))
    assert not labels.sweepable({"app": "k3d", labels.OWNER: "h/1/1"})
    assert not labels.sweepable({labels.CLUSTER: "k3s-x"}), "no owner, no proof"


def test_clusters_matching_selects_by_labels() -> None:
    found = {
        "a": {labels.RUN: "r1"},
        "b": {labels.RUN: "r2"},
        "c": {labels.RUN: "r1"},
    }
    assert labels.clusters_matching(found, lambda tags: tags.get("x") == "y") == []
    assert labels.run_clusters(found, "r1") == ["a", "c"]


def test_sweepable_clusters_are_dead_runs_only() -> None:
    dead = str(labels.Owner(socket.gethostname(), _dead_pid(), ""))
    alive = str(labels.Owner.current())
    found = {
        "dead": {labels.CLUSTER: "dead", labels.OWNER: dead},
        "kept": {labels.CLUSTER: "kept", labels.OWNER: dead, labels.KEEP: "true"},
        "alive": {labels.CLUSTER: "alive", labels.OWNER: alive},
    }
    assert labels.sweepable_clusters(found) == ["dead"]
    assert labels.sweepable_clusters(found, include_kept=True) == ["dead", "kept"]
