"""The KubeAPI driven through the real kubernetes client over plain HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client import ApiException


def test_version_is_k3s_style(client: k8s.ApiClient) -> None:
    info = k8s.VersionApi(client).get_code()
    assert info.git_version == "v1.35.5+k3s1"
    assert (info.major, info.minor) == ("1", "35")


def test_bootstrap_namespaces_and_kubernetes_service(core: Any) -> None:
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    svc = core.read_namespaced_service("kubernetes", "default")
    assert svc.spec.cluster_ip == "10.43.0.1"
    dns = core.read_namespaced_service("kube-dns", "kube-system")
    assert dns.spec.cluster_ip == "10.43.0.10"


def test_configmap_crud_round_trip(core: Any) -> None:
    body = {
        "metadata": {"name": "settings", "labels": {"app": "demo"}},
        "data": {"a": "1"},
    }
    created = core.create_namespaced_config_map("default", body)
    assert created.metadata.uid
    assert created.metadata.creation_timestamp is not None
    read = core.read_namespaced_config_map("settings", "default")
    assert read.data == {"a": "1"}
    read.data["b"] = "2"
    replaced = core.replace_namespaced_config_map("settings", "default", read)
    assert int(replaced.metadata.resource_version) > int(
        created.metadata.resource_version
    )
    core.delete_namespaced_config_map("settings", "default")
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("settings", "default")
    assert info.value.status == 404


def test_node_object_registers(core: Any, node: str) -> None:
    read = core.read_node(node)
    assert read.status.node_info.kubelet_version == "v1.35.5+k3s1"
    assert read.spec.pod_cidr == "10.42.0.0/24"
