"""Routing: from a request line to the storage call that answers it.

:class:`Router` is the API's entry point (:meth:`Router.handle`). It serves
the discovery and OpenAPI documents (:mod:`.discovery`, :mod:`.openapi`,
for the kinds the API's :class:`~.served.ServedKinds` serves, custom
resources included), ``/version``, the health checks and the access
reviews (:mod:`.authorization`, for the caller), splits resource paths
(``/api/v1/namespaces/NS/pods/NAME/status``,
``/apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME``) into kind, namespace, name
and subresource, decodes bodies (JSON or YAML) and patches, and dispatches to
:class:`~.storage.Storage`, to :func:`~.watch.start_watch`, or to the ``log``
and ``scale`` subresources (:mod:`.subresources`). An unknown path is a 404
like the API server's; an :class:`~.errors.ApiError` becomes its ``Status``,
and any other exception a 500 ``InternalError``.
"""

from __future__ import annotations

import json
import re
import sys
import traceback
from collections.abc import Callable
from collections.abc import Mapping
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import yaml

from k3s_double.constants import GO_TRUE
from k3s_double.constants import go_arch
from k3s_double.releases import serves_watch_list

from . import authorization
from . import discovery
from . import kubelets
from . import subresources
from .bodies import APPLY
from .bodies import decode_body
from .crds import crd_name
from .deletion import delete_options
from .errors import ApiError
from .errors import bad_request
from .errors import method_not_allowed
from .errors import no_resource
from .errors import not_found
from .errors import unsupported_media
from .kinds import BY_KIND
from .kinds import Kind
from .kinds import Obj
from .patches import PatchError
from .response import Response
from .response import json_response
from .storage import Storage
from .watch import start_watch


#: Post-start hooks that write through the storage: not ready before it is.
STORAGE_HOOKS = (
    "poststarthook/rbac/bootstrap-roles",
    "poststarthook/scheduling/bootstrap-system-priority-classes",
    "poststarthook/bootstrap-controller",
)
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
)
#: Custom resources have no Go types, so no patch strategies: the
#: apiextensions-apiserver refuses strategic merge patches with a 415.
CUSTOM_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)


def initializing() -> Response:
    """What the watch cache answers before it is ready (cacher ``ready.wait``).

    ``errors.NewTooManyRequests("storage is (re)initializing", 1)``: 429,
    reason TooManyRequests, ``retryAfterSeconds: 1`` and ``Retry-After: 1``.
    """
    failure = ApiError(
        429, "TooManyRequests", "storage is (re)initializing", {"retryAfterSeconds": 1}
    )
    answer = json_response(429, failure.status())
    answer.headers["Retry-After"] = "1"
    return answer


class Router:
    """The HTTP-shaped front of a :class:`~.storage.Storage`.

    :param storage: what every resource request reads and writes
    :param git_version: the k3s release ``/version`` reports
    """

    def __init__(self, storage: Storage, *, git_version: str) -> None:
        self.storage = storage
        self.git_version = git_version
        #: Whether watches stream initial events (the release's WatchList gate).
        self.watch_list = serves_watch_list(git_version)
        #: How this API reaches kubelets (None: no kubelet is reachable).
        self.kubelets: kubelets.KubeletClient | None = None

    def handle(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        user: str,
        groups: tuple[str, ...] = (),
    ) -> Response:
        """Answer one request; ``target`` is the raw path plus query string.

        ``user`` and ``groups`` are the caller as authenticated (its
        certificate's CN and O); only the reviews (:mod:`.authorization`)
        look at them.
        """
        try:
            return self._route(
                method.upper(), target, headers, body, user=user, groups=groups
            )
        except ApiError as error:
            return json_response(error.code, error.status())
        except Exception as error:  # an internal bug must still answer like k8s
            traceback.print_exc(file=sys.stderr)
            failure = ApiError(
                500, "InternalError", f"Internal error occurred: {error}"
            )
            return json_response(500, failure.status())

    def _route(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        user: str,
        groups: tuple[str, ...],
    ) -> Response:
        split = urlsplit(target)
        path = "/" + split.path.strip("/")
        query = {
            k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()
        }
        if path == "/version":
            if method != "GET":
                raise method_not_allowed()
            return json_response(200, self._version())
        document = discovery.document(
            self.storage.kinds, path, headers.get("accept", "")
        )
        if document is not None:
            if method != "GET":
                raise method_not_allowed()
            return document
        check = path.split("/")[1]
        if check in ("healthz", "livez", "readyz"):
            return self._health(check, "verbose" in query)
        segments = path.strip("/").split("/")
        if segments[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segments[2:]
        elif len(segments) >= 4 and segments[0] == "apis":
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            return Response(404, b"404 page not found\n", "text/plain; charset=utf-8")
        if group == authorization.GROUP:
            # Reviews are answered by the authorizer, not read from storage.
            return authorization.serve_review(
                method, version, rest, body, headers, user=user, groups=groups
            )
        if not self.storage.ready.is_set():
            return initializing()
        watch = query.get("watch") in GO_TRUE
        if rest and rest[0] == "watch":
            watch, rest = True, rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            inner = self.storage.kinds.lookup(group, version, rest[2])
            if inner is not None and inner.namespaced:
                namespace, rest = rest[1], rest[2:]
        kind = self.storage.kinds.lookup(group, version, rest[0]) if rest else None
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
            or (
                sub in ("log", "exec", "portforward", "attach")
                and kind.kind == "Pod"
                and not kind.custom
            )
        ):
            raise no_resource()
        if kind.custom and method == "POST" and name is None:
            self._refuse_if_terminating(kind)
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
            raw_query=split.query,
        )

    def _refuse_if_terminating(self, kind: Kind) -> None:
        crd = self.storage.store.get(
            BY_KIND["CustomResourceDefinition"], "", crd_name(kind)
        )
        if crd is None or crd["metadata"].get("deletionTimestamp"):
            raise ApiError(
                405,
                "MethodNotAllowed",
                "create not allowed while custom resource definition is terminating",
                {},
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
        raw_query: str = "",
    ) -> Response:
        ns = namespace or ""
        dry_run = query.get("dryRun") == "All"
        validation = query.get("fieldValidation", "")
        include = query.get("includeObject", "Metadata")
        render: Callable[[Obj], Obj] | None = None
        if table:

            def render(obj: Obj) -> Obj:
                rv = obj["metadata"].get("resourceVersion", "")
                return discovery.table(kind, [obj], rv, include)

        def answer(status: int, obj: Obj) -> Response:
            if obj.get("kind") == kind.kind:
                obj["apiVersion"] = kind.api_version
            return json_response(status, obj)

        if name is None:
            if method == "GET" and watch:
                return start_watch(
                    self.storage,
                    kind,
                    namespace,
                    query,
                    render,
                    watch_list=self.watch_list,
                )
            if method == "GET":
                listed = self.storage.list(kind, namespace, query)
                if table:
                    rv = listed["metadata"]["resourceVersion"]
                    return json_response(
                        200, discovery.table(kind, listed["items"], rv, include)
                    )
                return json_response(200, listed)
            if method == "POST":
                obj = decode_body(body, headers)
                created = self.storage.create(
                    kind, ns, obj, dry_run=dry_run, field_validation=validation
                )
                return answer(201, created)
            if method == "DELETE":
                return json_response(
                    200, self.storage.delete_collection(kind, namespace, query, body)
                )
            raise method_not_allowed()
        if sub == "log":
            if method != "GET":
                raise method_not_allowed()
            return subresources.pod_log(
                self.storage, ns, name, query, self.kubelets, raw_query
            )
        if sub in ("exec", "portforward", "attach"):
            if method not in ("GET", "POST"):
                raise method_not_allowed()
            return kubelets.pod_stream(
                method,
                self.storage,
                self.kubelets,
                sub,
                ns,
                name,
                query,
                raw_query,
                headers,
            )
        if sub == "scale":
            return subresources.scale(
                self.storage, method, kind, ns, name, headers, body
            )
        if method == "GET" and watch:
            query = {**query, "fieldSelector": f"metadata.name={name}"}
            return start_watch(
                self.storage,
                kind,
                namespace,
                query,
                render,
                watch_list=self.watch_list,
            )
        if method == "GET":
            found = self.storage.get(kind, ns, name)
            return json_response(200, render(found)) if render else answer(200, found)
        if method == "PUT":
            obj = decode_body(body, headers)
            updated = self.storage.update(
                kind,
                ns,
                name,
                obj,
                sub=sub,
                dry_run=dry_run,
                field_validation=validation,
            )
            return answer(200, updated)
        if method == "PATCH":
            ctype = headers.get("content-type", "").split(";")[0].strip()
            status, patched = self._patch(kind, ns, name, ctype, body, sub, query)
            return answer(status, patched)
        if method == "DELETE" and sub is None:
            options = delete_options(body, query)
            status, result = self.storage.delete(
                kind, ns, name, options, dry_run=dry_run
            )
            return answer(status, result)
        raise method_not_allowed()

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

    def _health(self, check: str, verbose: bool) -> Response:
        """``/healthz``, ``/livez``, ``/readyz`` as the API server answers them.

        Until the storage is ready, ``/readyz`` fails with HTTP 500 and every
        check listed, the failing ones as ``[-]<name> failed: reason
        withheld``, as kube-apiserver does whether or not ``verbose`` is set.
        """
        names = ["ping", "log", "etcd"]
        if check == "readyz":
            names.append("etcd-readiness")
        names.append("poststarthook/start-apiserver-admission-initializer")
        if check == "readyz":
            names += [*STORAGE_HOOKS, "informer-sync", "shutdown"]
        failing = set()
        if check == "readyz" and not self.storage.ready.is_set():
            failing = {"etcd", "etcd-readiness", *STORAGE_HOOKS}
        elif check == "readyz" and not self.storage.datastore_ok():
            failing = {"etcd", "etcd-readiness"}
        if not verbose and not failing:
            return Response(200, b"ok", "text/plain; charset=utf-8")
        lines = [
            f"[-]{name} failed: reason withheld" if name in failing else f"[+]{name} ok"
            for name in names
        ]
        lines += [f"{check} check {'failed' if failing else 'passed'}", ""]
        return Response(
            500 if failing else 200,
            "\n".join(lines).encode(),
            "text/plain; charset=utf-8",
        )

    def _patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        ctype: str,
        body: bytes,
        sub: str | None,
        query: Mapping[str, str],
    ) -> tuple[int, Obj]:
        accepted = CUSTOM_PATCH_TYPES if kind.custom else PATCH_TYPES
        if ctype not in accepted:
            raise unsupported_media(ctype, accepted)
        try:
            patch = yaml.safe_load(body) if ctype == APPLY else json.loads(body)
        except (ValueError, yaml.YAMLError) as error:
            raise bad_request(f"error decoding patch: {error}") from error
        dry_run = query.get("dryRun") == "All"
        validation = query.get("fieldValidation", "")
        with self.storage.store.lock:
            current = self.storage.store.get(kind, namespace, name)
            if current is None:
                if ctype == APPLY and sub is None:
                    if not isinstance(patch, dict):
                        raise bad_request("apply patch must be an object")
                    patch.setdefault("metadata", {})["name"] = name
                    created = self.storage.create(
                        kind,
                        namespace,
                        patch,
                        dry_run=dry_run,
                        field_validation=validation,
                    )
                    return 201, created
                raise not_found(kind, name)
            # Without Go types, an apply merges a custom resource's maps and
            # replaces its lists, as a JSON merge patch does.
            how = (
                "application/merge-patch+json"
                if kind.custom and ctype == APPLY
                else ctype
            )
            try:
                patched = self.storage.apply_patch(how, current, patch)
            except PatchError as error:
                raise ApiError(422, "Invalid", str(error)) from error
            if not isinstance(patched, dict):
                raise bad_request("the patch did not produce an object")
            updated = self.storage.update(
                kind,
                namespace,
                name,
                patched,
                sub=sub,
                dry_run=dry_run,
                field_validation=validation,
                patched=True,
            )
            return 200, updated
