"""Discovery documents and server-side printing (``Table``) for kubectl.

kubectl asks for ``/api``, ``/apis`` and each group version to learn the
resources, and asks ``get`` results as a ``meta.k8s.io/v1`` Table so the
server decides the columns.  Both are derived from the kind table.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

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
    if kind.kind in ("ReplicaSet", "StatefulSet"):
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
    return [name, created]


def table(kind: Kind, items: list[Obj], resource_version: str) -> Obj:
    """Render objects as a ``meta.k8s.io/v1`` Table."""
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
        {"cells": [cell for _, cell in _columns(kind, item)], "object": item}
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
