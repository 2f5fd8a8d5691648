"""The binding of one member to the API's database (the watch cache over etcd).

:class:`Replica` is the database's :class:`~k3s_double.apiserver.database.Journal`:
a write on the leader becomes an entry the member commits to a quorum
before the database shows it; a refused write is the API server's 500 with
etcd's error text. Entries committed elsewhere, and snapshots, go the other
way into the database with their own resourceVersions, so every server's
watchers see every change in order.

Followers run no controllers, so the CRD controller never registers the
resources of established CRDs there; like every kube-apiserver's CRD
handler, the replica serves an established CRD's resources as soon as the
CRD arrives, and stops when it goes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from k3s_double.apiserver.crds import kinds_of
from k3s_double.apiserver.database import Change
from k3s_double.apiserver.errors import storage_error
from k3s_double.apiserver.kinds import KINDS
from k3s_double.apiserver.kinds import Kind
from k3s_double.apiserver.kinds import Obj
from k3s_double.apiserver.kinds import condition

from .raft import EtcdError
from .raft import Member
from .store import Entry


if TYPE_CHECKING:
    from k3s_double.apiserver.server import KubeAPI

_BUILT_IN = {f"{kind.group}/{kind.plural}": kind for kind in KINDS}
_CRD = "apiextensions.k8s.io/customresourcedefinitions"


def kind_key(kind: Kind) -> str:
    """How an entry names its kind: ``group/plural`` (``/pods`` for core)."""
    return f"{kind.group}/{kind.plural}"


def to_entry(change: Change) -> Entry:
    """The log entry of one database change."""
    return {
        "rv": change.rv,
        "op": "delete" if change.type == "DELETED" else "put",
        "kind": kind_key(change.kind),
        "kindName": change.kind.kind,
        "obj": change.new,
    }


def _established(crd: Obj) -> bool:
    found = condition(crd, "Established")
    alive = not crd["metadata"].get("deletionTimestamp")
    return alive and found is not None and found.get("status") == "True"


class Replica:
    """Journal of one API's database, and the way in for replicated writes."""

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self.member: Member | None = None

    def record(self, change: Change) -> None:
        """Commit a local write through the member (leader only)."""
        assert self.member is not None
        try:
            self.member.propose(to_entry(change))
        except EtcdError as error:
            raise storage_error(str(error)) from error

    def _kind(self, entry: Entry, crds: dict[str, Obj]) -> Kind:
        key = str(entry["kind"])
        built_in = _BUILT_IN.get(key)
        if built_in is not None:
            return built_in
        group, _, plural = key.partition("/")
        crd = crds.get(f"{plural}.{group}")
        if crd is None:
            crd = self.api.store.get(_BUILT_IN[_CRD], "", f"{plural}.{group}")
        if crd is not None:
            served = kinds_of(crd)
            if served:
                return served[0]
        namespaced = bool(entry["obj"]["metadata"].get("namespace"))
        name = str(entry["kindName"])
        return Kind(name, plural, group=group, namespaced=namespaced, custom=True)

    def apply(self, entry: Entry) -> None:
        """Show a write committed by the leader."""
        kind = self._kind(entry, {})
        deleted = entry["op"] == "delete"
        self.api.store.apply(int(entry["rv"]), kind, entry["obj"], deleted=deleted)
        if entry["kind"] == _CRD:
            self._serve(entry["obj"], deleted=deleted)

    def install(self, rv: int, entries: list[Entry]) -> None:
        """Replace the database with a snapshot (leader's, or from disk)."""
        crds = {
            str(e["obj"]["metadata"]["name"]): e["obj"]
            for e in entries
            if e["kind"] == _CRD
        }
        objects = [(self._kind(e, crds), e["obj"]) for e in entries]
        self.api.store.restore(rv, objects)
        for kind in self.api.kinds.served():
            if kind.custom and f"{kind.plural}.{kind.group}" not in crds:
                self.api.kinds.unregister(f"{kind.plural}.{kind.group}")
        for crd in crds.values():
            self._serve(crd, deleted=False)

    def load(self) -> None:
        """Fill the database from the member's store (a restarted server)."""
        assert self.member is not None
        rv, entries = self.member.store.snapshot()
        self.install(rv, entries)

    def _serve(self, crd: Obj, *, deleted: bool) -> None:
        name = str(crd["metadata"]["name"])
        if not deleted and _established(crd):
            self.api.kinds.register(name, kinds_of(crd))
        elif deleted:
            self.api.kinds.unregister(name)
