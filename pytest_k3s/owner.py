"""Which process owns a run, and whether it is still alive.

Every object a run creates carries its owner in its labels
(:func:`pytest_k3s.labels.owner_of` reads it back).
A sweep removes a cluster only when it knows the owning process is dead. The
owner names the host, the PID, the process's start time, its PID namespace
and the boot; any of these that does not match where the check runs makes
the owner *unknown* (a process in another container, on another host or
before a reboot cannot be checked), and unknown owners are never swept.
"""

from __future__ import annotations

import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path


@functools.cache
def _namespace_facts() -> tuple[str, str]:
    """This process's PID namespace (inode) and boot id; empty where unknown."""
    try:
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pidns = ""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text("ascii").strip()
    except OSError:
        boot = ""
    return pidns, boot


@dataclass(frozen=True)
class Owner:
    """The process that owns a run: its objects live as long as it does.

    ``started`` is the process start time from ``/proc`` (so a recycled PID
    is not mistaken for the owner); ``pidns`` and ``boot`` say in which PID
    namespace and since which boot the PID means that process. Each is empty
    where there is no ``/proc``.
    """

    host: str
    pid: int
    started: str
    pidns: str = ""
    boot: str = ""

    def __str__(self) -> str:
        return f"{self.host}/{self.pid}/{self.started}"

    @property
    def namespace(self) -> str:
        """``<pidns>/<boot>``, the value of the owner-ns label."""
        return f"{self.pidns}/{self.boot}"

    @classmethod
    def parse(cls, value: str, namespace: str | None = None) -> Owner | None:
        """Read an owner label (and its namespace label) back; None if malformed.

        Without a namespace (labels of 0.1.0) the owner cannot be checked.
        """
        host, _, rest = value.partition("/")
        pid, _, started = rest.partition("/")
        if not host or not pid.isdigit() or "/" in started:
            return None
        pidns, _, boot = (namespace or "?/?").partition("/")
        return cls(host, int(pid), started, pidns, boot)

    @classmethod
    def current(cls) -> Owner:
        """The owner label value for this process."""
        pid = os.getpid()
        pidns, boot = _namespace_facts()
        return cls(socket.gethostname(), pid, process_start_time(pid), pidns, boot)


def process_start_time(pid: int) -> str:
    """Return the start time of ``pid`` in clock ticks since boot, or ``""``."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # The command name may contain spaces and parentheses; fields
            # after the last ')' are fixed, and starttime is field 22.
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return ""
    return fields[19] if len(fields) > 19 else ""


def owner_alive(owner: Owner, *, host: str | None = None) -> bool | None:
    """Tell whether ``owner`` still runs: True, False, or None when unknowable.

    Only a process on this host, in this PID namespace and since this boot
    can be checked; for any other the answer is None, and callers must leave
    such objects alone.
    """
    if owner.host != (host or socket.gethostname()):
        return None
    if (owner.pidns, owner.boot) != _namespace_facts():
        return None
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    # A live process with another start time took over the dead owner's PID.
    return not owner.started or process_start_time(owner.pid) in ("", owner.started)
