"""Reaching workloads against the double, whose kubelet runs real processes.

A pod running ``python3 -m http.server`` in the node is reached through
``port_forward`` (a pod, a Service's named port, a Deployment whose pod is
replaced while the forward is open), commands run with ``exec``, and a
crashed container's last log is read with ``pod_logs(previous=True)``.
"""

from __future__ import annotations

import concurrent.futures
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import SHARED_CLUSTERS
from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s import K3sError
from pytest_k3s.engine.docker_engine import DockerEngine


pytestmark = pytest.mark.docker

SERVE = "echo hello-log; exec python3 -m http.server {port}"
LABELS = {"app": "web"}


def _container(command: str, port: int | None = 8080) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": "web",
        "image": "python:3.12-slim",
        "command": ["sh", "-c", command.format(port=port)],
    }
    if port is not None:
        found["ports"] = [{"name": "http", "containerPort": port}]
    return found


@pytest.fixture(scope="module")
def cluster(double_image: str, docker_engine: DockerEngine) -> Iterator[K3sCluster]:
    spec = ClusterSpec(image=double_image, agents=1, wait_for_coredns=False)
    with K3sCluster.start(spec, engine=docker_engine) as started:
        SHARED_CLUSTERS.add(started.name)
        started.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "web", "labels": {"serves": "pod"}},
                    "spec": {"containers": [_container(SERVE)]},
                },
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "web"},
                    "spec": {
                        "replicas": 1,
                        "selector": {"matchLabels": LABELS},
                        "template": {
                            "metadata": {"labels": LABELS},
                            # The double's pods share their node's network.
                            "spec": {"containers": [_container(SERVE, 8081)]},
                        },
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "web"},
                    "spec": {
                        "selector": LABELS,
                        "ports": [{"name": "front", "port": 80, "targetPort": "http"}],
                    },
                },
            ]
        )
        started.wait_for("Pod", "web", condition="Ready", timeout=60)
        started.wait_for(
            "Deployment", "web", condition="Available", timeout=60, namespace="default"
        )
        yield started


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as reply:
        reply.read()
        return int(reply.status)


def test_a_pod_is_reached_through_a_forward(cluster: K3sCluster) -> None:
    with cluster.port_forward("pod/web", 8080) as forward:
        assert forward.host == "127.0.0.1"
        assert forward.url == f"http://127.0.0.1:{forward.port}"
        assert _get(forward.url) == 200
    with pytest.raises(OSError):
        _get(forward.url)  # closed with the block


def test_a_services_named_target_port_takes_fifty_connections_at_once(
    cluster: K3sCluster,
) -> None:
    with (
        cluster.port_forward("svc/web", "front") as forward,
        concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool,
    ):
        statuses = list(pool.map(lambda _: _get(forward.url), range(50)))
    assert statuses == [200] * 50


def test_a_replaced_pod_is_picked_up_by_an_open_forward(cluster: K3sCluster) -> None:
    from kubernetes.client import CoreV1Api

    core = CoreV1Api(cluster.api_client)
    with cluster.port_forward("deploy/web", 8081) as forward:
        assert _get(forward.url) == 200
        (old,) = core.list_namespaced_pod("default", label_selector="app=web").items
        name = str(old.metadata.name)
        core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
        deadline = time.monotonic() + 60
        while True:
            pods = core.list_namespaced_pod("default", label_selector="app=web").items
            fresh = [p for p in pods if p.metadata.name != name]
            ready = [
                p
                for p in fresh
                if any(
                    c.type == "Ready" and c.status == "True"
                    for c in p.status.conditions or ()
                )
            ]
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert ready, "the Deployment did not replace its pod"
        assert _get(forward.url) == 200, "the next request reaches the new pod"


def test_exec_returns_the_exit_code_and_both_streams(cluster: K3sCluster) -> None:
    done = cluster.exec("web", ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert cluster.exec("web", ["cat"], stdin="fed\n").stdout == "fed\n"
    with pytest.raises(K3sError, match="could not run"):
        cluster.exec("web", ["no-such-program"])
    with pytest.raises(K3sError, match=r"\['sh', '-c', 'ls'\]"):
        cluster.exec("web", "ls")


def test_pod_logs_of_a_crashed_container_and_its_previous_run(
    cluster: K3sCluster,
) -> None:
    assert "hello-log" in cluster.pod_logs("web")
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "crash"},
            "spec": {
                "restartPolicy": "Always",
                "containers": [_container("echo run-$(date +%s%N); exit 1", None)],
            },
        }
    )
    deadline = time.monotonic() + 60
    while True:
        from kubernetes.client import CoreV1Api

        pod = CoreV1Api(cluster.api_client).read_namespaced_pod("crash", "default")
        statuses = pod.status.container_statuses or []
        if statuses and statuses[0].restart_count >= 1:
            break
        assert time.monotonic() < deadline, "the container never restarted"
        time.sleep(0.3)
    previous = cluster.pod_logs("crash", previous=True)
    assert previous.startswith("run-"), previous
