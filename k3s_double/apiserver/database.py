"""The database: objects by kind and name, the resourceVersion counter, watchers.

Every write goes through ``commit`` or ``remove`` under one lock, gets the
next global resourceVersion and is published to the watchers of its kind.
A :class:`Journal` (the replicated, persisted log under an HA server, see
``k3s_double.etcd``) sees each write before it becomes visible and may refuse
it; writes made elsewhere arrive through :meth:`Database.apply` and whole
states through :meth:`Database.restore`, as a watch cache follows etcd.
Stored objects are never mutated in place (writers store fresh copies and
readers get copies), so events can share them without copying.  Watchers
get events through unbounded queues: a slow watch never blocks a writer.
"""

from __future__ import annotations

import collections
import copy
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Protocol

from .kinds import Kind
from .kinds import Obj


HISTORY = 10000


@dataclass(frozen=True)
class Change:
    """One committed write: the event type and the objects before and after."""

    rv: int
    kind: Kind
    type: str
    old: Obj | None
    new: Obj


@dataclass(eq=False)
class Watcher:
    """A subscription to the changes of one kind."""

    kind: Kind
    events: queue.SimpleQueue[Change | None] = field(default_factory=queue.SimpleQueue)


class Journal(Protocol):
    """What makes a write durable before anyone can see it (etcd, kine)."""

    def record(self, change: Change) -> None:
        """Keep ``change`` (committed to a quorum) or raise to refuse the write."""
        ...


class TooOld(Exception):
    """The requested resourceVersion is older than the kept history."""


class Database:
    """Thread-safe storage of all objects, keyed by kind, namespace and name."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._rv = 0
        self._objects: dict[Kind, dict[tuple[str, str], Obj]] = {}
        self._history: collections.deque[Change] = collections.deque(maxlen=HISTORY)
        self._watchers: set[Watcher] = set()
        #: Set by the node half when a replicated, persisted log backs the store.
        self.journal: Journal | None = None
        #: The oldest resourceVersion the history reaches back to (a restore).
        self._floor = 0

    @property
    def resource_version(self) -> str:
        """The current (latest committed) resourceVersion."""
        with self.lock:
            return str(self._rv)

    def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        """Return a copy of one object, or None."""
        with self.lock:
            found = self._objects.get(kind, {}).get((namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def select(self, kind: Kind, namespace: str | None = None) -> list[Obj]:
        """Return copies of all objects of a kind, optionally in one namespace."""
        with self.lock:
            return [
                copy.deepcopy(obj)
                for (ns, _), obj in sorted(self._objects.get(kind, {}).items())
                if namespace is None or ns == namespace
            ]

    def commit(self, kind: Kind, obj: Obj) -> Obj:
        """Store an object (create or replace), assigning the next resourceVersion."""
        with self.lock:
            rv = self._rv + 1
            stored = copy.deepcopy(obj)
            stored["metadata"]["resourceVersion"] = str(rv)
            key = (stored["metadata"].get("namespace", ""), stored["metadata"]["name"])
            old = self._objects.get(kind, {}).get(key)
            change = Change(rv, kind, "MODIFIED" if old else "ADDED", old, stored)
            if self.journal is not None:
                self.journal.record(change)
            self._rv = rv
            self._objects.setdefault(kind, {})[key] = stored
            self._publish(change)
            return copy.deepcopy(stored)

    def remove(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        """Delete an object; the DELETED event carries a new resourceVersion."""
        with self.lock:
            old = self._objects.get(kind, {}).get((namespace, name))
            if old is None:
                return None
            rv = self._rv + 1
            gone = copy.deepcopy(old)
            gone["metadata"]["resourceVersion"] = str(rv)
            change = Change(rv, kind, "DELETED", old, gone)
            if self.journal is not None:
                self.journal.record(change)
            self._rv = rv
            del self._objects[kind][(namespace, name)]
            self._publish(change)
            return copy.deepcopy(gone)

    def apply(self, rv: int, kind: Kind, obj: Obj, *, deleted: bool) -> None:
        """Install a write committed elsewhere, with its own resourceVersion.

        ``obj`` is the object as stored (for a deletion, as it was deleted);
        watchers see it as they would have seen the local write.
        """
        with self.lock:
            meta = obj["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            bucket = self._objects.setdefault(kind, {})
            old = bucket.get(key)
            self._rv = max(self._rv, rv)
            if deleted:
                if old is None:
                    return
                del bucket[key]
                self._publish(Change(rv, kind, "DELETED", old, obj))
                return
            bucket[key] = obj
            self._publish(Change(rv, kind, "MODIFIED" if old else "ADDED", old, obj))

    def restore(self, rv: int, objects: list[tuple[Kind, Obj]]) -> None:
        """Replace every object (a snapshot from the leader, or from disk).

        Open watches end, as the watch cache ends them when it re-lists, and
        the history starts again: an older resourceVersion is 410 Expired.
        """
        with self.lock:
            self._objects = {}
            for kind, obj in objects:
                meta = obj["metadata"]
                bucket = self._objects.setdefault(kind, {})
                bucket[(meta.get("namespace", ""), meta["name"])] = obj
            self._rv = rv
            self._floor = rv
            self._history.clear()
            for watcher in self._watchers:
                watcher.events.put(None)
            self._watchers.clear()

    def _publish(self, change: Change) -> None:
        self._history.append(change)
        for watcher in self._watchers:
            if watcher.kind == change.kind:
                watcher.events.put(change)

    def subscribe(
        self, kind: Kind, namespace: str | None, since: int | None
    ) -> tuple[Watcher, list[Change]]:
        """Start a watch; return it with the changes it must replay first.

        With ``since`` None the replay is one synthetic ADDED per existing
        object; otherwise it is the kept history after that resourceVersion.
        """
        with self.lock:
            watcher = Watcher(kind)
            if since is None:
                replay = [
                    Change(self._rv, kind, "ADDED", None, obj)
                    for (ns, _), obj in sorted(self._objects.get(kind, {}).items())
                    if namespace is None or ns == namespace
                ]
            else:
                oldest = self._history[0].rv if self._history else self._rv + 1
                if since < oldest - 1 and len(self._history) == HISTORY:
                    raise TooOld(str(since))
                if since < self._floor:
                    raise TooOld(str(since))
                replay = [c for c in self._history if c.rv > since and c.kind == kind]
            self._watchers.add(watcher)
            return watcher, replay

    def unsubscribe(self, watcher: Watcher) -> None:
        """End a watch."""
        with self.lock:
            self._watchers.discard(watcher)

    def close_all(self) -> None:
        """Wake every watcher with an end-of-stream marker."""
        with self.lock:
            for watcher in self._watchers:
                watcher.events.put(None)

    def all_objects(self) -> Iterator[tuple[Kind, Obj]]:
        """Yield copies of every stored object (for namespace cleanup and GC)."""
        with self.lock:
            snapshot = [
                (kind, copy.deepcopy(obj))
                for kind, bucket in self._objects.items()
                for obj in bucket.values()
            ]
        yield from snapshot
