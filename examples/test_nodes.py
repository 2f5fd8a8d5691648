"""Ask for a topology with the k3s marker; tests asking for it share one cluster."""

from __future__ import annotations

import pytest
from kubernetes.client import CoreV1Api
from kubernetes.client import V1Node

from pytest_k3s import K3sCluster


pytestmark = pytest.mark.k3s(agents=2)


def roles(node: V1Node) -> set[str]:
    labels = node.metadata.labels or {}
    prefix = "node-role.kubernetes.io/"
    return {key.removeprefix(prefix) for key in labels if key.startswith(prefix)}


def test_one_server_and_two_agents_are_ready(k3s_cluster: K3sCluster) -> None:
    nodes = CoreV1Api(k3s_cluster.api_client).list_node().items
    ready = [
        node
        for node in nodes
        if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    ]
    assert len(ready) == 3
    assert sum("control-plane" in roles(node) for node in ready) == 1


def test_kubectl_sees_the_same_nodes(k3s_cluster: K3sCluster) -> None:
    names = k3s_cluster.kubectl("get", "nodes", "-o", "name").split()
    assert sorted(names) == sorted(f"node/{node.name}" for node in k3s_cluster.nodes)
