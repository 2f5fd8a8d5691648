"""Deletion with the API server's semantics: preconditions, grace, finalizers.

:class:`Deletion` does DELETE for :class:`~.storage.Storage`: UID and
resourceVersion preconditions (409), graceful termination of bound pods,
Namespaces going Terminating, the three propagation policies, and
finalizers: an object with ``metadata.finalizers`` gets a
``deletionTimestamp`` and stays until they are removed (a repeated DELETE
changes nothing). A deleted CustomResourceDefinition gets the clean-up
finalizer and the ``Terminating`` condition (:func:`~.crds.mark_terminating`).
The garbage collector in :mod:`.controllers.garbage` finishes what
propagation starts.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from typing import Any

from .crds import mark_terminating
from .database import Database
from .errors import bad_request
from .errors import conflict
from .errors import forbidden
from .errors import not_found
from .kinds import BY_KIND
from .kinds import Kind
from .kinds import Obj
from .kinds import now


PROTECTED_NAMESPACES = ("default", "kube-system", "kube-public")


def _later(seconds: int) -> str:
    stamp = time.gmtime(time.time() + seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", stamp)


def delete_options(body: bytes, query: Mapping[str, str]) -> Obj:
    """The DeleteOptions of a request: its body, then its query parameters."""
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


class Deletion:
    """DELETE on one object, as the API server's registry does it.

    A collaborator of :class:`~.storage.Storage`: it works on the same
    :class:`~.database.Database` and nothing else.
    """

    def __init__(self, store: Database) -> None:
        self.store = store

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
            old = self.store.get(kind, namespace, name)
            if old is None:
                raise not_found(kind, name)
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
            if kind.kind == "Namespace" and not kind.custom:
                return 200, self._delete_namespace(old)
            policy = options.get("propagationPolicy")
            if policy is None and "orphanDependents" in options:
                policy = "Orphan" if options["orphanDependents"] else "Background"
            policy = policy or kind.default_propagation
            grace = options.get("gracePeriodSeconds")
            if (
                kind.kind == "Pod"
                and not kind.custom
                and grace != 0
                and old["spec"].get("nodeName")
            ):
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
            before = copy.deepcopy(old)
            if kind.group == "apiextensions.k8s.io":
                mark_terminating(old)
            finalizers = list(meta.get("finalizers") or [])
            if policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            if finalizers:
                if not meta.get("deletionTimestamp"):
                    meta["deletionTimestamp"] = now()
                    meta["deletionGracePeriodSeconds"] = 0
                meta["finalizers"] = finalizers
                # A repeated DELETE of a terminating object writes nothing.
                stored = self.store.commit(kind, old) if old != before else old
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
