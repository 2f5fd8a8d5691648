"""The run's shared state: its identity, records, state directory and end."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_k3s import K3sError
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.owner import Owner
from pytest_k3s.run.finish import finish_run
from pytest_k3s.run.leftovers import remove_state
from pytest_k3s.run.state import STATE_PREFIX
from pytest_k3s.run.state import Record
from pytest_k3s.run.state import RunInfo
from pytest_k3s.run.state import records
from pytest_k3s.userdirs import private_directory


def test_run_info_travels_to_workers_whole() -> None:
    run = RunInfo.new(keep_mode="on-failure", keep_for=5400)
    assert RunInfo.from_json(run.to_json()) == run
    assert run.owner == Owner.current()
    assert run.state_dir.name == f"{STATE_PREFIX}{run.run_id}"
    assert run.may_keep
    assert not RunInfo.new(keep_mode="never", keep_for=1).may_keep


def test_records_round_trip_oldest_first(tmp_path: Path) -> None:
    first = Record("k3s-a", "/k/a.yaml", "1 server(s)", 2.5, pid=os.getpid())
    failed = Record("", "", "1 server(s) + 2 agent(s)", 9.0, "boom", 7)
    first.write(tmp_path / "a.json")
    failed.write(tmp_path / "b.json")
    os.utime(tmp_path / "a.json", (1, 1))
    assert records(tmp_path) == [first, failed]
    assert not list(tmp_path.glob("*.tmp")), "written atomically"


def test_the_state_directory_is_private_and_ours(tmp_path: Path) -> None:
    made = private_directory(tmp_path / "run")
    assert made.stat().st_mode & 0o777 == 0o700
    assert private_directory(made) == made, "an existing private one is fine"
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    (tmp_path / "link").symlink_to(made)
    (tmp_path / "file").write_text("")
    for bad in ("open", "link", "file"):
        with pytest.raises(K3sError, match="not a private directory of this user"):
            private_directory(tmp_path / bad)


def test_a_sweep_removes_only_our_state(tmp_path: Path) -> None:
    state = private_directory(tmp_path / f"{STATE_PREFIX}abc")
    (state / "k3s-a.kubeconfig.yaml").write_text("a")
    (state / "k3s-b.kubeconfig.yaml").write_text("b")
    remove_state(str(state), "k3s-a")
    assert sorted(p.name for p in state.iterdir()) == ["k3s-b.kubeconfig.yaml"]
    remove_state(str(state), "k3s-b")
    assert not state.exists(), "the emptied state directory goes"
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    (elsewhere / "k3s-c.kubeconfig.yaml").write_text("c")
    remove_state(str(elsewhere), "k3s-c")
    assert (elsewhere / "k3s-c.kubeconfig.yaml").exists(), "not a state directory"
    link = tmp_path / f"{STATE_PREFIX}link"
    link.symlink_to(elsewhere)
    remove_state(str(link), "k3s-c")
    assert (elsewhere / "k3s-c.kubeconfig.yaml").exists(), "never through a link"


def test_a_run_that_started_nothing_ends_without_docker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    run = RunInfo("r1", Owner.current(), tmp_path / "gone", "never", 60)
    lines: list[str] = []
    finish_run(run, lines.append, DockerEngine.connect, failed=False)
    assert lines == []
    state = private_directory(tmp_path / "state")
    run = RunInfo("r2", Owner.current(), state, "never", 60)
    finish_run(run, lines.append, DockerEngine.connect, failed=True)
    assert lines == []
    assert not state.exists()
    Record("k3s-x", "/k.yaml", "1 server(s)", 1.0).write(
        private_directory(state) / "x.json"
    )
    with pytest.raises(K3sError, match="no Docker engine answers"):
        finish_run(run, lines.append, DockerEngine.connect, failed=True)
