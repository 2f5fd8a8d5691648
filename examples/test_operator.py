"""Test a small operator: a Greeting custom resource and its controller.

The controller is written here, as an operator author would write one with
the official client: it watches Greetings, gives each a ConfigMap it owns,
reports ``status.ready``, holds a finalizer until it has cleaned up, and
runs only while it holds a leader-election Lease. The tests install the
CRD with ``apply``, run the controller in a background thread, and wait
with ``wait_for``.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client import ApiClient
from kubernetes.client import CoordinationV1Api
from kubernetes.client import CoreV1Api
from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from pytest_k3s import K3sCluster


GROUP, VERSION, PLURAL = "demo.example.com", "v1", "greetings"
FINALIZER = f"{GROUP}/farewell"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": PLURAL, "singular": "greeting", "kind": "Greeting"},
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["message"],
                                "properties": {"message": {"type": "string"}},
                            },
                            "status": {
                                "type": "object",
                                "properties": {"ready": {"type": "boolean"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def greeting(name: str, message: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Greeting",
        "metadata": {"name": name},
        "spec": {"message": message},
    }


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )


class GreetingController:
    """Reconcile Greetings in one namespace while holding the leader Lease."""

    LEASE_SECONDS = 2

    def __init__(self, api: ApiClient, namespace: str, identity: str) -> None:
        self.custom = CustomObjectsApi(api)
        self.core = CoreV1Api(api)
        self.leases = CoordinationV1Api(api)
        self.namespace = namespace
        self.identity = identity
        self.farewells: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> GreetingController:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._lead():
                self._stop.wait(0.5)
                continue
            stream = watch.Watch().stream(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                timeout_seconds=1,
            )
            for event in stream:
                if self._stop.is_set():
                    break
                if event["type"] != "DELETED":
                    self._reconcile(event["object"])

    def _lead(self) -> bool:
        """Take or renew the Lease; True while this controller holds it."""
        name, spec = (
            "greeting-operator",
            {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.LEASE_SECONDS,
                "renewTime": _now(),
            },
        )
        try:
            lease: Any = self.leases.read_namespaced_lease(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body: Any = {"metadata": {"name": name}, "spec": spec}
            try:
                self.leases.create_namespaced_lease(self.namespace, body)
            except ApiException as conflict:
                if conflict.status == 409:
                    return False  # another controller took it first
                raise
            return True
        held = lease.spec.holder_identity
        renewed = lease.spec.renew_time
        age = (datetime.datetime.now(datetime.timezone.utc) - renewed).total_seconds()
        if held not in (None, self.identity) and age < self.LEASE_SECONDS:
            return False
        body = {
            "metadata": {
                "name": name,
                "resourceVersion": lease.metadata.resource_version,
            },
            "spec": spec,
        }
        try:
            self.leases.replace_namespaced_lease(name, self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False  # lost the race for it
            raise
        return True

    def _reconcile(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        name, finalizers = meta["name"], meta.get("finalizers") or []
        if meta.get("deletionTimestamp"):
            if FINALIZER in finalizers:
                if name not in self.farewells:  # events may repeat: be idempotent
                    self.farewells.append(name)  # the clean-up it waits for
                rest = [f for f in finalizers if f != FINALIZER]
                self._patch(name, {"metadata": {"finalizers": rest or None}})
            return
        if FINALIZER not in finalizers:
            self._patch(name, {"metadata": {"finalizers": [*finalizers, FINALIZER]}})
        owner = {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": name,
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        config_map: Any = {
            "metadata": {"name": f"{name}-greeting", "ownerReferences": [owner]},
            "data": {"message": obj["spec"]["message"]},
        }
        try:
            self.core.create_namespaced_config_map(self.namespace, config_map)
        except ApiException as exc:
            if exc.status != 409:
                raise
        if not (obj.get("status") or {}).get("ready"):
            self.custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                {"status": {"ready": True}},
            )

    def _patch(self, name: str, body: dict[str, Any]) -> None:
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, body
            )
        except ApiException as exc:
            if exc.status != 404:  # gone meanwhile: a repeated event
                raise


@pytest.fixture(scope="module")
def greetings_crd(k3s_session_cluster: K3sCluster) -> None:
    # apply() waits until the CRD is Established before it returns.
    k3s_session_cluster.apply(CRD)


@pytest.fixture
def operator(
    greetings_crd: None, k3s_client: ApiClient, k3s_namespace: str
) -> Iterator[GreetingController]:
    controller = GreetingController(k3s_client, k3s_namespace, "operator-a").start()
    yield controller
    controller.stop()


def test_a_greeting_gets_its_config_map_and_status(
    operator: GreetingController, k3s_cluster: K3sCluster, k3s_namespace: str
) -> None:
    k3s_cluster.apply(greeting("hello", "Hello, world"), namespace=k3s_namespace)
    k3s_cluster.wait_for(
        "greetings", "hello", namespace=k3s_namespace, jsonpath="{.status.ready}=true"
    )
    config: Any = CoreV1Api(k3s_cluster.api_client).read_namespaced_config_map(
        "hello-greeting", k3s_namespace
    )
    assert config.data == {"message": "Hello, world"}
    assert config.metadata.owner_references[0].kind == "Greeting"


def test_deleting_a_greeting_collects_its_config_map(
    operator: GreetingController, k3s_cluster: K3sCluster, k3s_namespace: str
) -> None:
    k3s_cluster.apply(greeting("bye", "Goodbye"), namespace=k3s_namespace)
    k3s_cluster.wait_for(
        "ConfigMap", "bye-greeting", namespace=k3s_namespace, jsonpath="{.data.message}"
    )
    CustomObjectsApi(k3s_cluster.api_client).delete_namespaced_custom_object(
        GROUP, VERSION, k3s_namespace, PLURAL, "bye"
    )
    k3s_cluster.wait_for("greeting", "bye", namespace=k3s_namespace, delete=True)
    k3s_cluster.wait_for(
        "configmaps", "bye-greeting", namespace=k3s_namespace, delete=True
    )
    assert operator.farewells == ["bye"]


def test_a_finalizer_holds_deletion_until_the_controller_is_back(
    operator: GreetingController, k3s_cluster: K3sCluster, k3s_namespace: str
) -> None:
    k3s_cluster.apply(greeting("held", "Wait for me"), namespace=k3s_namespace)
    k3s_cluster.wait_for(
        "greetings", "held", namespace=k3s_namespace, jsonpath="{.status.ready}=true"
    )
    operator.stop()
    custom = CustomObjectsApi(k3s_cluster.api_client)
    custom.delete_namespaced_custom_object(
        GROUP, VERSION, k3s_namespace, PLURAL, "held"
    )
    pending = k3s_cluster.wait_for(
        "greetings",
        "held",
        namespace=k3s_namespace,
        jsonpath="{.metadata.deletionTimestamp}",
    )
    assert pending is not None
    assert pending["metadata"]["finalizers"] == [FINALIZER], "kept by the finalizer"
    successor = GreetingController(k3s_cluster.api_client, k3s_namespace, "operator-b")
    successor.start()
    try:
        k3s_cluster.wait_for("greetings", "held", namespace=k3s_namespace, delete=True)
    finally:
        successor.stop()
    assert successor.farewells == ["held"]


def test_a_restarted_controller_takes_over_the_lease(
    operator: GreetingController, k3s_cluster: K3sCluster, k3s_namespace: str
) -> None:
    k3s_cluster.wait_for(
        "leases.coordination.k8s.io",
        "greeting-operator",
        namespace=k3s_namespace,
        jsonpath="{.spec.holderIdentity}=operator-a",
    )
    operator.stop()  # crashes, as far as the Lease can tell: it is not released
    successor = GreetingController(k3s_cluster.api_client, k3s_namespace, "operator-b")
    successor.start()
    try:
        k3s_cluster.wait_for(
            "leases",
            "greeting-operator",
            namespace=k3s_namespace,
            jsonpath="{.spec.holderIdentity}=operator-b",
            timeout=30,
        )
        k3s_cluster.apply(greeting("later", "Still here"), namespace=k3s_namespace)
        k3s_cluster.wait_for(
            "greetings",
            "later",
            namespace=k3s_namespace,
            jsonpath="{.status.ready}=true",
        )
    finally:
        successor.stop()
