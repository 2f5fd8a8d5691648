"""OpenAPI v3 documents and strict field validation of built-in kinds."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from kubernetes import client as k8s

from k3s_double.apiserver import typeschemas
from k3s_double.apiserver.kinds import BY_KIND
from k3s_double.apiserver.kinds import KINDS
from k3s_double.apiserver.server import KubeAPI
from k3s_double.tests.conftest import wait_for


def _get(api: KubeAPI, target: str) -> tuple[int, bytes]:
    reply = api.handle("GET", target, {}, b"", user="system:admin")
    return reply.status, reply.body


def _document(api: KubeAPI, prefix: str) -> dict[str, Any]:
    status, body = _get(api, f"/openapi/v3/{prefix}")
    assert status == 200
    document: dict[str, Any] = json.loads(body)
    return document


def test_the_index_names_every_document_with_its_hash(api: KubeAPI) -> None:
    status, body = _get(api, "/openapi/v3")
    assert status == 200
    paths = json.loads(body)["paths"]
    assert set(paths) == {
        "api/v1",
        "apis/apps/v1",
        "apis/batch/v1",
        "apis/apiextensions.k8s.io/v1",
        "apis/coordination.k8s.io/v1",
        "apis/events.k8s.io/v1",
        "apis/authorization.k8s.io/v1",
    }
    for prefix, entry in paths.items():
        url = entry["serverRelativeURL"]
        path, _, digest = url.partition("?hash=")
        assert path == f"/openapi/v3/{prefix}"
        status, document = _get(api, url)
        assert status == 200
        assert digest == hashlib.sha512(document).hexdigest().upper()


def test_an_unserved_group_version_has_no_document(api: KubeAPI) -> None:
    assert _get(api, "/openapi/v3/apis/apps/v1beta1")[0] == 404
    assert _get(api, "/openapi/v3/apis/rbac.authorization.k8s.io/v1")[0] == 404


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: f"{k.api_version}/{k.kind}")
def test_every_built_in_kind_has_its_schema_and_patch_operation(
    api: KubeAPI, kind: Any
) -> None:
    prefix = f"apis/{kind.group}/v1" if kind.group else "api/v1"
    document = _document(api, prefix)
    gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    (schema,) = [
        s
        for s in document["components"]["schemas"].values()
        if gvk in s.get("x-kubernetes-group-version-kind", [])
    ]
    assert {"apiVersion", "kind", "metadata"} <= set(schema["properties"])
    scope = "namespaces/{namespace}/" if kind.namespaced else ""
    patch = document["paths"][f"/{prefix}/{scope}{kind.plural}/{{name}}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == gvk
    assert {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}} in (
        patch["parameters"]
    )
    # No request body: kubectl keeps computing apply patches from its own types.
    assert "requestBody" not in patch


def test_every_reference_resolves_within_its_document(api: KubeAPI) -> None:
    for entry in json.loads(_get(api, "/openapi/v3")[1])["paths"].values():
        document = json.loads(_get(api, entry["serverRelativeURL"])[1])
        names = set(document["components"]["schemas"])
        text = json.dumps(document)
        refs = {
            part.split('"', 1)[0]
            for part in text.split('"$ref": "#/components/schemas/')[1:]
        }
        assert refs <= names, refs - names


def test_deployment_replicas_reads_as_kubectl_explain_reads_it(api: KubeAPI) -> None:
    schemas = _document(api, "apis/apps/v1")["components"]["schemas"]
    deployment = schemas["io.k8s.api.apps.v1.Deployment"]
    ref = deployment["properties"]["spec"]["allOf"][0]["$ref"]
    spec = schemas[ref.rsplit("/", 1)[1]]
    assert spec["properties"]["replicas"] == {
        "type": "integer",
        "format": "int32",
        "description": "Number of desired pods. This is a pointer to distinguish "
        "between explicit zero and not specified. Defaults to 1.",
    }
    assert spec["required"] == ["selector", "template"]
    assert "io.k8s.api.core.v1.PodSpec" in schemas


def test_a_custom_resource_publishes_its_crd_schema(
    api: KubeAPI, client: k8s.ApiClient, node: str
) -> None:
    crd = {
        "metadata": {"name": "greetings.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "greetings", "kind": "Greeting"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"message": {"type": "string"}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    extensions: Any = k8s.ApiextensionsV1Api(client)
    extensions.create_custom_resource_definition(crd)

    def index() -> dict[str, Any]:
        paths: dict[str, Any] = json.loads(_get(api, "/openapi/v3")[1])["paths"]
        return paths

    wait_for(lambda: "apis/example.com/v1" in index())
    first = index()["apis/example.com/v1"]["serverRelativeURL"]
    document = json.loads(_get(api, first)[1])
    schema = document["components"]["schemas"]["com.example.v1.Greeting"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "example.com", "kind": "Greeting", "version": "v1"}
    ]
    assert schema["properties"]["spec"]["properties"]["message"] == {"type": "string"}
    assert schema["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    ]
    assert (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        in (document["components"]["schemas"])
    )
    where = "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties"
    patch = [{"op": "add", "path": f"{where}/count", "value": {"type": "integer"}}]
    extensions.patch_custom_resource_definition("greetings.example.com", patch)
    wait_for(lambda: index()["apis/example.com/v1"]["serverRelativeURL"] != first)


def test_the_description_parses_and_covers_every_type_it_names() -> None:
    everything = typeschemas.components(set(typeschemas.DEFINITIONS))
    assert set(typeschemas.DEFINITIONS) <= set(everything)
    for kind in KINDS:
        assert typeschemas.kind_type(kind.group, kind.version, kind.kind)
    for kind_name in ("Role", "RoleBinding"):
        assert typeschemas.kind_type("rbac.authorization.k8s.io", "v1", kind_name)


# -- strict field validation ------------------------------------------------
# Raw requests: the official client refuses unknown fields itself.

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def _deployment(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]},
            },
            **extra,
        },
    }


def _send(
    api: KubeAPI,
    method: str,
    path: str,
    body: Any,
    validation: str = "Strict",
    ctype: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    target = f"{path}?fieldValidation={validation}" if validation else path
    headers = {"content-type": ctype}
    reply = api.handle(
        method, target, headers, json.dumps(body).encode(), user="system:admin"
    )
    return reply.status, json.loads(reply.body)


def _refused(answer: tuple[int, dict[str, Any]]) -> str:
    status, body = answer
    assert (status, body["reason"]) == (400, "BadRequest")
    message: str = body["message"]
    return message


def test_strict_validation_refuses_unknown_fields(api: KubeAPI) -> None:
    """Every unknown field is named, in the order the body has them."""
    body = _deployment("typo", replica=2)
    body["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    body["metadata"]["labelz"] = {}
    assert _refused(_send(api, "POST", DEPLOYMENTS, body)) == (
        'Deployment in version "v1" cannot be handled as a Deployment: strict '
        'decoding error: unknown field "metadata.labelz", unknown field '
        '"spec.template.spec.containers[0].imagePullPolicyy", unknown field '
        '"spec.replica"'
    )
    service = {
        "metadata": {"name": "svc"},
        "spec": {"ports": [{"port": 80, "targetPortt": 8080}]},
    }
    services = "/api/v1/namespaces/default/services"
    assert _refused(_send(api, "POST", services, service)).endswith(
        'strict decoding error: unknown field "spec.ports[0].targetPortt"'
    )


def test_open_parts_of_a_schema_take_anything(api: KubeAPI) -> None:
    body = _deployment("open")
    pod = body["spec"]["template"]["spec"]
    pod["affinity"] = {"anything": {"goes": True}}
    pod["securityContext"] = {"runAsUser": 1000, "futureField": 1}
    body["status"] = {"someday": 1}
    assert _send(api, "POST", DEPLOYMENTS, body)[0] == 201


def test_patches_and_updates_are_checked_for_the_fields_they_bring(
    api: KubeAPI,
) -> None:
    assert _send(api, "POST", DEPLOYMENTS, _deployment("p"))[0] == 201
    merge = "application/merge-patch+json"
    pause = {"spec": {"pause": True}}
    assert _refused(_send(api, "PATCH", f"{DEPLOYMENTS}/p", pause, ctype=merge)) == (
        'strict decoding error: unknown field "spec.pause"'
    )
    replaced = _deployment("p", revisionHistory=3)
    assert _refused(_send(api, "PUT", f"{DEPLOYMENTS}/p", replaced)).endswith(
        "cannot be handled as a Deployment: strict decoding error: unknown field "
        '"spec.revisionHistory"'
    )
    paused = {"spec": {"paused": True}}
    status, patched = _send(api, "PATCH", f"{DEPLOYMENTS}/p", paused, ctype=merge)
    assert (status, patched["spec"]["paused"]) == (200, True)


def test_without_strict_validation_unknown_fields_are_not_refused(
    api: KubeAPI,
) -> None:
    body = _deployment("lenient", replica=2)
    assert _send(api, "POST", DEPLOYMENTS, body, validation="Ignore")[0] == 201
    # A later strict write is refused only for what it brings itself.
    more = {"spec": {"replicas": 3}}
    strategic = "application/strategic-merge-patch+json"
    answer = _send(api, "PATCH", f"{DEPLOYMENTS}/lenient", more, ctype=strategic)
    assert answer[0] == 200


def test_what_the_double_writes_itself_is_declared(api: KubeAPI, node: str) -> None:
    assert _send(api, "POST", DEPLOYMENTS, _deployment("own"))[0] == 201
    wait_for(lambda: len(api.objects("Pod", "default")) == 1)
    described = ["Deployment", "ReplicaSet", "Pod", "Service", "ConfigMap"]
    described += ["Namespace", "ServiceAccount", "Node", "Job", "Secret"]
    for kind_name in described:
        kind = BY_KIND[kind_name]
        type_id = typeschemas.kind_type(kind.group, kind.version, kind.kind)
        assert type_id is not None
        for obj in api.objects(kind_name):
            assert list(typeschemas.unknown_fields(type_id, obj)) == [], obj
