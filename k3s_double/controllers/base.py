"""What every controller of the double shares: object accessors and writes.

A controller is a :class:`Reconciler`: the loop in ``k3s_double.controllers``
calls its ``reconcile()`` a few times a second. Writes go through the API's own
create/update/delete paths (so defaulting, admission and events apply as for
any client), and the helpers here do the bookkeeping every controller needs:
first-seen clocks, events that are not repeated, ``FailedCreate`` on errors.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from k3s_double.apiserver.errors import ApiError
from k3s_double.apiserver.kinds import BY_KIND
from k3s_double.apiserver.kinds import Kind
from k3s_double.apiserver.kinds import Obj
from k3s_double.apiserver.kinds import condition
from k3s_double.apiserver.kinds import controller_of
from k3s_double.apiserver.kinds import now
from k3s_double.apiserver.kinds import owner_reference


if TYPE_CHECKING:
    from k3s_double.apiserver.storage import Storage


#: kube-controller-manager's ``--node-monitor-grace-period`` default for the
#: Kubernetes the double claims (v1.35): 50 s since Kubernetes 1.32
#: (kubernetes/kubernetes PR #126287, "The default value for
#: node-monitor-grace-period has been increased to 50s (earlier 40s)"); 40 s
#: before.
NODE_MONITOR_GRACE = 50.0


#: The reason and source of the Events that say the double simulated something.
SIMULATED = "DoubleSimulated"
SIMULATED_BY = "k3s-double"


@dataclass
class Settings:
    """What kube-controller-manager's flags set for the controllers."""

    #: Seconds without a kubelet heartbeat before a Node turns Unknown.
    node_grace: float = NODE_MONITOR_GRACE


def is_ready(obj: Obj) -> bool:
    """Tell whether a node or pod has the condition Ready=True."""
    found = condition(obj, "Ready")
    return found is not None and found.get("status") == "True"


def name_of(obj: Obj) -> str:
    """The object's name."""
    return str(obj["metadata"]["name"])


def ns_of(obj: Obj) -> str:
    """The object's namespace, ``""`` for a cluster-scoped one."""
    return str(obj["metadata"].get("namespace", ""))


def uid_of(obj: Obj) -> str:
    """The object's uid."""
    return str(obj["metadata"]["uid"])


def terminating(obj: Obj) -> bool:
    """Tell whether the object is being deleted."""
    return bool(obj["metadata"].get("deletionTimestamp"))


def node_ip(node: Obj) -> str:
    """The node's InternalIP, ``""`` when it has none."""
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return str(address.get("address"))
    return ""


def pod_from_template(owner: Obj, template: Obj, **meta: Any) -> Obj:
    """A Pod body from ``owner``'s template, owned by it; ``meta`` adds metadata."""
    tmeta = template.get("metadata") or {}
    metadata: Obj = {
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [owner_reference(owner)],
    }
    if tmeta.get("annotations"):
        metadata["annotations"] = dict(tmeta["annotations"])
    labels = meta.pop("labels", {})
    metadata["labels"].update(labels)
    metadata.update(meta)
    spec = dict(template.get("spec") or {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


class Reconciler:
    """Base of the controllers: one ``reconcile()`` pass, plus shared helpers.

    :param storage: the API storage whose objects the controller keeps in shape
    :param settings: the controller manager's settings
    """

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings
        self._clock: dict[str, float] = {}
        self._said: dict[str, str] = {}

    def reconcile(self) -> None:
        """Make one pass over the objects this controller looks after."""
        raise NotImplementedError

    def _since(self, key: str) -> float:
        """Seconds since ``key`` was first seen by the controllers."""
        return time.monotonic() - self._clock.setdefault(key, time.monotonic())

    def event(
        self,
        obj: Obj,
        reason: str,
        message: str,
        component: str,
        *,
        warning: bool = False,
        host: str | None = None,
    ) -> None:
        """Record an Event about ``obj``, as the named component does."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        stamp = now()
        source: Obj = {"component": component}
        if host:
            source["host"] = host
        body: Obj = {
            "metadata": {
                "name": f"{meta['name']}.{time.time_ns():x}",
                "namespace": namespace,
            },
            "involvedObject": {
                "kind": obj["kind"],
                "namespace": meta.get("namespace", ""),
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": obj["apiVersion"],
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": "Warning" if warning else "Normal",
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": host or "",
        }
        if not meta.get("namespace"):
            del body["involvedObject"]["namespace"]
        # Events into a terminating namespace are dropped, as in Kubernetes.
        with contextlib.suppress(ApiError):
            self.storage.create(BY_KIND["Event"], namespace, body)

    def simulated(self, obj: Obj, message: str, host: str | None = None) -> None:
        """Say, in a ``DoubleSimulated`` Event, that the double faked something.

        Every canned path (containers that do not run, canned exit codes and
        logs, pulls without a registry) records one, so that no test can
        take the double's answer for what real k3s did.
        """
        self.event(obj, SIMULATED, message, SIMULATED_BY, host=host)

    def _once(self, key: str, message: str) -> bool:
        """Tell whether ``message`` is new for ``key`` (to avoid repeated events)."""
        if self._said.get(key) == message:
            return False
        self._said[key] = message
        return True

    def _create(self, kind: str, owner: Obj, body: Obj, component: str) -> Obj | None:
        """Create an object next to its owner (in it, for a Namespace owner)."""
        namespace = name_of(owner) if owner["kind"] == "Namespace" else ns_of(owner)
        try:
            created = self.storage.create(BY_KIND[kind], namespace, body)
        except ApiError as error:
            if self._once(f"{uid_of(owner)}/create", error.message):
                self.event(
                    owner,
                    "FailedCreate",
                    f"Error creating: {error.message}",
                    component,
                    warning=True,
                )  # fmt: skip
            return None
        self._said.pop(f"{uid_of(owner)}/create", None)
        return created

    def _delete(self, kind: str | Kind, obj: Obj, **options: Any) -> bool:
        # Custom kinds are not in BY_KIND (built-in kinds only): take the Kind.
        found = kind if isinstance(kind, Kind) else BY_KIND[kind]
        try:
            self.storage.delete(found, ns_of(obj), name_of(obj), options)
        except ApiError:
            return False
        return True

    def _set_status(self, kind: str, obj: Obj, status: Obj) -> None:
        def change(current: Obj) -> None:
            current["status"] = status

        if obj.get("status") != status:
            self.storage.mutate(kind, ns_of(obj), name_of(obj), change)

    def _owned(self, kind: str, owner: Obj) -> list[Obj]:
        uid = uid_of(owner)
        return [
            o
            for o in self.storage.objects(kind, ns_of(owner))
            if controller_of(o) == uid
        ]
