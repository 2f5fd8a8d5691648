"""How a run's processes share clusters, and how a run ends, with a fake engine.

Two pools of one run stand for two xdist workers: they share the run's
state directory and the engine, as workers share the machine's engine.
Real processes and the real file lock are tested in test_plugin.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_k3s import labels
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import UnsuitableClusterError
from pytest_k3s.kube import client as kube_client
from pytest_k3s.lifecycle import start
from pytest_k3s.owner import Owner
from pytest_k3s.run.existing import ExistingPool
from pytest_k3s.run.finish import finish_run
from pytest_k3s.run.leftovers import remove_named
from pytest_k3s.run.leftovers import sweep_leftovers
from pytest_k3s.run.pool import DockerPool
from pytest_k3s.run.state import STATE_PREFIX
from pytest_k3s.run.state import RunInfo
from pytest_k3s.run.state import records
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.userdirs import private_directory
from tests.fake_engine import FakeApi
from tests.fake_engine import FakeEngine


SPEC = ClusterSpec(image="k3s:test", image_cache=False, wait_for_coredns=False)


@pytest.fixture(autouse=True)
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeApi:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return FakeApi().install(monkeypatch)


def _run(tmp_path: Path, keep: str = "never") -> RunInfo:
    state = private_directory(tmp_path / f"{STATE_PREFIX}run-1")
    return RunInfo("run-1", Owner.current(), state, keep, 3600)  # type: ignore[arg-type]


def test_one_cluster_per_spec_shared_by_the_runs_processes(tmp_path: Path) -> None:
    engine = FakeEngine()
    run = _run(tmp_path)
    first, second = DockerPool(run, engine, print), DockerPool(run, engine, print)
    mine = first.acquire(SPEC)
    theirs = second.acquire(SPEC)
    assert theirs.name == mine.name
    assert [c for c in engine.calls if c.startswith("network")] == [
        f"network {mine.name}"
    ]
    assert first.acquire(SPEC) is mine, "a process asks once per spec"
    other = first.acquire(ClusterSpec(image="k3s:test", agents=1, image_cache=False))
    assert other.name != mine.name
    with pytest.warns(UserWarning, match="shared by the tests of this run"):
        theirs.stop()
    assert mine.name in engine.labelled(), "a shared handle's stop() removes nothing"


def test_a_failed_start_fails_the_other_processes_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine(crash={"k3s-doomed-server-0"})
    run = _run(tmp_path)
    first, second = DockerPool(run, engine, print), DockerPool(run, engine, print)
    spec = ClusterSpec(image="k3s:test", image_cache=False, timeout=5)
    names = iter(["k3s-doomed", "k3s-never"])
    monkeypatch.setattr(start, "new_cluster_name", lambda: next(names))
    with pytest.raises(ClusterStartError, match="exited with status 1"):
        first.acquire(spec)
    # The same error, at once, saying where it happened (here: this process).
    with pytest.raises(ClusterStartError, match="failed to start earlier in this"):
        second.acquire(spec)
    starts = [c for c in engine.calls if c.startswith("start")]
    assert starts == ["start k3s-doomed-server-0"], "one attempt for the whole run"
    assert engine.names() == []


def test_the_runs_end_removes_its_clusters_and_only_them(tmp_path: Path) -> None:
    engine = FakeEngine()
    other_run = RunInfo("run-2", Owner.current(), tmp_path / "other", "never", 60)
    private_directory(other_run.state_dir)
    foreign = DockerPool(other_run, engine, print).acquire(SPEC)
    run = _run(tmp_path)
    pool = DockerPool(run, engine, print)
    shared = pool.acquire(SPEC)
    private = pool.start_private(SPEC)
    pool.close()
    lines: list[str] = []
    finish_run(run, lines.append, lambda: engine, failed=False)
    assert sorted(engine.labelled()) == [foreign.name]
    assert any(f"k3s cluster {shared.name}" in line for line in lines)
    assert any(f"k3s cluster {private.name}" in line for line in lines)
    assert not run.state_dir.exists()


def test_a_failed_run_with_keep_on_failure_keeps_and_says_how(tmp_path: Path) -> None:
    engine = FakeEngine()
    run = _run(tmp_path, keep="on-failure")
    cluster = DockerPool(run, engine, print).acquire(SPEC)
    lines: list[str] = []
    finish_run(run, lines.append, lambda: engine, failed=True)
    assert cluster.name in engine.labelled()
    assert f"python -m pytest_k3s rm {cluster.name}" in lines[-1]
    tags = engine.labelled()[cluster.name]
    assert labels.KEEP_UNTIL in tags, "kept clusters carry their expiry"


def test_a_passing_run_with_keep_on_failure_removes(tmp_path: Path) -> None:
    engine = FakeEngine()
    run = _run(tmp_path, keep="on-failure")
    DockerPool(run, engine, print).acquire(SPEC)
    finish_run(run, lambda line: None, lambda: engine, failed=False)
    assert engine.labelled() == {}


def test_an_interrupted_run_saves_no_images_but_removes(tmp_path: Path) -> None:
    engine = FakeEngine()
    run = _run(tmp_path)
    spec = ClusterSpec(image="k3s:test", image_cache=str(tmp_path / "images"))
    DockerPool(run, engine, print).acquire(spec)
    finish_run(run, lambda line: None, lambda: engine, failed=True, interrupted=True)
    assert not any(c.startswith("exec") for c in engine.calls)
    assert engine.labelled() == {}


def test_a_run_that_never_started_a_cluster_never_asks_for_an_engine(
    tmp_path: Path,
) -> None:
    run = RunInfo("r", Owner.current(), tmp_path / "never-made", "never", 60)

    def no_engine() -> FakeEngine:
        raise AssertionError("the engine was asked for")

    finish_run(run, lambda line: None, no_engine, failed=False)


def test_the_sweep_spares_live_and_kept_runs(tmp_path: Path) -> None:
    engine = FakeEngine()
    alive = _run(tmp_path)
    live = DockerPool(alive, engine, print).acquire(SPEC)
    dead_owner = Owner("elsewhere", 1, "1")
    for name, owner, keep in (
        ("k3s-dead", dead_owner, None),
        ("k3s-kept", dead_owner, 2e9),
    ):
        engine.create_network(
            name,
            labels.labels_for(
                name, "network", run="old", spec_hash="x", owner=owner, keep_until=keep
            ),
        )
    # The dead owner lives on another host: unknown, so never swept...
    assert sweep_leftovers(engine) == []
    # ...unless older than asked, kept ones still spared.
    assert sorted(sweep_leftovers(engine, older=-1)) == sorted(["k3s-dead", live.name])
    assert sorted(engine.labelled()) == ["k3s-kept"]


def test_an_existing_cluster_cannot_give_a_module_its_own(tmp_path: Path) -> None:
    pool = ExistingPool(tmp_path / "kubeconfig", None, SPEC)
    with pytest.raises(UnsuitableClusterError, match="k3s_module_cluster"):
        pool.start_private(SPEC)


def test_a_private_cluster_is_recorded_and_its_stop_removes_it(tmp_path: Path) -> None:
    engine = FakeEngine()
    run = _run(tmp_path)
    cluster = DockerPool(run, engine, print).start_private(SPEC)
    assert [r.name for r in records(run.state_dir)] == [cluster.name]
    cluster.stop()
    assert engine.labelled() == {}


def test_a_removed_module_cluster_is_not_reported_as_kept(tmp_path: Path) -> None:
    engine = FakeEngine()
    run = _run(tmp_path, keep="on-failure")
    pool = DockerPool(run, engine, print)
    passing = pool.start_private(SPEC)
    failing = pool.start_private(SPEC)
    pool.release_private(passing, keep=False)
    pool.release_private(failing, keep=True)
    lines: list[str] = []
    finish_run(run, lines.append, lambda: engine, failed=True)
    assert sorted(engine.labelled()) == [failing.name]
    kept = [line for line in lines if line.startswith("kept")]
    assert len(kept) == 1
    assert failing.name in kept[0]
    assert passing.name not in "\n".join(lines)


def test_rm_takes_the_kubeconfig_and_spares_a_leased_reusable_cluster(
    tmp_path: Path,
) -> None:
    engine = FakeEngine()
    run = _run(tmp_path)
    pool = DockerPool(run, engine, print)
    cluster = pool.acquire(SPEC)
    reusing = DockerPool(
        RunInfo("run-3", Owner.current(), tmp_path / "s3", "never", 60, reuse=True),
        engine,
        print,
    )
    private_directory(reusing.run.state_dir)
    reusable = reusing.acquire(SPEC)
    outcome = remove_named(engine, [cluster.name, reusable.name, "k3s-nope"])
    assert outcome == {
        cluster.name: "removed",
        reusable.name: "in use",
        "k3s-nope": "unknown",
    }
    assert not cluster.kubeconfig_path.exists()
    assert sorted(engine.labelled()) == [reusable.name]
    reusing.close()  # the run ends: its lease goes
    assert remove_named(engine, [reusable.name]) == {reusable.name: "removed"}
    assert engine.labelled() == {}


def test_a_reusable_cluster_is_asked_after_joining_its_network(
    tmp_path: Path, api: FakeApi
) -> None:
    engine = FakeEngine(in_container=True)

    def reuse_run(run_id: str) -> DockerPool:
        info = RunInfo(
            run_id, Owner.current(), tmp_path / run_id, "never", 60, reuse=True
        )
        private_directory(info.state_dir)
        return DockerPool(info, engine, print)

    first = reuse_run("run-a")
    kept = first.acquire(SPEC)
    first.close()
    order: list[str] = []
    engine.join_network = lambda network: order.append(f"join {network}")  # type: ignore[method-assign]
    real_readyz = kube_client.readyz

    def readyz(client: object) -> str | None:
        order.append("readyz")
        return real_readyz(client)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kube_client, "readyz", readyz)
        second = reuse_run("run-b")
        again = second.acquire(SPEC)
    assert again.name == kept.name, "the healthy cluster is reused"
    assert order[:2] == [f"join {kept.name}", "readyz"]
    second.close()
