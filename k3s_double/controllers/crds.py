"""The CRD controllers: names, establishing, and clean-up on deletion.

As the apiextensions-apiserver's naming, establishing and finalizer
controllers do:

- a new CRD gets ``NamesAccepted`` (``NoConflicts``, or ``PluralConflict``
  / ``KindConflict`` when another CRD of the group holds the name) and its
  ``acceptedNames``; on a later pass, ``Established``
  (``InitialNamesAccepted``), and only then are its resources served;
- ``storedVersions`` records the storage version;
- a Terminating CRD (``customresourcecleanup.apiextensions.k8s.io``) has
  its custom resources deleted; once none is left (their own finalizers
  may hold them), the finalizer goes, the CRD goes and its paths 404.
"""

from __future__ import annotations

from k3s_double.apiserver.crds import CLEANUP_FINALIZER
from k3s_double.apiserver.crds import kinds_of
from k3s_double.apiserver.crds import storage_version
from k3s_double.apiserver.kinds import Obj
from k3s_double.apiserver.kinds import condition
from k3s_double.apiserver.kinds import set_condition

from .base import Reconciler
from .base import name_of
from .base import ns_of
from .base import terminating


class CustomResourceDefinitions(Reconciler):
    """Accept names, establish, and clean up CustomResourceDefinitions."""

    def reconcile(self) -> None:
        """One pass over every CRD."""
        crds = self.storage.objects("CustomResourceDefinition")
        present = {name_of(crd) for crd in crds}
        for crd in crds:
            if terminating(crd):
                self._clean_up(crd)
            else:
                self._accept(crd, crds)
        for kind in self.storage.kinds.served():
            if kind.custom and f"{kind.plural}.{kind.group}" not in present:
                self.storage.kinds.unregister(f"{kind.plural}.{kind.group}")

    def _conflict(self, crd: Obj, crds: list[Obj]) -> tuple[str, str] | None:
        """The (reason, message) of a name another CRD of the group holds."""
        spec = crd["spec"]
        names = spec["names"]
        for other in crds:
            if (
                name_of(other) == name_of(crd)
                or other["spec"]["group"] != spec["group"]
            ):
                continue
            accepted = (other.get("status") or {}).get("acceptedNames") or {}
            if accepted.get("plural") == names["plural"]:
                return "PluralConflict", f'"{names["plural"]}" is already in use'
            if accepted.get("kind") == names["kind"]:
                return "KindConflict", f'"{names["kind"]}" is already in use'
        return None

    def _accept(self, crd: Obj, crds: list[Obj]) -> None:
        established = condition(crd, "Established")
        conflict = self._conflict(crd, crds)

        def change(current: Obj) -> None:
            status = current.setdefault("status", {})
            names = current["spec"]["names"]
            if conflict is None:
                status["acceptedNames"] = {
                    k: v
                    for k, v in names.items()
                    if k
                    in (
                        "plural",
                        "singular",
                        "kind",
                        "listKind",
                        "shortNames",
                        "categories",
                    )
                }
                accepted = {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                }
            else:
                status.setdefault("acceptedNames", {"plural": "", "kind": ""})
                accepted = {
                    "type": "NamesAccepted",
                    "status": "False",
                    "reason": conflict[0],
                    "message": conflict[1],
                }
            set_condition(status, accepted)
            stored = status.setdefault("storedVersions", [])
            version = storage_version(current)
            if version and version not in stored:
                stored.append(version)
            if established is not None or condition(crd, "NamesAccepted") is None:
                return
            if conflict is None:
                set_condition(
                    status,
                    {
                        "type": "Established",
                        "status": "True",
                        "reason": "InitialNamesAccepted",
                        "message": "the initial names have been accepted",
                    },
                )
            else:
                set_condition(
                    status,
                    {
                        "type": "Established",
                        "status": "False",
                        "reason": "NotAccepted",
                        "message": "not all names are accepted",
                    },
                )

        updated = self.storage.mutate(
            "CustomResourceDefinition", "", name_of(crd), change
        )
        if updated is None:
            return
        found = condition(updated, "Established")
        if found is not None and found.get("status") == "True":
            self.storage.kinds.register(name_of(updated), kinds_of(updated))

    def _clean_up(self, crd: Obj) -> None:
        kinds = self.storage.kinds.custom(name_of(crd))
        remaining = 0
        if kinds:
            for obj in self.storage.store.select(kinds[0]):
                remaining += 1
                if not terminating(obj):
                    self.storage.delete(
                        kinds[0],
                        ns_of(obj),
                        name_of(obj),
                        {"propagationPolicy": "Background"},
                    )
        if remaining:
            return

        def release(current: Obj) -> None:
            kept = [
                f
                for f in current["metadata"].get("finalizers") or []
                if f != CLEANUP_FINALIZER
            ]
            current["metadata"]["finalizers"] = kept

        self.storage.kinds.unregister(name_of(crd))
        self.storage.mutate("CustomResourceDefinition", "", name_of(crd), release)
