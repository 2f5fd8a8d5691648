"""CustomResourceDefinitions: defaulting, validation, and the kinds they serve.

What the apiextensions-apiserver does with a ``CustomResourceDefinition``
object itself (its custom resources are :mod:`.customresources`' job):

- :func:`default_crd`: ``names.singular`` (the lower-cased kind),
  ``names.listKind`` (``<Kind>List``) and ``conversion.strategy: None``;
- :func:`crd_causes`: the v1 rules a test could trip: the name is
  ``<plural>.<group>``, the group has a dot, the scope is ``Namespaced`` or
  ``Cluster``, exactly one storage version, a structural schema for every
  version; :func:`crd_update_causes`: the scope and group are immutable;
- :func:`kinds_of`: one :class:`~.resources.Kind` per served version, with its
  schema, subresources and printer columns, for :mod:`.served`;
- :func:`mark_terminating`: what a DELETE does to a CRD (the cleanup
  finalizer and the ``Terminating`` condition); the CRD controller
  (:mod:`.controllers.crds`) then deletes the custom resources and lets go.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from .kinds import Kind
from .kinds import Obj
from .kinds import set_condition
from .schemas import structural_causes
from .validation import Cause
from .validation import invalid
from .validation import required


CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def crd_name(kind: Kind) -> str:
    """The name of the CRD that serves a custom kind."""
    return f"{kind.plural}.{kind.group}"


def default_crd(crd: Obj) -> None:
    """Fill the defaults the API server sets on a v1 CRD, in place."""
    spec = crd.setdefault("spec", {})
    if not isinstance(spec, dict):
        return
    names = spec.setdefault("names", {})
    if isinstance(names, dict) and names.get("kind"):
        names.setdefault("singular", str(names["kind"]).lower())
        names.setdefault("listKind", f"{names['kind']}List")
    spec.setdefault("conversion", {"strategy": "None"})
    for version in spec.get("versions") or []:
        if isinstance(version, dict):
            for column in version.get("additionalPrinterColumns") or []:
                if isinstance(column, dict):
                    column.setdefault("priority", 0)


def crd_causes(crd: Obj) -> list[Cause]:
    """Validate a CRD after defaulting (``apiextensions/validation``)."""
    return list(_crd_causes(crd))


def _crd_causes(crd: Obj) -> Iterator[Cause]:
    spec = crd.get("spec") or {}
    group = str(spec.get("group") or "")
    names = spec.get("names") or {}
    plural = str(names.get("plural") or "")
    name = crd["metadata"].get("name", "")
    if plural and group and name != f"{plural}.{group}":
        yield invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
    if not group:
        yield required("spec.group")
    elif "." not in group:
        yield invalid("spec.group", group, "should be a domain with at least one dot")
    scope = spec.get("scope")
    if not scope:
        yield required("spec.scope")
    elif scope not in ("Namespaced", "Cluster"):
        yield (
            "spec.scope",
            f'Unsupported value: "{scope}": supported values: "Cluster", "Namespaced"',
        )
    for field in ("plural", "singular", "kind", "listKind"):
        value = names.get(field)
        if not value:
            yield required(f"spec.names.{field}")
        elif field in ("plural", "singular") and not _DNS_LABEL.fullmatch(value):
            yield invalid(
                f"spec.names.{field}",
                value,
                "a lowercase RFC 1123 label must consist of lower case "
                "alphanumeric characters or '-', and must start and end with an "
                "alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
                "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            )
    versions = spec.get("versions") or []
    if not versions:
        yield required(
            "spec.versions", "must have exactly one version marked as storage version"
        )
        return
    storage = [v for v in versions if isinstance(v, dict) and v.get("storage")]
    if len(storage) != 1:
        yield (
            "spec.versions",
            "Invalid value: must have exactly one version marked as storage version",
        )
    seen: set[str] = set()
    for index, version in enumerate(versions):
        where = f"spec.versions[{index}]"
        if not isinstance(version, dict) or not version.get("name"):
            yield required(f"{where}.name")
            continue
        if version["name"] in seen:
            yield f"{where}.name", f'Duplicate value: "{version["name"]}"'
        seen.add(version["name"])
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        yield from structural_causes(schema, f"{where}.schema.openAPIV3Schema")


def crd_update_causes(old: Obj, new: Obj) -> list[Cause]:
    """The CRD fields an update may not change."""
    found: list[Cause] = []
    for field in ("scope", "group"):
        before = (old.get("spec") or {}).get(field)
        after = (new.get("spec") or {}).get(field)
        if before != after:
            found.append(invalid(f"spec.{field}", after, "field is immutable"))
    return found


def kinds_of(crd: Obj) -> tuple[Kind, ...]:
    """The kinds a CRD serves: one per version with ``served: true``."""
    spec = crd["spec"]
    names = (crd.get("status") or {}).get("acceptedNames") or spec["names"]
    kinds = []
    for version in spec.get("versions") or []:
        if not version.get("served"):
            continue
        subresources = version.get("subresources") or {}
        scale = subresources.get("scale")
        paths = None
        if isinstance(scale, dict):
            paths = (
                str(scale.get("specReplicasPath", "")),
                str(scale.get("statusReplicasPath", "")),
                str(scale.get("labelSelectorPath") or ""),
            )
        kinds.append(
            Kind(
                names["kind"],
                names["plural"],
                group=spec["group"],
                namespaced=spec.get("scope") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                has_status="status" in subresources,
                scale=paths is not None,
                generation=True,
                version=version["name"],
                custom=True,
                schema=(version.get("schema") or {}).get("openAPIV3Schema") or {},
                scale_paths=paths,
                columns=tuple(version.get("additionalPrinterColumns") or ()),
                list_kind=str(names.get("listKind") or ""),
            )
        )
    return tuple(kinds)


def storage_version(crd: Obj) -> str:
    """The version marked ``storage: true``."""
    for version in crd["spec"].get("versions") or []:
        if version.get("storage"):
            return str(version["name"])
    return ""


def mark_terminating(crd: Obj) -> None:
    """What DELETE does to a CRD: cleanup finalizer and ``Terminating`` condition."""
    finalizers = crd["metadata"].setdefault("finalizers", [])
    if CLEANUP_FINALIZER not in finalizers:
        finalizers.append(CLEANUP_FINALIZER)
    set_condition(
        crd.setdefault("status", {}),
        {
            "type": "Terminating",
            "status": "True",
            "reason": "InstanceDeletionInProgress",
            "message": "CustomResource deletion is in progress",
        },
    )


def json_path(obj: Any, path: str) -> Any:
    """Follow a simple ``.a.b`` path (printer columns, scale paths); None if absent."""
    node = obj
    for part in filter(None, path.strip().lstrip("{").rstrip("}").split(".")):
        node = node.get(part) if isinstance(node, dict) else None
    return node
