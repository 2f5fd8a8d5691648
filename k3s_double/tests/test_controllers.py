"""Controllers of the KubeAPI: what makes objects come alive."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client import ApiException

from k3s_double.apiserver.server import KubeAPI
from k3s_double.controllers import Controllers
from k3s_double.controllers import start_controllers
from k3s_double.tests.conftest import wait_for

from .test_kubeapi import _deployment


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    containers = [{"name": "app", "image": "nginx:1.27"}]
    return {"metadata": {"name": name}, "spec": {"containers": containers, **spec}}


def _reasons(core: Any, name: str) -> list[str]:
    events = core.list_namespaced_event(
        "default", field_selector=f"involvedObject.name={name}"
    )
    return [e.reason for e in events.items]


def test_new_namespace_gets_default_service_account_shortly_after(
    api: KubeAPI, core: Any
) -> None:
    start_controllers(api)
    core.create_namespace({"metadata": {"name": "fresh"}})
    assert api.find("ServiceAccount", "fresh", "default") is None
    with pytest.raises(ApiException) as info:
        core.create_namespaced_pod("fresh", _pod("early"))
    assert info.value.status == 403
    assert (
        'serviceaccount "default" not found'
        in json.loads(info.value.body or "{}")["message"]
    )
    account = wait_for(lambda: api.find("ServiceAccount", "fresh", "default"), 3)
    assert account["metadata"]["namespace"] == "fresh"
    assert wait_for(lambda: api.find("ConfigMap", "fresh", "kube-root-ca.crt"), 3)


def test_pod_is_scheduled_and_becomes_ready(core: Any, node: str) -> None:
    core.create_namespaced_pod("default", _pod("runner"))

    def running() -> Any:
        pod = core.read_namespaced_pod("runner", "default")
        return pod if pod.status.phase == "Running" else None

    pod = wait_for(running, 5)
    assert pod.spec.node_name == node
    assert pod.status.host_ip == "172.18.0.2"
    assert pod.status.pod_ip.startswith("10.42.0.")
    assert pod.status.container_statuses[0].ready is True
    conditions = {c.type: c.status for c in pod.status.conditions}
    assert conditions["Ready"] == "True"
    assert conditions["PodScheduled"] == "True"
    # The node lacked nginx:1.27, so its kubelet pulled it first.
    assert _reasons(core, "runner") == [
        "Scheduled",
        "Pulling",
        "Pulled",
        "Created",
        "Started",
        "DoubleSimulated",  # the pull
        "DoubleSimulated",  # the container
    ]
    by_phase = core.list_namespaced_pod(
        "default", field_selector="status.phase=Running"
    )
    assert "runner" in [p.metadata.name for p in by_phase.items]
    by_node = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}")
    assert "runner" in [p.metadata.name for p in by_node.items]
    log = core.read_namespaced_pod_log("runner", "default")
    assert "nginx:1.27" in log


def test_pod_without_a_fitting_node_stays_pending(core: Any, node: str) -> None:
    core.create_namespaced_pod("default", _pod("picky", nodeSelector={"disk": "ssd"}))
    wait_for(lambda: "FailedScheduling" in _reasons(core, "picky"), 5)
    pod = core.read_namespaced_pod("picky", "default")
    assert pod.status.phase == "Pending"
    scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")
    assert "didn't match Pod's node affinity/selector" in scheduled.message


def test_taints_need_tolerations(core: Any, node: str) -> None:
    taint = {"key": "dedicated", "value": "db", "effect": "NoSchedule"}
    core.patch_node(node, {"spec": {"taints": [taint]}})
    core.create_namespaced_pod("default", _pod("plain"))
    toleration = {
        "key": "dedicated",
        "operator": "Equal",
        "value": "db",
        "effect": "NoSchedule",
    }
    core.create_namespaced_pod("default", _pod("tolerant", tolerations=[toleration]))
    wait_for(
        lambda: (
            core.read_namespaced_pod("tolerant", "default").status.phase == "Running"
        ),
        5,
    )
    plain = core.read_namespaced_pod("plain", "default")
    assert plain.spec.node_name is None
    assert "untolerated taint {dedicated: db}" in plain.status.conditions[0].message


def test_deployment_with_two_replicas_becomes_ready(
    core: Any, apps: Any, node: str
) -> None:
    apps.create_namespaced_deployment("default", _deployment("web", replicas=2))

    def ready() -> Any:
        d = apps.read_namespaced_deployment("web", "default")
        return d if d.status.ready_replicas == 2 else None

    deployment = wait_for(ready, 10)
    assert deployment.status.available_replicas == 2
    assert deployment.status.updated_replicas == 2
    assert deployment.status.observed_generation == 1
    conditions = {c.type: (c.status, c.reason) for c in deployment.status.conditions}
    assert conditions["Available"] == ("True", "MinimumReplicasAvailable")
    assert conditions["Progressing"] == ("True", "NewReplicaSetAvailable")
    pods = core.list_namespaced_pod("default", label_selector="app=web").items
    assert len(pods) == 2
    assert {p.status.phase for p in pods} == {"Running"}
    replicasets = apps.list_namespaced_replica_set("default", label_selector="app=web")
    assert len(replicasets.items) == 1
    assert (
        pods[0].metadata.owner_references[0].name == replicasets.items[0].metadata.name
    )


def test_deployment_scales_and_rolls_out(core: Any, apps: Any, node: str) -> None:
    apps.create_namespaced_deployment("default", _deployment("roll", replicas=1))
    wait_for(
        lambda: (
            apps.read_namespaced_deployment("roll", "default").status.ready_replicas
            == 1
        )
    )
    apps.patch_namespaced_deployment_scale("roll", "default", {"spec": {"replicas": 3}})
    wait_for(
        lambda: (
            apps.read_namespaced_deployment("roll", "default").status.ready_replicas
            == 3
        )
    )
    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "app", "image": "nginx:1.28"}]}
            }
        }
    }
    apps.patch_namespaced_deployment("roll", "default", patch)

    def rolled() -> bool:
        d = apps.read_namespaced_deployment("roll", "default")
        pods = core.list_namespaced_pod("default", label_selector="app=roll").items
        images = {
            p.spec.containers[0].image
            for p in pods
            if not p.metadata.deletion_timestamp
        }
        return (
            d.status.observed_generation == 3
            and d.status.updated_replicas == 3
            and d.status.available_replicas == 3
            and d.status.replicas == 3
            and images == {"nginx:1.28"}
        )

    wait_for(rolled, 15)
    sets = apps.list_namespaced_replica_set("default", label_selector="app=roll").items
    assert sorted(rs.spec.replicas for rs in sets) == [0, 3]
    apps.patch_namespaced_deployment("roll", "default", {"spec": {"replicas": 1}})
    wait_for(
        lambda: (
            len(core.list_namespaced_pod("default", label_selector="app=roll").items)
            == 1
        ),
        10,
    )


def test_coredns_becomes_available_once_a_node_is_ready(
    api: KubeAPI, apps: Any, core: Any
) -> None:
    start_controllers(api)
    wait_for(lambda: api.find("ServiceAccount", "default", "default"), 3)
    coredns = apps.read_namespaced_deployment("coredns", "kube-system")
    assert not coredns.status.available_replicas
    from k3s_double.node.nodeinfo import node_object

    core.create_node(
        node_object("late-node", internal_ip="172.18.0.9", labels={}, ready=True)
    )

    def available() -> bool:
        d = apps.read_namespaced_deployment("coredns", "kube-system")
        return any(
            c.type == "Available" and c.status == "True"
            for c in d.status.conditions or []
        )

    wait_for(available, 10)
    pods = core.list_namespaced_pod("kube-system", label_selector="k8s-app=kube-dns")
    assert [p.spec.node_name for p in pods.items] == ["late-node"]


def test_namespace_deletion_cascades(
    api: KubeAPI, core: Any, apps: Any, node: str
) -> None:
    core.create_namespace({"metadata": {"name": "doomed"}})
    wait_for(lambda: api.find("ServiceAccount", "doomed", "default"))
    core.create_namespaced_config_map("doomed", {"metadata": {"name": "c"}})
    apps.create_namespaced_deployment("doomed", _deployment("d", replicas=1))
    wait_for(lambda: core.list_namespaced_pod("doomed").items)
    core.delete_namespace("doomed")
    terminating = core.read_namespace("doomed")
    assert terminating.status.phase == "Terminating"
    assert terminating.metadata.deletion_timestamp is not None
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("doomed", {"metadata": {"name": "late"}})
    assert info.value.status == 403

    def gone() -> bool:
        try:
            core.read_namespace("doomed")
        except ApiException as error:
            return bool(error.status == 404)
        return False

    wait_for(gone, 10)
    assert not any(
        obj["metadata"].get("namespace") == "doomed"
        for _, obj in api.store.all_objects()
    )


def test_job_pods_succeed_and_job_completes(client: Any, node: str) -> None:
    from kubernetes import client as k8s

    batch: Any = k8s.BatchV1Api(client)
    job = {
        "metadata": {"name": "once"},
        "spec": {
            "completions": 2,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox:1.36"}],
                }
            },
        },
    }
    batch.create_namespaced_job("default", job)

    def complete() -> bool:
        status = batch.read_namespaced_job("once", "default").status
        return any(
            c.type == "Complete" and c.status == "True" for c in status.conditions or []
        )

    wait_for(complete, 10)
    assert batch.read_namespaced_job("once", "default").status.succeeded == 2


def test_node_turns_unknown_without_heartbeats(
    api: KubeAPI,
    core: Any,
    node: str,
    control_loop: Controllers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(control_loop.settings, "node_grace", 0.5)

    def ready_status() -> str:
        read = core.read_node(node)
        return str(next(c.status for c in read.status.conditions if c.type == "Ready"))

    wait_for(lambda: ready_status() == "Unknown", 5)
    taints = {t.key for t in core.read_node(node).spec.taints}
    assert "node.kubernetes.io/unreachable" in taints
    beat = {
        "type": "Ready",
        "status": "True",
        "lastHeartbeatTime": "2030-01-01T00:00:00Z",
    }
    core.patch_node_status(node, {"status": {"conditions": [beat]}})
    wait_for(lambda: not core.read_node(node).spec.taints, 5)
    assert ready_status() == "True"


def test_pods_on_an_unreachable_node_are_evicted_after_their_toleration(
    api: KubeAPI,
    core: Any,
    node: str,
    control_loop: Controllers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The taint manager deletes pods of a NoExecute-tainted node once their
    tolerationSeconds run out (at once without a matching toleration), and a
    pod whose kubelet is unreachable stays Terminating (kube-controller-manager
    taint_eviction.go; kubelet owns the final removal)."""
    default = _pod("default-toleration")
    brief = _pod(
        "brief",
        tolerations=[
            {
                "key": "node.kubernetes.io/unreachable",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 1,
            }
        ],
    )
    for pod in (default, brief):
        core.create_namespaced_pod("default", pod)
    wait_for(
        lambda: all(
            core.read_namespaced_pod(n, "default").status.phase == "Running"
            for n in ("default-toleration", "brief")
        ),
        5,
    )
    tolerations = core.read_namespaced_pod("default-toleration", "default").spec
    assert {(t.key, t.toleration_seconds) for t in tolerations.tolerations} >= {
        ("node.kubernetes.io/unreachable", 300)
    }
    monkeypatch.setattr(control_loop.settings, "node_grace", 0.3)
    wait_for(
        lambda: (
            core.read_namespaced_pod("brief", "default").metadata.deletion_timestamp
        ),
        6,
    )
    assert "TaintManagerEviction" in _reasons(core, "brief")
    kept = core.read_namespaced_pod("default-toleration", "default")
    assert kept.metadata.deletion_timestamp is None, "300 s have not passed"

    # The kubelet controller has seen "brief" on its unreachable node (it
    # marked it unready), and then made full passes (two namespaces got their
    # ServiceAccount one after the other): still the pod is not removed.
    def unready() -> bool:
        pod = api.find("Pod", "default", "brief") or {}
        conditions = pod.get("status", {}).get("conditions") or []
        return {"type": "Ready", "status": "False"}.items() <= next(
            (c for c in conditions if c["type"] == "Ready"), {}
        ).items()

    wait_for(unready, 5)
    for marker in ("later-1", "later-2"):
        core.create_namespace({"metadata": {"name": marker}})
        wait_for(functools.partial(api.find, "ServiceAccount", marker, "default"), 5)
    assert core.read_namespaced_pod("brief", "default"), "Terminating: kubelet is gone"


def _simulated(api: KubeAPI, name: str) -> list[str]:
    return [
        e["message"]
        for e in api.objects("Event", "default")
        if e["involvedObject"]["name"] == name and e["reason"] == "DoubleSimulated"
    ]


def test_every_canned_answer_says_so_in_an_event(
    api: KubeAPI, core: Any, client: k8s.ApiClient, node: str
) -> None:
    """Containers not run, Job exits, logs and pulls are simulated: Events say so."""
    batch: Any = k8s.BatchV1Api(client)
    core.create_namespaced_pod("default", _pod("canned"))
    wait_for(
        lambda: core.read_namespaced_pod("canned", "default").status.phase == "Running"
    )
    messages = _simulated(api, "canned")
    assert any(m.startswith("pull simulated:") for m in messages), messages
    assert any(
        m.startswith("container not run: the k3s double simulates a running container")
        for m in messages
    ), messages
    events = core.list_namespaced_event(
        "default", field_selector="involvedObject.name=canned"
    ).items
    simulated = [e for e in events if e.reason == "DoubleSimulated"]
    assert {e.type for e in simulated} == {"Normal"}
    assert not any(m.startswith("log lines are canned") for m in messages)
    core.read_namespaced_pod_log("canned", "default")
    assert any(m.startswith("log lines are canned") for m in _simulated(api, "canned"))
    batch.create_namespaced_job(
        "default",
        {
            "metadata": {"name": "exits"},
            "spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox:1.36"}],
            }}},
        },
    )  # fmt: skip

    def exited() -> list[str]:
        pods = [
            p
            for p in api.objects("Pod", "default")
            if p["metadata"].get("labels", {}).get("job-name") == "exits"
        ]
        return [
            m
            for p in pods
            for m in _simulated(api, p["metadata"]["name"])
            if m.startswith("exit simulated:")
        ]

    assert wait_for(exited, 10)
