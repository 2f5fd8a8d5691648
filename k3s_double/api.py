"""``KubeAPI``: the stateful, in-memory Kubernetes API of the k3s node double.

The node half of the double terminates TLS, authenticates, and passes each
request to ``KubeAPI.handle``; this module routes it, applies the API
server's rules (defaulting, admission, validation, optimistic concurrency,
deletion semantics) and answers with JSON or a watch stream.  The
controllers that make objects come alive live in ``controllers.py``.

Contract with the node half::

    Response(status, body=b"", content_type="application/json", stream=None)
    KubeAPI(*, git_version="v1.35.5+k3s1", disable=frozenset(), ca_pem="")
    KubeAPI.handle(method, target, headers, body, *, user) -> Response
    KubeAPI.start_controllers(); KubeAPI.stop()
    node_object(name, *, internal_ip, labels, taints=(), git_version=...)
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import json
import os
import platform
import queue
import random
import re
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import yaml

from . import discovery
from .constants import GO_TRUE
from .constants import K3S_VERSION
from .constants import go_arch
from .errors import STALE
from .errors import ApiError
from .errors import already_exists
from .errors import bad_request
from .errors import conflict
from .errors import forbidden
from .errors import invalid
from .errors import method_not_allowed
from .errors import no_resource
from .errors import not_found
from .errors import unsupported_media
from .patches import PatchError
from .patches import json_patch
from .patches import merge_patch
from .patches import strategic_merge_patch
from .resources import BY_KIND
from .resources import BY_PLURAL
from .resources import GROUPS
from .resources import Kind
from .resources import Obj
from .resources import apply_defaults
from .resources import field_value
from .resources import now
from .resources import qos_class
from .selectors import FieldSelector
from .selectors import LabelSelector
from .selectors import SelectorError
from .selectors import match_fields
from .selectors import match_labels
from .selectors import parse_fields
from .selectors import parse_labels
from .store import Change
from .store import Store
from .store import TooOld
from .validation import causes as validation_causes
from .validation import update_causes


__all__ = ["KubeAPI", "Response", "node_object"]

PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")
SERVICE_NET = ipaddress.ip_network("10.43.0.0/16")
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
WATCH_DEFAULT_TIMEOUT = 1800.0
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_META = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
)


@dataclass
class Response:
    """One answer of the API; ``stream`` (watch) is sent chunked, one event a line."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    stream: Iterator[bytes] | None = None


def _json(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj).encode())


def random_suffix(length: int = 5) -> str:
    """Return the random name suffix Kubernetes uses for generateName."""
    return "".join(random.choice(NAME_CHARS) for _ in range(length))


class KubeAPI:
    """A stateful Kubernetes API server without the HTTP layer."""

    def __init__(
        self,
        *,
        git_version: str = K3S_VERSION,
        disable: frozenset[str] = frozenset(),
        ca_pem: str = "",
    ) -> None:
        self.git_version = git_version
        self.disable = frozenset(disable)
        self.ca_pem = ca_pem
        self.store = Store()
        self._controllers: Any = None
        from .bootstrap import bootstrap

        bootstrap(self)

    # -- entry point ------------------------------------------------------

    def handle(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        user: str,
    ) -> Response:
        """Answer one request; ``target`` is the raw path plus query string."""
        try:
            return self._route(method.upper(), target, headers, body)
        except ApiError as error:
            return _json(error.code, error.status())
        except Exception as error:  # an internal bug must still answer like k8s
            traceback.print_exc(file=sys.stderr)
            failure = ApiError(
                500, "InternalError", f"Internal error occurred: {error}"
            )
            return _json(500, failure.status())

    def start_controllers(self) -> None:
        """Start the background controllers (idempotent)."""
        from .controllers import Controllers

        if self._controllers is None:
            self._controllers = Controllers(self)
            self._controllers.start()

    def stop(self) -> None:
        """Stop the controllers and end every open watch."""
        if self._controllers is not None:
            self._controllers.stop()
        self.store.close_all()

    # -- routing ----------------------------------------------------------

    def _route(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> Response:
        split = urlsplit(target)
        path = "/" + split.path.strip("/")
        query = {
            k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()
        }
        documents: dict[str, Callable[[], Any]] = {
            "/version": self._version,
            "/api": discovery.api_versions,
            "/apis": discovery.api_group_list,
            "/api/v1": lambda: discovery.resource_list(""),
        }
        for group, version in GROUPS.items():
            documents[f"/apis/{group}"] = functools.partial(discovery.api_group, group)
            documents[f"/apis/{group}/{version}"] = functools.partial(
                discovery.resource_list, group
            )
        if path in documents:
            if method != "GET":
                raise method_not_allowed()
            return _json(200, documents[path]())
        if path == "/openapi/v3":
            return _json(200, discovery.openapi_root())
        if path.startswith("/openapi/v3/"):
            document = discovery.openapi_document(path[len("/openapi/v3/") :])
            if document is not None:
                return _json(200, document)
        check = path.split("/")[1]
        if check in ("healthz", "livez", "readyz"):
            return self._health(check, "verbose" in query)
        segments = path.strip("/").split("/")
        if segments[:2] == ["api", "v1"]:
            group, rest = "", segments[2:]
        elif (
            len(segments) >= 3
            and segments[0] == "apis"
            and GROUPS.get(segments[1]) == segments[2]
        ):
            group, rest = segments[1], segments[3:]
        else:
            return Response(404, b"404 page not found\n", "text/plain; charset=utf-8")
        watch = query.get("watch") in GO_TRUE
        if rest and rest[0] == "watch":
            watch, rest = True, rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            inner = BY_PLURAL.get((group, rest[2]))
            if inner is not None and inner.namespaced:
                namespace, rest = rest[1], rest[2:]
        kind = BY_PLURAL.get((group, rest[0])) if rest else None
        if (
            kind is None
            or len(rest) > 3
            or (kind.namespaced and namespace is None and len(rest) > 1)
        ):
            raise no_resource()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and not (
            (sub == "status" and kind.has_status)
            or (sub == "scale" and kind.scale)
            or (sub == "log" and kind.kind == "Pod")
        ):
            raise no_resource()
        table = "as=Table" in headers.get("accept", "")
        return self._dispatch(
            method,
            kind,
            namespace,
            name,
            sub,
            query,
            headers,
            body,
            watch=watch,
            table=table,
        )

    def _dispatch(
        self,
        method: str,
        kind: Kind,
        namespace: str | None,
        name: str | None,
        sub: str | None,
        query: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
        *,
        watch: bool,
        table: bool,
    ) -> Response:
        ns = namespace or ""
        dry_run = query.get("dryRun") == "All"
        include = query.get("includeObject", "Metadata")
        render: Callable[[Obj], Obj] | None = None
        if table:

            def render(obj: Obj) -> Obj:
                rv = obj["metadata"].get("resourceVersion", "")
                return discovery.table(kind, [obj], rv, include)

        if name is None:
            if method == "GET" and watch:
                return self._watch(kind, namespace, query, render)
            if method == "GET":
                listed = self.list(kind, namespace, query)
                if table:
                    rv = listed["metadata"]["resourceVersion"]
                    return _json(
                        200, discovery.table(kind, listed["items"], rv, include)
                    )
                return _json(200, listed)
            if method == "POST":
                obj = self._body(body, headers)
                return _json(201, self.create(kind, ns, obj, dry_run=dry_run))
            if method == "DELETE":
                return _json(200, self._delete_collection(kind, namespace, query, body))
            raise method_not_allowed()
        if sub == "log":
            if method != "GET":
                raise method_not_allowed()
            return self._log(ns, name, query)
        if sub == "scale":
            return self._scale(method, kind, ns, name, headers, body)
        if method == "GET" and watch:
            query = {**query, "fieldSelector": f"metadata.name={name}"}
            return self._watch(kind, namespace, query, render)
        if method == "GET":
            found = self.get(kind, ns, name)
            return _json(200, render(found) if render else found)
        if method == "PUT":
            obj = self._body(body, headers)
            return _json(
                200, self.update(kind, ns, name, obj, sub=sub, dry_run=dry_run)
            )
        if method == "PATCH":
            ctype = headers.get("content-type", "").split(";")[0].strip()
            return self._patch(kind, ns, name, ctype, body, sub, query)
        if method == "DELETE" and sub is None:
            options = self._options(body, query)
            status, result = self.delete(kind, ns, name, options, dry_run=dry_run)
            return _json(status, result)
        raise method_not_allowed()

    @staticmethod
    def _body(body: bytes, headers: Mapping[str, str]) -> Obj:
        ctype = headers.get("content-type", "application/json").split(";")[0].strip()
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml"):
                obj = yaml.safe_load(body)
            elif ctype in ("application/json", ""):
                obj = json.loads(body or b"null")
            else:
                raise unsupported_media(ctype, ["application/json", "application/yaml"])
        except (ValueError, yaml.YAMLError) as error:
            raise bad_request(f"error decoding request body: {error}") from error
        if not isinstance(obj, dict):
            raise bad_request("Object 'Kind' is missing in the request body")
        return obj

    @staticmethod
    def _options(body: bytes, query: Mapping[str, str]) -> Obj:
        options: Obj = {}
        if body.strip():
            try:
                loaded = json.loads(body)
            except ValueError as error:
                raise bad_request(f"error decoding DeleteOptions: {error}") from error
            if isinstance(loaded, dict):
                options.update(loaded)
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "gracePeriodSeconds" in query:
            options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        return options

    # -- non-resource endpoints ---------------------------------------------

    def _version(self) -> Obj:
        found = re.match(r"v(\d+)\.(\d+)", self.git_version)
        major, minor = found.groups() if found else ("1", "35")
        arch = go_arch()
        return {
            "major": major,
            "minor": minor,
            "emulationMajor": major,
            "emulationMinor": minor,
            "minCompatibilityMajor": major,
            "minCompatibilityMinor": str(max(0, int(minor) - 1)),
            "gitVersion": self.git_version,
            "gitCommit": "e8f1a2c3d4b5a6978899aabbccddeeff00112233",
            "gitTreeState": "clean",
            "buildDate": "2025-06-01T00:00:00Z",
            "goVersion": "go1.24.4",
            "compiler": "gc",
            "platform": f"linux/{arch}",
        }

    @staticmethod
    def _health(check: str, verbose: bool) -> Response:
        if not verbose:
            return Response(200, b"ok", "text/plain; charset=utf-8")
        names = [
            "ping",
            "log",
            "etcd",
            "poststarthook/start-apiserver-admission-initializer",
        ]
        if check == "readyz":
            names += ["informer-sync", "shutdown"]
        lines = [f"[+]{name} ok" for name in names] + [f"{check} check passed", ""]
        return Response(200, "\n".join(lines).encode(), "text/plain; charset=utf-8")

    # -- reads ------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        """Return one object or raise NotFound."""
        found = self.store.get(kind, namespace, name)
        if found is None:
            raise not_found(kind, name)
        return found

    def find(self, kind_name: str, namespace: str, name: str) -> Obj | None:
        """Return one object by kind name, or None."""
        return self.store.get(BY_KIND[kind_name], namespace, name)

    def objects(self, kind_name: str, namespace: str | None = None) -> list[Obj]:
        """Return all objects of a kind by kind name."""
        return self.store.select(BY_KIND[kind_name], namespace)

    @staticmethod
    def _selectors(
        kind: Kind, query: Mapping[str, str]
    ) -> tuple[LabelSelector, FieldSelector]:
        try:
            labels = parse_labels(query.get("labelSelector", ""))
            fields = parse_fields(query.get("fieldSelector", ""), kind.allows_field)
        except SelectorError as error:
            raise bad_request(str(error)) from error
        return labels, fields

    @staticmethod
    def _matches(
        kind: Kind, obj: Obj, labels: LabelSelector, fields: FieldSelector
    ) -> bool:
        if not match_labels(labels, obj["metadata"].get("labels")):
            return False
        values = {field: field_value(kind, obj, field) for field, _, _ in fields}
        return match_fields(fields, values)

    def list(self, kind: Kind, namespace: str | None, query: Mapping[str, str]) -> Obj:
        """Return the List object for a collection, filtered by selectors."""
        labels, fields = self._selectors(kind, query)
        with self.store.lock:
            items = self.store.select(kind, namespace)
            rv = self.store.resource_version
        kept = []
        for item in items:
            if self._matches(kind, item, labels, fields):
                item.pop("kind", None)
                item.pop("apiVersion", None)
                kept.append(item)
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": rv},
            "items": kept,
        }

    def _watch(
        self,
        kind: Kind,
        namespace: str | None,
        query: Mapping[str, str],
        render: Callable[[Obj], Obj] | None = None,
    ) -> Response:
        """Start a watch; ``render`` turns each event's object into a Table."""
        labels, fields = self._selectors(kind, query)
        try:
            timeout = float(query.get("timeoutSeconds") or WATCH_DEFAULT_TIMEOUT)
        except ValueError as error:
            raise bad_request(f"invalid timeoutSeconds: {error}") from error
        requested = query.get("resourceVersion", "")
        if requested not in ("", "0") and not requested.isdigit():
            raise bad_request(f'invalid resource version "{requested}"')
        since = int(requested) if requested not in ("", "0") else None
        try:
            watcher, replay = self.store.subscribe(kind, namespace, since)
        except TooOld:
            expired = ApiError(410, "Expired", f"too old resource version: {requested}")
            line = json.dumps({"type": "ERROR", "object": expired.status()}) + "\n"
            return Response(200, stream=iter([line.encode()]))

        def visible(obj: Obj | None) -> bool:
            if obj is None:
                return False
            if namespace is not None and obj["metadata"].get("namespace") != namespace:
                return False
            return self._matches(kind, obj, labels, fields)

        def event(change: Change) -> bytes | None:
            before, after = visible(change.old), visible(change.new)
            if change.type == "DELETED":
                kind_of = "DELETED" if before else None
            elif before and after:
                kind_of = "MODIFIED"
            elif after:
                kind_of = "ADDED"
            else:
                kind_of = "DELETED" if before else None
            if kind_of is None:
                return None
            shown = render(change.new) if render else change.new
            return (json.dumps({"type": kind_of, "object": shown}) + "\n").encode()

        def stream() -> Iterator[bytes]:
            deadline = time.monotonic() + timeout
            try:
                for old in replay:
                    line = event(old)
                    if line is not None:
                        yield line
                while (remaining := deadline - time.monotonic()) > 0:
                    try:
                        change = watcher.events.get(timeout=remaining)
                    except queue.Empty:
                        return
                    if change is None:
                        return
                    line = event(change)
                    if line is not None:
                        yield line
            finally:
                self.store.unsubscribe(watcher)

        return Response(200, stream=stream())

    # -- writes -----------------------------------------------------------------

    def _check_namespace(self, kind: Kind, namespace: str, name: str) -> None:
        ns_kind = BY_KIND["Namespace"]
        found = self.store.get(ns_kind, "", namespace)
        if found is None:
            raise not_found(ns_kind, namespace)
        if found["metadata"].get("deletionTimestamp"):
            raise forbidden(
                kind,
                name,
                f"unable to create new content in namespace {namespace} because "
                "it is being terminated",
            )

    def create(
        self, kind: Kind, namespace: str, body: Obj, *, dry_run: bool = False
    ) -> Obj:
        """Create an object (POST), with defaulting, admission and validation."""
        obj = copy.deepcopy(body)
        if obj.get("apiVersion") not in (None, kind.api_version):
            raise bad_request(
                f"the API version in the data ({obj['apiVersion']}) does not match "
                f"the expected API version ({kind.api_version})"
            )
        if obj.get("kind") not in (None, kind.kind):
            raise bad_request(
                f"the kind in the data ({obj['kind']}) does not match the expected "
                f"kind ({kind.kind})"
            )
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        if kind.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        for key in _SERVER_META:
            meta.pop(key, None)
        with self.store.lock:
            if not meta.get("name") and meta.get("generateName"):
                while True:
                    meta["name"] = f"{meta['generateName']}{random_suffix()}"
                    if self.store.get(kind, namespace, meta["name"]) is None:
                        break
            name = str(meta.get("name") or "")
            if kind.namespaced:
                self._check_namespace(kind, namespace, name)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if kind.generation:
                meta["generation"] = 1
            if kind.has_status and kind.kind != "Node":
                obj["status"] = self._initial_status(kind, obj)
            apply_defaults(kind, obj)
            found = validation_causes(kind, obj)
            if found:
                raise invalid(kind, name, found)
            if self.store.get(kind, namespace, name) is not None:
                raise already_exists(kind, name)
            self._admit(kind, obj)
            if dry_run:
                return obj
            return self.store.commit(kind, obj)

    @staticmethod
    def _initial_status(kind: Kind, obj: Obj) -> Obj:
        if kind.kind == "Pod":
            return {"phase": "Pending", "qosClass": qos_class(obj.get("spec") or {})}
        if kind.kind == "Namespace":
            return {"phase": "Active"}
        if kind.kind == "Service":
            return {"loadBalancer": {}}
        if kind.kind == "ReplicaSet":
            return {"replicas": 0, "availableReplicas": 0}
        return {}

    def _admit(self, kind: Kind, obj: Obj) -> None:
        """Run the admission steps of the kinds that have them."""
        if kind.kind == "Pod":
            self._admit_pod(obj)
        elif kind.kind == "Service":
            self._allocate_service(obj)
        elif kind.kind == "Node":
            spec = obj.setdefault("spec", {})
            if not spec.get("podCIDR"):
                used = {n.get("spec", {}).get("podCIDR") for n in self.objects("Node")}
                index = next(i for i in range(256) if f"10.42.{i}.0/24" not in used)
                spec["podCIDR"] = f"10.42.{index}.0/24"
                spec["podCIDRs"] = [spec["podCIDR"]]

    def _admit_pod(self, pod: Obj) -> None:
        spec, meta = pod["spec"], pod["metadata"]
        account = spec.get("serviceAccountName") or "default"
        spec["serviceAccountName"] = spec["serviceAccount"] = account
        found = self.find("ServiceAccount", meta["namespace"], account)
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

    def _allocate_service(self, svc: Obj) -> None:
        spec = svc["spec"]
        if spec.get("type") == "ExternalName":
            return
        services = self.objects("Service")
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
                p.get("nodePort")
                for s in services
                for p in s["spec"].get("ports") or ()
            }
            for port in spec.get("ports") or []:
                if not port.get("nodePort"):
                    free = [n for n in range(30000, 32768) if n not in ports_used]
                    port["nodePort"] = random.choice(free)
                    ports_used.add(port["nodePort"])

    def update(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        body: Obj,
        *,
        sub: str | None = None,
        dry_run: bool = False,
        internal: bool = False,
    ) -> Obj:
        """Replace an object (PUT), honouring resourceVersion preconditions.

        On the main resource the status is kept; on ``status`` only the
        status changes; ``all`` (controllers only) takes both from ``body``.
        ``internal`` skips the checks of fields users may not change.
        """
        with self.store.lock:
            old = self.get(kind, namespace, name)
            meta = body.get("metadata") or {}
            if not isinstance(meta, dict):
                raise bad_request("metadata must be an object")
            if meta.get("name") not in (None, name):
                raise bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the "
                    f"name on the URL ({name})"
                )
            if kind.namespaced and meta.get("namespace") not in (None, "", namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the "
                    "namespace sent on the request"
                )
            wanted_rv = meta.get("resourceVersion")
            if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
                raise conflict(kind, name, STALE)
            if sub == "status":
                new = copy.deepcopy(old)
                new["status"] = copy.deepcopy(body.get("status", old.get("status")))
            elif sub == "all":
                new = copy.deepcopy(body)
            else:
                new = copy.deepcopy(body)
                new.setdefault("metadata", {})
                if kind.has_status:
                    new["status"] = copy.deepcopy(old.get("status"))
                    if new["status"] is None:
                        del new["status"]
            new["apiVersion"], new["kind"] = kind.api_version, kind.kind
            new_meta = new["metadata"]
            new_meta["name"] = name
            if kind.namespaced:
                new_meta["namespace"] = namespace
            for key in _SERVER_META:
                new_meta.pop(key, None)
                if key in old["metadata"]:
                    new_meta[key] = old["metadata"][key]
            apply_defaults(kind, new)
            found = validation_causes(kind, new)
            if not internal:
                found += update_causes(kind, old, new)
            if found:
                raise invalid(kind, name, found)
            if kind.generation and new.get("spec") != old.get("spec"):
                new_meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
            if new == old or dry_run:
                return new
            if new_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
                gone = self.store.remove(kind, namespace, name)
                assert gone is not None
                return gone
            return self.store.commit(kind, new)

    def mutate(
        self, kind_name: str, namespace: str, name: str, change: Callable[[Obj], object]
    ) -> Obj | None:
        """Apply ``change`` to a copy of an object and store it (controllers).

        Returns the stored object, or None when the object is gone.  The
        whole read-modify-write holds the store lock, so it never conflicts.
        """
        kind = BY_KIND[kind_name]
        with self.store.lock:
            current = self.store.get(kind, namespace, name)
            if current is None:
                return None
            updated = copy.deepcopy(current)
            change(updated)
            if updated == current:
                return current
            return self.update(kind, namespace, name, updated, sub="all", internal=True)

    def _patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        ctype: str,
        body: bytes,
        sub: str | None,
        query: Mapping[str, str],
    ) -> Response:
        if ctype not in PATCH_TYPES:
            raise unsupported_media(ctype, PATCH_TYPES)
        try:
            if ctype == "application/apply-patch+yaml":
                patch = yaml.safe_load(body)
            else:
                patch = json.loads(body)
        except (ValueError, yaml.YAMLError) as error:
            raise bad_request(f"error decoding patch: {error}") from error
        dry_run = query.get("dryRun") == "All"
        with self.store.lock:
            current = self.store.get(kind, namespace, name)
            if current is None:
                if ctype == "application/apply-patch+yaml" and sub is None:
                    if not isinstance(patch, dict):
                        raise bad_request("apply patch must be an object")
                    patch.setdefault("metadata", {})["name"] = name
                    return _json(
                        201, self.create(kind, namespace, patch, dry_run=dry_run)
                    )
                raise not_found(kind, name)
            try:
                patched = self.apply_patch(ctype, current, patch)
            except PatchError as error:
                raise ApiError(422, "Invalid", str(error)) from error
            if not isinstance(patched, dict):
                raise bad_request("the patch did not produce an object")
            updated = self.update(
                kind, namespace, name, patched, sub=sub, dry_run=dry_run
            )
            return _json(200, updated)

    @staticmethod
    def apply_patch(ctype: str, current: Any, patch: Any) -> Any:
        """Apply a patch of the given content type to ``current``."""
        if ctype == "application/json-patch+json":
            return json_patch(current, patch)
        if not isinstance(patch, dict):
            raise bad_request(
                "json: cannot unmarshal array into Go value of type "
                "map[string]interface {}"
            )
        if ctype == "application/merge-patch+json":
            return merge_patch(current, patch)
        return strategic_merge_patch(current, patch)

    def delete(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> tuple[int, Obj]:
        """Delete an object (DELETE) and return the HTTP status and the answer."""
        options = options or {}
        with self.store.lock:
            old = self.get(kind, namespace, name)
            meta = old["metadata"]
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != meta["uid"]:
                raise conflict(
                    kind,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                    f"object meta: {meta['uid']}",
                )
            if (
                pre.get("resourceVersion")
                and pre["resourceVersion"] != meta["resourceVersion"]
            ):
                raise conflict(
                    kind,
                    name,
                    "Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{meta['resourceVersion']}",
                )
            if dry_run:
                return 200, old
            if kind.kind == "Namespace":
                return 200, self._delete_namespace(old)
            policy = options.get("propagationPolicy")
            if policy is None and "orphanDependents" in options:
                policy = "Orphan" if options["orphanDependents"] else "Background"
            policy = policy or kind.default_propagation
            grace = options.get("gracePeriodSeconds")
            if kind.kind == "Pod" and grace != 0 and old["spec"].get("nodeName"):
                if not meta.get("deletionTimestamp"):
                    seconds = (
                        grace
                        if grace is not None
                        else old["spec"].get("terminationGracePeriodSeconds", 30)
                    )
                    meta["deletionTimestamp"] = _later(int(seconds))
                    meta["deletionGracePeriodSeconds"] = int(seconds)
                    return 200, self.store.commit(kind, old)
                return 200, old
            if policy == "Orphan":
                self._orphan_dependents(meta["uid"])
            finalizers = list(meta.get("finalizers") or [])
            if policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            if finalizers:
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = now()
                    meta["deletionGracePeriodSeconds"] = 0
                meta["finalizers"] = finalizers
                stored = self.store.commit(kind, old)
                return (202 if policy == "Foreground" else 200), stored
            gone = self.store.remove(kind, namespace, name)
            assert gone is not None
            if kind.returns_deleted:
                return 200, gone
            details = {"name": name, "kind": kind.plural, "uid": meta["uid"]}
            if kind.group:
                details = {
                    "name": name,
                    "group": kind.group,
                    "kind": kind.plural,
                    "uid": meta["uid"],
                }
            return 200, {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }

    def _delete_namespace(self, old: Obj) -> Obj:
        kind, name = BY_KIND["Namespace"], old["metadata"]["name"]
        if name in PROTECTED_NAMESPACES:
            raise forbidden(kind, name, "this namespace may not be deleted")
        if old["metadata"].get("deletionTimestamp"):
            raise conflict(
                kind,
                name,
                "The system is ensuring all content is removed from this namespace.  "
                "Upon completion, this namespace will automatically be purged by the "
                "system.",
            )
        old["metadata"]["deletionTimestamp"] = now()
        old["metadata"]["deletionGracePeriodSeconds"] = 0
        old["status"] = {"phase": "Terminating"}
        return self.store.commit(kind, old)

    def _orphan_dependents(self, uid: str) -> None:
        for kind, obj in self.store.all_objects():
            refs = obj["metadata"].get("ownerReferences") or []
            kept = [r for r in refs if r.get("uid") != uid]
            if len(kept) != len(refs):
                if kept:
                    obj["metadata"]["ownerReferences"] = kept
                else:
                    del obj["metadata"]["ownerReferences"]
                self.store.commit(kind, obj)

    def _delete_collection(
        self, kind: Kind, namespace: str | None, query: Mapping[str, str], body: bytes
    ) -> Obj:
        options = self._options(body, query)
        listed = self.list(kind, namespace, query)
        deleted = []
        for item in listed["items"]:
            meta = item["metadata"]
            try:
                _, result = self.delete(
                    kind, meta.get("namespace", ""), meta["name"], options
                )
            except ApiError:
                continue
            if result.get("kind") != "Status":
                deleted.append(result)
            else:
                deleted.append(item)
        listed["items"] = deleted
        return listed

    # -- subresources ---------------------------------------------------------

    def _log(self, namespace: str, name: str, query: Mapping[str, str]) -> Response:
        pod = self.get(BY_KIND["Pod"], namespace, name)
        containers = [c["name"] for c in pod["spec"].get("containers") or []]
        container = query.get("container")
        if container is None:
            if len(containers) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one "
                    f"of: [{' '.join(containers)}]"
                )
            container = containers[0]
        if container not in containers:
            raise bad_request(f"container {container} is not valid for pod {name}")
        if pod.get("status", {}).get("phase") not in ("Running", "Succeeded", "Failed"):
            raise bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: '
                "ContainerCreating"
            )
        image = next(
            c["image"] for c in pod["spec"]["containers"] if c["name"] == container
        )
        started = pod["status"].get("startTime", now())
        lines = [
            (started, f"Starting container {container} from image {image}"),
            (started, f"{container}: configuration loaded"),
            (started, f"{container}: ready"),
        ]
        tail = query.get("tailLines")
        if tail and tail.isdigit():
            lines = lines[len(lines) - int(tail) :] if int(tail) else []
        stamps = query.get("timestamps") in GO_TRUE
        text = "".join(
            (f"{stamp.replace('Z', '.000000000Z')} " if stamps else "") + line + "\n"
            for stamp, line in lines
        )
        return Response(200, text.encode(), "text/plain")

    def _scale(
        self,
        method: str,
        kind: Kind,
        namespace: str,
        name: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        with self.store.lock:
            obj = self.get(kind, namespace, name)
            scale = _scale_of(obj)
            if method == "GET":
                return _json(200, scale)
            if method == "PUT":
                wanted = self._body(body, headers)
            elif method == "PATCH":
                ctype = headers.get("content-type", "").split(";")[0].strip()
                if ctype not in PATCH_TYPES[:3]:
                    raise unsupported_media(ctype, PATCH_TYPES[:3])
                try:
                    wanted = self.apply_patch(ctype, scale, json.loads(body))
                except (ValueError, PatchError) as error:
                    raise bad_request(str(error)) from error
            else:
                raise method_not_allowed()
            rv = (wanted.get("metadata") or {}).get("resourceVersion")
            if rv and rv != obj["metadata"]["resourceVersion"]:
                raise conflict(kind, name, STALE)
            replicas = (wanted.get("spec") or {}).get("replicas", 0)
            obj["spec"]["replicas"] = replicas
            updated = self.update(kind, namespace, name, obj)
            return _json(200, _scale_of(updated))


def _scale_of(obj: Obj) -> Obj:
    meta = obj["metadata"]
    selector = (obj["spec"].get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key]
            for key in (
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "creationTimestamp",
            )
        },
        "spec": {"replicas": obj["spec"].get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in selector.items()),
        },
    }


def _later(seconds: int) -> str:
    stamp = time.gmtime(time.time() + seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp)


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


def _read(path: str, fallback: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or fallback
    except OSError:
        return fallback


def _memory_kib() -> int:
    for line in _read("/proc/meminfo", "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 8 * 1024 * 1024


def node_object(
    name: str,
    *,
    internal_ip: str,
    labels: Mapping[str, str],
    taints: Sequence[Mapping[str, str]] = (),
    git_version: str = K3S_VERSION,
) -> dict[str, object]:
    """Build a complete v1 Node as a k3s kubelet registers it (Ready=True).

    It carries the standard node labels, addresses, capacity, a complete
    NodeSystemInfo and the four kubelet conditions, so that it validates
    against the kubernetes client's models.
    """
    stamp = now()
    arch = go_arch()
    capacity = {
        "cpu": str(os.cpu_count() or 1),
        "ephemeral-storage": "61202244Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": f"{_memory_kib()}Ki",
        "pods": "110",
    }
    all_labels = {
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/instance-type": "k3s",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "k3s",
        **labels,
    }

    def cond(kind: str, status: str, reason: str, message: str) -> Obj:
        return {
            "type": kind,
            "status": status,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
            "reason": reason,
            "message": message,
        }

    spec: Obj = {"providerID": f"k3s://{name}"}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "k3s.io/internal-ip": internal_ip,
                "k3s.io/hostname": name,
            },
        },
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                cond(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                cond(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                cond(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                cond(
                    "Ready", "True", "KubeletReady", "kubelet is posting ready status"
                ),
            ],
            "addresses": [
                {"type": "InternalIP", "address": internal_ip},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": arch,
                "bootID": _read("/proc/sys/kernel/random/boot_id", str(uuid.uuid4())),
                "containerRuntimeVersion": "containerd://2.0.5-k3s1",
                "kernelVersion": platform.release(),
                "kubeProxyVersion": git_version,
                "kubeletVersion": git_version,
                "machineID": _read("/etc/machine-id", uuid.uuid4().hex),
                "operatingSystem": "linux",
                "osImage": f"K3s {git_version}",
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            },
            "images": [],
        },
    }
