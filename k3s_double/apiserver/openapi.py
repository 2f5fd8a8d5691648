"""OpenAPI v3: the ``/openapi/v3`` index and one document per served group version.

What kubectl and helm read of it (``kubectl explain``, kubectl's and helm's
choice between client- and server-side field validation), as kube-apiserver
publishes it:

- ``/openapi/v3`` lists every group version's document by its path
  (``api/v1``, ``apis/apps/v1``) with a ``serverRelativeURL`` carrying
  ``?hash=``: the SHA-512 of the document, upper-case hex, as kube-openapi
  computes its etag, so a client's cached copy changes whenever the
  document does (a CRD established or updated);
- ``/openapi/v3/apis/<group>/<version>`` holds, per kind, the item path's
  PATCH operation with its ``x-kubernetes-group-version-kind`` and the
  ``fieldValidation``, ``fieldManager`` and ``dryRun`` query parameters
  (the reviews have their POST instead), and ``components.schemas``: each
  kind's schema with ``x-kubernetes-group-version-kind`` and every component
  it refers to. Built-in kinds' schemas come from :mod:`.typeschemas`; a
  custom resource's is its CRD version's ``openAPIV3Schema`` under the
  component name kube-apiserver gives it (``com.example.v1.Greeting``), with
  ``metadata`` referring to ``ObjectMeta`` and ``apiVersion`` and ``kind``
  declared;
- the PATCH operations declare no request body, so kubectl computes a
  client-side apply's strategic merge patch from its compiled-in types (and
  a custom resource's merge patch) rather than from these schemas, which
  carry no patch strategies; the field validation parameter tells it the
  server validates fields, which :mod:`.storage` does with the same schemas.

A document for a group version nobody serves is None (the router's 404).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json

from k3s_double.constants import K3S_VERSION

from . import authorization
from . import typeschemas
from .kinds import Kind
from .kinds import Obj
from .response import Response
from .served import ServedKinds


ROOT = "/openapi/v3"
_OBJECT_META = f"{typeschemas.META}.ObjectMeta"
_QUERY = ("fieldValidation", "fieldManager", "dryRun")


def document(registry: ServedKinds, path: str) -> Response | None:
    """The index or a group version's document at ``path``, or None."""
    if path == ROOT:
        return _json(index(registry))
    if path.startswith(ROOT + "/"):
        found = group_version_document(registry, path[len(ROOT) + 1 :])
        if found is not None:
            return Response(200, found)
    return None


def _json(obj: Obj) -> Response:
    return Response(200, json.dumps(obj).encode())


def prefix(group: str, version: str) -> str:
    """A group version's path in the index (``api/v1``, ``apis/apps/v1``)."""
    return f"apis/{group}/{version}" if group else "api/v1"


def _group_versions(registry: ServedKinds) -> list[tuple[str, str]]:
    served = [("", "v1")]
    for group, versions in registry.groups().items():
        served += [(group, version) for version in versions]
    served.append((authorization.GROUP, authorization.VERSION))
    return served


def index(registry: ServedKinds) -> Obj:
    """The ``/openapi/v3`` index: one document per group version, with its hash."""
    paths: Obj = {}
    for group, version in _group_versions(registry):
        body = group_version_document(registry, prefix(group, version))
        if body is None:
            continue
        digest = hashlib.sha512(body).hexdigest().upper()
        url = f"{ROOT}/{prefix(group, version)}?hash={digest}"
        paths[prefix(group, version)] = {"serverRelativeURL": url}
    return {"paths": paths}


def group_version_document(registry: ServedKinds, path: str) -> bytes | None:
    """The JSON document of the group version at ``path`` (``apis/apps/v1``)."""
    found = [gv for gv in _group_versions(registry) if prefix(*gv) == path]
    if not found:
        return None
    group, version = found[0]
    kinds = registry.in_group_version(group, version)
    if any(kind.custom for kind in kinds):
        return json.dumps(_document(group, version, kinds), sort_keys=True).encode()
    return _builtin_document(group, version)


@functools.cache
def _builtin_document(group: str, version: str) -> bytes:
    """A built-in group version's document: it never changes, so it is kept."""
    registry = ServedKinds()
    kinds = registry.in_group_version(group, version)
    return json.dumps(_document(group, version, kinds), sort_keys=True).encode()


def _operation(kind: Kind, method: str) -> Obj:
    gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    action = {"patch": "patch", "post": "post"}[method]
    return {
        "operationId": f"{action}{kind.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
        "parameters": [
            {"name": name, "in": "query", "schema": {"type": "string"}}
            for name in _QUERY
        ],
        "responses": {"200": {"description": "OK"}},
    }


def _reviews() -> list[Kind]:
    """The review kinds, as rows for this document only (they are not stored)."""
    return [
        Kind(kind, plural, group=authorization.GROUP, namespaced=False)
        for plural, kind in authorization.RESOURCES
    ]


def _document(group: str, version: str, kinds: list[Kind]) -> Obj:
    paths: Obj = {}
    schemas: Obj = {}
    wanted: set[str] = set()
    root = f"/{prefix(group, version)}"
    if (group, version) == (authorization.GROUP, authorization.VERSION):
        for kind in _reviews():
            paths[f"{root}/{kind.plural}"] = {"post": _operation(kind, "post")}
            wanted.add(_type_id(kind))
    for kind in kinds:
        scope = "namespaces/{namespace}/" if kind.namespaced else ""
        item = f"{root}/{scope}{kind.plural}/{{name}}"
        paths[item] = {"patch": _operation(kind, "patch")}
        if kind.custom:
            schemas[custom_component_name(kind)] = custom_schema(kind)
            wanted.add(_OBJECT_META)
        else:
            wanted.add(_type_id(kind))
    schemas.update(typeschemas.components(wanted))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": K3S_VERSION},
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.items()))},
    }


def _type_id(kind: Kind) -> str:
    found = typeschemas.kind_type(kind.group, kind.version, kind.kind)
    if found is None:
        raise KeyError(f"no schema is described for {kind.api_version} {kind.kind}")
    return found


def custom_component_name(kind: Kind) -> str:
    """The component name of a custom kind: reversed group, version, kind."""
    reversed_group = ".".join(reversed(kind.group.split(".")))
    return f"{reversed_group}.{kind.version}.{kind.kind}"


def custom_schema(kind: Kind) -> Obj:
    """A CRD version's schema as published: metadata, apiVersion, kind and GVK."""
    schema: Obj = copy.deepcopy(kind.schema) if kind.schema else {}
    schema.setdefault("type", "object")
    if not kind.schema:
        schema["x-kubernetes-preserve-unknown-fields"] = True
    properties = schema.setdefault("properties", {})
    for name in ("apiVersion", "kind"):
        properties.setdefault(name, {"type": "string"})
        properties[name].setdefault("description", typeschemas.kind_field(name))
    properties["metadata"] = {
        "allOf": [{"$ref": f"#/components/schemas/{_OBJECT_META}"}],
        "description": typeschemas.kind_field("metadata"),
    }
    gvk = {"group": kind.group, "kind": kind.kind, "version": kind.version}
    schema["x-kubernetes-group-version-kind"] = [gvk]
    return schema
