"""Who may do what: ``SelfSubjectAccessReview`` and ``SelfSubjectRulesReview``.

The double enforces no authorization: every request of an authenticated
client (a certificate of the cluster's client CA, :mod:`.httpd`) is served.
The reviews (``authorization.k8s.io/v1``, what ``kubectl auth can-i`` asks)
answer as k3s' kube-apiserver answers, whose authorizers are the
``system:masters`` privileged group, then ``Node`` and ``RBAC``:

- the caller is the request's user with its certificate's groups (``O=``)
  plus ``system:authenticated``, which every authenticated user has. The
  admin kubeconfig's ``system:admin`` (like the supervisor's and the
  kubelet client's certificates) is in ``system:masters``, so a
  ``SelfSubjectAccessReview`` says ``allowed: true`` for anything, with no
  reason, as the privileged-group authorizer allows it;
- anyone else is answered from RBAC's bootstrap policy as a fresh cluster
  holds it (the double stores no RBAC objects), the ClusterRoleBindings of
  ``cluster-admin`` to ``system:masters`` and of ``system:basic-user``,
  ``system:discovery`` and ``system:public-info-viewer`` to
  ``system:authenticated`` (``plugin/pkg/auth/authorizer/rbac/
  bootstrappolicy``), with RBAC's ``RuleAllows`` matching and its reason
  (``RBAC: allowed by ClusterRoleBinding "system:basic-user" of ClusterRole
  ...``); what no rule allows is ``allowed: false`` with no reason, as RBAC
  has no opinion. A kubelet's ``system:node:<name>`` gets no more than that:
  the Node authorizer's graph of what a node may read is left out, so the
  double says no where k3s might say yes, never the other way round;
- a ``SelfSubjectRulesReview`` lists the rules of those bindings
  (``RulesFor``); it needs ``spec.namespace`` (400 ``no namespace on
  request``), and for a node the Node authorizer's part is incomplete
  (``incomplete: true``, ``evaluationError: node authorizer does not
  support user rule resolution``).

A review is created (POST, 201) and never stored; other verbs are 405. Its
validation is ``ValidateSelfSubjectAccessReview``: exactly one of
``resourceAttributes`` and ``nonResourceAttributes``, empty ``metadata``
(the value in that message is the metadata's JSON, where Go prints its
struct).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .bodies import decode_body
from .errors import bad_request
from .errors import invalid_of
from .errors import method_not_allowed
from .errors import no_resource
from .kinds import Obj
from .response import Response
from .response import json_response
from .validation import Cause


GROUP = "authorization.k8s.io"
VERSION = "v1"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
NODES = "system:nodes"
#: The review resources served, for discovery: (plural, kind).
RESOURCES = (
    ("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
    ("selfsubjectrulesreviews", "SelfSubjectRulesReview"),
)
#: Their verbs: a review can only be created.
VERBS = ("create",)


@dataclass(frozen=True)
class Rule:
    """An RBAC ``PolicyRule``: resource rules have groups, the others URLs."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()

    def allows(self, attributes: Mapping[str, Any], *, resource: bool) -> bool:
        """``RuleAllows`` for a review's resource or non-resource attributes."""
        verb = str(attributes.get("verb", ""))
        if "*" not in self.verbs and verb not in self.verbs:
            return False
        if not resource:
            path = str(attributes.get("path", ""))
            return any(
                url == "*"
                or url == path
                or (url.endswith("*") and path.startswith(url[:-1]))
                for url in self.urls
            )
        group = str(attributes.get("group", ""))
        if not self.api_groups or (
            "*" not in self.api_groups and group not in self.api_groups
        ):
            return False
        sub = str(attributes.get("subresource", ""))
        plural = str(attributes.get("resource", ""))
        combined = f"{plural}/{sub}" if sub else plural
        if not any(
            item in ("*", combined) or (sub and item == f"*/{sub}")
            for item in self.resources
        ):
            return False
        name = str(attributes.get("name", ""))
        return not self.resource_names or name in self.resource_names

    def resource_rule(self) -> Obj:
        """The rule as a ``ResourceRule`` of a rules review."""
        rule: Obj = {"verbs": list(self.verbs)}
        if self.api_groups:
            rule["apiGroups"] = list(self.api_groups)
        if self.resources:
            rule["resources"] = list(self.resources)
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        return rule

    def non_resource_rule(self) -> Obj:
        """The rule as a ``NonResourceRule`` of a rules review."""
        return {"verbs": list(self.verbs), "nonResourceURLs": list(self.urls)}


#: The bootstrap ClusterRoles the bindings below name.
CLUSTER_ROLES: dict[str, tuple[Rule, ...]] = {
    "cluster-admin": (
        Rule(("*",), api_groups=("*",), resources=("*",)),
        Rule(("*",), urls=("*",)),
    ),
    "system:basic-user": (
        Rule(
            ("create",),
            api_groups=(GROUP,),
            resources=("selfsubjectaccessreviews", "selfsubjectrulesreviews"),
        ),
        Rule(
            ("create",),
            api_groups=("authentication.k8s.io",),
            resources=("selfsubjectreviews",),
        ),
    ),
    "system:discovery": (
        Rule(
            ("get",),
            urls=(
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/healthz",
                "/livez",
                "/openapi",
                "/openapi/*",
                "/readyz",
                "/version",
                "/version/",
            ),
        ),
    ),
    "system:public-info-viewer": (
        Rule(("get",), urls=("/healthz", "/livez", "/readyz", "/version", "/version/")),
    ),
}
#: The bootstrap ClusterRoleBindings to groups: (binding = role name, group).
GROUP_BINDINGS = (
    ("cluster-admin", MASTERS),
    ("system:discovery", AUTHENTICATED),
    ("system:basic-user", AUTHENTICATED),
    ("system:public-info-viewer", AUTHENTICATED),
)


def _bound(groups: tuple[str, ...]) -> list[tuple[str, str, Rule]]:
    """Every (binding, group, rule) that applies to a caller in ``groups``."""
    return [
        (name, group, rule)
        for name, group in GROUP_BINDINGS
        if group in groups
        for rule in CLUSTER_ROLES[name]
    ]


def caller_groups(groups: tuple[str, ...]) -> tuple[str, ...]:
    """An authenticated caller's groups: its own plus ``system:authenticated``."""
    return (*groups, AUTHENTICATED) if AUTHENTICATED not in groups else groups


def access_status(spec: Obj, groups: tuple[str, ...]) -> Obj:
    """The ``SubjectAccessReviewStatus`` for one review's attributes."""
    if MASTERS in groups:
        return {"allowed": True}
    resource = spec.get("resourceAttributes") is not None
    attributes = spec.get("resourceAttributes") or spec.get("nonResourceAttributes")
    for name, group, rule in _bound(groups):
        if rule.allows(attributes or {}, resource=resource):
            reason = (
                f'RBAC: allowed by ClusterRoleBinding "{name}" of ClusterRole '
                f'"{name}" to Group "{group}"'
            )
            return {"allowed": True, "reason": reason}
    return {"allowed": False}


def rules_status(user: str, groups: tuple[str, ...]) -> Obj:
    """The ``SubjectRulesReviewStatus``: the rules that apply to the caller."""
    rules = [rule for _, _, rule in _bound(groups)]
    status: Obj = {
        "resourceRules": [r.resource_rule() for r in rules if not r.urls],
        "nonResourceRules": [r.non_resource_rule() for r in rules if r.urls],
        "incomplete": False,
    }
    if NODES in groups and user.startswith("system:node:"):
        status["incomplete"] = True
        status["evaluationError"] = (
            "node authorizer does not support user rule resolution"
        )
    return status


def _access_causes(review: Obj) -> list[Cause]:
    """``ValidateSelfSubjectAccessReview``'s causes."""
    spec = review.get("spec") or {}
    found: list[Cause] = []
    has_resource = spec.get("resourceAttributes") is not None
    has_other = spec.get("nonResourceAttributes") is not None
    if has_resource and has_other:
        shown = json.dumps(spec["nonResourceAttributes"])
        found.append(
            (
                "spec.nonResourceAttributes",
                f"Invalid value: {shown}: cannot be specified in combination with "
                "resourceAttributes",
            )
        )
    if not has_resource and not has_other:
        found.append(
            (
                "spec.resourceAttributes",
                'Invalid value: "null": exactly one of nonResourceAttributes or '
                "resourceAttributes must be specified",
            )
        )
    meta = {
        key: value
        for key, value in (review.get("metadata") or {}).items()
        if value not in (None, "", [], {}) and key != "managedFields"
    }
    if meta:
        found.append(("metadata", f"Invalid value: {json.dumps(meta)}: must be empty"))
    return found


def _decoded(kind: str, body: bytes, headers: Mapping[str, str]) -> Obj:
    """The review in a request body; its apiVersion and kind must be this one's."""
    review = decode_body(body, headers)
    api_version = f"{GROUP}/{VERSION}"
    if review.get("apiVersion") not in (None, api_version):
        raise bad_request(
            f"the API version in the data ({review['apiVersion']}) does not match "
            f"the expected API version ({api_version})"
        )
    if review.get("kind") not in (None, kind):
        raise bad_request(
            f"the kind in the data ({review['kind']}) does not match the expected "
            f"kind ({kind})"
        )
    return review


def serve_review(
    method: str,
    version: str,
    rest: list[str],
    body: bytes,
    headers: Mapping[str, str],
    *,
    user: str,
    groups: tuple[str, ...],
) -> Response:
    """Answer a request under ``/apis/authorization.k8s.io/<version>/``."""
    kinds = dict(RESOURCES)
    if version != VERSION or len(rest) != 1 or rest[0] not in kinds:
        raise no_resource()
    if method != "POST":
        raise method_not_allowed()
    kind = kinds[rest[0]]
    review = _decoded(kind, body, headers)
    caller = caller_groups(groups)
    answer: Obj = {"kind": kind, "apiVersion": f"{GROUP}/{VERSION}"}
    spec = review.get("spec") or {}
    if kind == "SelfSubjectAccessReview":
        found = _access_causes(review)
        if found:
            raise invalid_of(GROUP, kind, "", found)
        # An access review comes back as it was sent, with its status.
        answer["metadata"] = review.get("metadata") or {}
        answer["spec"] = spec
        answer["status"] = access_status(spec, caller)
    else:
        if not spec.get("namespace"):
            raise bad_request("no namespace on request")
        # A rules review is a new object holding only its status
        # (``selfsubjectrulesreview/rest.go``).
        answer["metadata"], answer["spec"] = {}, {}
        answer["status"] = rules_status(user, caller)
    return json_response(201, answer)
