"""apply and wait_for: manifests in every form, conditions, jsonpath, deletion."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SHARED_CLUSTERS
from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s import K3sError
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.errors import WaitTimeoutError
from pytest_k3s.kube.objects import _check
from pytest_k3s.kube.objects import load


CONFIG_MAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {colour: blue}
"""
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx:1.27}]
"""


# --- pure ---------------------------------------------------------------------


def test_load_reads_files_folders_text_dicts_and_lists(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(DEPLOYMENT)
    (tmp_path / "a.yaml").write_text(CONFIG_MAP + "---\n" + CONFIG_MAP)
    (tmp_path / "notes.txt").write_text("not a manifest")
    assert [o["kind"] for o in load(tmp_path)] == [
        "ConfigMap",
        "ConfigMap",
        "Deployment",
    ]
    assert [o["kind"] for o in load(tmp_path / "b.yaml")] == ["Deployment"]
    assert [o["kind"] for o in load(str(tmp_path / "b.yaml"))] == ["Deployment"]
    assert load(CONFIG_MAP)[0]["data"] == {"colour": "blue"}
    listed = {"apiVersion": "v1", "kind": "List", "items": [load(CONFIG_MAP)[0]]}
    assert [o["kind"] for o in load(listed)] == ["ConfigMap"]
    original = load(CONFIG_MAP)[0]
    copy = load([original])[0]
    copy["data"]["colour"] = "red"
    assert original["data"]["colour"] == "blue", "callers' dicts are never changed"


@pytest.mark.parametrize(
    ("manifests", "message"),
    [
        ("just: text\n", "not a Kubernetes object"),
        ([{"metadata": {}}], "not a Kubernetes object"),
        (Path("/nonexistent/manifests"), "no manifest file or folder"),
    ],
)
def test_load_names_what_is_wrong(manifests: object, message: str) -> None:
    with pytest.raises(K3sError, match=message):
        load(manifests)  # type: ignore[arg-type]


def test_conditions_and_jsonpath_in_kubectl_wait_form() -> None:
    pod = {
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"ready": True, "restartCount": 0}],
        }
    }
    assert _check("Ready", None, False)(pod)
    assert _check("ready=True", None, False)(pod)
    assert not _check("Ready=False", None, False)(pod)
    assert not _check("Ready", None, False)(None)
    assert _check(None, "{.status.phase}=Running", False)(pod)
    assert not _check(None, "{.status.phase}=Pending", False)(pod)
    assert _check(None, "{.status.containerStatuses[0].ready}=true", False)(pod)
    assert _check(None, "{.status.containerStatuses[0].restartCount}=0", False)(pod)
    assert _check(None, "{.status.phase}", False)(pod)
    assert not _check(None, "{.status.missing[3]}", False)(pod)
    assert _check(None, None, True)(None)
    with pytest.raises(K3sError, match="is not of the form"):
        _check(None, ".status.phase=Running", False)


# --- against the double -----------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(double_image: str, docker_engine: DockerEngine) -> Iterator[K3sCluster]:
    spec = ClusterSpec(image=double_image, wait_for_coredns=False)
    with K3sCluster.start(spec, engine=docker_engine) as started:
        SHARED_CLUSTERS.add(started.name)
        yield started


@pytest.mark.docker
def test_apply_is_server_side_and_idempotent(
    cluster: K3sCluster, tmp_path: Path
) -> None:
    namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: apply-1}\n"
    (tmp_path / "m.yaml").write_text(f"{CONFIG_MAP}---\n{DEPLOYMENT}---\n{namespace}")
    applied = cluster.apply(tmp_path / "m.yaml", namespace="apply-1")
    assert [(o["kind"], o["metadata"].get("namespace")) for o in applied] == [
        ("Namespace", None),
        ("ConfigMap", "apply-1"),
        ("Deployment", "apply-1"),
    ], "namespaces go first, then the rest in order"
    applied = applied[1:]
    again = cluster.apply(CONFIG_MAP, namespace="apply-1")
    assert (
        again[0]["metadata"]["resourceVersion"]
        == (applied[0]["metadata"]["resourceVersion"])
    ), "re-applying the same manifest changes nothing"
    changed = load(CONFIG_MAP)[0]
    changed["data"]["colour"] = "red"
    assert cluster.apply(changed, namespace="apply-1")[0]["data"]["colour"] == "red"


@pytest.mark.docker
def test_apply_refuses_another_namespace_and_unknown_kinds(cluster: K3sCluster) -> None:
    other = load(CONFIG_MAP)[0]
    other["metadata"]["namespace"] = "elsewhere"
    with pytest.raises(K3sError, match="names namespace 'elsewhere'"):
        cluster.apply(other, namespace="default")
    unknown = {
        "apiVersion": "example.com/v1",
        "kind": "Gadget",
        "metadata": {"name": "g"},
    }
    with pytest.raises(K3sError, match=r"serves no Gadget in example\.com/v1"):
        cluster.apply(unknown)


@pytest.mark.docker
def test_wait_for_conditions_jsonpath_and_deletion(cluster: K3sCluster) -> None:
    cluster.apply(DEPLOYMENT + "---\n" + CONFIG_MAP, namespace="default")
    ready = cluster.wait_for("deployments.apps", "web", condition="Available")
    assert ready is not None
    assert ready["status"]["availableReplicas"] == 2
    found = cluster.wait_for("deploy", "web", jsonpath="{.status.replicas}=2")
    assert found is not None
    cluster.kubectl("delete", "configmap", "settings")
    assert cluster.wait_for("configmaps", "settings", delete=True) is None
    assert cluster.wait_for("Namespace", "default", jsonpath="{.status.phase}=Active")


@pytest.mark.docker
def test_wait_for_timeout_shows_the_last_status_and_events(cluster: K3sCluster) -> None:
    cluster.apply(DEPLOYMENT, namespace="default")
    with pytest.raises(WaitTimeoutError) as failure:
        cluster.wait_for("Deployment", "web", condition="Progressing=False", timeout=2)
    message = str(failure.value)
    assert message.startswith(
        "Deployment web did not reach Progressing=False within 2s"
    )
    assert "last status:" in message
    assert "type: Available" in message
    with pytest.raises(K3sError, match="serves no kind 'gizmos'"):
        cluster.wait_for("gizmos", "x", condition="Ready")
    with pytest.raises(K3sError, match="takes one of"):
        cluster.wait_for("Deployment", "web")
