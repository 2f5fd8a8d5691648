"""Docker labels: what every object we create carries, and which leftovers go.

Labels are the source of truth about our objects: a cluster is the set of
containers, networks and volumes labelled with its name, and a run owns what
carries its owner label. The selection rules (what a run's end removes, what
a sweep may remove) are pure functions of labels, unit-tested without Docker.

A sweep removes a cluster only when it knows the owning process is dead. The
owner label names the host, the PID, the process's start time, its PID
namespace and the boot; any of these that does not match where the sweep runs
makes the owner *unknown* (a process in another container, on another host or
before a reboot cannot be checked), and unknown owners are never swept.
"""

from __future__ import annotations

import functools
import os
import socket
import time
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


PREFIX = "io.pytest-k3s"
CLUSTER = f"{PREFIX}.cluster"
#: On the throwaway containers that ask the engine what it can grant.
PROBE = f"{PREFIX}.probe"
ROLE = f"{PREFIX}.role"
RUN = f"{PREFIX}.run"
SPEC = f"{PREFIX}.spec"
OWNER = f"{PREFIX}.owner"
#: The owner's PID namespace and boot, ``<pidns>/<boot>``. Apart from OWNER,
#: whose ``host/pid/start`` form older releases read (and would misread).
OWNER_NS = f"{PREFIX}.owner-ns"
#: When the cluster was created (seconds since the epoch).
CREATED = f"{PREFIX}.created"
#: "true" on clusters that may outlive their run (--k3s-keep and friends).
KEEP = f"{PREFIX}.keep"
#: Until when a kept cluster is spared by the sweep (seconds since the epoch).
KEEP_UNTIL = f"{PREFIX}.keep-until"
#: "true" on clusters kept between runs for reuse (``--k3s-reuse``): never
#: leftovers, whoever started them (see :mod:`pytest_k3s.reuse`).
REUSE = f"{PREFIX}.reuse"
#: The run's state directory (kubeconfigs), removed with the cluster by a sweep.
STATE_DIR = f"{PREFIX}.state-dir"
#: On nodes: the directory their system images are saved into before the
#: cluster is removed (see :mod:`pytest_k3s.imagecache`).
IMAGE_CACHE = f"{PREFIX}.image-cache"


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
        """The value of the :data:`OWNER_NS` label."""
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
    def from_labels(cls, found: Mapping[str, str]) -> Owner | None:
        """The owner an object's labels name; None when there is none."""
        return cls.parse(found.get(OWNER, ""), found.get(OWNER_NS))

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


def labels_for(
    cluster: str,
    role: str,
    *,
    run: str,
    spec_hash: str,
    owner: Owner,
    created: float | None = None,
    keep_until: float | None = None,
    state_dir: str | None = None,
    reusable: bool = False,
    image_cache: str | None = None,
) -> dict[str, str]:
    """Return the labels of one object of ``cluster`` (role: server, agent, network).

    :param keep_until: mark the cluster as kept until this time (epoch seconds)
    :param state_dir: the directory holding the cluster's kubeconfig, when it
        is a run's state directory that a sweep should remove too
    :param image_cache: the cluster's system image cache directory, if any
    """
    found = {
        CLUSTER: cluster,
        ROLE: role,
        RUN: run,
        SPEC: spec_hash,
        OWNER: str(owner),
        OWNER_NS: owner.namespace,
        CREATED: str(int(time.time() if created is None else created)),
    }
    if keep_until is not None:
        found[KEEP] = "true"
        found[KEEP_UNTIL] = str(int(keep_until))
    if state_dir is not None:
        found[STATE_DIR] = state_dir
    if reusable:
        found[REUSE] = "true"
    if image_cache is not None:
        found[IMAGE_CACHE] = image_cache
    return found


def kept(labels: Mapping[str, str], *, now: float | None = None) -> bool:
    """Whether a cluster is kept and its time to be kept has not run out."""
    if labels.get(KEEP) != "true":
        return False
    until = labels.get(KEEP_UNTIL, "")
    if not until.isdigit():
        return True  # kept without an expiry (0.1.0): until swept by hand
    return int(until) > (time.time() if now is None else now)


def sweepable(
    labels: Mapping[str, str],
    *,
    include_kept: bool = False,
    host: str | None = None,
    now: float | None = None,
) -> bool:
    """Decide whether a sweep may remove an object with these labels.

    Only our objects (those with a cluster label) whose owning process is known
    to be dead qualify; kept clusters only once their time to be kept has run
    out, or when ``include_kept`` is set.
    """
    if CLUSTER not in labels or labels.get(REUSE) == "true":
        return False
    if kept(labels, now=now) and not include_kept:
        return False
    owner = Owner.from_labels(labels)
    if owner is None:
        return False
    return owner_alive(owner, host=host) is False


def older_than(
    labels: Mapping[str, str], seconds: float, *, now: float | None = None
) -> bool:
    """Whether our object was created more than ``seconds`` ago."""
    created = labels.get(CREATED, "")
    if CLUSTER not in labels or not created.isdigit():
        return False
    return int(created) < (time.time() if now is None else now) - seconds


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


def sweepable_clusters(
    found: Found, *, include_kept: bool = False, older: float | None = None
) -> list[str]:
    """The clusters a sweep removes.

    Without ``older``: those of dead runs (see :func:`sweepable`). With it:
    every cluster created more than ``older`` seconds ago, whatever its
    owner's state (for leftovers no sweep can check: other hosts, other
    containers), kept ones only with ``include_kept``. Reusable clusters are
    never among them (:func:`pytest_k3s.sweep.sweep_leftovers` decides).
    """
    if older is None:
        return clusters_matching(
            found, lambda tags: sweepable(tags, include_kept=include_kept)
        )
    return clusters_matching(
        found,
        lambda tags: (
            older_than(tags, older)
            and (include_kept or not kept(tags))
            and tags.get(REUSE) != "true"
        ),
    )
