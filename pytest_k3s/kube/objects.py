"""Applying manifests and waiting for objects, through the client's dynamic client.

This is the other half of the Kubernetes layer (:mod:`pytest_k3s.kube.client`
holds the typed calls start-up and the fixtures make): any kind, built-in or
custom, addressed as kubectl addresses it.

:func:`apply` server-side-applies manifests (a file, a folder, YAML text or
dicts), CustomResourceDefinitions first, each waited for until Established
before the objects that use them. :func:`wait_for` waits with a watch for a
condition, a jsonpath value in ``kubectl wait``'s form, or deletion; when
time runs out the error shows the object's last status and its recent events.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import dynamic
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from pytest_k3s.errors import K3sError
from pytest_k3s.errors import WaitTimeoutError


Manifest = dict[str, Any]
Manifests = str | os.PathLike[str] | Mapping[str, Any] | Iterable[Mapping[str, Any]]

FIELD_MANAGER = "pytest-k3s"
CRD_KIND = "CustomResourceDefinition"
#: Kinds applied before the rest, in this order (as kubectl and helm do).
FIRST = (CRD_KIND, "Namespace")
_SUFFIXES = (".yaml", ".yml", ".json")


def load(manifests: Manifests) -> list[Manifest]:
    """Read manifests into a list of objects, ``List`` kinds expanded.

    A path (``os.PathLike``, or a one-line string naming an existing file or
    folder) is read, a folder's YAML and JSON files in name order; any other
    string is YAML text; mappings are objects.
    """
    if isinstance(manifests, Mapping):
        documents: list[Any] = [manifests]
    elif isinstance(manifests, str | os.PathLike):
        documents = _documents(manifests)
    else:
        documents = list(manifests)
    objects: list[Manifest] = []
    for document in documents:
        if document is None:
            continue
        if not isinstance(document, Mapping) or "kind" not in document:
            raise K3sError(f"not a Kubernetes object (no kind): {document!r:.200}")
        if document["kind"] == "List":
            objects += load(document.get("items") or [])
        else:
            objects.append(json.loads(json.dumps(document)))  # a deep, plain copy
    return objects


def _documents(source: str | os.PathLike[str]) -> list[Any]:
    text = os.fspath(source)
    path = Path(text)
    is_path = isinstance(source, os.PathLike) or (
        "\n" not in text and len(text) < 4096 and path.exists()
    )
    if not is_path:
        return list(yaml.safe_load_all(text))
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES)
    elif path.exists():
        files = [path]
    else:
        raise K3sError(f"no manifest file or folder at {path}")
    documents: list[Any] = []
    for file in files:
        documents += yaml.safe_load_all(file.read_text(encoding="utf-8"))
    return documents


def apply(
    api: k8s.ApiClient,
    manifests: Manifests,
    *,
    namespace: str | None = None,
    timeout: float = 60,
) -> list[Manifest]:
    """Server-side-apply ``manifests``; return the objects as the server has them.

    :param namespace: for namespaced objects that name none
    :param timeout: how long each CRD may take to become Established
    :raises K3sError: a manifest is invalid, names another namespace than
        ``namespace``, or the server refuses it (its message is kept)
    """
    objects = load(manifests)
    order = {kind: index for index, kind in enumerate(FIRST)}
    objects.sort(key=lambda obj: order.get(obj["kind"], len(FIRST)))
    client = _dynamic(api)
    applied: list[Manifest] = []
    for obj in objects:
        result = _apply_one(client, obj, namespace)
        applied.append(result)
        if obj["kind"] == CRD_KIND:
            wait_for(
                api, CRD_KIND, _name(obj), condition="Established", timeout=timeout
            )
            client.resources.invalidate_cache()  # its kind is served now
    return applied


def _apply_one(client: Any, obj: Manifest, namespace: str | None) -> Manifest:
    resource = _resource_for(client, obj["apiVersion"], obj["kind"])
    metadata = obj.setdefault("metadata", {})
    if resource.namespaced:
        own = metadata.get("namespace")
        if own and namespace and own != namespace:
            raise K3sError(
                f"{obj['kind']} {_name(obj)} names namespace {own!r}, but apply "
                f"was asked for namespace {namespace!r}"
            )
        metadata["namespace"] = own or namespace or "default"
    else:
        metadata.pop("namespace", None)
    try:
        result = client.server_side_apply(
            resource,
            body=obj,
            namespace=metadata.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
    except ApiException as exc:
        raise K3sError(
            f"applying {obj['kind']} {_name(obj)} failed: HTTP {exc.status}: "
            f"{_message(exc)}"
        ) from exc
    found: Manifest = result.to_dict()
    return found


def _resource_for(client: Any, api_version: str, kind: str) -> Any:
    try:
        return client.resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError:
        client.resources.invalidate_cache()
    try:
        return client.resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError as exc:
        raise K3sError(
            f"the cluster serves no {kind} in {api_version}; install its "
            "CustomResourceDefinition first (apply puts CRDs first)"
        ) from exc


def resolve(client: Any, kind: str) -> Any:
    """Find the resource for ``kind`` as kubectl accepts it.

    A kind (``Deployment``), plural (``deployments``), singular or short name
    (``deploy``), optionally with its group (``deployments.apps``); the
    server's preferred version wins.
    """
    name, _, group = kind.partition(".")
    wanted = name.lower()
    matches = []
    for resource in client.resources.search():
        if "/" in (resource.name or "") or not getattr(resource, "kind", None):
            continue
        names = {
            resource.kind.lower(),
            (resource.name or "").lower(),
            (resource.singular_name or "").lower(),
            *(n.lower() for n in resource.short_names or []),
        }
        if wanted in names and (not group or resource.group == group):
            matches.append(resource)
    if not matches:
        raise K3sError(f"the cluster serves no kind {kind!r}")
    matches.sort(key=lambda r: (not getattr(r, "preferred", False), r.group != ""))
    return matches[0]


def wait_for(
    api: k8s.ApiClient,
    kind: str,
    name: str,
    *,
    namespace: str | None = None,
    condition: str | None = None,
    jsonpath: str | None = None,
    delete: bool = False,
    timeout: float = 60,
) -> Manifest | None:
    """Wait until the object is as asked; return it (None once deleted).

    :param condition: a condition type (``Ready``, ``Available``,
        ``Established``), True by default, or ``Type=Status``
    :param jsonpath: ``{.status.phase}=Running`` (kubectl's form); without
        ``=value``, any non-empty value will do
    :param delete: wait until the object is gone
    :raises WaitTimeoutError: not in time; the message shows the object's
        last status and its recent events
    """
    if (
        sum(x is not None and x is not False for x in (condition, jsonpath, delete))
        != 1
    ):
        raise K3sError("wait_for takes one of condition=, jsonpath= or delete=True")
    check = _check(condition, jsonpath, delete)
    client = _dynamic(api)
    resource = resolve(client, kind)
    namespace = (namespace or "default") if resource.namespaced else None
    deadline = time.monotonic() + timeout
    last: Manifest | None = None
    while True:
        try:
            found: Manifest | None = resource.get(
                name=name, namespace=namespace
            ).to_dict()
        except ApiException as exc:
            if exc.status != 404:
                raise
            found = None
        last = found or last
        if check(found):
            return found
        version = (found or {}).get("metadata", {}).get("resourceVersion")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        watch: Any = client.watch
        for event in watch(
            resource,
            namespace=namespace,
            field_selector=f"metadata.name={name}",
            resource_version=version,
            timeout=max(1, int(min(remaining, 30))),
        ):
            current = event["object"].to_dict()
            current = None if event["type"] == "DELETED" else current
            last = current or last
            if check(current):
                return current
            if time.monotonic() > deadline:
                break
    what = condition or jsonpath or "deletion"
    raise WaitTimeoutError(
        f"{resource.kind} {name} did not reach {what} within {timeout:.0f}s"
        + _explain(api, resource.kind, name, namespace, last)
    )


def _check(
    condition: str | None, jsonpath: str | None, delete: bool
) -> Any:  # a predicate on the object (None: not there)
    if delete:
        return lambda obj: obj is None
    if condition is not None:
        kind, _, status = condition.partition("=")
        status = status or "True"

        def has(obj: Manifest | None) -> bool:
            conditions = ((obj or {}).get("status") or {}).get("conditions") or []
            return any(
                c.get("type", "").lower() == kind.lower()
                and str(c.get("status")) == status
                for c in conditions
            )

        return has
    assert jsonpath is not None
    match = re.fullmatch(r"\{(.+)\}(?:=(.*))?", jsonpath.strip())
    if match is None:
        raise K3sError(f"jsonpath {jsonpath!r} is not of the form {{.path}}=value")
    path, wanted = match.groups()
    return lambda obj: obj is not None and _matches(_lookup(obj, path), wanted)


def _matches(value: object, wanted: str | None) -> bool:
    if value is None:
        return False
    if wanted is None:
        return value not in ("", [], {})
    text = json.dumps(value) if isinstance(value, bool) else str(value)
    return text == wanted


def _lookup(obj: object, path: str) -> object:
    """Follow a ``.a.b[0].c`` path; None where it leads nowhere."""
    for key, index in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        if key and isinstance(obj, Mapping):
            obj = obj.get(key)
        elif index and isinstance(obj, list) and int(index) < len(obj):
            obj = obj[int(index)]
        else:
            return None
    return obj


def _explain(
    api: k8s.ApiClient,
    kind: str,
    name: str,
    namespace: str | None,
    last: Manifest | None,
) -> str:
    """The object's last status and recent events, for a timeout message."""
    status = yaml.safe_dump((last or {}).get("status") or {}, default_flow_style=False)
    lines = ["\n  last status:\n    " + status.strip().replace("\n", "\n    ")]
    try:
        selector = f"involvedObject.name={name},involvedObject.kind={kind}"
        core = k8s.CoreV1Api(api)
        events: list[Any] = (
            core.list_namespaced_event(namespace, field_selector=selector).items
            if namespace
            else core.list_event_for_all_namespaces(field_selector=selector).items
        )
    except Exception as exc:  # the report must not fail on the way
        events = []
        lines.append(f"  (events unavailable: {exc})")
    for event in events[-10:]:
        lines.append(f"  event {event.type} {event.reason}: {event.message}")
    return "\n".join(lines)


def _name(obj: Manifest) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))


def _dynamic(api: k8s.ApiClient) -> Any:
    """A dynamic client on ``api`` (the library has no annotations)."""
    make: Any = dynamic.DynamicClient
    return make(api)


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "").get("message", exc.reason))
    except (TypeError, ValueError):
        return str(exc.reason)
