"""Signals, kills and crashes against real Docker: each ends with zero leftovers.

Every scenario runs a real inner pytest (a subprocess, so it can be killed)
against the k3s node double and asserts, besides the exit code, that nothing
labelled with the inner run's id is left on the engine afterwards.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from pytest_k3s import labels
from pytest_k3s.lifecycle import image_cache


pytestmark = pytest.mark.docker

#: Installed in the inner run: sends FAULT_SIGNAL (to the main process, the
#: xdist controller under xdist) once server-0 of a cluster has started, or
#: kills the worker there (FAULT_SIGNAL=exit), once per inner run.
FAULT_CONFTEST = """
import os, pathlib, signal
import pytest_k3s.engine.docker_engine as engine

original = engine.DockerEngine.start_node

def start_node(self, node, *, privileged):
    container_id = original(self, node, privileged=privileged)
    once = pathlib.Path(os.environ["FAULT_ONCE"])
    if node.name.endswith("-server-0") and not once.exists():
        once.write_text(node.name)
        if os.environ["FAULT_SIGNAL"] == "exit":
            os._exit(7)
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        target = os.getppid() if worker else os.getpid()
        os.kill(target, getattr(signal, os.environ["FAULT_SIGNAL"]))
    return container_id

engine.DockerEngine.start_node = start_node
"""

HOLD_TEST = """
import os, pathlib, signal, time

def test_hold(k3s_cluster):
    # What the nodes hold now: had the run saved system images, these would be.
    listing = [
        k3s_cluster.engine.exec(
            node.container_id, ["ctr", "-n", "k8s.io", "images", "ls", "-q"]
        )[1]
        for node in k3s_cluster.nodes
    ]
    pathlib.Path(os.environ["IMAGES"]).write_text("\\n".join(listing))
    pathlib.Path(os.environ["READY"]).write_text(k3s_cluster.name)
    sig = os.environ.get("TEST_SIGNAL")
    if sig:
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        os.kill(os.getppid() if worker else os.getpid(), getattr(signal, sig))
    time.sleep(300)
"""


def run_objects(client: docker.DockerClient, cluster: str) -> list[str]:
    """Every container and network of ``cluster`` still on the engine."""
    selector = {"label": f"{labels.CLUSTER}={cluster}"}
    return [
        *(c["Names"][0] for c in client.api.containers(all=True, filters=selector)),
        *(n["Name"] for n in client.api.networks(filters=selector)),
    ]


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended first:\n{process.communicate()[0]}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)
    return path.read_text()


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("READY", str(pytester.path / "ready"))
    monkeypatch.setenv("IMAGES", str(pytester.path / "images"))
    monkeypatch.setenv("FAULT_ONCE", str(pytester.path / "fault-once"))
    return pytester.path


@pytest.fixture
def popen(inner: Path) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def pytest_process(
    inner: Path, started: list[subprocess.Popen[str]], *args: str
) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", *args],
        cwd=inner,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started.append(process)
    return process


CASES = [
    (workers, phase, sig)
    for workers in (0, 2)
    for phase in ("start-up", "mid-test")
    for sig in ("SIGINT", "SIGTERM")
] + [(0, "mid-test", "SIGHUP")]  # SIGHUP takes SIGTERM's path: one case


@pytest.mark.parametrize(
    ("workers", "phase", "sig"),
    CASES,
    ids=[f"{'xdist-2' if w else 'single-process'}-{p}-{s}" for w, p, s in CASES],
)
def test_a_signal_ends_the_run_like_ctrl_c_and_removes_its_clusters(
    pytester: pytest.Pytester,
    inner: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_client: docker.DockerClient,
    sig: str,
    phase: str,
    workers: int,
) -> None:
    if phase == "start-up":
        pytester.makeconftest(FAULT_CONFTEST)
        monkeypatch.setenv("FAULT_SIGNAL", sig)
    else:
        monkeypatch.setenv("TEST_SIGNAL", sig)
    pytester.makepyfile(
        test_hold="import pytest\npytestmark = pytest.mark.k3s(agents=1)\n" + HOLD_TEST
    )
    cache = inner / "image-cache"
    args = ["-p", "no:randomly", f"--k3s-image-cache={cache}"]
    args += ["-n", str(workers)] if workers else []
    result = pytester.runpytest_subprocess(*args, timeout=300)
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    text = result.stdout.str()
    assert "Traceback" not in result.stderr.str()
    result.stdout.re_match_lines([r"=+ .*in [\d.]+s.* =+$"])  # the summary line
    name = (inner / ("fault-once" if phase == "start-up" else "ready")).read_text()
    assert name.startswith("k3s-"), text
    assert run_objects(docker_client, name.removesuffix("-server-0")) == []
    if phase == "mid-test":
        # Interrupted, the run goes at once: it saves no system images,
        # although the nodes had pulled some. (Interrupted at start-up, no
        # node has pulled any yet: there would be nothing to save.)
        assert _held_system_images(inner)
        assert "system image(s)" not in text
        assert list(cache.rglob("*.tar")) == []


def test_an_interrupted_modules_cluster_goes_without_saving_images(
    pytester: pytest.Pytester,
    inner: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_client: docker.DockerClient,
) -> None:
    monkeypatch.setenv("TEST_SIGNAL", "SIGINT")
    pytester.makepyfile(
        test_hold=HOLD_TEST.replace("k3s_cluster", "k3s_module_cluster")
    )
    cache = inner / "image-cache"
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", f"--k3s-image-cache={cache}", timeout=300
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
    name = (inner / "ready").read_text()
    assert run_objects(docker_client, name) == []
    assert _held_system_images(inner), "there was something to save"
    assert list(cache.rglob("*.tar")) == []


def _held_system_images(inner: Path) -> list[str]:
    """The system images the inner test's nodes held when it was interrupted."""
    held = (inner / "images").read_text().split()
    return [ref for ref in held if image_cache.is_system_image(ref)]


def test_sigkill_of_pytest_leaves_a_leftover_that_the_next_run_sweeps(
    pytester: pytest.Pytester,
    inner: Path,
    popen: list[subprocess.Popen[str]],
    docker_client: docker.DockerClient,
) -> None:
    pytester.makepyfile(test_hold=HOLD_TEST)
    first = pytest_process(inner, popen, "test_hold.py")
    name = wait_for(inner / "ready", first)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert run_objects(docker_client, name), "SIGKILL leaves the cluster behind"
    pytester.makepyfile(test_next="def test_next(k3s_cluster):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly", "test_next.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [f"removed k3s cluster {name}, left over by a dead run"]
    )
    assert run_objects(docker_client, name) == []


def test_sigkill_of_the_xdist_controller_then_the_sweep_command(
    pytester: pytest.Pytester,
    inner: Path,
    popen: list[subprocess.Popen[str]],
    docker_client: docker.DockerClient,
) -> None:
    pytester.makepyfile(test_hold=HOLD_TEST)
    controller = pytest_process(inner, popen, "-n", "2", "test_hold.py")
    name = wait_for(inner / "ready", controller)
    controller.send_signal(signal.SIGKILL)
    controller.communicate()
    # The workers notice their controller is gone and exit; until then the
    # cluster's owner (the controller) is dead but the sweep is still right.
    swept = subprocess.run(
        [sys.executable, "-m", "pytest_k3s", "sweep"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"removed {name}" in swept.stdout
    assert run_objects(docker_client, name) == []


def test_a_worker_killed_while_starting_a_module_cluster_leaks_nothing(
    pytester: pytest.Pytester,
    inner: Path,
    monkeypatch: pytest.MonkeyPatch,
    docker_client: docker.DockerClient,
) -> None:
    pytester.makeconftest(FAULT_CONFTEST)
    monkeypatch.setenv("FAULT_SIGNAL", "exit")
    pytester.makepyfile(
        """
        import pytest

        pytestmark = pytest.mark.k3s(agents=1)

        def test_module(k3s_module_cluster):
            assert k3s_module_cluster.agents
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "1", timeout=300)
    result.stdout.fnmatch_lines(["*worker 'gw0' crashed while running*"])
    name = (inner / "fault-once").read_text().removesuffix("-server-0")
    assert run_objects(docker_client, name) == [], "the run's end removed it"


def test_a_crashed_worker_leaks_nothing(
    pytester: pytest.Pytester, docker_client: docker.DockerClient
) -> None:
    pytester.makepyfile(
        """
        import os
        import pytest

        @pytest.mark.parametrize("i", range(4))
        def test_x(k3s_cluster, i):
            with open("cluster-name", "w") as out:
                out.write(k3s_cluster.name)
            if i == 0:
                os._exit(3)  # the worker dies with the cluster in use
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-n", "2", timeout=300)
    result.stdout.fnmatch_lines(["*worker 'gw*' crashed while running*"])
    result.assert_outcomes(passed=3, failed=1)
    name = (pytester.path / "cluster-name").read_text()
    assert run_objects(docker_client, name) == []


def test_concurrent_runs_never_touch_each_others_clusters(
    pytester: pytest.Pytester,
    inner: Path,
    popen: list[subprocess.Popen[str]],
    docker_client: docker.DockerClient,
) -> None:
    signals = pytester.mkdir("signals")
    pytester.makepyfile(
        test_first=f"""
        import os, pathlib, time, docker

        SIGNALS = pathlib.Path({str(signals)!r})

        def test_holds_its_cluster(k3s_cluster):
            (SIGNALS / "first-ready").write_text(k3s_cluster.name)
            deadline = time.monotonic() + 240
            while not (SIGNALS / "second-done").exists():
                assert time.monotonic() < deadline
                time.sleep(0.2)
            client = docker.from_env()
            try:
                alive = client.api.containers(
                    filters={{"label": f"io.pytest-k3s.cluster={{k3s_cluster.name}}"}}
                )
            finally:
                client.close()
            assert alive, "the other run removed this run's cluster"
        """,
        test_second="""
        def test_uses_its_own(k3s_cluster):
            print("SECOND", k3s_cluster.name)
        """,
    )
    first = pytest_process(inner, popen, "test_first.py")
    try:
        first_name = wait_for(signals / "first-ready", first)
        second = pytester.runpytest_subprocess(
            "-p", "no:randomly", "-s", "test_second.py", timeout=300
        )
        second.assert_outcomes(passed=1)
        second_name = second.stdout.str().split("SECOND ")[1].split()[0]
        assert second_name != first_name
        assert run_objects(docker_client, second_name) == []
    finally:
        (signals / "second-done").write_text("")
        output = first.communicate(timeout=300)[0]
    assert first.returncode == 0, output
    assert run_objects(docker_client, first_name) == []
