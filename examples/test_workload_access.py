"""Reach what you deployed: a port-forward to its Service, exec, and its logs.

``port_forward`` listens on a free local port for the ``with`` block and
resolves the Service to a ready pod (again for every connection), so the
test talks to the workload as a user would, without kubectl.
"""

from __future__ import annotations

import urllib.request
from typing import Any

from kubernetes.client import CoreV1Api

from pytest_k3s import K3sCluster


def web(port: int) -> list[dict[str, Any]]:
    """A Deployment serving HTTP on ``port`` (named ``http``) and its Service."""
    labels = {"app": f"web-{port}"}
    container = {
        "name": "web",
        "image": "python:3.12-slim",
        "command": ["sh", "-c", f"echo serving; exec python3 -m http.server {port}"],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [container]},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {
                "selector": labels,
                "ports": [{"name": "front", "port": 80, "targetPort": "http"}],
            },
        },
    ]


def test_the_service_answers_through_a_port_forward(
    k3s_cluster: K3sCluster, k3s_namespace: str
) -> None:
    k3s_cluster.apply(web(8080), namespace=k3s_namespace)
    k3s_cluster.wait_for(
        "Deployment", "web", namespace=k3s_namespace, condition="Available"
    )
    with (
        k3s_cluster.port_forward("svc/web", "front", namespace=k3s_namespace) as fwd,
        urllib.request.urlopen(fwd.url, timeout=10) as reply,
    ):
        assert reply.status == 200


def test_exec_and_logs_of_the_pod(k3s_cluster: K3sCluster, k3s_namespace: str) -> None:
    # Another port than the test above: the two may share a node.
    k3s_cluster.apply(web(8081), namespace=k3s_namespace)
    k3s_cluster.wait_for(
        "Deployment", "web", namespace=k3s_namespace, condition="Available"
    )
    (pod,) = CoreV1Api(k3s_cluster.api_client).list_namespaced_pod(k3s_namespace).items
    name = str(pod.metadata.name)
    done = k3s_cluster.exec(
        name, ["sh", "-c", "echo hi; exit 2"], namespace=k3s_namespace
    )
    assert (done.returncode, done.stdout) == (2, "hi\n")
    assert "serving" in k3s_cluster.pod_logs(name, namespace=k3s_namespace)
