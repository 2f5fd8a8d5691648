"""The lifecycle against the real rancher/k3s image, where that image can be had.

Deselected (see the collection header) on machines without it, such as ours;
run in the GitHub Actions workflow with the image pulled.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes.client import CoreV1Api

from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s.kube import node_roles


pytestmark = [pytest.mark.docker, pytest.mark.real_k3s]

POD: Any = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "hello"},
    "spec": {
        "restartPolicy": "Never",
        "containers": [
            {"name": "hello", "image": "busybox:1.36", "command": ["echo", "hello"]}
        ],
    },
}


@pytest.mark.parametrize(("servers", "agents"), [(1, 1), (3, 1)], ids=["1+1", "3+1"])
def test_real_cluster_runs_a_pod(servers: int, agents: int) -> None:
    spec = ClusterSpec(servers=servers, agents=agents, timeout=360)
    with K3sCluster.start(spec) as cluster:
        core = CoreV1Api(cluster.api_client)
        nodes = core.list_node().items
        assert len(nodes) == servers + agents
        servers_seen = [
            n for n in nodes if "control-plane" in node_roles(n.metadata.labels)
        ]
        assert len(servers_seen) == servers

        core.create_namespaced_pod("default", POD)
        deadline = time.monotonic() + 180
        phase = None
        while time.monotonic() < deadline:
            phase = core.read_namespaced_pod("hello", "default").status.phase
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(1)
        assert phase == "Succeeded"
        assert core.read_namespaced_pod_log("hello", "default").strip() == "hello"
