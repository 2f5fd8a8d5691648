"""Storage: reads and writes with the API server's semantics, over the database.

:class:`Storage` is what a request reaches after routing: it reads objects
(one, all of a kind, a selected List), and writes them the way the API server
does. Create, update and patch apply defaulting, admission (:mod:`.admission`)
and validation (:mod:`.validation`); every write gets the next global
resourceVersion from the store, and a stale ``resourceVersion`` or
precondition is a 409 Conflict. Custom resources take their own strategy
(:mod:`.customresources`: schema pruning, defaulting and validation, the
status subresource, generations) and CRDs their apiextensions validation
(:mod:`.crds`). With ``fieldValidation=Strict`` a built-in kind's unknown
fields are a 400, as strict decoding refuses them
(:func:`refuse_unknown_fields`). DELETE is delegated to a
:class:`~.deletion.Deletion` on the same database. The controllers write
through :meth:`Storage.mutate`, which holds the database lock for the whole
read-modify-write.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from .admission import admit
from .admission import check_namespace
from .crds import crd_causes
from .crds import crd_update_causes
from .crds import default_crd
from .customresources import generation_changed
from .customresources import prepare_create
from .customresources import prepare_update
from .customresources import schema_causes
from .database import Database
from .deletion import Deletion
from .deletion import delete_options
from .errors import STALE
from .errors import ApiError
from .errors import already_exists
from .errors import bad_request
from .errors import conflict
from .errors import invalid
from .errors import not_found
from .kinds import BY_KIND
from .kinds import Kind
from .kinds import Obj
from .kinds import apply_defaults
from .kinds import field_value
from .kinds import now
from .kinds import qos_class
from .kinds import random_suffix
from .listoptions import ListOptions
from .listoptions import validate as validate_list_options
from .patches import json_patch
from .patches import merge_patch
from .patches import strategic_merge_patch
from .selectors import FieldSelector
from .selectors import LabelSelector
from .selectors import SelectorError
from .selectors import match_fields
from .selectors import match_labels
from .selectors import parse_fields
from .selectors import parse_labels
from .served import ServedKinds
from .typeschemas import kind_type
from .typeschemas import unknown_fields
from .validation import Cause
from .validation import causes as validation_causes
from .validation import update_causes


#: A list of causes (``list`` itself is shadowed inside :class:`Storage`).
Causes = list[Cause]
_SERVER_META = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
)


def refuse_unknown_fields(
    kind: Kind, body: Obj, old: Obj | None = None, *, patched: bool = False
) -> None:
    """Strict decoding of a built-in kind: 400 for a field its type lacks.

    With ``fieldValidation=Strict`` the API server refuses a body whose
    fields its Go types do not declare (:func:`.typeschemas.unknown_fields`,
    where the schema lists them): ``Deployment in version "v1" cannot be
    handled as a Deployment: strict decoding error: unknown field
    "spec.replica"``, or for a patch's result only ``strict decoding error:
    ...``. An update is refused for the unknown fields it brings, not for
    those the stored object already had (kept from a write that was not
    strict, which the API server would have dropped). Custom resources are
    pruned by their own schema (:mod:`.customresources`).
    """
    type_id = kind_type(kind.group, kind.version, kind.kind)
    if kind.custom or type_id is None:
        return
    found = list(unknown_fields(type_id, body))
    if old is not None:
        before = set(unknown_fields(type_id, old))
        found = [path for path in found if path not in before]
    if not found:
        return
    unknown = ", ".join(f'unknown field "{path}"' for path in found)
    message = f"strict decoding error: {unknown}"
    if not patched:
        message = (
            f'{kind.kind} in version "{kind.version}" cannot be handled as a '
            f"{kind.kind}: {message}"
        )
    raise bad_request(message)


class Storage:
    """The registry: reads and writes with the API server's semantics.

    :param disable: the packaged components ``--disable`` turned off
    :param ca_pem: the server CA, published in every ``kube-root-ca.crt``
    """

    def __init__(
        self,
        *,
        disable: frozenset[str] = frozenset(),
        ca_pem: str = "",
    ) -> None:
        self.disable = frozenset(disable)
        self.ca_pem = ca_pem
        self.store = Database()
        self.kinds = ServedKinds()
        self.deletion = Deletion(self.store)
        #: Set once the storage backend (k3s' kine/etcd) and the post-start
        #: hooks that write through it are done; ``/readyz`` fails until then.
        self.ready = threading.Event()
        #: Whether the datastore answers now (etcd has quorum); ``/readyz``
        #: fails with ``[-]etcd failed`` while it does not.
        self.datastore_ok: Callable[[], bool] = lambda: True

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
    def selectors(
        kind: Kind, query: Mapping[str, str]
    ) -> tuple[LabelSelector, FieldSelector]:
        """Parse a query's label and field selectors (400 when malformed)."""
        try:
            labels = parse_labels(query.get("labelSelector", ""))
            fields = parse_fields(query.get("fieldSelector", ""), kind.allows_field)
        except SelectorError as error:
            raise bad_request(str(error)) from error
        return labels, fields

    @staticmethod
    def matches(
        kind: Kind, obj: Obj, labels: LabelSelector, fields: FieldSelector
    ) -> bool:
        """Tell whether an object matches both selectors."""
        if not match_labels(labels, obj["metadata"].get("labels")):
            return False
        values = {field: field_value(kind, obj, field) for field, _, _ in fields}
        return match_fields(fields, values)

    def list(self, kind: Kind, namespace: str | None, query: Mapping[str, str]) -> Obj:
        """Return the List object for a collection, filtered by selectors."""
        validate_list_options(ListOptions.parse(query))
        labels, fields = self.selectors(kind, query)
        with self.store.lock:
            items = self.store.select(kind, namespace)
            rv = self.store.resource_version
        kept = []
        for item in items:
            if self.matches(kind, item, labels, fields):
                item.pop("kind", None)
                item.pop("apiVersion", None)
                kept.append(item)
        return {
            "kind": kind.list_kind or f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": rv},
            "items": kept,
        }

    def create(
        self,
        kind: Kind,
        namespace: str,
        body: Obj,
        *,
        dry_run: bool = False,
        field_validation: str = "",
    ) -> Obj:
        """Create an object (POST), with defaulting, admission and validation."""
        if field_validation == "Strict":
            refuse_unknown_fields(kind, body)
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
                check_namespace(self.store, kind, namespace, name)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if kind.generation:
                meta["generation"] = 1
            if kind.custom:
                prepare_create(kind, obj)
            elif kind.has_status and kind.kind != "Node":
                obj["status"] = self._initial_status(kind, obj)
            found = self._checked(kind, obj, field_validation)
            if found:
                raise invalid(kind, name, found)
            if self.store.get(kind, namespace, name) is not None:
                raise already_exists(kind, name)
            admit(self.store, kind, obj)
            if dry_run:
                return obj
            return self.store.commit(kind, obj)

    @staticmethod
    def _checked(kind: Kind, obj: Obj, field_validation: str) -> Causes:
        """Default (and, for custom resources, prune) a body; return its causes."""
        if kind.custom:
            found: Causes = schema_causes(kind, obj, field_validation)
        else:
            apply_defaults(kind, obj)
            found = []
        if kind.group == "apiextensions.k8s.io":
            default_crd(obj)
            found += crd_causes(obj)
        return validation_causes(kind, obj) + found

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
        field_validation: str = "",
        patched: bool = False,
    ) -> Obj:
        """Replace an object (PUT), honouring resourceVersion preconditions.

        On the main resource the status is kept; on ``status`` only the
        status changes; ``all`` (controllers only) takes both from ``body``.
        ``internal`` skips the checks of fields users may not change;
        ``patched``: ``body`` is a patch's result (for strict decoding's
        wording).
        """
        with self.store.lock:
            old = self.get(kind, namespace, name)
            if field_validation == "Strict":
                refuse_unknown_fields(kind, body, old, patched=patched)
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
            if kind.custom and sub != "all":
                new = prepare_update(kind, old, body, sub)
            elif sub == "status":
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
            found = self._checked(kind, new, field_validation)
            if not internal:
                found += update_causes(kind, old, new)
                if kind.group == "apiextensions.k8s.io":
                    found += crd_update_causes(old, new)
            if found:
                raise invalid(kind, name, found)
            if kind.custom:
                moved = generation_changed(kind, old, new)
            else:
                moved = new.get("spec") != old.get("spec")
            if kind.generation and moved:
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
        """Delete an object (DELETE); see :meth:`.Deletion.delete`."""
        return self.deletion.delete(kind, namespace, name, options, dry_run=dry_run)

    def delete_collection(
        self, kind: Kind, namespace: str | None, query: Mapping[str, str], body: bytes
    ) -> Obj:
        """Delete every selected object (DELETE on a collection); list the deleted."""
        options = delete_options(body, query)
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
