"""Failure bundles (``--k3s-artifacts``) and ``K3sCluster.pod_logs``, on the double.

The pure parts (names, caps, YAML, the Secret rule, time limits) are in
``test_artifacts.py``; here a real run writes them: only for the test that
failed, with its pod, its namespace's events and the nodes' logs, and no
Secret's value; and with the API server stopped, it still writes what the
engine has and says in one line why the rest is missing, promptly.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import SHARED_CLUSTERS
from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s import K3sError
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.run.artifacts import safe_name


SECRET_VALUE = "s3cr3t-value-never-in-a-bundle"
SECRET_BASE64 = base64.b64encode(SECRET_VALUE.encode()).decode()

FAILING_AND_PASSING = f"""
import time

import pytest
from kubernetes.client import CoreV1Api

from pytest_k3s import K3sError


def deploy(cluster, namespace):
    core = CoreV1Api(cluster.api_client)
    core.create_namespaced_secret(
        namespace,
        {{"metadata": {{"name": "creds"}},
          "data": {{"password": "{SECRET_BASE64}"}}}},
    )
    env = [{{"name": "PASSWORD",
             "valueFrom": {{"secretKeyRef": {{"name": "creds", "key": "password"}}}}}}]
    cluster.apply(
        {{
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {{"name": "web"}},
            "spec": {{"containers": [{{
                "name": "c",
                "image": "busybox:1.36",
                "command": ["sh", "-c", "echo bundle-log-line; exec sleep 3600"],
                "env": env,
            }}]}},
        }},
        namespace=namespace,
    )
    cluster.wait_for(
        "Pod", "web", namespace=namespace,
        jsonpath="{{.status.phase}}=Running", timeout=90,
    )
    # Running comes before the process has written anything.
    deadline = time.monotonic() + 30
    while not log_of(cluster, namespace):
        assert time.monotonic() < deadline, "the pod never logged"
        time.sleep(0.2)


def log_of(cluster, namespace):
    try:
        return cluster.pod_logs("web", namespace=namespace)
    except K3sError:  # not started yet
        return ""


def crash_loop(cluster, namespace):
    cluster.apply(
        {{
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {{"name": "crash"}},
            "spec": {{"containers": [{{
                "name": "c",
                "image": "busybox:1.36",
                "command": ["sh", "-c", "echo crash-line; exit 3"],
            }}]}},
        }},
        namespace=namespace,
    )
    core = CoreV1Api(cluster.api_client)
    deadline = time.monotonic() + 60
    while True:
        pod = core.read_namespaced_pod("crash", namespace)
        statuses = pod.status.container_statuses
        if statuses and statuses[0].restart_count:
            return
        assert time.monotonic() < deadline, "the container never restarted"
        time.sleep(0.2)


def test_fails(k3s_cluster, k3s_namespace):
    deploy(k3s_cluster, k3s_namespace)
    crash_loop(k3s_cluster, k3s_namespace)
    assert False, "deliberately"


def test_passes(k3s_cluster, k3s_namespace):
    deploy(k3s_cluster, k3s_namespace)
"""


def files_under(directory: Path) -> list[str]:
    return sorted(
        str(path.relative_to(directory))
        for path in directory.rglob("*")
        if path.is_file()
    )


def collected_seconds(summary: str) -> float:
    found = re.search(r"^collected in ([0-9.]+)s", summary, re.M)
    assert found, summary
    return float(found.group(1))


@pytest.mark.docker
def test_a_failing_test_gets_a_bundle_and_a_passing_one_none(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_bundle=FAILING_AND_PASSING)
    artifacts = pytester.path / "artifacts"
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "-n", "2", "--k3s-artifacts=artifacts", timeout=400
    )
    result.assert_outcomes(passed=1, failed=1)
    # The terminal summary names the directory; the report names the bundle.
    result.stdout.fnmatch_lines(
        [
            # The report has the crashing pod's last log lines (not web's:
            # it is Ready), from its current run or, marked, the previous.
            "last log lines of test-fails-*/crash/c*:",
            "    crash-line",
            "failure bundle: */artifacts/test_bundle.py__test_fails-*",
            f"failure bundles of 1 failing test(s) in {artifacts}",
        ]
    )
    name = safe_name("test_bundle.py::test_fails")
    assert [p.name for p in artifacts.iterdir()] == [name]
    bundle = artifacts / name
    written = files_under(bundle)
    for expected in (
        "summary.txt",
        "nodes.yaml",
        "warning-events.txt",
        "events.txt",
        "workloads.txt",
        "pods/web.yaml",
        "pods/web/c.log",
        "pods/crash.yaml",
        "pods/crash/c.log",
        "pods/crash/c.previous.log",
        "nodes/server-0/k3s.log",
        "nodes/server-0/containerd.log",
    ):
        assert expected in written, written

    summary = (bundle / "summary.txt").read_text()
    assert "test: test_bundle.py::test_fails" in summary
    assert "missing:" not in summary, summary
    assert collected_seconds(summary) < 10

    pod = yaml.safe_load((bundle / "pods/web.yaml").read_text())
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert pod["metadata"]["name"] == "web"
    assert "managedFields" not in pod["metadata"]
    assert pod["status"]["phase"] == "Running"
    nodes = yaml.safe_load((bundle / "nodes.yaml").read_text())
    assert nodes["kind"] == "List"
    assert [n["kind"] for n in nodes["items"]] == ["Node"]

    events = (bundle / "events.txt").read_text()
    assert re.search(r"Pod/test-fails-\w+/web", events), events
    log = (bundle / "pods/web/c.log").read_text()
    assert log == "bundle-log-line\n"
    assert (bundle / "pods/crash/c.previous.log").read_text() == "crash-line\n"
    assert "/web/c:" not in result.stdout.str()  # web is Ready: no tail of it
    assert "k3s" in (bundle / "nodes/server-0/k3s.log").read_text().lower()

    for name in written:
        text = (bundle / name).read_text()
        assert SECRET_VALUE not in text, name
        assert SECRET_BASE64 not in text, name
    assert SECRET_VALUE not in result.stdout.str()


API_DOWN = """
def test_api_down(k3s_module_cluster):
    k3s_module_cluster.stop_node("server-0")
    assert False, "deliberately, with the API server stopped"
"""


@pytest.mark.docker
def test_a_bundle_is_written_when_the_api_is_down(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_down=API_DOWN)
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        "-p", "no:randomly", "--k3s-artifacts", str(pytester.path / "out"), timeout=300
    )
    took = time.monotonic() - started
    result.assert_outcomes(failed=1)
    bundle = pytester.path / "out" / safe_name("test_down.py::test_api_down")
    summary = (bundle / "summary.txt").read_text()
    missing = summary.split("missing:\n", 1)[1].splitlines()
    assert len(missing) == 1, summary
    assert missing[0].startswith("- the API server did not answer ("), summary
    assert "no events, pods, pod logs or nodes from the API" in missing[0]
    # What the engine has, it still gives: the stopped node's own logs.
    assert files_under(bundle) == [
        "nodes/server-0/containerd.log",
        "nodes/server-0/k3s.log",
        "summary.txt",
    ]
    assert (bundle / "nodes/server-0/k3s.log").stat().st_size > 0
    assert collected_seconds(summary) < 5
    result.stdout.fnmatch_lines(["failure bundle: *test_down.py__test_api_down-*"])
    print(f"inner run with the API down: {took:.1f}s, bundle {summary}")


# --- K3sCluster.pod_logs ------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(double_image: str, docker_engine: DockerEngine) -> Iterator[K3sCluster]:
    spec = ClusterSpec(image=double_image, timeout=90)
    with K3sCluster.start(spec, engine=docker_engine) as started:
        SHARED_CLUSTERS.add(started.name)
        yield started


def run_pod(cluster: K3sCluster, name: str, script: str) -> None:
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox:1.36",
                        "command": ["sh", "-c", script],
                    }
                ]
            },
        },
        namespace="default",
    )
    cluster.wait_for(
        "Pod", name, namespace="default", jsonpath="{.status.phase}=Running", timeout=90
    )


def logged(cluster: K3sCluster, pod: str, lines: int = 2) -> str:
    """The pod's log once it has ``lines`` lines (Running comes before them)."""
    deadline = time.monotonic() + 30
    while True:
        log = cluster.pod_logs(pod)
        if log.count("\n") >= lines or time.monotonic() > deadline:
            return log
        time.sleep(0.2)


def test_pod_logs_current_tail_and_errors(cluster: K3sCluster) -> None:
    run_pod(cluster, "web", "echo first-line; echo pod-logs-line; exec sleep 3600")
    log = logged(cluster, "web")
    assert log == "first-line\npod-logs-line\n"
    assert cluster.pod_logs("web", tail=1) == log.splitlines(keepends=True)[-1]
    assert cluster.pod_logs("web", container="c") == log
    with pytest.raises(K3sError, match=r"logs of pod default/gone: .*HTTP 404"):
        cluster.pod_logs("gone")
    with pytest.raises(
        K3sError, match=r"logs of container nope of pod default/web: .*HTTP 400"
    ):
        cluster.pod_logs("web", container="nope")
