"""What the Docker engine's host allows and needs: privileges, devices, kernel limits.

This is host policy, kept apart from the Docker adapter (as k3d keeps
``host.go`` apart from its runtime): which capabilities a node may ask for
where the engine refuses privileged mode, which host devices the kubelet
reads, and which kernel limits are too low for k3s nodes. Pure functions
and constants: the facts learnt about an engine (it refused privileged
mode; what it can grant; its host was checked) are kept by the engine
object (:class:`~pytest_k3s.engine.docker_engine.DockerEngine`), which
every later node and cluster of the process uses. What the engine can
grant comes from the engine, never from this process's own capabilities:
inside a container those are a container's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from typing import TypeVar


T = TypeVar("T")


#: Linux capability names by number, for the capability fallback.
CAPABILITIES = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
]

#: What a daemon says when the host cannot grant every capability.
PRIVILEGE_REFUSED = "unable to apply caps"
#: Per-user inotify instances a host needs for several k3s nodes (kind's
#: advice); the kernel default of 128 runs out: "too many open files".
INOTIFY_INSTANCES = 512
INOTIFY_SYSCTL = Path("/proc/sys/fs/inotify/max_user_instances")
#: Host devices the kubelet and containerd use, which privileged mode would
#: have given the node.
NODE_DEVICES = ("/dev/kmsg", "/dev/fuse")

#: What the fallback's entrypoint wrapper logs when a remount fails; the
#: readiness checks look for it to explain the exit.
REMOUNT_FAILED = "pytest-k3s: cannot make"
#: The fallback's entrypoint (run by the image's /bin/sh; k3s' arguments
#: follow). Docker mounts /sys and every cgroup hierarchy read-only in a
#: container that is not privileged, so k3s and its kubelet could not create
#: cgroups. CAP_SYS_ADMIN without AppArmor lets the container remount them
#: read-write itself (``remount,bind`` changes the mount, not the file
#: system, which a cgroup v1 hierarchy in use refuses as "busy"). k3s must
#: stay PID 1, hence ``exec``. Plain POSIX sh: the real image has busybox only.
REMOUNT_SCRIPT = f"""\
set -u
remount() {{
  mount -o remount,bind,rw "$1" 2>/tmp/pytest-k3s-remount.err || {{
    echo "{REMOUNT_FAILED} $1 writable: $(cat /tmp/pytest-k3s-remount.err)" >&2
    exit 1
  }}
}}
remount /sys
while read -r _ _ _ _ point _; do
  case "$point" in /sys/fs/cgroup|/sys/fs/cgroup/*) remount "$point";; esac
done </proc/self/mountinfo
exec /bin/k3s "$@"
"""
#: How the engine is asked what its host can grant: a throwaway container
#: in the engine's PID namespace reads its parent's status. That parent is
#: the runtime's shim, and runc can hand a container only what the shim's
#: bounding set holds (a sandboxed engine lacks some; PID 1 may hold more).
PROBE_SCRIPT = "cat /proc/$PPID/status"
#: What the fallback drops when the engine cannot be asked: the capability
#: sandboxed hosts lack.
FALLBACK_DROP = ("SYS_RESOURCE",)
_UNKNOWN_CAPABILITY = re.compile(r'unknown capability: "?CAP_([A-Z_]+)')


def inotify_warning(sysctl: Path = INOTIFY_SYSCTL) -> str | None:
    """Return advice when the host's inotify instance limit is too low for k3s."""
    try:
        limit = int(sysctl.read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None
    if limit >= INOTIFY_INSTANCES:
        return None
    return (
        f"warning: fs.inotify.max_user_instances is {limit}; k3s nodes may fail "
        "with 'too many open files'. Raise it: sudo sysctl -w "
        f"fs.inotify.max_user_instances={INOTIFY_INSTANCES}"
    )


def missing_capabilities(status: str) -> list[str] | None:
    """Return the capabilities a ``/proc/<pid>/status`` text's bounding set lacks.

    ``status`` is the *engine's* answer (see :data:`PROBE_SCRIPT`), never our
    own process's: a client in a container has a container's bounding set,
    which says nothing about what the engine's host can grant. None when the
    text has no ``CapBnd`` line.
    """
    for line in status.splitlines():
        if line.startswith("CapBnd:"):
            bounding = int(line.split()[1], 16)
            return [
                name for bit, name in enumerate(CAPABILITIES) if not bounding >> bit & 1
            ]
    return None


def unknown_capability(message: str) -> str | None:
    """The capability an engine rejected as unknown (``CAP_PERFMON`` -> PERFMON).

    Older engines know fewer names than the kernel (Docker 20.10 stops at
    AUDIT_READ); a name they do not know is one ``cap_add=["ALL"]`` never
    grants, so leaving it out of ``cap_drop`` changes nothing.
    """
    match = _UNKNOWN_CAPABILITY.search(message)
    return match.group(1) if match else None


def without_unknown_names(
    create: Callable[[list[str]], T],
    cap_drop: list[str],
    explain: Callable[[Exception], str],
) -> T:
    """Call ``create(cap_drop)``, leaving out each name the engine rejects as unknown.

    An engine that does not know a capability name rejects a container that
    drops it (``invalid CapDrop: unknown capability: "CAP_PERFMON"``); such a
    name is one ``cap_add=["ALL"]`` never grants, so dropping it changes
    nothing. ``cap_drop`` is left holding what the engine accepted; any
    other error propagates.

    :param explain: the engine's own text of an error it raised
    """
    while True:
        try:
            return create(list(cap_drop))
        except Exception as exc:
            unknown = unknown_capability(explain(exc))
            if unknown not in cap_drop:
                raise
            cap_drop.remove(unknown)


def privilege_options(
    privileged: bool, *, cap_drop: list[str] | None = None, local: bool = True
) -> dict[str, Any]:
    """Return the container options for privileged mode or the capability set.

    The capability set stands in for privileged mode as far as a host that
    refuses it allows: every capability the engine can grant (``cap_drop``
    is what it cannot, as the engine answered), no seccomp or AppArmor
    confinement, unmasked ``/proc`` paths, and (for a local engine, whose
    devices we can see) the devices the kubelet reads. Its entrypoint makes
    /sys and the cgroup hierarchies writable before k3s starts
    (:data:`REMOUNT_SCRIPT`); ``entrypoint`` is for the container, ``unmask``
    for the raw host config, the rest for ``create_host_config``.
    """
    if privileged:
        return {"privileged": True}
    devices = [d for d in NODE_DEVICES if local and Path(d).exists()]
    return {
        "entrypoint": fallback_entrypoint(),
        "cap_add": ["ALL"],
        "cap_drop": list(FALLBACK_DROP if cap_drop is None else cap_drop),
        "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
        "devices": [f"{device}:{device}:rwm" for device in devices],
        "unmask": True,
    }


def fallback_entrypoint() -> list[str]:
    """The capability fallback's entrypoint: :data:`REMOUNT_SCRIPT`, then k3s.

    ``k3s`` stands in as ``$0``, so the node's command line becomes ``$@``.
    """
    return ["/bin/sh", "-c", REMOUNT_SCRIPT, "k3s"]


def remount_failure(lines: list[str]) -> str | None:
    """The remount error a fallback node logged before exiting, if it did."""
    for line in lines:
        if REMOUNT_FAILED in line:
            return line[line.index(REMOUNT_FAILED) :].strip()
    return None
