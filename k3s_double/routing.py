"""Routing: from a request line to the storage call that answers it.

:class:`Router` is the API's entry point (:meth:`Router.handle`). It serves
the discovery and OpenAPI documents, ``/version`` and the health checks,
splits resource paths (``/api/v1/namespaces/NS/pods/NAME/status``) into kind,
namespace, name and subresource, decodes bodies (JSON or YAML) and patches,
and dispatches to :class:`~.storage.Storage`, to :func:`~.watch.watch`, or to
the ``log`` and ``scale`` subresources here. An unknown path is a 404 like the
API server's; an :class:`~.errors.ApiError` becomes its ``Status``, and any
other exception a 500 ``InternalError``.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import traceback
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import yaml

from . import discovery
from .constants import GO_TRUE
from .constants import go_arch
from .errors import STALE
from .errors import ApiError
from .errors import bad_request
from .errors import conflict
from .errors import method_not_allowed
from .errors import no_resource
from .errors import not_found
from .errors import unsupported_media
from .patches import PatchError
from .resources import BY_KIND
from .resources import BY_PLURAL
from .resources import GROUPS
from .resources import Kind
from .resources import Obj
from .resources import now
from .response import Response
from .response import json_response
from .storage import Storage
from .storage import delete_options
from .watch import start_watch


PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)


class Router(Storage):
    """Storage with the HTTP-shaped front the node half talks to."""

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
            return json_response(error.code, error.status())
        except Exception as error:  # an internal bug must still answer like k8s
            traceback.print_exc(file=sys.stderr)
            failure = ApiError(
                500, "InternalError", f"Internal error occurred: {error}"
            )
            return json_response(500, failure.status())

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
            return json_response(200, documents[path]())
        if path == "/openapi/v3":
            return json_response(200, discovery.openapi_root())
        if path.startswith("/openapi/v3/"):
            document = discovery.openapi_document(path[len("/openapi/v3/") :])
            if document is not None:
                return json_response(200, document)
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
                return start_watch(self, kind, namespace, query, render)
            if method == "GET":
                listed = self.list(kind, namespace, query)
                if table:
                    rv = listed["metadata"]["resourceVersion"]
                    return json_response(
                        200, discovery.table(kind, listed["items"], rv, include)
                    )
                return json_response(200, listed)
            if method == "POST":
                obj = self._body(body, headers)
                return json_response(201, self.create(kind, ns, obj, dry_run=dry_run))
            if method == "DELETE":
                return json_response(
                    200, self.delete_collection(kind, namespace, query, body)
                )
            raise method_not_allowed()
        if sub == "log":
            if method != "GET":
                raise method_not_allowed()
            return self._log(ns, name, query)
        if sub == "scale":
            return self._scale(method, kind, ns, name, headers, body)
        if method == "GET" and watch:
            query = {**query, "fieldSelector": f"metadata.name={name}"}
            return start_watch(self, kind, namespace, query, render)
        if method == "GET":
            found = self.get(kind, ns, name)
            return json_response(200, render(found) if render else found)
        if method == "PUT":
            obj = self._body(body, headers)
            return json_response(
                200, self.update(kind, ns, name, obj, sub=sub, dry_run=dry_run)
            )
        if method == "PATCH":
            ctype = headers.get("content-type", "").split(";")[0].strip()
            return self._patch(kind, ns, name, ctype, body, sub, query)
        if method == "DELETE" and sub is None:
            options = delete_options(body, query)
            status, result = self.delete(kind, ns, name, options, dry_run=dry_run)
            return json_response(status, result)
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
                    return json_response(
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
            return json_response(200, updated)

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
                return json_response(200, scale)
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
            return json_response(200, _scale_of(updated))


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
