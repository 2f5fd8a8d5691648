"""Object validation with the API server's rules and messages.

Each check yields a cause ``(field, message)``; the API turns a non-empty
list into a 422 ``Invalid`` Status.  Only the rules that a test could trip
are here: names, labels, required fields, selectors, immutable fields.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from .kinds import Kind
from .kinds import Obj
from .selectors import from_label_selector
from .selectors import match_labels


Cause = tuple[str, str]

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1035 = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_RULES = {
    "subdomain": (
        _SUBDOMAIN,
        253,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
        "characters, '-' or '.', and must start and end with an alphanumeric "
        "character (e.g. 'example.com', regex used for validation is '{regex}')",
    ),
    "label": (
        _LABEL,
        63,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric "
        "characters or '-', and must start and end with an alphanumeric character "
        "(e.g. 'my-name',  or '123-abc', regex used for validation is '{regex}')",
    ),
    "dns1035": (
        _DNS1035,
        63,
        "a DNS-1035 label must consist of lower case alphanumeric characters or "
        "'-', start with an alphabetic character, and end with an alphanumeric "
        "character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
        "'{regex}')",
    ),
}
_LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"


def _quote(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


def invalid(field: str, value: Any, detail: str) -> Cause:
    """Build an ``Invalid value`` cause the way the API server words it."""
    return field, f"Invalid value: {_quote(value)}: {detail}"


def required(field: str, detail: str = "") -> Cause:
    """Build a ``Required value`` cause."""
    return field, "Required value" + (f": {detail}" if detail else "")


def name_causes(rule: str, name: str, field: str = "metadata.name") -> list[Cause]:
    """Check a name against one of the DNS rules."""
    regex, limit, text = _RULES[rule]
    if len(name) > limit:
        return [invalid(field, name, f"must be no more than {limit} characters")]
    if not re.fullmatch(regex, name):
        return [invalid(field, name, text.format(regex=regex))]
    return []


def _label_causes(labels: Any, field: str) -> Iterator[Cause]:
    if not isinstance(labels, dict):
        return
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        bad_prefix = prefix and (
            len(prefix) > 253 or not re.fullmatch(_SUBDOMAIN, prefix)
        )
        if bad_prefix or len(name) > 63 or not re.fullmatch(_QUALIFIED_NAME, name):
            yield invalid(
                field,
                key,
                "name part must consist of alphanumeric characters, '-', '_' or "
                "'.', and must start and end with an alphanumeric character",
            )
        if not isinstance(value, str):
            yield invalid(f"{field}", value, "label values must be strings")
        elif len(value) > 63 or not re.fullmatch(_LABEL_VALUE, value):
            yield invalid(
                field,
                value,
                "a valid label must be an empty string or consist of alphanumeric "
                "characters, '-', '_' or '.', and must start and end with an "
                "alphanumeric character",
            )


def _container_causes(spec: Obj, field: str) -> Iterator[Cause]:
    containers = spec.get("containers")
    if not containers:
        yield required(f"{field}.containers")
        return
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            where = f"{field}.{group}[{index}]"
            name = container.get("name")
            if not name:
                yield required(f"{where}.name")
            else:
                yield from name_causes("label", name, f"{where}.name")
                if name in seen:
                    yield f"{where}.name", f'Duplicate value: "{name}"'
                seen.add(name)
            if not container.get("image"):
                yield required(f"{where}.image")


def _selector_causes(obj: Obj, *, optional: bool = False) -> Iterator[Cause]:
    spec = obj.get("spec") or {}
    selector = spec.get("selector")
    if not selector:
        if not optional:
            yield required("spec.selector")
        return
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not match_labels(from_label_selector(selector), labels):
        yield invalid(
            "spec.template.metadata.labels",
            labels,
            "`selector` does not match template `labels`",
        )


def causes(kind: Kind, obj: Obj) -> list[Cause]:
    """Validate an object of ``kind`` after defaulting."""
    meta = obj.get("metadata") or {}
    found: list[Cause] = []
    name = meta.get("name") or ""
    if not name:
        found.append(required("metadata.name", "name or generateName is required"))
    else:
        found.extend(name_causes(kind.name_rule, name))
    found.extend(_label_causes(meta.get("labels"), "metadata.labels"))
    spec = obj.get("spec") or {}
    if kind.custom:
        return found
    if kind.kind == "Pod":
        found.extend(_container_causes(spec, "spec"))
    elif kind.kind in ("Deployment", "ReplicaSet", "Job"):
        found.extend(_selector_causes(obj, optional=kind.kind == "Job"))
        template = spec.get("template") or {}
        tmeta = template.get("metadata") or {}
        found.extend(
            _label_causes(tmeta.get("labels"), "spec.template.metadata.labels")
        )
        found.extend(
            _container_causes(template.get("spec") or {}, "spec.template.spec")
        )
        replicas = spec.get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            found.append(
                invalid("spec.replicas", replicas, "must be greater than or equal to 0")
            )
        if kind.kind == "Job" and (template.get("spec") or {}).get(
            "restartPolicy"
        ) not in ("Never", "OnFailure"):
            found.append(
                (
                    "spec.template.spec.restartPolicy",
                    'Unsupported value: "Always": supported values: "OnFailure", '
                    '"Never"',
                )
            )
    elif kind.kind == "Service":
        found.extend(_service_causes(spec))
    elif kind.kind == "Event" and kind.group == "events.k8s.io":
        found.extend(_event_causes(obj))
    elif kind.kind == "Lease":
        found.extend(_lease_causes(spec))
    elif kind.kind in ("ConfigMap", "Secret"):
        for key in list(obj.get("data") or {}) + list(obj.get("binaryData") or {}):
            if not re.fullmatch(r"[-._a-zA-Z0-9]+", key):
                found.append(
                    invalid(
                        "data",
                        key,
                        "a valid config key must consist of alphanumeric "
                        "characters, '-', '_' or '.' (e.g. 'key.name',  or "
                        "'KEY_NAME',  or 'key-name', regex used for validation is "
                        "'[-._a-zA-Z0-9]+')",
                    )
                )
    return found


def _service_causes(spec: Obj) -> Iterator[Cause]:
    ports = spec.get("ports") or []
    if (
        not ports
        and spec.get("type") != "ExternalName"
        and spec.get("clusterIP") != "None"
    ):
        yield required("spec.ports")
    for index, port in enumerate(ports):
        number = port.get("port")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            yield invalid(
                f"spec.ports[{index}].port",
                number,
                "must be between 1 and 65535, inclusive",
            )
        if len(ports) > 1 and not port.get("name"):
            yield required(f"spec.ports[{index}].name")


def _event_causes(event: Obj) -> Iterator[Cause]:
    """``events.k8s.io/v1`` creates are validated strictly (core v1 is legacy)."""
    if not event.get("eventTime"):
        yield required("eventTime")
    for field in ("reportingController", "reportingInstance", "action", "reason"):
        if not event.get(field):
            yield required(field)
    if event.get("type") not in ("Normal", "Warning"):
        yield invalid("type", "", f"has invalid value: {event.get('type', '')}")
    namespace = event["metadata"].get("namespace")
    regarding = event.get("regarding") or {}
    if not regarding.get("namespace") and namespace not in ("default", "kube-system"):
        yield invalid(
            "regarding.namespace",
            regarding.get("namespace", ""),
            "does not match event.namespace",
        )
    for field in ("firstTimestamp", "lastTimestamp", "count"):
        if event.get(field):
            yield invalid(field, "", "needs to be unset")


def _lease_causes(spec: Obj) -> Iterator[Cause]:
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        yield invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
    transitions = spec.get("leaseTransitions")
    if transitions is not None and (
        not isinstance(transitions, int) or transitions < 0
    ):
        yield invalid(
            "spec.leaseTransitions", transitions, "must be greater than or equal to 0"
        )


def _finalizer_causes(old: Obj, new: Obj) -> Iterator[Cause]:
    """No new finalizers once an object is being deleted (ObjectMeta update)."""
    if not old["metadata"].get("deletionTimestamp"):
        return
    before = set(old["metadata"].get("finalizers") or [])
    added = [f for f in new["metadata"].get("finalizers") or [] if f not in before]
    if added:
        listed = ", ".join(f'"{f}"' for f in added)
        yield (
            "metadata.finalizers",
            "Forbidden: no new finalizers can be added if the object is being "
            f"deleted, found new finalizers []string{{{listed}}}",
        )


def update_causes(kind: Kind, old: Obj, new: Obj) -> list[Cause]:
    """Check the fields Kubernetes forbids to change on update."""
    found: list[Cause] = list(_finalizer_causes(old, new))
    if kind.custom:
        return found
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    workloads = ("Deployment", "ReplicaSet", "Job")
    if kind.kind in workloads and old_spec.get("selector") != new_spec.get("selector"):
        found.append(
            invalid(
                "spec.selector",
                new_spec.get("selector"),
                "field is immutable",
            )
        )
    if kind.kind == "Service" and old_spec.get("clusterIP") not in (
        None,
        new_spec.get("clusterIP"),
    ):
        found.append(
            (
                "spec.clusterIPs[0]",
                "Invalid value: []string(nil): primary clusterIP can not be unset",
            )
        )
    if kind.kind == "Pod" and _mutable_pod_spec(old_spec) != _mutable_pod_spec(
        new_spec
    ):
        found.append(
            (
                "spec",
                "Forbidden: pod updates may not change fields other than "
                "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
                "to existing tolerations),`spec.terminationGracePeriodSeconds` "
                "(allow it to be set to 1 if it was previously negative)",
            )
        )
    return found


def _mutable_pod_spec(spec: Obj) -> Obj:
    """Return the pod spec with the fields an update may change blanked out."""
    frozen: Obj = json.loads(json.dumps(spec))
    for key in (
        "activeDeadlineSeconds",
        "tolerations",
        "terminationGracePeriodSeconds",
    ):
        frozen.pop(key, None)
    for group in ("initContainers", "containers"):
        for container in frozen.get(group) or []:
            container.pop("image", None)
    return frozen
