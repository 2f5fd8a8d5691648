"""A member's backend: its keys at one revision, kept on disk as etcd keeps them.

:class:`Store` holds the committed state (every key's latest entry and the
revision, which is the API's resourceVersion) and makes it durable under the
member's directory (``<data-dir>/server/db/etcd``), cheaply:

- ``wal.log``: one JSON line per committed entry, appended as it commits;
- ``snapshot.json``: the whole state at one revision; every
  :data:`COMPACT_EVERY` entries the state is written there (to a temporary
  file, then renamed) and the log starts again;
- ``member.json``: who this member is, the member list, term and vote.

A torn last line (the process died while writing it) is ignored on load, as
etcd's WAL repair drops a torn record. Entries are plain JSON objects::

    {"rv": 42, "op": "put"|"delete", "kind": "apps/deployments",
     "kindName": "Deployment", "obj": {...}}
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from typing import Any


Entry = dict[str, Any]
#: Entries appended to ``wal.log`` before the state is snapshotted again.
COMPACT_EVERY = 2000


def entry_key(entry: Entry) -> tuple[str, str, str]:
    """The key an entry writes: kind, namespace and name."""
    meta = entry["obj"]["metadata"]
    return entry["kind"], meta.get("namespace", ""), meta["name"]


class Store:
    """The committed keys and revision of one member, persisted as they change.

    :param directory: where the files live; created when missing
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.lock = threading.Lock()
        self.rv = 0
        self._keys: dict[tuple[str, str, str], Entry] = {}
        self._appended = 0
        self._log: Any = None

    @property
    def initialized(self) -> bool:
        """Whether a member ever started here (etcd's ``member/wal`` test)."""
        return os.path.exists(self._path("member.json"))

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def load(self) -> None:
        """Read the snapshot, then replay the log after it."""
        with self.lock:
            self._keys.clear()
            self.rv = 0
            with contextlib.suppress(FileNotFoundError):
                with open(self._path("snapshot.json"), encoding="utf-8") as saved:
                    snapshot = json.load(saved)
                self.rv = int(snapshot["rv"])
                for entry in snapshot["entries"]:
                    self._keys[entry_key(entry)] = entry
            for entry in self._read_log():
                if entry["rv"] > self.rv:
                    self._put(entry)
            self._open_log()

    def _read_log(self) -> Iterator[Entry]:
        try:
            with open(self._path("wal.log"), encoding="utf-8") as log:
                lines = log.read().split("\n")
        except FileNotFoundError:
            return
        for line in lines:
            if not line:
                continue
            try:
                yield json.loads(line)
            except ValueError:
                return

    def _open_log(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        if self._log is not None:
            self._log.close()
        self._log = open(self._path("wal.log"), "a", encoding="utf-8")  # noqa: SIM115

    def _put(self, entry: Entry) -> None:
        key = entry_key(entry)
        if entry["op"] == "delete":
            self._keys.pop(key, None)
        else:
            self._keys[key] = entry
        self.rv = max(self.rv, int(entry["rv"]))

    def append(self, entry: Entry) -> None:
        """Commit one entry: apply it and append it to the log."""
        with self.lock:
            self._put(entry)
            if self._log is None:
                self._open_log()
            self._log.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._log.flush()
            self._appended += 1
            if self._appended >= COMPACT_EVERY:
                self._compact()

    def snapshot(self) -> tuple[int, list[Entry]]:
        """The revision and every live key's entry, in revision order."""
        with self.lock:
            entries = sorted(self._keys.values(), key=lambda e: int(e["rv"]))
            return self.rv, entries

    def replace(self, rv: int, entries: list[Entry]) -> None:
        """Install a snapshot (from the leader) and persist it at once."""
        with self.lock:
            self._keys = {entry_key(e): e for e in entries}
            self.rv = rv
            self._compact()

    def _compact(self) -> None:
        entries = sorted(self._keys.values(), key=lambda e: int(e["rv"]))
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        temporary = self._path("snapshot.json.tmp")
        with open(temporary, "w", encoding="utf-8") as out:
            json.dump({"rv": self.rv, "entries": entries}, out, separators=(",", ":"))
        os.replace(temporary, self._path("snapshot.json"))
        if self._log is not None:
            self._log.close()
        self._log = open(self._path("wal.log"), "w", encoding="utf-8")  # noqa: SIM115
        self._appended = 0

    def read_member(self) -> dict[str, Any] | None:
        """The saved member record, or None for a member that never started."""
        try:
            with open(self._path("member.json"), encoding="utf-8") as saved:
                loaded: dict[str, Any] = json.load(saved)
                return loaded
        except (FileNotFoundError, ValueError):
            return None

    def write_member(self, record: dict[str, Any]) -> None:
        """Save the member record (name, members, term, vote) atomically."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        temporary = self._path("member.json.tmp")
        with open(temporary, "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.replace(temporary, self._path("member.json"))

    def close(self) -> None:
        """Close the log file."""
        with self.lock:
            if self._log is not None:
                self._log.close()
                self._log = None
