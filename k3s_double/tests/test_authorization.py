"""SelfSubjectAccessReview and SelfSubjectRulesReview, for whoever the caller is.

In process: the API directly (a caller's user and groups), over HTTPS with
client certificates as the node's listener authenticates them, and through
an HA server's backend, which answers reviews itself.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from typing import cast

import pytest
from kubernetes import client as k8s

from k3s_double.apiserver.httpd import APIServer
from k3s_double.apiserver.httpd import server_context
from k3s_double.apiserver.response import Response
from k3s_double.apiserver.server import KubeAPI
from k3s_double.etcd.backend import ReplicatedAPI
from k3s_double.node.pki import KeyPair
from k3s_double.node.pki import client_cert
from k3s_double.node.pki import new_ca
from k3s_double.node.pki import serving_cert


SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SSRR = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"
MASTERS = ("system:masters",)


def _access(**attributes: Any) -> dict[str, Any]:
    key = "nonResourceAttributes" if "path" in attributes else "resourceAttributes"
    return {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {key: attributes},
    }


def _review(
    api: Any, path: str, body: Any, user: str, groups: tuple[str, ...] = ()
) -> tuple[int, dict[str, Any]]:
    headers = {"content-type": "application/json"}
    sent = json.dumps(body).encode()
    reply: Response = api.handle("POST", path, headers, sent, user=user, groups=groups)
    return reply.status, json.loads(reply.body)


def test_discovery_lists_the_reviews(client: k8s.ApiClient) -> None:
    groups = {g.name for g in k8s.ApisApi(client).get_api_versions().groups}
    assert "authorization.k8s.io" in groups
    listed = k8s.AuthorizationV1Api(client).get_api_resources()
    assert {
        (r.name, r.kind, r.namespaced, tuple(r.verbs)) for r in listed.resources
    } == {
        ("selfsubjectaccessreviews", "SelfSubjectAccessReview", False, ("create",)),
        ("selfsubjectrulesreviews", "SelfSubjectRulesReview", False, ("create",)),
    }


def test_aggregated_discovery_lists_the_reviews(api: KubeAPI) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    reply = api.handle("GET", "/apis", {"accept": accept}, b"", user="system:admin")
    groups = {
        item["metadata"]["name"]: item for item in json.loads(reply.body)["items"]
    }
    (version,) = groups["authorization.k8s.io"]["versions"]
    assert [(r["resource"], r["scope"], r["verbs"]) for r in version["resources"]] == [
        ("selfsubjectaccessreviews", "Cluster", ["create"]),
        ("selfsubjectrulesreviews", "Cluster", ["create"]),
    ]


def test_the_admin_may_do_anything(client: k8s.ApiClient) -> None:
    authorization: Any = k8s.AuthorizationV1Api(client)
    body = _access(
        namespace="default", verb="create", group="apps", resource="deployments"
    )
    review = authorization.create_self_subject_access_review(body)
    assert review.status.allowed is True
    assert review.status.reason is None
    assert review.spec.resource_attributes.resource == "deployments"
    rules = authorization.create_self_subject_rules_review(
        {"spec": {"namespace": "default"}}
    )
    assert {"verbs": ["*"], "api_groups": ["*"], "resources": ["*"]} in [
        {k: v for k, v in rule.to_dict().items() if v is not None}
        for rule in rules.status.resource_rules
    ]
    assert rules.status.incomplete is False


@pytest.mark.parametrize(
    ("attributes", "allowed", "binding"),
    [
        ({"verb": "create", "group": "apps", "resource": "deployments"}, False, ""),
        ({"verb": "get", "resource": "pods", "namespace": "default"}, False, ""),
        (
            {
                "verb": "create",
                "group": "authorization.k8s.io",
                "resource": "selfsubjectaccessreviews",
            },
            True,
            "system:basic-user",
        ),
        ({"path": "/healthz", "verb": "get"}, True, "system:discovery"),
        ({"path": "/apis/apps/v1", "verb": "get"}, True, "system:discovery"),
        ({"path": "/metrics", "verb": "get"}, False, ""),
        ({"path": "/version", "verb": "post"}, False, ""),
    ],
)
def test_anyone_else_gets_only_what_every_authenticated_user_gets(
    api: KubeAPI, attributes: dict[str, str], allowed: bool, binding: str
) -> None:
    status, review = _review(api, SSAR, _access(**attributes), "alice")
    assert status == 201
    if not allowed:
        assert review["status"] == {"allowed": False}
        return
    assert review["status"] == {
        "allowed": True,
        "reason": f'RBAC: allowed by ClusterRoleBinding "{binding}" of ClusterRole '
        f'"{binding}" to Group "system:authenticated"',
    }


def test_a_nodes_rules_are_incomplete(api: KubeAPI) -> None:
    body = {"spec": {"namespace": "default"}}
    status, review = _review(api, SSRR, body, "system:node:n1", ("system:nodes",))
    assert status == 201
    assert review["spec"] == {}
    assert review["status"]["incomplete"] is True
    assert review["status"]["evaluationError"] == (
        "node authorizer does not support user rule resolution"
    )
    assert {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]} not in review[
        "status"
    ]["resourceRules"]
    assert {
        "verbs": ["create"],
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
    } in review["status"]["resourceRules"]


@pytest.mark.parametrize(
    ("path", "body", "code", "message"),
    [
        (
            SSAR,
            {"spec": {}},
            422,
            'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: '
            'spec.resourceAttributes: Invalid value: "null": exactly one of '
            "nonResourceAttributes or resourceAttributes must be specified",
        ),
        (
            SSAR,
            {
                "spec": {
                    "resourceAttributes": {"verb": "get"},
                    "nonResourceAttributes": {"path": "/x", "verb": "get"},
                }
            },
            422,
            'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: '
            'spec.nonResourceAttributes: Invalid value: {"path": "/x", "verb": '
            '"get"}: cannot be specified in combination with resourceAttributes',
        ),
        (SSRR, {"spec": {}}, 400, "no namespace on request"),
        (
            SSAR,
            {"kind": "SelfSubjectRulesReview", "spec": {}},
            400,
            "the kind in the data (SelfSubjectRulesReview) does not match the "
            "expected kind (SelfSubjectAccessReview)",
        ),
    ],
)
def test_invalid_reviews_are_refused(
    api: KubeAPI, path: str, body: Any, code: int, message: str
) -> None:
    status, answer = _review(api, path, body, "system:admin", MASTERS)
    assert (status, answer["code"], answer["message"]) == (code, code, message)


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", SSAR, 405),
        ("DELETE", SSRR, 405),
        ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", 404),
        ("POST", "/apis/authorization.k8s.io/v1beta1/selfsubjectaccessreviews", 404),
    ],
)
def test_reviews_are_created_only(
    api: KubeAPI, method: str, path: str, code: int
) -> None:
    reply = api.handle(method, path, {}, b"{}", user="system:admin", groups=MASTERS)
    assert reply.status == code


def test_an_ha_server_answers_reviews_itself(api: KubeAPI) -> None:
    """No etcd member or leader is asked: the authorizer is local."""
    backend = ReplicatedAPI(api, cast(Any, None), cast(Any, None))
    body = _access(verb="delete", resource="nodes")
    status, review = _review(backend, SSAR, body, "system:admin", MASTERS)
    assert (status, review["status"]) == (201, {"allowed": True})


# -- over HTTPS, as the node's listener authenticates -------------------------


class _NoSupervisor:
    def supervise(self, *args: Any) -> Response:
        return Response(404)


@pytest.fixture
def https(api: KubeAPI, tmp_path: Path) -> Iterator[tuple[int, KeyPair, Path]]:
    """The API behind the double's HTTPS listener; its client CA; a directory."""
    server_ca, client_ca = new_ca("server-ca"), new_ca("client-ca")
    crt, key = serving_cert(server_ca, ["127.0.0.1"]).save(str(tmp_path), "serving")
    (tmp_path / "server-ca.crt").write_bytes(server_ca.cert)
    listener = APIServer(
        0,
        server_context(crt, key, client_ca.cert),
        api,
        _NoSupervisor(),
        log=lambda level, text: None,
    )
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    yield int(listener.server_address[1]), client_ca, tmp_path
    listener.shutdown()
    listener.server_close()


def _post_over_https(
    https: tuple[int, KeyPair, Path],
    body: Any,
    cn: str | None,
    orgs: tuple[str, ...] = (),
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    port, client_ca, directory = https
    context = ssl.create_default_context(cafile=str(directory / "server-ca.crt"))
    if cn is not None:
        context.load_cert_chain(
            *client_cert(client_ca, cn, orgs).save(str(directory), cn.replace(":", "-"))
        )
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        sent = {"Content-Type": "application/json", **(headers or {})}
        conn.request("POST", SSAR, json.dumps(body), sent)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_the_certificates_groups_decide(https: tuple[int, KeyPair, Path]) -> None:
    body = _access(verb="create", group="apps", resource="deployments")
    admin = _post_over_https(https, body, "system:admin", MASTERS)
    assert admin == (201, {**admin[1], "status": {"allowed": True}})
    alice = _post_over_https(https, body, "alice")
    assert alice[1]["status"] == {"allowed": False}
    node = _post_over_https(https, body, "system:node:n1", ("system:nodes",))
    assert node[1]["status"] == {"allowed": False}


def test_no_certificate_is_unauthorized(https: tuple[int, KeyPair, Path]) -> None:
    status, answer = _post_over_https(https, _access(verb="get"), None)
    assert (status, answer["reason"]) == (401, "Unauthorized")


def test_an_impersonated_user_has_only_the_groups_asked_for(
    https: tuple[int, KeyPair, Path],
) -> None:
    body = _access(verb="create", group="apps", resource="deployments")
    plain = _post_over_https(
        https, body, "system:k3s-supervisor", MASTERS, {"Impersonate-User": "alice"}
    )
    assert plain[1]["status"] == {"allowed": False}
    grouped = _post_over_https(
        https,
        body,
        "system:k3s-supervisor",
        MASTERS,
        {"Impersonate-User": "alice", "Impersonate-Group": "system:masters"},
    )
    assert grouped[1]["status"] == {"allowed": True}
