"""--k3s-reuse: clusters kept between runs, leased, checked and attached to."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from pytest_k3s import labels


pytestmark = pytest.mark.docker

RECORD = """
import os, pathlib

def test_record(k3s_cluster, k3s_namespace):
    out = pathlib.Path(os.environ["RECORD"])
    out.write_text(k3s_cluster.name)
    hold = os.environ.get("HOLD")
    if hold:
        pathlib.Path(hold, "held").write_text("")
        import time
        deadline = time.monotonic() + 120
        while not pathlib.Path(hold, "release").exists():
            assert time.monotonic() < deadline
            time.sleep(0.1)
"""


def container_ids(client: docker.DockerClient, cluster: str) -> set[str]:
    selector = {"label": f"{labels.CLUSTER}={cluster}"}
    return {c["Id"] for c in client.api.containers(all=True, filters=selector)}


def sweep_reusable(cache: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "pytest_k3s", "sweep", "--reusable"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "XDG_CACHE_HOME": str(cache)},
    ).stdout


@pytest.fixture
def cache(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A reuse directory of this test's own; its clusters are removed at the end."""
    path = pytester.path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))
    pytester.makepyfile(test_record=RECORD)
    yield path
    sweep_reusable(path)


def run(pytester: pytest.Pytester, record: str, *args: str) -> pytest.RunResult:
    os.environ["RECORD"] = str(pytester.path / record)
    return pytester.runpytest_subprocess(
        "-p", "no:randomly", "--k3s-reuse", "test_record.py", *args, timeout=300
    )


def test_a_second_run_attaches_to_the_first_runs_cluster(
    pytester: pytest.Pytester, cache: Path, docker_client: docker.DockerClient
) -> None:
    first = run(pytester, "first")
    first.assert_outcomes(passed=1)
    name = (pytester.path / "first").read_text()
    first.stdout.fnmatch_lines(
        [f"k3s cluster {name} (*) started in *s (kept for reuse)"]
    )
    containers = container_ids(docker_client, name)
    assert containers, "the cluster outlived its run"

    second = run(pytester, "second", "-n", "2")
    second.assert_outcomes(passed=1)
    assert (pytester.path / "second").read_text() == name
    second.stdout.fnmatch_lines([f"k3s cluster {name} (*) reused (attached in *s)"])
    assert container_ids(docker_client, name) == containers, "no container was made"

    assert f"removed {name}" in sweep_reusable(cache)
    assert container_ids(docker_client, name) == set()


def test_an_unhealthy_reusable_cluster_is_replaced(
    pytester: pytest.Pytester, cache: Path, docker_client: docker.DockerClient
) -> None:
    run(pytester, "first").assert_outcomes(passed=1)
    name = (pytester.path / "first").read_text()
    docker_client.api.remove_container(f"{name}-server-0", force=True, v=True)

    second = run(pytester, "second", "-s")
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(
        [f"removing reusable k3s cluster {name}: its server containers are gone"]
    )
    replacement = (pytester.path / "second").read_text()
    assert replacement != name
    assert container_ids(docker_client, name) == set(), "the broken one is gone"


def test_concurrent_reuse_runs_get_a_cluster_each(
    pytester: pytest.Pytester, cache: Path
) -> None:
    hold = pytester.mkdir("hold")
    env = {**os.environ, "RECORD": str(pytester.path / "first"), "HOLD": str(hold)}
    first = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "--k3s-reuse"],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (hold / "held").exists():
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = run(pytester, "second")
        second.assert_outcomes(passed=1)
    finally:
        (hold / "release").write_text("")
        output = first.communicate(timeout=120)[0]
    assert first.returncode == 0, output
    names = {(pytester.path / f).read_text() for f in ("first", "second")}
    assert len(names) == 2, "a leased cluster is not shared with another run"
    swept = sweep_reusable(cache)
    for name in names:
        assert f"removed {name}" in swept, "both are kept for reuse"
