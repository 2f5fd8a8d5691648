"""Discovery documents and server-side printing (``Table``) for kubectl.

kubectl asks for ``/api``, ``/apis`` and each group version to learn the
resources (or, when its ``Accept`` names ``apidiscovery.k8s.io``, for the
aggregated ``APIGroupDiscoveryList`` in one request), and asks ``get``
results as a ``meta.k8s.io/v1`` Table so the server decides the columns.
Both are derived from the kinds the API's :class:`~.served.ServedKinds`
serves, so an Established CRD's resources appear in them; a custom
resource's Table has the CRD's ``additionalPrinterColumns``. The access
reviews (:mod:`.authorization`), which nothing stores, are listed in
``authorization.k8s.io/v1`` with their only verb, ``create``. The OpenAPI
documents are :mod:`.openapi`'s.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

from . import authorization
from . import openapi
from .crds import json_path
from .kinds import Kind
from .kinds import Obj
from .kinds import parse_time
from .response import Response
from .response import json_response
from .served import ServedKinds
from .watch import INITIAL_EVENTS_END


VERBS = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
]


def document(registry: ServedKinds, path: str, accept: str) -> Response | None:
    """The discovery or OpenAPI document at ``path``, or None if it names none."""
    aggregated = _aggregated_version(accept)
    groups = served_groups(registry)
    if path in ("/api", "/apis") and aggregated:
        body = aggregated_list(registry, aggregated, legacy=path == "/api")
        ctype = (
            "application/json;g=apidiscovery.k8s.io;"
            f"v={aggregated};as=APIGroupDiscoveryList"
        )
        return Response(200, json.dumps(body).encode(), ctype)
    if path == "/api":
        return json_response(200, api_versions())
    if path == "/apis":
        return json_response(200, api_group_list(groups))
    if path == "/api/v1":
        return json_response(200, resource_list(registry, "", "v1"))
    parts = path.strip("/").split("/")
    if parts[0] == "apis" and len(parts) in (2, 3) and parts[1] in groups:
        if len(parts) == 2:
            return json_response(200, api_group(parts[1], groups[parts[1]]))
        if parts[2] in groups[parts[1]]:
            return json_response(200, resource_list(registry, parts[1], parts[2]))
    return openapi.document(registry, path)


def served_groups(registry: ServedKinds) -> dict[str, list[str]]:
    """Every served API group with its versions: stored kinds and the reviews."""
    groups = registry.groups()
    groups.setdefault(authorization.GROUP, [authorization.VERSION])
    return groups


def _reviews(group: str, version: str) -> list[tuple[str, str]]:
    """The review resources (plural, kind) a group version serves, never stored."""
    if (group, version) != (authorization.GROUP, authorization.VERSION):
        return []
    return list(authorization.RESOURCES)


def _aggregated_version(accept: str) -> str:
    """The aggregated discovery version an ``Accept`` header asks for, or ``""``."""
    offered = [
        part.replace(" ", "")
        for part in accept.split(",")
        if "g=apidiscovery.k8s.io" in part and "as=APIGroupDiscoveryList" in part
    ]
    for version in ("v2", "v2beta1"):
        if any(f";v={version};" in f"{item};" for item in offered):
            return version
    return ""


def api_versions() -> Obj:
    """The ``/api`` document."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}
        ],
    }


def api_group(group: str, versions: list[str]) -> Obj:
    """The ``/apis/<group>`` document; ``versions`` are preferred first."""
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": listed,
        "preferredVersion": listed[0],
    }


def api_group_list(groups: dict[str, list[str]]) -> Obj:
    """The ``/apis`` document."""
    listed = [api_group(group, versions) for group, versions in groups.items()]
    for group in listed:
        del group["kind"], group["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed}


def _subresources(kind: Kind) -> list[tuple[str, Obj, list[str]]]:
    """(name, response kind, verbs) of a kind's subresources."""
    own = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    found: list[tuple[str, Obj, list[str]]] = []
    if kind.has_status:
        found.append(("status", own, ["get", "patch", "update"]))
    if kind.scale:
        scale = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
        found.append(("scale", scale, ["get", "patch", "update"]))
    if kind.kind == "Pod" and not kind.custom:
        found.append(("log", {"group": "", "version": "v1", "kind": "Pod"}, ["get"]))
    return found


def resource_list(registry: ServedKinds, group: str, version: str) -> Obj:
    """The APIResourceList of one group version (``""`` is core/v1)."""
    resources: list[Obj] = []
    for kind in registry.in_group_version(group, version):
        entry: Obj = {
            "name": kind.plural,
            "singularName": kind.kind.lower(),
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": VERBS,
        }
        if kind.short_names:
            entry["shortNames"] = list(kind.short_names)
        if kind.categories:
            entry["categories"] = list(kind.categories)
        resources.append(entry)
        for sub, response, verbs in _subresources(kind):
            item: Obj = {
                "name": f"{kind.plural}/{sub}",
                "singularName": "",
                "namespaced": kind.namespaced,
                "kind": response["kind"],
                "verbs": verbs,
            }
            if response["group"] != kind.group:
                item["group"], item["version"] = response["group"], response["version"]
            resources.append(item)
    for plural, kind_name in _reviews(group, version):
        resources.append(
            {
                "name": plural,
                "singularName": kind_name.lower(),
                "namespaced": False,
                "kind": kind_name,
                "verbs": list(authorization.VERBS),
            }
        )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else "v1",
        "resources": resources,
    }


def aggregated_list(registry: ServedKinds, version: str, *, legacy: bool) -> Obj:
    """The ``APIGroupDiscoveryList`` of ``/api`` (legacy) or ``/apis``."""
    groups = {"": ["v1"]} if legacy else served_groups(registry)
    items = []
    for group, versions in groups.items():
        metadata: Obj = {"creationTimestamp": None}
        if group:
            metadata["name"] = group
        listed = []
        for served in versions:
            resources = []
            for kind in registry.in_group_version(group, served):
                entry: Obj = {
                    "resource": kind.plural,
                    "responseKind": {
                        "group": kind.group,
                        "version": kind.version,
                        "kind": kind.kind,
                    },
                    "scope": "Namespaced" if kind.namespaced else "Cluster",
                    "singularResource": kind.kind.lower(),
                    "verbs": VERBS,
                }
                if kind.short_names:
                    entry["shortNames"] = list(kind.short_names)
                if kind.categories:
                    entry["categories"] = list(kind.categories)
                subs = [
                    {"subresource": sub, "responseKind": response, "verbs": verbs}
                    for sub, response, verbs in _subresources(kind)
                ]
                if subs:
                    entry["subresources"] = subs
                resources.append(entry)
            for plural, kind_name in _reviews(group, served):
                resources.append(
                    {
                        "resource": plural,
                        "responseKind": {
                            "group": group,
                            "version": served,
                            "kind": kind_name,
                        },
                        "scope": "Cluster",
                        "singularResource": kind_name.lower(),
                        "verbs": list(authorization.VERBS),
                    }
                )
            listed.append(
                {"version": served, "resources": resources, "freshness": "Current"}
            )
        items.append({"metadata": metadata, "versions": listed})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }


def age(stamp: str | None) -> str:
    """Format the age of a timestamp the way kubectl's AGE column does."""
    if not stamp:
        return "<unknown>"
    seconds = max(0, int(time.time() - parse_time(stamp)))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def _ready(obj: Obj) -> bool:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _columns(kind: Kind, obj: Obj) -> list[tuple[str, Any]]:
    """Return the (column, cell) pairs that kubectl shows for an object."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    name = ("Name", meta.get("name", ""))  # a BOOKMARK's object has no name
    created = ("Age", age(meta.get("creationTimestamp")))
    if kind.custom:
        return [name, *_custom_columns(kind, obj)] if kind.columns else [name, created]
    if kind.kind == "Node":
        roles = sorted(
            key.split("/", 1)[1]
            for key in meta.get("labels") or {}
            if key.startswith("node-role.kubernetes.io/")
        )
        state = "Ready" if _ready(obj) else "NotReady"
        if spec.get("unschedulable"):
            state += ",SchedulingDisabled"
        version = (status.get("nodeInfo") or {}).get("kubeletVersion", "")
        return [name, ("Status", state), ("Roles", ",".join(roles) or "<none>"),
                created, ("Version", version)]  # fmt: skip
    if kind.kind == "Pod":
        statuses = status.get("containerStatuses") or []
        ready = sum(1 for c in statuses if c.get("ready"))
        total = len(spec.get("containers") or [])
        restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
        phase = status.get("phase", "Pending")
        if meta.get("deletionTimestamp"):
            phase = "Terminating"
        elif phase == "Succeeded":
            phase = "Completed"
        return [name, ("Ready", f"{ready}/{total}"), ("Status", phase),
                ("Restarts", restarts), created]  # fmt: skip
    if kind.kind == "Deployment":
        return [
            name,
            ("Ready", f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}"),
            ("Up-to-date", status.get("updatedReplicas", 0)),
            ("Available", status.get("availableReplicas", 0)),
            created,
        ]
    if kind.kind == "ReplicaSet":
        return [name, ("Desired", spec.get("replicas", 0)),
                ("Current", status.get("replicas", 0)),
                ("Ready", status.get("readyReplicas", 0)), created]  # fmt: skip
    if kind.kind == "Namespace":
        return [name, ("Status", status.get("phase", "Active")), created]
    if kind.kind == "Service":
        ports = ",".join(
            f"{p.get('port')}/{p.get('protocol', 'TCP')}"
            for p in spec.get("ports") or []
        )
        ingress = (status.get("loadBalancer") or {}).get("ingress") or []
        external = ",".join(i.get("ip", "") for i in ingress) or (
            "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"
        )
        return [name, ("Type", spec.get("type", "")),
                ("Cluster-IP", spec.get("clusterIP", "")),
                ("External-IP", external), ("Port(s)", ports or "<none>"),
                created]  # fmt: skip
    if kind.kind == "Job":
        done = status.get("succeeded", 0)
        complete = any(
            c.get("type") == "Complete" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        state = "Complete" if complete else "Running"
        completions = f"{done}/{spec.get('completions', 1)}"
        return [name, ("Status", state), ("Completions", completions), created]
    if kind.kind == "Event":
        involved = obj.get("involvedObject") or {}
        return [
            ("Last Seen", age(obj.get("lastTimestamp"))),
            ("Type", obj.get("type", "")),
            ("Reason", obj.get("reason", "")),
            (
                "Object",
                f"{str(involved.get('kind', '')).lower()}/{involved.get('name')}",
            ),
            ("Message", obj.get("message", "")),
        ]
    return [name, created]


def _custom_columns(kind: Kind, obj: Obj) -> list[tuple[str, Any]]:
    """A custom resource's cells for the CRD's ``additionalPrinterColumns``."""
    cells: list[tuple[str, Any]] = []
    for column in kind.columns:
        value = json_path(obj, str(column.get("jsonPath", "")))
        if column.get("type") == "date" and isinstance(value, str):
            value = age(value)
        elif value is None:
            value = ""
        elif not isinstance(value, (int, str)):
            value = json.dumps(value)
        cells.append((str(column.get("name", "")), value))
    return cells


def _row_object(kind: Kind, obj: Obj, include: str) -> Obj | None:
    annotations = obj["metadata"].get("annotations") or {}
    if include == "None" and INITIAL_EVENTS_END not in annotations:
        # The end-of-initial-events bookmark keeps its metadata, as the
        # handler keeps it, so that a client still sees the annotation.
        return None
    if include == "Object":
        return {"apiVersion": kind.api_version, "kind": kind.kind, **obj}
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


def table(
    kind: Kind, items: list[Obj], resource_version: str, include: str = "Metadata"
) -> Obj:
    """Render objects as a ``meta.k8s.io/v1`` Table.

    ``include`` is the ``includeObject`` parameter: each row carries the
    object's metadata (the default), the whole object, or nothing.
    """
    sample = items[0] if items else _blank(kind)
    columns = [
        {
            "name": column,
            "type": "integer" if isinstance(cell, int) else "string",
            "format": "name" if column == "Name" else "",
            "description": column,
            "priority": 0,
        }
        for column, cell in _columns(kind, sample)
    ]
    rows = [
        {
            "cells": [cell for _, cell in _columns(kind, item)],
            "object": _row_object(kind, item, include),
        }
        for item in items
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }


def _blank(kind: Kind) -> Obj:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"metadata": {"name": "", "creationTimestamp": stamp}}
