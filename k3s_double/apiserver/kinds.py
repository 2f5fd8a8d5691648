"""The table of resource kinds the double serves, and their defaulting.

One ``Kind`` row drives routing, discovery, field selectors, deletion
semantics and defaulting for a resource; the store itself is generic.
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import Any


Obj = dict[str, Any]

_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)


@dataclass(frozen=True, eq=False)
class Kind:
    """One served resource and how the API server treats it.

    Two rows are the same resource when group and plural match: the served
    versions of a custom resource share one storage bucket and one watch
    stream, as they share one etcd prefix in the API server. ``custom`` rows
    come from CustomResourceDefinitions (:mod:`.crds`); they carry the
    version's schema, the scale subresource's paths and printer columns.
    """

    kind: str
    plural: str
    group: str = ""
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    scale: bool = False
    generation: bool = False
    name_rule: str = "subdomain"
    fields: tuple[str, ...] = ()
    returns_deleted: bool = False
    default_propagation: str = "Background"
    version: str = "v1"
    custom: bool = False
    schema: Obj | None = field(default=None, repr=False)
    scale_paths: tuple[str, str, str] | None = None
    columns: tuple[Obj, ...] = field(default=(), repr=False)
    list_kind: str = ""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Kind):
            return NotImplemented
        return (self.group, self.plural) == (other.group, other.plural)

    def __hash__(self) -> int:
        return hash((self.group, self.plural))

    @property
    def api_version(self) -> str:
        """The apiVersion string of this kind's objects."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """The qualified resource name used in error messages (``deployments.apps``)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def allows_field(self, field: str) -> bool:
        """Tell whether this kind supports the field label in a field selector."""
        return field in ("metadata.name", "metadata.namespace") or field in self.fields


_APPS = functools.partial(Kind, group="apps", has_status=True, generation=True)
KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "namespaces", namespaced=False, short_names=("ns",),
         has_status=True, name_rule="label", fields=("status.phase",),
         returns_deleted=True),
    Kind("Node", "nodes", namespaced=False, short_names=("no",), has_status=True,
         fields=("spec.unschedulable",)),
    Kind("Pod", "pods", short_names=("po",), categories=("all",), has_status=True,
         generation=True, fields=_POD_FIELDS, returns_deleted=True),
    Kind("Service", "services", short_names=("svc",), categories=("all",),
         has_status=True, name_rule="dns1035", returns_deleted=True),
    Kind("ConfigMap", "configmaps", short_names=("cm",)),
    Kind("Secret", "secrets", fields=("type",)),
    Kind("ServiceAccount", "serviceaccounts", short_names=("sa",),
         returns_deleted=True),
    Kind("Event", "events", short_names=("ev",), fields=_EVENT_FIELDS),
    _APPS("Deployment", "deployments", short_names=("deploy",), categories=("all",),
          scale=True),
    _APPS("ReplicaSet", "replicasets", short_names=("rs",), categories=("all",),
          scale=True, fields=("status.replicas",)),
    Kind("Job", "jobs", group="batch", categories=("all",), has_status=True,
         generation=True, fields=("status.successful",),
         default_propagation="Orphan"),
    Kind("CustomResourceDefinition", "customresourcedefinitions",
         group="apiextensions.k8s.io", namespaced=False, short_names=("crd", "crds"),
         categories=("api-extensions",), has_status=True, generation=True),
    Kind("Lease", "leases", group="coordination.k8s.io"),
    Kind("Event", "events", group="events.k8s.io", short_names=("ev",),
         fields=("regarding.kind", "regarding.namespace", "regarding.name",
                 "regarding.uid", "reason", "reportingController", "type")),
)  # fmt: skip
BY_PLURAL = {(k.group, k.plural): k for k in KINDS}
#: By kind name; where two groups share a name (Event), the first row wins.
BY_KIND: dict[str, Kind] = {}
for _kind in KINDS:
    BY_KIND.setdefault(_kind.kind, _kind)
GROUPS = {
    "apps": "v1",
    "batch": "v1",
    "apiextensions.k8s.io": "v1",
    "coordination.k8s.io": "v1",
    "events.k8s.io": "v1",
}


def now() -> str:
    """Return the current time as the API's RFC 3339 string (seconds)."""
    stamp = datetime.datetime.now(datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> float:
    """Turn an RFC 3339 timestamp back into seconds since the epoch."""
    text = value.replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def short_hash(value: Any, length: int = 10) -> str:
    """Hash a JSON value into a short DNS-safe string (pod-template-hash)."""
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    number = int(digest, 16)
    chars = []
    for _ in range(length):
        number, rest = divmod(number, len(alphabet))
        chars.append(alphabet[rest])
    return "".join(chars)


def field_value(kind: Kind, obj: Obj, field: str) -> str:
    """Return the string a field selector compares for ``field`` of ``obj``."""
    if field == "source" and kind.kind == "Event":
        field = "source.component"
    node: Any = obj
    for part in field.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    if node is None:
        if field in ("spec.hostNetwork", "spec.unschedulable"):
            return "false"
        if field in ("status.replicas", "status.successful"):
            return "0"
        return ""
    return str(node)


def _image_pull_policy(image: str) -> str:
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        return "IfNotPresent"
    tag = name.split(":", 1)[1] if ":" in name else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _default_container(container: Obj) -> None:
    container.setdefault(
        "imagePullPolicy", _image_pull_policy(container.get("image", ""))
    )
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if isinstance(container.get(probe), dict):
            spec = container[probe]
            for key, value in (
                ("timeoutSeconds", 1),
                ("periodSeconds", 10),
                ("successThreshold", 1),
                ("failureThreshold", 3),
            ):
                spec.setdefault(key, value)


def default_pod_spec(spec: Obj) -> None:
    """Fill the pod spec defaults the API server sets (also in templates)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    if "serviceAccount" in spec and "serviceAccountName" not in spec:
        spec["serviceAccountName"] = spec["serviceAccount"]
    for group in ("initContainers", "containers"):
        for container in spec.get(group) or []:
            _default_container(container)
    for volume in spec.get("volumes") or []:
        for source, mode in (("secret", "defaultMode"), ("configMap", "defaultMode")):
            if isinstance(volume.get(source), dict):
                volume[source].setdefault(mode, 420)


def _default_template(obj: Obj) -> None:
    template = obj.setdefault("spec", {}).setdefault("template", {})
    template.setdefault("metadata", {})
    default_pod_spec(template.setdefault("spec", {}))


def _quantity_key(resources: Obj, section: str) -> dict[str, str]:
    value = resources.get(section) or {}
    return {k: str(v) for k, v in value.items()}


def qos_class(spec: Obj) -> str:
    """Compute a pod's QoS class from its containers' requests and limits."""
    containers = spec.get("containers") or []
    requests = [_quantity_key(c.get("resources") or {}, "requests") for c in containers]
    limits = [_quantity_key(c.get("resources") or {}, "limits") for c in containers]
    if not any(requests) and not any(limits):
        return "BestEffort"
    guaranteed = all(
        lim.get("cpu") and lim.get("memory") and (not req or req == lim)
        for req, lim in zip(requests, limits, strict=True)
    )
    return "Guaranteed" if guaranteed else "Burstable"


def apply_defaults(kind: Kind, obj: Obj) -> None:
    """Fill the defaults the API server sets for a kind, in place."""
    spec = obj.get("spec")
    if kind.kind == "Pod":
        default_pod_spec(obj.setdefault("spec", {}))
        spec = obj["spec"]
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
    elif kind.kind == "Namespace":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif kind.kind == "Secret":
        obj.setdefault("type", "Opaque")
        # The API server folds stringData into data (base64) on every write
        # and never stores it; a stringData key wins over the same data key.
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict) and string_data:
            data = obj.get("data") or {}
            for key, value in string_data.items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data
    elif kind.kind == "Service":
        _default_service(obj.setdefault("spec", {}))
    elif kind.kind == "Deployment":
        assert isinstance(spec, dict)
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxUnavailable", "25%")
            rolling.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        _default_template(obj)
    elif kind.kind == "ReplicaSet":
        assert isinstance(spec, dict)
        spec.setdefault("replicas", 1)
        _default_template(obj)
    elif kind.kind == "Job":
        assert isinstance(spec, dict)
        _default_job(obj, spec)


def _default_service(spec: Obj) -> None:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if spec["type"] != "ExternalName":
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)


def _default_job(obj: Obj, spec: Obj) -> None:
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    uid = obj["metadata"].get("uid")
    if uid and not spec.get("manualSelector"):
        job_labels = {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": obj["metadata"]["name"],
            "controller-uid": uid,
            "job-name": obj["metadata"]["name"],
        }
        spec.setdefault(
            "selector",
            {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
        )
        template = spec.setdefault("template", {}).setdefault("metadata", {})
        template.setdefault("labels", {}).update(job_labels)
    _default_template(obj)


def owner_reference(owner: Obj, *, controller: bool = True) -> Obj:
    """Return an ownerReference pointing at ``owner``."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def controller_of(obj: Obj) -> str | None:
    """Return the uid of the object's controlling owner, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def condition(obj: Obj, kind: str) -> Obj | None:
    """Return the status condition of the given type, if present."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def set_condition(status: Obj, cond: Obj, *, probe: bool = False) -> None:
    """Add or update a condition, keeping lastTransitionTime when unchanged."""
    conditions: list[Obj] = status.setdefault("conditions", [])
    stamp = now()
    cond = dict(cond)
    if probe:
        cond.setdefault("lastProbeTime", None)
    for index, old in enumerate(conditions):
        if old.get("type") == cond["type"]:
            same = old.get("status") == cond["status"]
            cond["lastTransitionTime"] = (
                old.get("lastTransitionTime") if same else stamp
            )
            if (
                "lastUpdateTime" in cond
                and same
                and old.get("reason") == cond.get("reason")
            ):
                cond["lastUpdateTime"] = old.get("lastUpdateTime", stamp)
            conditions[index] = cond
            return
    cond.setdefault("lastTransitionTime", stamp)
    conditions.append(cond)


def names(items: Iterable[Obj]) -> list[str]:
    """Return the metadata names of objects, for messages and tests."""
    return [item["metadata"]["name"] for item in items]


NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix(length: int = 5) -> str:
    """Return the random name suffix Kubernetes uses for generateName."""
    return "".join(random.choice(NAME_CHARS) for _ in range(length))
