"""The KubeAPI's REST semantics, driven through the real kubernetes client."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client import ApiException

from k3s_double.apiserver.server import KubeAPI
from k3s_double.node.nodeinfo import node_object
from k3s_double.tests.conftest import wait_for


def _status(info: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(info.value.body or "{}")
    assert body["kind"] == "Status"
    assert body["code"] == info.value.status
    return body


def _cm(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data}


def test_version_is_k3s_style(client: k8s.ApiClient) -> None:
    info = k8s.VersionApi(client).get_code()
    assert info.git_version == "v1.35.5+k3s1"
    assert (info.major, info.minor) == ("1", "35")


def test_discovery_lists_the_served_groups(client: k8s.ApiClient) -> None:
    groups = k8s.ApisApi(client).get_api_versions()
    assert {g.name for g in groups.groups} == {
        "apps",
        "authorization.k8s.io",
        "batch",
        "apiextensions.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
    }
    core = k8s.CoreV1Api(client).get_api_resources()
    names = {r.name for r in core.resources}
    assert {"pods", "pods/status", "pods/log", "nodes", "namespaces", "events"} <= names
    apps = k8s.AppsV1Api(client).get_api_resources()
    assert "deployments/scale" in {r.name for r in apps.resources}


@pytest.mark.parametrize("path", ["/readyz", "/livez", "/healthz", "/readyz?verbose"])
def test_health_endpoints(api: KubeAPI, path: str) -> None:
    response = api.handle("GET", path, {}, b"", user="system:admin")
    assert response.status == 200
    assert b"ok" in response.body


def test_bootstrap_objects(core: Any, apps: Any) -> None:
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    assert core.read_namespaced_service("kubernetes", "default").spec.cluster_ip == (
        "10.43.0.1"
    )
    assert core.read_namespaced_service("kube-dns", "kube-system").spec.cluster_ip == (
        "10.43.0.10"
    )
    deployments = {
        d.metadata.name for d in apps.list_namespaced_deployment("kube-system").items
    }
    assert {
        "coredns",
        "local-path-provisioner",
        "metrics-server",
        "traefik",
    } <= deployments
    coredns = apps.read_namespaced_deployment("coredns", "kube-system")
    assert coredns.metadata.labels["k8s-app"] == "kube-dns"


def test_disabled_components_are_not_created() -> None:
    kube = KubeAPI(disable=frozenset({"coredns", "traefik", "metrics-server"}))
    names = {d["metadata"]["name"] for d in kube.objects("Deployment")}
    assert names == {"local-path-provisioner"}
    assert kube.find("Service", "kube-system", "kube-dns") is None


def test_configmap_crud_round_trip(core: Any) -> None:
    created = core.create_namespaced_config_map("default", _cm("settings", a="1"))
    assert created.metadata.uid
    assert created.metadata.namespace == "default"
    assert created.metadata.creation_timestamp is not None
    read = core.read_namespaced_config_map("settings", "default")
    assert read.data == {"a": "1"}
    read.data["b"] = "2"
    replaced = core.replace_namespaced_config_map("settings", "default", read)
    assert replaced.data == {"a": "1", "b": "2"}
    assert int(replaced.metadata.resource_version) > int(
        created.metadata.resource_version
    )
    status = core.delete_namespaced_config_map("settings", "default")
    assert status["status"] == "Success"
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("settings", "default")
    assert _status(info)["reason"] == "NotFound"
    assert _status(info)["message"] == 'configmaps "settings" not found'


def test_generate_name(core: Any) -> None:
    body = {"metadata": {"generateName": "gen-"}, "data": {}}
    first = core.create_namespaced_config_map("default", body)
    second = core.create_namespaced_config_map("default", body)
    assert first.metadata.name.startswith("gen-")
    assert len(first.metadata.name) == len("gen-") + 5
    assert first.metadata.name != second.metadata.name


def test_resource_versions_are_a_global_counter(core: Any) -> None:
    one = core.create_namespaced_config_map("default", _cm("one"))
    two = core.create_namespaced_secret("default", {"metadata": {"name": "two"}})
    assert int(two.metadata.resource_version) == int(one.metadata.resource_version) + 1
    assert two.type == "Opaque"
    listed = core.list_namespaced_config_map("default")
    assert int(listed.metadata.resource_version) >= int(two.metadata.resource_version)


def test_stale_replace_conflicts(core: Any) -> None:
    created = core.create_namespaced_config_map("default", _cm("race", a="1"))
    created.data = {"a": "2"}
    core.replace_namespaced_config_map("race", "default", created)
    created.data = {"a": "3"}
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map("race", "default", created)
    body = _status(info)
    assert (info.value.status, body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in body["message"]


def test_errors_are_status_objects(core: Any, api: KubeAPI) -> None:
    core.create_namespaced_config_map("default", _cm("dup"))
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("default", _cm("dup"))
    assert (info.value.status, _status(info)["reason"]) == (409, "AlreadyExists")
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("default", _cm("Not_Valid"))
    body = _status(info)
    assert (info.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("missing", _cm("x"))
    assert _status(info)["message"] == 'namespaces "missing" not found'
    with pytest.raises(ApiException) as info:
        core.list_namespaced_pod("default", field_selector="spec.image=x")
    assert (info.value.status, _status(info)["reason"]) == (400, "BadRequest")
    assert "field label not supported: spec.image" in _status(info)["message"]
    put = api.handle(
        "POST", "/api/v1/namespaces/default/configmaps/dup", {}, b"{}", user="u"
    )
    assert (put.status, json.loads(put.body)["reason"]) == (405, "MethodNotAllowed")
    patch = api.handle(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/dup",
        {"content-type": "application/xml"},
        b"<x/>",
        user="u",
    )
    assert (patch.status, json.loads(patch.body)["reason"]) == (
        415,
        "UnsupportedMediaType",
    )
    unknown = api.handle("GET", "/api/v1/widgets", {}, b"", user="u")
    assert unknown.status == 404


def test_invalid_objects_name_their_fields(core: Any, apps: Any, api: KubeAPI) -> None:
    empty = {"metadata": {"name": "p"}, "spec": {}}
    response = api.handle(
        "POST",
        "/api/v1/namespaces/default/pods",
        {},
        json.dumps(empty).encode(),
        user="u",
    )
    assert response.status == 422
    causes = json.loads(response.body)["details"]["causes"]
    assert causes == [
        {
            "reason": "FieldValueRequired",
            "message": "Required value",
            "field": "spec.containers",
        }
    ]
    bad = {
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"app": "a"}},
            "template": {
                "metadata": {"labels": {"app": "b"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    }
    with pytest.raises(ApiException) as info:
        apps.create_namespaced_deployment("default", bad)
    fields = [c["field"] for c in _status(info)["details"]["causes"]]
    assert fields == ["spec.template.metadata.labels"]
    with pytest.raises(ApiException) as info:
        core.create_namespaced_service(
            "default", {"metadata": {"name": "1abc"}, "spec": {"ports": [{"port": 80}]}}
        )
    assert info.value.status == 422


def test_label_selectors(core: Any) -> None:
    core.create_namespaced_config_map(
        "default", _cm("a", {"app": "web", "tier": "front"})
    )
    core.create_namespaced_config_map(
        "default", _cm("b", {"app": "web", "tier": "back"})
    )
    core.create_namespaced_config_map("default", _cm("c", {"app": "db"}))

    def names(selector: str) -> set[str]:
        items = core.list_namespaced_config_map(
            "default", label_selector=selector
        ).items
        return {i.metadata.name for i in items} - {"kube-root-ca.crt"}

    assert names("app=web") == {"a", "b"}
    assert names("app==web,tier!=back") == {"a"}
    assert names("tier in (front, back)") == {"a", "b"}
    assert names("app notin (web)") == {"c"}
    assert names("tier") == {"a", "b"}
    assert names("!tier") == {"c"}
    with pytest.raises(ApiException) as info:
        names("app in web")
    assert info.value.status == 400


def test_field_selectors(core: Any) -> None:
    core.create_namespace({"metadata": {"name": "other"}})
    core.create_namespaced_secret("default", {"metadata": {"name": "s1"}})
    core.create_namespaced_secret(
        "other", {"metadata": {"name": "s2"}, "type": "kubernetes.io/basic-auth"}
    )
    by_name = core.list_secret_for_all_namespaces(field_selector="metadata.name=s1")
    assert [s.metadata.name for s in by_name.items] == ["s1"]
    by_ns = core.list_secret_for_all_namespaces(
        field_selector="metadata.namespace=other"
    )
    assert [s.metadata.name for s in by_ns.items] == ["s2"]
    by_type = core.list_secret_for_all_namespaces(
        field_selector="type=kubernetes.io/basic-auth"
    )
    assert [s.metadata.name for s in by_type.items] == ["s2"]
    not_s1 = core.list_namespaced_secret("default", field_selector="metadata.name!=s1")
    assert "s1" not in [s.metadata.name for s in not_s1.items]


def test_patch_types(core: Any, api: KubeAPI) -> None:
    core.create_namespaced_config_map("default", _cm("p", {"keep": "1"}, a="1", b="2"))
    merged = core.patch_namespaced_config_map(
        "p", "default", {"data": {"a": None, "c": "3"}}
    )
    assert merged.data == {"b": "2", "c": "3"}
    jsonpatched = core.patch_namespaced_config_map(
        "p",
        "default",
        [
            {"op": "replace", "path": "/data/b", "value": "20"},
            {"op": "add", "path": "/metadata/labels/new", "value": "x"},
            {"op": "remove", "path": "/data/c"},
        ],
    )
    assert jsonpatched.data == {"b": "20"}
    assert jsonpatched.metadata.labels == {"keep": "1", "new": "x"}
    response = api.handle(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/p",
        {"content-type": "application/merge-patch+json"},
        b'{"metadata": {"labels": null}, "data": {"z": "26"}}',
        user="u",
    )
    assert response.status == 200
    result = json.loads(response.body)
    assert "labels" not in result["metadata"]
    assert result["data"] == {"b": "20", "z": "26"}
    failing = api.handle(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/p",
        {"content-type": "application/json-patch+json"},
        b'[{"op": "test", "path": "/data/b", "value": "nope"}]',
        user="u",
    )
    assert failing.status == 422


def _deployment(name: str, replicas: int = 1, **labels: str) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "nginx:1.25",
                            "env": [{"name": "A", "value": "1"}],
                            "ports": [{"containerPort": 80}],
                        },
                        {"name": "side", "image": "busybox:1.36"},
                    ]
                },
            },
        },
    }


def test_strategic_merge_patch_merges_lists_by_key(apps: Any) -> None:
    apps.create_namespaced_deployment("default", _deployment("smp"))
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "nginx:1.27",
                            "env": [{"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 443}],
                        }
                    ]
                }
            }
        }
    }
    patched = apps.patch_namespaced_deployment("smp", "default", patch)
    assert patched.metadata.generation == 2
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert set(containers) == {"app", "side"}
    assert containers["app"].image == "nginx:1.27"
    assert [e.name for e in containers["app"].env] == ["A", "B"]
    assert [p.container_port for p in containers["app"].ports] == [80, 443]
    delete = {"name": "A", "$patch": "delete"}
    removed = apps.patch_namespaced_deployment(
        "smp",
        "default",
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "env": [delete]}]}}
            }
        },
    )
    app = removed.spec.template.spec.containers[0]
    assert [e.name for e in app.env] == ["B"]


def test_pod_spec_is_immutable_except_images(core: Any, node: str) -> None:
    pod = {
        "metadata": {"name": "imm"},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]},
    }
    core.create_namespaced_pod("default", pod)
    patched = core.patch_namespaced_pod(
        "imm",
        "default",
        {"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}},
    )
    assert patched.spec.containers[0].image == "nginx:1.27"
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_pod(
            "imm", "default", {"spec": {"containers": [{"name": "c", "args": ["x"]}]}}
        )
    assert info.value.status == 422


def test_status_subresource_is_separate(core: Any) -> None:
    core.create_namespace({"metadata": {"name": "sub"}})
    changed = core.patch_namespace("sub", {"status": {"phase": "Terminating"}})
    assert changed.status.phase == "Active"
    via_status = core.patch_namespace_status(
        "sub", {"metadata": {"labels": {"x": "y"}}}
    )
    assert "x" not in via_status.metadata.labels


def test_watch_ends_when_the_timeout_passes(core: Any) -> None:
    # The server ends the stream itself (the client sets no read timeout);
    # how long that takes is a benchmark's business, not a test's.
    events = list(
        watch.Watch().stream(
            core.list_namespaced_config_map, "default", timeout_seconds=1
        )
    )
    assert all(e["type"] == "ADDED" for e in events)


def test_watch_reports_changes_with_selectors(core: Any) -> None:
    start = core.list_namespaced_config_map("default").metadata.resource_version
    seen: list[tuple[str, str]] = []

    def collect() -> None:
        for event in watch.Watch().stream(
            core.list_namespaced_config_map,
            "default",
            label_selector="watched=yes",
            resource_version=start,
            timeout_seconds=2,
        ):
            seen.append((event["type"], event["object"].metadata.name))

    thread = threading.Thread(target=collect)
    thread.start()
    time.sleep(0.3)
    core.create_namespaced_config_map("default", _cm("w1", {"watched": "yes"}))
    core.create_namespaced_config_map("default", _cm("w2", {"watched": "no"}))
    core.patch_namespaced_config_map("w1", "default", {"data": {"x": "1"}})
    core.patch_namespaced_config_map(
        "w2", "default", {"metadata": {"labels": {"watched": "yes"}}}
    )
    core.delete_namespaced_config_map("w1", "default")
    core.patch_namespaced_config_map(
        "w2", "default", {"metadata": {"labels": {"watched": "no"}}}
    )
    thread.join(timeout=5)
    assert seen == [
        ("ADDED", "w1"),
        ("MODIFIED", "w1"),
        ("ADDED", "w2"),
        ("DELETED", "w1"),
        ("DELETED", "w2"),
    ]


def test_delete_collection_honours_selectors(core: Any) -> None:
    for name, tier in (("d1", "x"), ("d2", "x"), ("d3", "y")):
        core.create_namespaced_config_map("default", _cm(name, {"tier": tier}))
    core.delete_collection_namespaced_config_map("default", label_selector="tier=x")
    left = {c.metadata.name for c in core.list_namespaced_config_map("default").items}
    assert "d3" in left
    assert not {"d1", "d2"} & left


def test_node_object_validates_with_the_client_models(core: Any, node: str) -> None:
    read = core.read_node(node)
    info = read.status.node_info
    assert info.kubelet_version == "v1.35.5+k3s1"
    assert info.os_image == "K3s v1.35.5+k3s1"
    assert read.spec.pod_cidr == "10.42.0.0/24"
    assert read.metadata.labels["kubernetes.io/hostname"] == node
    assert {c.type: c.status for c in read.status.conditions}["Ready"] == "True"


def test_deleting_a_protected_namespace_is_forbidden(core: Any) -> None:
    with pytest.raises(ApiException) as info:
        core.delete_namespace("kube-system")
    assert (info.value.status, _status(info)["reason"]) == (403, "Forbidden")


def test_second_node_gets_its_own_pod_cidr(core: Any, node: str) -> None:
    other = node_object("agent-1", internal_ip="172.18.0.3", labels={}, ready=True)
    created = core.create_node(other)
    assert created.spec.pod_cidr == "10.42.1.0/24"


def test_concurrent_writers_get_distinct_resource_versions(api: KubeAPI) -> None:
    versions: list[str] = []
    lock = threading.Lock()

    def write(index: int) -> None:
        body = json.dumps({"metadata": {"name": f"c{index}"}}).encode()
        response = api.handle(
            "POST", "/api/v1/namespaces/default/configmaps", {}, body, user="u"
        )
        assert response.status == 201
        with lock:
            versions.append(json.loads(response.body)["metadata"]["resourceVersion"])

    threads = [threading.Thread(target=write, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(versions)) == 40


def test_readyz_fails_until_the_storage_is_ready() -> None:
    """kube-apiserver's /readyz: 500 with per-check lines, then ok."""
    kube = KubeAPI(storage_start=0.5)
    try:
        early = kube.handle("GET", "/readyz", {}, b"", user="system:admin")
        assert early.status == 500
        lines = early.body.decode().splitlines()
        assert "[-]etcd failed: reason withheld" in lines
        assert "[-]poststarthook/rbac/bootstrap-roles failed: reason withheld" in lines
        assert "[+]ping ok" in lines
        assert lines[-1] == "readyz check failed"
        verbose = kube.handle("GET", "/readyz?verbose", {}, b"", user="system:admin")
        assert verbose.status == 500
        assert kube.handle("GET", "/livez", {}, b"", user="system:admin").status == 200

        def ready() -> bool:
            answer = kube.handle("GET", "/readyz", {}, b"", user="system:admin")
            return answer.status == 200 and answer.body == b"ok"

        wait_for(ready, 5)
    finally:
        kube.stop()


def test_a_secrets_string_data_is_folded_into_data_and_not_stored(core: Any) -> None:
    secret = {
        "metadata": {"name": "creds"},
        "data": {"user": "b2xk", "token": "eA=="},
        "stringData": {"user": "admin", "password": "s3cret"},
    }
    core.create_namespaced_secret("default", secret)
    stored = core.read_namespaced_secret("creds", "default")
    assert stored.data == {"user": "YWRtaW4=", "token": "eA==", "password": "czNjcmV0"}
    assert stored.string_data is None
