"""Discovery documents and server-side printing (``Table``) for kubectl.

kubectl asks for ``/api``, ``/apis`` and each group version to learn the
resources, and asks ``get`` results as a ``meta.k8s.io/v1`` Table so the
server decides the columns.  Both are derived from the kind table.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from .constants import K3S_VERSION
from .resources import GROUPS
from .resources import KINDS
from .resources import Kind
from .resources import Obj
from .resources import parse_time


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


def api_versions() -> Obj:
    """The ``/api`` document."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}
        ],
    }


def api_group(group: str) -> Obj:
    """The ``/apis/<group>`` document."""
    version = {"groupVersion": f"{group}/{GROUPS[group]}", "version": GROUPS[group]}
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": [version],
        "preferredVersion": version,
    }


def api_group_list() -> Obj:
    """The ``/apis`` document."""
    groups = [api_group(group) for group in GROUPS]
    for group in groups:
        del group["kind"], group["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def resource_list(group: str) -> Obj:
    """The APIResourceList of one group version (``""`` is core/v1)."""
    version = GROUPS.get(group, "v1")
    resources: list[Obj] = []
    for kind in KINDS:
        if kind.group != group:
            continue
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
        sub = {"singularName": "", "namespaced": kind.namespaced, "kind": kind.kind}
        if kind.has_status:
            resources.append(
                {
                    "name": f"{kind.plural}/status",
                    **sub,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if kind.scale:
            resources.append(
                {
                    "name": f"{kind.plural}/scale",
                    **sub,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
        if kind.kind == "Pod":
            resources.append({"name": "pods/log", **sub, "verbs": ["get"]})
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else "v1",
        "resources": resources,
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
    name = ("Name", meta["name"])
    created = ("Age", age(meta.get("creationTimestamp")))
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


def _row_object(kind: Kind, obj: Obj, include: str) -> Obj | None:
    if include == "None":
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


def _openapi_prefix(group: str) -> str:
    return f"apis/{group}/{GROUPS[group]}" if group else "api/v1"


def openapi_root() -> Obj:
    """The ``/openapi/v3`` index: one document per group version."""
    return {
        "paths": {
            _openapi_prefix(group): {
                "serverRelativeURL": f"/openapi/v3/{_openapi_prefix(group)}?hash=double"
            }
            for group in ("", *GROUPS)
        }
    }


def openapi_document(prefix: str) -> Obj | None:
    """A minimal OpenAPI v3 document for one group version.

    It declares, per kind, the item path's PATCH operation with its
    group-version-kind and the ``fieldValidation`` query parameter, which is
    what kubectl looks for before it leaves validation to the server.  Schemas
    are left out: kubectl then computes apply patches from its built-in types.
    """
    groups = [g for g in ("", *GROUPS) if _openapi_prefix(g) == prefix]
    if not groups:
        return None
    paths: Obj = {}
    for kind in KINDS:
        if kind.group != groups[0]:
            continue
        scope = "namespaces/{namespace}/" if kind.namespaced else ""
        gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
        paths[f"/{prefix}/{scope}{kind.plural}/{{name}}"] = {
            "patch": {
                "operationId": f"patch{kind.kind}",
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [
                    {
                        "name": "fieldValidation",
                        "in": "query",
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "fieldManager",
                        "in": "query",
                        "schema": {"type": "string"},
                    },
                    {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "OK"}},
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": K3S_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }
