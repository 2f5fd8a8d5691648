"""Stop a node and watch the control plane move its pods, on a module's own cluster.

Node failures change what every user of a cluster sees, so these tests use
``k3s_module_cluster``: a cluster of this module alone, removed when the
module ends. A shorter node-monitor grace period and a short toleration of
the unreachable taint make the control plane react in seconds, not minutes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes.client import CoreV1Api

from pytest_k3s import K3sCluster


pytestmark = pytest.mark.k3s(
    agents=2,
    server_args=["--kube-controller-manager-arg=node-monitor-grace-period=10s"],
)

NAMESPACE = "failover"
MANIFESTS: Any = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    # Leave an unreachable node after 2 s instead of 300 s.
                    "tolerations": [
                        {
                            "key": "node.kubernetes.io/unreachable",
                            "operator": "Exists",
                            "effect": "NoExecute",
                            "tolerationSeconds": 2,
                        }
                    ],
                    "containers": [{"name": "web", "image": "nginx:1.27-alpine"}],
                },
            },
        },
    },
]


def running_pods(cluster: K3sCluster) -> dict[str, str]:
    """Running, not terminating pods of the Deployment: name -> node."""
    pods: Any = CoreV1Api(cluster.api_client).list_namespaced_pod(
        NAMESPACE, label_selector="app=web"
    )
    return {
        pod.metadata.name: pod.spec.node_name
        for pod in pods.items
        if pod.status.phase == "Running" and not pod.metadata.deletion_timestamp
    }


def test_pods_leave_a_stopped_node_and_it_comes_back(
    k3s_module_cluster: K3sCluster,
) -> None:
    cluster = k3s_module_cluster
    cluster.apply(MANIFESTS, namespace=NAMESPACE)
    cluster.wait_for("deploy", "web", namespace=NAMESPACE, condition="Available")
    cluster.wait_for(
        "deploy", "web", namespace=NAMESPACE, jsonpath="{.status.readyReplicas}=3"
    )
    victim = sorted(set(running_pods(cluster).values()) - {cluster.servers[0].name})[0]

    cluster.stop_node(victim)
    cluster.wait_for("node", victim, condition="Ready=Unknown", timeout=60)
    # Its pods are evicted once their 2 s toleration runs out; the ReplicaSet
    # replaces them on the nodes that are left.
    deadline = time.monotonic() + 120
    while True:
        placed = running_pods(cluster)
        if len(placed) == 3 and victim not in placed.values():
            break
        assert time.monotonic() < deadline, f"pods still on {victim}: {placed}"
        time.sleep(0.5)
    cluster.wait_for(
        "deploy", "web", namespace=NAMESPACE, jsonpath="{.status.readyReplicas}=3"
    )

    cluster.start_node(victim)
    cluster.wait_for("node", victim, condition="Ready")
