"""The garbage collector: dependents follow their owners.

An object whose owners are all gone is deleted in the background; an owner
deleted with ``propagationPolicy=Foreground`` keeps its ``foregroundDeletion``
finalizer until its dependents are gone.
"""

from __future__ import annotations

import collections

from k3s_double.apiserver.kinds import Obj

from .base import Reconciler
from .base import name_of
from .base import ns_of
from .base import terminating
from .base import uid_of


class GarbageCollector(Reconciler):
    """Delete dependents whose owners are gone; finish foreground deletions."""

    def reconcile(self) -> None:
        """One pass over every stored object."""
        objects = list(self.storage.store.all_objects())
        uids = {uid_of(obj) for _, obj in objects}
        dependents: dict[str, list[tuple[str, Obj]]] = collections.defaultdict(list)
        for kind, obj in objects:
            refs = obj["metadata"].get("ownerReferences") or []
            for ref in refs:
                dependents[str(ref.get("uid"))].append((kind.kind, obj))
            if (
                refs
                and not any(ref.get("uid") in uids for ref in refs)
                and not terminating(obj)
            ):
                self._delete(kind.kind, obj, propagationPolicy="Background")
        for kind, obj in objects:
            finalizers = obj["metadata"].get("finalizers") or []
            if not terminating(obj) or "foregroundDeletion" not in finalizers:
                continue
            waiting = dependents.get(uid_of(obj), [])
            for dep_kind, dep in waiting:
                if not terminating(dep):
                    self._delete(dep_kind, dep, propagationPolicy="Foreground")
            if not waiting:

                def release(current: Obj) -> None:
                    kept = [
                        f
                        for f in current["metadata"].get("finalizers") or []
                        if f != "foregroundDeletion"
                    ]
                    current["metadata"]["finalizers"] = kept

                self.storage.mutate(kind.kind, ns_of(obj), name_of(obj), release)
