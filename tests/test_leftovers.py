from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

from pytest_k3s import labels
from pytest_k3s.owner import Owner
from pytest_k3s.owner import owner_alive
from pytest_k3s.run import leftovers
from pytest_k3s.run.finish import run_clusters


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _labels(owner: Owner, **extra: str) -> dict[str, str]:
    found = labels.labels_for("k3s-x", "server", run="r1", spec_hash="h", owner=owner)
    return {**found, **extra}


def _dead_owner() -> Owner:
    return dataclasses.replace(Owner.current(), pid=_dead_pid(), started="1")


def test_every_object_carries_cluster_role_run_spec_owner_and_time() -> None:
    owner = Owner("host", 42, "1234", "4026531836", "b00t")
    assert labels.labels_for(
        "k3s-x", "agent", run="r1", spec_hash="abc", owner=owner, created=1700000000
    ) == {
        "io.pytest-k3s.cluster": "k3s-x",
        "io.pytest-k3s.role": "agent",
        "io.pytest-k3s.run": "r1",
        "io.pytest-k3s.spec": "abc",
        "io.pytest-k3s.owner": "host/42/1234",
        "io.pytest-k3s.owner-ns": "4026531836/b00t",
        "io.pytest-k3s.created": "1700000000",
    }
    kept = labels.labels_for(
        "k3s-x",
        "agent",
        run="r1",
        spec_hash="abc",
        owner=owner,
        keep_until=1700086400.5,
        state_dir="/tmp/pytest-k3s-run-r1",
    )
    assert kept[labels.KEEP] == "true"
    assert kept[labels.KEEP_UNTIL] == "1700086400"
    assert kept[labels.STATE_DIR] == "/tmp/pytest-k3s-run-r1"


def test_owner_round_trips_and_rejects_garbage() -> None:
    owner = Owner.current()
    assert Owner.parse(str(owner), owner.namespace) == owner
    assert labels.owner_of(_labels(owner)) == owner
    assert Owner.parse("nonsense") is None
    assert Owner.parse("host/notapid/1") is None
    assert Owner.parse("host/1/2/3") is None


def test_an_owner_in_another_pid_namespace_or_boot_is_unknown() -> None:
    me = Owner.current()
    assert me.pidns, "this test needs /proc"
    assert me.boot, "this test needs /proc"
    for other in (
        dataclasses.replace(me, pidns="1"),
        dataclasses.replace(me, boot="other-boot"),
        Owner.parse(str(me)),  # labels of 0.1.0 have no namespace
    ):
        assert other is not None
        assert owner_alive(other) is None
        dead = dataclasses.replace(other, pid=_dead_pid())
        assert owner_alive(dead) is None
        assert not leftovers.sweepable(
            {
                labels.CLUSTER: "c",
                labels.OWNER: str(dead),
                labels.OWNER_NS: dead.namespace,
            }
        )
    old_release = {labels.CLUSTER: "c", labels.OWNER: f"{me.host}/{_dead_pid()}/1"}
    assert not leftovers.sweepable(old_release), "no namespace label: unknown"


def test_live_owner_is_never_swept() -> None:
    assert not leftovers.sweepable(_labels(Owner.current()))


def test_dead_owner_is_swept_unless_kept() -> None:
    dead = _dead_owner()
    assert leftovers.sweepable(_labels(dead))
    kept = _labels(dead, **{labels.KEEP: "true"})
    assert not leftovers.sweepable(kept)
    assert leftovers.sweepable(kept, include_kept=True)


def test_kept_clusters_become_leftovers_when_their_time_runs_out() -> None:
    dead = _dead_owner()
    now = time.time()
    kept = _labels(dead, **{labels.KEEP: "true", labels.KEEP_UNTIL: str(int(now))})
    assert not leftovers.sweepable(kept, now=now - 10)
    assert leftovers.sweepable(kept, now=now + 10)
    live = _labels(Owner.current(), **{labels.KEEP_UNTIL: "1"})
    assert not leftovers.sweepable(live)


def test_older_than_selects_by_creation_time_whatever_the_owner() -> None:
    found = {
        "old": labels.labels_for(
            "old",
            "server",
            run="r",
            spec_hash="h",
            owner=Owner.current(),
            created=time.time() - 7200,
        ),
        "new": labels.labels_for(
            "new", "server", run="r", spec_hash="h", owner=Owner.current()
        ),
        "old-kept": labels.labels_for(
            "old-kept",
            "server",
            run="r",
            spec_hash="h",
            owner=Owner("elsewhere", 1, ""),
            created=time.time() - 7200,
            keep_until=time.time() + 3600,
        ),
    }
    assert leftovers.sweepable_clusters(found) == []
    assert leftovers.sweepable_clusters(found, older=3600) == ["old"]
    assert leftovers.sweepable_clusters(found, older=3600, include_kept=True) == [
        "old",
        "old-kept",
    ]


def test_recycled_pid_with_another_start_time_counts_as_dead() -> None:
    me = Owner.current()
    assert me.started, "this test needs /proc"
    impostor = dataclasses.replace(me, started=str(int(me.started) + 1))
    assert owner_alive(impostor) is False
    assert leftovers.sweepable(_labels(impostor))


def test_other_hosts_and_foreign_objects_are_left_alone() -> None:
    elsewhere = Owner("another-host", _dead_pid(), "1")
    assert owner_alive(elsewhere) is None
    assert not leftovers.sweepable(_labels(elsewhere))
    assert not leftovers.sweepable({"app": "k3d", labels.OWNER: "h/1/1"})
    assert not leftovers.sweepable({labels.CLUSTER: "k3s-x"}), "no owner, no proof"


def test_clusters_matching_selects_by_labels() -> None:
    found = {
        "a": {labels.RUN: "r1"},
        "b": {labels.RUN: "r2"},
        "c": {labels.RUN: "r1"},
    }
    assert leftovers.clusters_matching(found, lambda tags: tags.get("x") == "y") == []
    assert run_clusters(found, "r1") == ["a", "c"]


def test_sweepable_clusters_are_dead_runs_only() -> None:
    dead, alive = _dead_owner(), Owner.current()
    found = {
        "dead": _labels(dead),
        "kept": _labels(dead, **{labels.KEEP: "true"}),
        "alive": _labels(alive),
    }
    assert leftovers.sweepable_clusters(found) == ["dead"]
    assert leftovers.sweepable_clusters(found, include_kept=True) == ["dead", "kept"]
