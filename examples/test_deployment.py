"""Deploy into a fresh namespace of the shared cluster and wait until it is ready."""

from __future__ import annotations

from typing import Any

from kubernetes import watch
from kubernetes.client import ApiClient
from kubernetes.client import AppsV1Api
from kubernetes.client import CoreV1Api


# The client accepts plain mappings wherever it takes a model.
DEPLOYMENT: Any = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "nginx:1.27-alpine",
                        "ports": [{"containerPort": 80}],
                    }
                ]
            },
        },
    },
}


def test_deployment_becomes_available(
    k3s_client: ApiClient, k3s_namespace: str
) -> None:
    apps = AppsV1Api(k3s_client)
    apps.create_namespaced_deployment(k3s_namespace, DEPLOYMENT)

    ready = 0
    for event in watch.Watch().stream(
        apps.list_namespaced_deployment,
        k3s_namespace,
        field_selector="metadata.name=web",
        timeout_seconds=120,
    ):
        ready = event["object"].status.ready_replicas or 0
        if ready == 2:
            break
    assert ready == 2

    pods = CoreV1Api(k3s_client).list_namespaced_pod(
        k3s_namespace, label_selector="app=web"
    )
    assert [pod.status.phase for pod in pods.items] == ["Running", "Running"]
