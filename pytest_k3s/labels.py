"""Docker labels: what every object we create carries, and which leftovers go.

Labels are the source of truth about our objects (there is no state file): a
cluster is the set of containers, networks and volumes labelled with its name,
and a run owns what carries its owner label. The functions here are pure, so
the selection rules are unit-tested without Docker.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass


PREFIX = "io.pytest-k3s"
CLUSTER = f"{PREFIX}.cluster"
ROLE = f"{PREFIX}.role"
RUN = f"{PREFIX}.run"
SPEC = f"{PREFIX}.spec"
OWNER = f"{PREFIX}.owner"
KEEP = f"{PREFIX}.keep"


@dataclass(frozen=True)
class Owner:
    """The process that owns a run: its objects live as long as it does.

    ``started`` is the process start time from ``/proc`` (empty where there is
    no ``/proc``), so a recycled PID is not mistaken for the owner.
    """

    host: str
    pid: int
    started: str

    def __str__(self) -> str:
        return f"{self.host}/{self.pid}/{self.started}"

    @classmethod
    def parse(cls, value: str) -> Owner | None:
        """Read an owner label back; None when it is malformed."""
        host, _, rest = value.partition("/")
        pid, _, started = rest.partition("/")
        if not host or not pid.isdigit():
            return None
        return cls(host, int(pid), started)

    @classmethod
    def current(cls) -> Owner:
        """The owner label value for this process."""
        return cls(socket.gethostname(), os.getpid(), process_start_time(os.getpid()))


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

    Only a process on this host can be checked; for any other host the answer
    is None, and callers must leave such objects alone.
    """
    if owner.host != (host or socket.gethostname()):
        return None
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    # A live process with another start time took over the dead owner's PID.
    return not owner.started or process_start_time(owner.pid) in ("", owner.started)


def labels_for(
    cluster: str, role: str, *, run: str, spec_hash: str, owner: Owner
) -> dict[str, str]:
    """Return the labels of one object of ``cluster`` (role: server, agent, network)."""
    return {
        CLUSTER: cluster,
        ROLE: role,
        RUN: run,
        SPEC: spec_hash,
        OWNER: str(owner),
    }


def sweepable(
    labels: Mapping[str, str], *, include_kept: bool = False, host: str | None = None
) -> bool:
    """Decide whether a sweep may remove an object with these labels.

    Only our objects (those with a cluster label) whose owning process is known
    to be dead qualify; kept clusters only when ``include_kept`` is set.
    """
    if CLUSTER not in labels:
        return False
    if labels.get(KEEP) == "true" and not include_kept:
        return False
    owner = Owner.parse(labels.get(OWNER, ""))
    if owner is None:
        return False
    return owner_alive(owner, host=host) is False


Found = Mapping[str, Mapping[str, str]]


def clusters_matching(
    found: Found, predicate: Callable[[Mapping[str, str]], bool]
) -> list[str]:
    """Return the names of the clusters whose labels satisfy ``predicate``.

    :param found: each cluster's name, with the labels of one of its objects
    """
    return sorted(
        name for name, found_labels in found.items() if predicate(found_labels)
    )


def run_clusters(found: Found, run_id: str) -> list[str]:
    """The clusters of test run ``run_id``: what its end removes."""
    return clusters_matching(found, lambda tags: tags.get(RUN) == run_id)


def sweepable_clusters(found: Found, *, include_kept: bool = False) -> list[str]:
    """The clusters a sweep removes: those of dead runs (see :func:`sweepable`)."""
    return clusters_matching(
        found, lambda tags: sweepable(tags, include_kept=include_kept)
    )
