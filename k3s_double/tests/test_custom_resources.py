"""CustomResourceDefinitions and custom resources, as an operator author uses them.

Every test drives the double through the official client (``CustomObjectsApi``,
``kubernetes.dynamic``, ``ApiextensionsV1Api``), and each docstring names the
Kubernetes documentation or apiextensions-apiserver behaviour it mirrors.
"""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import dynamic
from kubernetes import watch
from kubernetes.client import ApiException

from k3s_double.apiserver.server import KubeAPI
from k3s_double.controllers import start_controllers
from k3s_double.tests.conftest import wait_for


GROUP, VERSION, PLURAL = "example.com", "v1", "greetings"
CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": PLURAL,
            "singular": "greeting",
            "kind": "Greeting",
            "shortNames": ["gr"],
        },
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                    },
                },
                "additionalPrinterColumns": [
                    {"name": "Message", "type": "string", "jsonPath": ".spec.message"},
                    {"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"},
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["message"],
                                "properties": {
                                    "message": {"type": "string"},
                                    "replicas": {
                                        "type": "integer",
                                        "minimum": 0,
                                        "default": 1,
                                    },
                                    "style": {
                                        "type": "string",
                                        "enum": ["plain", "loud"],
                                        "default": "plain",
                                    },
                                    "extra": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    },
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "ready": {"type": "boolean"},
                                    "replicas": {"type": "integer"},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


def _status(info: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    """The Status body of a failed call, checked for the API server's shape."""
    body: dict[str, Any] = json.loads(info.value.body or "{}")
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == info.value.status
    return body


def _greeting(name: str, message: str = "hello", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Greeting",
        "metadata": {"name": name, "labels": {"app": "greet"}},
        "spec": {"message": message, **spec},
    }


@pytest.fixture
def controllers(api: KubeAPI) -> KubeAPI:
    start_controllers(api)
    return api


@pytest.fixture
def crds(client: k8s.ApiClient) -> Any:
    return k8s.ApiextensionsV1Api(client)


@pytest.fixture
def custom(client: k8s.ApiClient) -> Any:
    return k8s.CustomObjectsApi(client)


def _established(crds: Any, name: str) -> bool:
    crd = crds.read_custom_resource_definition(name)
    return any(
        c.type == "Established" and c.status == "True"
        for c in crd.status.conditions or []
    )


@pytest.fixture
def greetings(controllers: KubeAPI, crds: Any) -> str:
    """The Greeting CRD, created and waited for until Established."""
    crds.create_custom_resource_definition(CRD)
    wait_for(lambda: _established(crds, f"{PLURAL}.{GROUP}"))
    return f"{PLURAL}.{GROUP}"


def test_crd_is_accepted_then_established(
    controllers: KubeAPI, crds: Any, custom: Any
) -> None:
    """A new CRD gets NamesAccepted, then Established; only then is it served.

    apiextensions-apiserver's naming controller sets NamesAccepted
    (reason NoConflicts) and acceptedNames; the establishing controller then
    sets Established (InitialNamesAccepted). Until then the resource's path
    is unknown: 404 with the NotFound Status "the server could not find the
    requested resource" (kubernetes.io, "Extend the Kubernetes API with
    CustomResourceDefinitions": wait for Established before use).
    """
    with pytest.raises(ApiException) as info:
        custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert info.value.status == 404
    assert _status(info)["message"] == (
        "the server could not find the requested resource"
    )
    created = crds.create_custom_resource_definition(CRD)
    assert created.spec.names.list_kind == "GreetingList"
    assert created.spec.conversion.strategy == "None"
    wait_for(lambda: _established(crds, f"{PLURAL}.{GROUP}"))
    crd = crds.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
    conditions = {c.type: (c.status, c.reason) for c in crd.status.conditions}
    assert conditions["NamesAccepted"] == ("True", "NoConflicts")
    assert conditions["Established"] == ("True", "InitialNamesAccepted")
    assert crd.status.accepted_names.plural == PLURAL
    assert crd.status.stored_versions == [VERSION]
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert listed["kind"] == "GreetingList"
    assert listed["items"] == []


def test_crd_is_listed_and_watched(
    controllers: KubeAPI, crds: Any, client: k8s.ApiClient
) -> None:
    """CRDs are ordinary cluster-scoped objects: list and watch them.

    The watch reports ADDED for the create and MODIFIED as the controllers
    write its status (kubernetes.io API concepts, "Efficient detection of
    changes").
    """
    rv = crds.list_custom_resource_definition().metadata.resource_version
    events: list[tuple[str, str]] = []

    def follow() -> None:
        stream = watch.Watch().stream(
            crds.list_custom_resource_definition,
            resource_version=rv,
            timeout_seconds=3,
        )
        for event in stream:
            conds = event["object"].status.conditions or []
            events.append((event["type"], ",".join(c.type for c in conds)))
            if "Established" in events[-1][1]:
                break

    thread = threading.Thread(target=follow)
    thread.start()
    crds.create_custom_resource_definition(CRD)
    thread.join(timeout=10)
    assert events[0] == ("ADDED", "")
    assert events[-1] == ("MODIFIED", "NamesAccepted,Established")
    names = [c.metadata.name for c in crds.list_custom_resource_definition().items]
    assert names == [f"{PLURAL}.{GROUP}"]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            {"metadata": {"name": "wrong.example.com"}},
            "metadata.name",
            'Invalid value: "wrong.example.com": must be spec.names.plural+"."'
            "+spec.group",
        ),
        (
            {"spec": {"scope": "Everywhere"}},
            "spec.scope",
            'Unsupported value: "Everywhere": supported values: "Cluster", '
            '"Namespaced"',
        ),
        (
            {"spec": {"versions": [{"name": "v1", "served": True, "storage": False}]}},
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        ),
    ],
)
def test_invalid_crds_are_422(
    crds: Any, change: dict[str, Any], field: str, message: str
) -> None:
    """apiextensions validation rejects malformed CRDs with 422 Invalid.

    The name must be ``<plural>.<group>``, the scope Namespaced or Cluster, and
    exactly one version the storage version (apiextensions-apiserver,
    ``pkg/apis/apiextensions/validation``).
    """
    body = copy.deepcopy(CRD)
    for key, value in change.items():
        body[key].update(value)
    with pytest.raises(ApiException) as info:
        crds.create_custom_resource_definition(body)
    status = _status(info)
    assert info.value.status == 422
    assert status["reason"] == "Invalid"
    assert status["details"]["group"] == "apiextensions.k8s.io"
    assert status["details"]["kind"] == "CustomResourceDefinition"
    assert {"field": field, "message": message} in [
        {"field": c["field"], "message": c["message"]}
        for c in status["details"]["causes"]
    ]


def test_non_structural_schema_is_rejected(crds: Any) -> None:
    """v1 CRDs need structural schemas: every field has a type.

    kubernetes.io, "Specifying a structural schema": a node without ``type``
    (and without x-kubernetes-preserve-unknown-fields / int-or-string) makes
    the CRD invalid (422).
    """
    body = copy.deepcopy(CRD)
    schema = body["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"]["spec"]["properties"]["message"] = {"description": "x"}
    with pytest.raises(ApiException) as info:
        crds.create_custom_resource_definition(body)
    causes = _status(info)["details"]["causes"]
    assert causes[0]["field"] == (
        "spec.versions[0].schema.openAPIV3Schema.properties[spec]"
        ".properties[message].type"
    )


def test_discovery_lists_established_crds(
    greetings: str, client: k8s.ApiClient, api: KubeAPI
) -> None:
    """An Established CRD is in /apis, /apis/<g>/<v> and aggregated discovery.

    kubectl and client-go ask for APIGroupDiscoveryList (apidiscovery.k8s.io/v2)
    through the Accept header and fall back to the per-group documents
    (kubernetes.io API concepts, "Aggregated discovery").
    """
    groups = k8s.ApisApi(client).get_api_versions()
    assert GROUP in {g.name for g in groups.groups}
    resources = api.handle("GET", f"/apis/{GROUP}/{VERSION}", {}, b"", user="a")
    names = {r["name"] for r in json.loads(resources.body)["resources"]}
    assert names == {PLURAL, f"{PLURAL}/status", f"{PLURAL}/scale"}
    accept = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
        "application/json"
    )
    response = api.handle("GET", "/apis", {"accept": accept}, b"", user="a")
    assert response.content_type == (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    items = {i["metadata"]["name"]: i for i in json.loads(response.body)["items"]}
    (entry,) = items[GROUP]["versions"][0]["resources"]
    assert entry["resource"] == PLURAL
    assert entry["scope"] == "Namespaced"
    assert entry["shortNames"] == ["gr"]
    assert {s["subresource"] for s in entry["subresources"]} == {"status", "scale"}


def test_custom_resource_crud(greetings: str, custom: Any) -> None:
    """Create 201, get, replace, delete 200 with a Success Status, then 404.

    A stale resourceVersion on replace is 409 Conflict (API conventions,
    "Concurrency Control and Consistency"); a duplicate create is 409
    AlreadyExists; the NotFound message names ``<plural>.<group>``.
    """
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, _greeting("hi")
    )
    assert created["metadata"]["generation"] == 1
    assert created["metadata"]["uid"]
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, _greeting("hi")
        )
    assert (info.value.status, _status(info)["reason"]) == (409, "AlreadyExists")
    assert _status(info)["message"] == 'greetings.example.com "hi" already exists'
    stale = copy.deepcopy(created)
    created["spec"]["message"] = "hello again"
    replaced = custom.replace_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "hi", created
    )
    assert replaced["metadata"]["generation"] == 2
    stale["spec"]["message"] = "lost update"
    with pytest.raises(ApiException) as info:
        custom.replace_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "hi", stale
        )
    assert (info.value.status, _status(info)["reason"]) == (409, "Conflict")
    deleted = custom.delete_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "hi"
    )
    assert deleted["kind"] == "Status"
    assert deleted["status"] == "Success"
    assert deleted["details"] == {
        "name": "hi",
        "group": GROUP,
        "kind": PLURAL,
        "uid": created["metadata"]["uid"],
    }
    with pytest.raises(ApiException) as info:
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "hi")
    assert _status(info)["message"] == 'greetings.example.com "hi" not found'
    assert _status(info)["details"]["kind"] == PLURAL


def test_selectors_on_custom_resources(greetings: str, custom: Any) -> None:
    """Label selectors, and the field selectors metadata.name/metadata.namespace.

    Custom resources support only metadata.name and metadata.namespace as
    field labels (kubernetes.io, "Field Selectors"); any other is 400
    BadRequest "field label not supported".
    """
    for name, app in (("a", "one"), ("b", "two")):
        body = _greeting(name)
        body["metadata"]["labels"] = {"app": app}
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
    listed = custom.list_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, label_selector="app=two"
    )
    assert [i["metadata"]["name"] for i in listed["items"]] == ["b"]
    listed = custom.list_cluster_custom_object(
        GROUP, VERSION, PLURAL, field_selector="metadata.name=a"
    )
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    listed = custom.list_cluster_custom_object(
        GROUP, VERSION, PLURAL, field_selector="metadata.namespace=kube-system"
    )
    assert listed["items"] == []
    with pytest.raises(ApiException) as info:
        custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, field_selector="spec.message=hello"
        )
    assert info.value.status == 400
    assert _status(info)["message"] == "field label not supported: spec.message"


def test_schema_prunes_defaults_and_requires(greetings: str, custom: Any) -> None:
    """Structural schema handling on every write.

    Unknown fields are pruned (kubernetes.io, "Field pruning"), except under
    x-kubernetes-preserve-unknown-fields; ``default:`` values are filled
    ("Defaulting"); a missing required field or a wrong type is 422 Invalid
    naming the field; with fieldValidation=Strict an unknown field is 400
    "strict decoding error" (API concepts, "Field validation").
    """
    body = _greeting("g", unknown="dropped", extra={"kept": {"deep": 1}})
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, body
    )
    assert created["spec"] == {
        "message": "hello",
        "replicas": 1,
        "style": "plain",
        "extra": {"kept": {"deep": 1}},
    }
    missing = _greeting("m")
    del missing["spec"]["message"]
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, missing
        )
    status = _status(info)
    assert (info.value.status, status["reason"]) == (422, "Invalid")
    assert status["message"] == (
        'Greeting.example.com "m" is invalid: spec.message: Required value'
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldValueRequired",
            "message": "Required value",
            "field": "spec.message",
        }
    ]
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, _greeting("t", replicas="three")
        )
    assert _status(info)["details"]["causes"][0]["message"] == (
        'Invalid value: "string": spec.replicas in body must be of type integer: '
        '"string"'
    )
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, _greeting("e", style="shout")
        )
    assert _status(info)["details"]["causes"][0]["message"] == (
        'Unsupported value: "shout": supported values: "plain", "loud"'
    )
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            _greeting("s", unknown=1),
            field_validation="Strict",
        )
    assert info.value.status == 400
    assert _status(info)["message"] == (
        'strict decoding error: unknown field "spec.unknown"'
    )


def test_patch_formats_for_custom_resources(greetings: str, custom: Any) -> None:
    """JSON merge and JSON patches apply; strategic merge patches are 415.

    Custom resources have no Go struct tags, so the apiextensions-apiserver
    accepts only application/json-patch+json, application/merge-patch+json
    and application/apply-patch+yaml (kubernetes/kubernetes#53558); the
    metadata.name of an object cannot change: 400 "does not match the name on
    the URL" (apiserver patch/update handlers).
    """
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, _greeting("p")
    )
    dyn = dynamic.DynamicClient(custom.api_client)
    resource = dyn.resources.get(api_version=f"{GROUP}/{VERSION}", kind="Greeting")

    def patch(ctype: str, body: Any) -> Any:
        return resource.patch(
            body=body, name="p", namespace="default", content_type=ctype
        ).to_dict()

    merged = patch("application/merge-patch+json", {"spec": {"message": "merged"}})
    assert merged["spec"]["message"] == "merged"
    patched = patch(
        "application/json-patch+json",
        [{"op": "replace", "path": "/spec/replicas", "value": 3}],
    )
    assert patched["spec"]["replicas"] == 3
    with pytest.raises(ApiException) as info:
        patch("application/strategic-merge-patch+json", {"spec": {"message": "x"}})
    assert info.value.status == 415
    status = _status(info)
    assert status["reason"] == "UnsupportedMediaType"
    assert status["message"] == (
        "the body of the request was in an unknown format - accepted media types "
        "include: application/json-patch+json, application/merge-patch+json, "
        "application/apply-patch+yaml"
    )
    with pytest.raises(ApiException) as info:
        patch("application/merge-patch+json", {"metadata": {"name": "renamed"}})
    assert info.value.status == 400
    assert _status(info)["message"] == (
        "the name of the object (renamed) does not match the name on the URL (p)"
    )


def test_server_side_apply_with_the_dynamic_client(
    greetings: str, client: k8s.ApiClient
) -> None:
    """Server-side apply creates (201) and then updates a custom resource.

    kubernetes.io, "Server-Side Apply": a PATCH with
    application/apply-patch+yaml creates the object when absent.
    """
    dyn = dynamic.DynamicClient(client)
    resource = dyn.resources.get(api_version=f"{GROUP}/{VERSION}", kind="Greeting")
    applied = resource.server_side_apply(
        body=_greeting("ssa"), name="ssa", namespace="default", field_manager="test"
    )
    assert applied.spec.message == "hello"
    again = resource.server_side_apply(
        body=_greeting("ssa", "changed"),
        name="ssa",
        namespace="default",
        field_manager="test",
    )
    assert again.spec.message == "changed"
    assert again.metadata.generation == 2
    listed = resource.get(namespace="default", label_selector="app=greet")
    assert [i.metadata.name for i in listed.items] == ["ssa"]


def test_status_subresource(greetings: str, custom: Any) -> None:
    """With a status subresource, spec and status are written separately.

    kubernetes.io, "Status subresource": a create cannot set status; PUT/PATCH
    on the main resource ignore status changes, on /status they ignore
    everything but status; metadata.generation grows only when spec changes.
    """
    body = _greeting("s")
    body["status"] = {"ready": True}
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, body
    )
    assert "status" not in created
    created["status"] = {"ready": True}
    created["spec"]["message"] = "spec change"
    updated = custom.replace_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "s", created
    )
    assert "status" not in updated
    assert updated["metadata"]["generation"] == 2
    patched = custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "s",
        {"status": {"ready": True}, "spec": {"message": "ignored"}},
    )
    assert patched["status"] == {"ready": True}
    assert patched["spec"]["message"] == "spec change"
    assert patched["metadata"]["generation"] == 2


def test_scale_subresource(greetings: str, custom: Any) -> None:
    """The scale subresource maps autoscaling/v1 Scale onto the CRD's paths.

    kubernetes.io, "Scale subresource": specReplicasPath and
    statusReplicasPath define Scale's spec.replicas and status.replicas.
    """
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, _greeting("sc", replicas=2)
    )
    scale = custom.get_namespaced_custom_object_scale(
        GROUP, VERSION, "default", PLURAL, "sc"
    )
    assert scale["kind"] == "Scale"
    assert scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 2}
    custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, "default", PLURAL, "sc", {"spec": {"replicas": 5}}
    )
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "sc")
    assert obj["spec"]["replicas"] == 5


def test_watch_custom_resources(greetings: str, custom: Any) -> None:
    """A watch from a list's resourceVersion reports ADDED, MODIFIED, DELETED.

    kubernetes.io API concepts, "Efficient detection of changes"; the label
    selector filters the stream as it filters the list.
    """
    rv = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)[
        "metadata"
    ]["resourceVersion"]
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, _greeting("w")
    )
    other = _greeting("other")
    other["metadata"]["labels"] = {"app": "other"}
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, other)
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w", {"spec": {"message": "changed"}}
    )
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w")
    seen = []
    for event in watch.Watch().stream(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        resource_version=rv,
        label_selector="app=greet",
        timeout_seconds=1,
    ):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        assert event["object"]["apiVersion"] == f"{GROUP}/{VERSION}"
        if event["type"] == "DELETED":
            break
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def test_cluster_scoped_custom_resources(
    controllers: KubeAPI, crds: Any, custom: Any
) -> None:
    """A Cluster-scoped CRD serves its resources at /apis/<g>/<v>/<plural>/<name>.

    kubernetes.io, "Create a CustomResourceDefinition": scope Cluster means
    no namespace in the path or the object.
    """
    body = copy.deepcopy(CRD)
    body["metadata"]["name"] = f"colors.{GROUP}"
    body["spec"]["scope"] = "Cluster"
    body["spec"]["names"] = {"plural": "colors", "kind": "Color"}
    crds.create_custom_resource_definition(body)
    wait_for(lambda: _established(crds, f"colors.{GROUP}"))
    color = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Color",
        "metadata": {"name": "red", "namespace": "ignored"},
        "spec": {"message": "red"},
    }
    created = custom.create_cluster_custom_object(GROUP, VERSION, "colors", color)
    assert "namespace" not in created["metadata"]
    assert (
        custom.get_cluster_custom_object(GROUP, VERSION, "colors", "red")["spec"][
            "message"
        ]
        == "red"
    )


def test_served_versions_share_storage(
    controllers: KubeAPI, crds: Any, custom: Any
) -> None:
    """Every served version sees the same objects, in its own apiVersion.

    kubernetes.io, "Versions in CustomResourceDefinitions": with conversion
    strategy None only apiVersion changes between versions; discovery prefers
    the highest-priority version (v1 over v1beta1).
    """
    body = copy.deepcopy(CRD)
    beta = copy.deepcopy(body["spec"]["versions"][0])
    beta.update(name="v1beta1", storage=False)
    body["spec"]["versions"].append(beta)
    crds.create_custom_resource_definition(body)
    wait_for(lambda: _established(crds, f"{PLURAL}.{GROUP}"))
    custom.create_namespaced_custom_object(
        GROUP,
        "v1beta1",
        "default",
        PLURAL,
        {**_greeting("b"), "apiVersion": f"{GROUP}/v1beta1"},
    )
    read = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "b")
    assert read["apiVersion"] == f"{GROUP}/{VERSION}"
    group = k8s.ApisApi(custom.api_client).get_api_versions()
    (found,) = [g for g in group.groups if g.name == GROUP]
    assert found.preferred_version.version == "v1"
    assert [v.version for v in found.versions] == ["v1", "v1beta1"]


def test_conflicting_names_are_not_accepted(
    greetings: str, controllers: KubeAPI, crds: Any
) -> None:
    """A second CRD claiming a kind in use is NamesAccepted=False, not Established.

    apiextensions-apiserver naming controller: reason KindConflict (or
    PluralConflict), message '"<name>" is already in use'; Established
    stays False (NotAccepted).
    """
    body = copy.deepcopy(CRD)
    body["metadata"]["name"] = f"salutations.{GROUP}"
    body["spec"]["names"] = {"plural": "salutations", "kind": "Greeting"}
    crds.create_custom_resource_definition(body)

    def conditions() -> dict[str, Any]:
        crd = crds.read_custom_resource_definition(f"salutations.{GROUP}")
        return {c.type: c for c in crd.status.conditions or []}

    found = wait_for(lambda: "Established" in conditions() and conditions())
    assert (found["NamesAccepted"].status, found["NamesAccepted"].reason) == (
        "False",
        "KindConflict",
    )
    assert found["NamesAccepted"].message == '"Greeting" is already in use'
    assert (found["Established"].status, found["Established"].reason) == (
        "False",
        "NotAccepted",
    )


def test_finalizers_hold_a_custom_resource(greetings: str, custom: Any) -> None:
    """DELETE sets deletionTimestamp; the object stays until its finalizers are gone.

    kubernetes.io, "Finalizers": the API server marks the object for
    deletion (200 with the object), keeps it while metadata.finalizers is not
    empty, and rejects new finalizers on an object being deleted (422,
    "no new finalizers can be added if the object is being deleted").
    """
    body = _greeting("f")
    body["metadata"]["finalizers"] = ["example.com/cleanup"]
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, body)
    answer = custom.delete_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "f"
    )
    assert answer["kind"] == "Greeting"
    assert answer["metadata"]["deletionTimestamp"]
    again = custom.delete_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "f"
    )
    assert again["metadata"]["resourceVersion"] == answer["metadata"]["resourceVersion"]
    kept = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "f")
    assert kept["metadata"]["finalizers"] == ["example.com/cleanup"]
    with pytest.raises(ApiException) as info:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "f",
            {"metadata": {"finalizers": ["example.com/cleanup", "example.com/more"]}},
        )
    assert info.value.status == 422
    assert _status(info)["details"]["causes"][0]["field"] == "metadata.finalizers"
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "f", {"metadata": {"finalizers": None}}
    )
    with pytest.raises(ApiException) as info:
        custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "f")
    assert info.value.status == 404


def test_finalizers_hold_a_built_in_object(core: Any) -> None:
    """Finalizers work the same for built-in kinds (a ConfigMap here).

    kubernetes.io, "Finalizers" and "Using Finalizers to Control Deletion".
    """
    body = {"metadata": {"name": "held", "finalizers": ["example.com/keep"]}}
    core.create_namespaced_config_map("default", body)
    core.delete_namespaced_config_map("held", "default")
    held = core.read_namespaced_config_map("held", "default")
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map(
        "held", "default", {"metadata": {"finalizers": None}}
    )
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("held", "default")
    assert info.value.status == 404


def test_garbage_collection_follows_a_custom_resource_owner(
    greetings: str, custom: Any, core: Any, apps: Any, api: KubeAPI, node: str
) -> None:
    """Deleting a CR removes the ConfigMap and Deployment it owns, and theirs.

    kubernetes.io, "Garbage Collection": with background cascading deletion
    the owner goes at once and the garbage collector deletes dependents whose
    owners are all gone: the Deployment's ReplicaSets and their Pods follow.
    """
    owner = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, _greeting("owner")
    )
    ref = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Greeting",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "owned", "ownerReferences": [ref]}}
    )
    labels = {"app": "owned"}
    apps.create_namespaced_deployment(
        "default",
        {
            "metadata": {"name": "owned", "ownerReferences": [ref]},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]},
                },
            },
        },
    )
    wait_for(lambda: api.objects("Pod", "default"))
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "owner")
    wait_for(lambda: api.find("ConfigMap", "default", "owned") is None)
    wait_for(lambda: api.find("Deployment", "default", "owned") is None)
    wait_for(lambda: not api.objects("ReplicaSet", "default"))
    wait_for(lambda: not api.objects("Pod", "default"))


def test_deleting_a_crd_deletes_its_resources(
    greetings: str, crds: Any, custom: Any
) -> None:
    """A deleted CRD is Terminating until its custom resources are gone.

    apiextensions-apiserver: DELETE adds the
    customresourcecleanup.apiextensions.k8s.io finalizer and the Terminating
    condition; creates are refused with 405 meanwhile; the finalizer
    controller deletes every custom resource (waiting for their finalizers),
    then the CRD and its paths go away (404).
    """
    held = _greeting("held")
    held["metadata"]["finalizers"] = ["example.com/cleanup"]
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, held)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, _greeting("free")
    )
    crds.delete_custom_resource_definition(greetings)
    crd = crds.read_custom_resource_definition(greetings)
    assert "customresourcecleanup.apiextensions.k8s.io" in crd.metadata.finalizers
    terminating = [c for c in crd.status.conditions if c.type == "Terminating"]
    assert terminating[0].reason == "InstanceDeletionInProgress"
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, _greeting("late")
        )
    assert (info.value.status, _status(info)["reason"]) == (405, "MethodNotAllowed")

    def names() -> list[str]:
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
        return [i["metadata"]["name"] for i in listed["items"]]

    wait_for(lambda: names() == ["held"])
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "held", {"metadata": {"finalizers": []}}
    )

    def gone() -> bool:
        try:
            crds.read_custom_resource_definition(greetings)
        except ApiException as error:
            return bool(error.status == 404)
        return False

    wait_for(gone)
    with pytest.raises(ApiException) as info:
        custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert info.value.status == 404


def test_leases_for_leader_election(client: k8s.ApiClient) -> None:
    """Leases: create, renew, and a stale renewal is 409 Conflict.

    kubernetes.io, "Leases" (leader election through coordination.k8s.io/v1)
    and API conventions' optimistic concurrency; a non-positive
    leaseDurationSeconds is 422 (coordination validation).
    """
    leases: Any = k8s.CoordinationV1Api(client)
    body = {
        "metadata": {"name": "my-operator"},
        "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15},
    }
    created = leases.create_namespaced_lease("default", body)
    assert created.spec.holder_identity == "pod-a"
    created.spec.holder_identity = "pod-b"
    renewed = leases.replace_namespaced_lease("my-operator", "default", created)
    assert renewed.spec.holder_identity == "pod-b"
    created.spec.holder_identity = "pod-c"
    with pytest.raises(ApiException) as info:
        leases.replace_namespaced_lease("my-operator", "default", created)
    assert info.value.status == 409
    assert _status(info)["message"] == (
        'Operation cannot be fulfilled on leases.coordination.k8s.io "my-operator": '
        "the object has been modified; please apply your changes to the latest "
        "version and try again"
    )
    bad = {"metadata": {"name": "bad"}, "spec": {"leaseDurationSeconds": 0}}
    with pytest.raises(ApiException) as info:
        leases.create_namespaced_lease("default", bad)
    assert info.value.status == 422


def test_events_are_recorded_and_listed(core: Any, client: k8s.ApiClient) -> None:
    """Core v1 and events.k8s.io/v1 Events can be created and listed.

    events.k8s.io/v1 creates are validated strictly (eventTime,
    reportingController, reportingInstance, action and reason required: 422),
    core v1 ones with the legacy rules (apiserver
    ``pkg/apis/core/validation/events.go``).
    """
    core.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "e1"},
            "involvedObject": {
                "kind": "Greeting",
                "name": "hi",
                "namespace": "default",
            },
            "reason": "Greeted",
            "message": "said hello",
            "type": "Normal",
        },
    )
    listed = core.list_namespaced_event(
        "default", field_selector="involvedObject.name=hi"
    )
    assert [e.reason for e in listed.items] == ["Greeted"]
    events: Any = k8s.EventsV1Api(client)
    events.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "e2"},
            "eventTime": "2025-01-01T00:00:00.000000Z",
            "reportingController": "example.com/greeter",
            "reportingInstance": "greeter-0",
            "action": "Greet",
            "reason": "Greeted",
            "note": "said hello",
            "type": "Normal",
            "regarding": {"kind": "Greeting", "name": "hi", "namespace": "default"},
        },
    )
    assert [e.reason for e in events.list_namespaced_event("default").items] == [
        "Greeted"
    ]
    # The typed client refuses an Event without eventTime before sending it;
    # the dynamic client sends what it is given, as kubectl would.
    resource = dynamic.DynamicClient(client).resources.get(
        api_version="events.k8s.io/v1", kind="Event"
    )
    with pytest.raises(ApiException) as info:
        resource.create(
            body={"metadata": {"name": "e3"}, "reason": "x", "type": "Normal"},
            namespace="default",
        )
    assert info.value.status == 422
    fields = {c["field"] for c in _status(info)["details"]["causes"]}
    assert {"eventTime", "reportingController", "reportingInstance", "action"} <= fields


def test_kubectl_applies_crds_and_custom_resources(
    controllers: KubeAPI, kubeconfig: Path, tmp_path: Path
) -> None:
    """kubectl apply -f crd.yaml, wait for Established, then get <plural>.

    kubectl reads aggregated discovery, waits with ``--for=condition=
    Established`` and prints the CRD's additionalPrinterColumns from the
    server's Table (kubernetes.io, "Additional printer columns").
    """
    from k3s_double.tests.test_kubectl import kubectl

    crd_file = tmp_path / "crd.json"
    crd_file.write_text(json.dumps(CRD))
    assert kubectl(kubeconfig, "apply", "-f", str(crd_file)).strip() == (
        "customresourcedefinition.apiextensions.k8s.io/greetings.example.com created"
    )
    kubectl(
        kubeconfig,
        "wait",
        "--for=condition=Established",
        f"crd/{PLURAL}.{GROUP}",
        "--timeout=30s",
    )
    cr_file = tmp_path / "cr.json"
    cr_file.write_text(json.dumps(_greeting("hi", "hello world")))
    wait_for(lambda: _kubectl_ok(kubeconfig, "get", PLURAL))
    out = kubectl(kubeconfig, "apply", "-f", str(cr_file))
    assert out.strip() == "greeting.example.com/hi created"
    table = kubectl(kubeconfig, "get", PLURAL)
    header, row = table.splitlines()
    assert header.split() == ["NAME", "MESSAGE", "READY"]
    assert row.split() == ["hi", "hello", "world"]
    cr_file.write_text(json.dumps(_greeting("hi", "changed")))
    assert "configured" in kubectl(kubeconfig, "apply", "-f", str(cr_file))
    short = kubectl(kubeconfig, "get", "gr", "hi", "-o", "jsonpath={.spec.message}")
    assert short == "changed"
    kubectl(
        kubeconfig,
        "patch",
        "greeting",
        "hi",
        "--type=merge",
        "-p",
        '{"spec":{"replicas":4}}',
    )
    assert (
        kubectl(kubeconfig, "get", "greeting", "hi", "-o", "jsonpath={.spec.replicas}")
        == "4"
    )
    assert 'greeting.example.com "hi" deleted' in kubectl(
        kubeconfig, "delete", "-f", str(cr_file)
    )


def _kubectl_ok(kubeconfig: Path, *args: str) -> bool:
    import subprocess

    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.returncode == 0


def test_a_namespace_with_custom_resources_is_emptied_and_removed(
    greetings: str, custom: Any, core: Any, api: KubeAPI
) -> None:
    """Namespace deletion deletes every namespaced object in it, custom ones
    too, and the namespace goes once they are gone (namespace controller's
    deletion of all namespaced resources). Other namespaces meanwhile still
    get their default ServiceAccount."""
    core.create_namespace({"metadata": {"name": "doomed"}})
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "doomed", PLURAL, _greeting("inside")
    )
    core.delete_namespace("doomed")
    wait_for(lambda: api.find("Namespace", "", "doomed") is None, 5)
    core.create_namespace({"metadata": {"name": "after"}})
    assert wait_for(lambda: api.find("ServiceAccount", "after", "default"), 5)
