"""Admission: what the API server adds to or refuses in an object before storing it.

Validation (:mod:`.validation`) says whether an object is well formed;
admission applies the cluster's policies, as the API server's admission
plugins and allocators do:

- NamespaceLifecycle: nothing is created in a missing or Terminating
  namespace;
- ServiceAccount: a pod runs as an existing service account (``default``
  unless named) and gets the projected ``kube-api-access-*`` token volume;
- DefaultTolerationSeconds and Priority: the not-ready/unreachable
  tolerations for 300 s, and the system priority classes' values;
- Services get a cluster IP from ``10.43.0.0/16`` (a requested one is checked)
  and node ports from 30000-32767; Nodes get the next free ``10.42.N.0/24``.
"""

from __future__ import annotations

import ipaddress
import random
from typing import TYPE_CHECKING

from .errors import forbidden
from .errors import invalid
from .errors import not_found
from .kinds import BY_KIND
from .kinds import Kind
from .kinds import Obj
from .kinds import random_suffix


if TYPE_CHECKING:
    from .database import Database

SERVICE_NET = ipaddress.ip_network("10.43.0.0/16")
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def check_namespace(store: Database, kind: Kind, namespace: str, name: str) -> None:
    """NamespaceLifecycle: refuse new objects in a missing or Terminating namespace."""
    ns_kind = BY_KIND["Namespace"]
    found = store.get(ns_kind, "", namespace)
    if found is None:
        raise not_found(ns_kind, namespace)
    if found["metadata"].get("deletionTimestamp"):
        raise forbidden(
            kind,
            name,
            f"unable to create new content in namespace {namespace} because "
            "it is being terminated",
        )


def admit(store: Database, kind: Kind, obj: Obj) -> None:
    """Run the admission steps of the kinds that have them."""
    if kind.custom:
        return
    if kind.kind == "Pod":
        _admit_pod(store, obj)
    elif kind.kind == "Service":
        _allocate_service(store, obj)
    elif kind.kind == "Node":
        spec = obj.setdefault("spec", {})
        if not spec.get("podCIDR"):
            used = {
                n.get("spec", {}).get("podCIDR") for n in store.select(BY_KIND["Node"])
            }
            index = next(i for i in range(256) if f"10.42.{i}.0/24" not in used)
            spec["podCIDR"] = f"10.42.{index}.0/24"
            spec["podCIDRs"] = [spec["podCIDR"]]


def _admit_pod(store: Database, pod: Obj) -> None:
    spec, meta = pod["spec"], pod["metadata"]
    account = spec.get("serviceAccountName") or "default"
    spec["serviceAccountName"] = spec["serviceAccount"] = account
    found = store.get(BY_KIND["ServiceAccount"], meta["namespace"], account)
    if found is None:
        raise forbidden(
            BY_KIND["Pod"],
            meta["name"],
            f"error looking up service account {meta['namespace']}/{account}: "
            f'serviceaccount "{account}" not found',
        )
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        automount = found.get("automountServiceAccountToken", True)
    mounted = any(
        m.get("mountPath") == SA_MOUNT
        for c in spec.get("containers") or []
        for m in c.get("volumeMounts") or []
    )
    if automount and not mounted:
        volume = f"kube-api-access-{random_suffix()}"
        spec.setdefault("volumes", []).append(_token_volume(volume))
        for group in ("initContainers", "containers"):
            for container in spec.get(group) or []:
                container.setdefault("volumeMounts", []).append(
                    {"name": volume, "readOnly": True, "mountPath": SA_MOUNT}
                )
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key or not t.get("key") for t in tolerations):
            tolerations.append(
                {
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }
            )
    priorities = {
        "system-cluster-critical": 2000000000,
        "system-node-critical": 2000001000,
    }
    if spec.get("priorityClassName") in priorities:
        spec["priority"] = priorities[spec["priorityClassName"]]


def _allocate_service(store: Database, svc: Obj) -> None:
    spec = svc["spec"]
    if spec.get("type") == "ExternalName":
        return
    services = store.select(BY_KIND["Service"])
    used = {ip for s in services for ip in s["spec"].get("clusterIPs") or ()}
    wanted = spec.get("clusterIP")
    if wanted == "None":
        spec["clusterIPs"] = ["None"]
    elif wanted:
        problem = ""
        try:
            if ipaddress.ip_address(wanted) not in SERVICE_NET:
                problem = (
                    "provided IP is not in the valid range. The range of "
                    f"valid IPs is {SERVICE_NET}"
                )
        except ValueError:
            problem = "must be a valid IP address"
        if not problem and wanted in used:
            problem = "provided IP is already allocated"
        if problem:
            raise invalid(
                BY_KIND["Service"],
                svc["metadata"]["name"],
                [
                    (
                        "spec.clusterIPs",
                        f'Invalid value: []string{{"{wanted}"}}: failed to '
                        f"allocate IP {wanted}: {problem}",
                    )
                ],
            )
        spec["clusterIPs"] = [wanted]
    else:
        while True:
            address = str(
                SERVICE_NET[random.randint(16, SERVICE_NET.num_addresses - 2)]
            )
            if address not in used:
                break
        spec["clusterIP"], spec["clusterIPs"] = address, [address]
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        ports_used = {
            p.get("nodePort") for s in services for p in s["spec"].get("ports") or ()
        }
        for port in spec.get("ports") or []:
            if not port.get("nodePort"):
                free = [n for n in range(30000, 32768) if n not in ports_used]
                port["nodePort"] = random.choice(free)
                ports_used.add(port["nodePort"])


def _token_volume(name: str) -> Obj:
    return {
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {
                                    "apiVersion": "v1",
                                    "fieldPath": "metadata.namespace",
                                },
                            }
                        ]
                    }
                },
            ],
            "defaultMode": 420,
        },
    }
