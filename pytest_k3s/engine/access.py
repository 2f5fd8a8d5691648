"""How this process reaches cluster APIs: from the engine's host, or a container.

A test process in a container (a devcontainer, a GitHub Actions ``container:``
job, a CI job with the host's Docker socket mounted) cannot reach the API
published on ``127.0.0.1:<port>``: that is its own loopback. When the engine
is reached through a unix socket and the engine knows a container that is
us, pytest-k3s connects that container to the cluster's network and uses
``https://<cluster>-server-0:6443``. k3s puts the node name (the container's
hostname) in its serving certificate's SANs, and we pass it as ``--tls-san``
too, since it is then the API host.

That was chosen over the bridge gateway with the port published there
(testcontainers-go's way) because it does not depend on the engine's
firewall: Docker isolates bridge networks from each other, a published
port on the gateway needs a bind address beyond 127.0.0.1, and which
gateway the test container reaches depends on its own network. A
container's own network is reachable by name on every engine.

Detection is conservative: ``/.dockerenv`` also exists where the engine runs
*inside* our container (Docker-in-Docker, a sandbox like this project's own),
and then 127.0.0.1 is right. So a marker is not enough: only a container id
read from our mounts or cgroups that the engine itself knows counts. The
pure functions here take file contents, so every rule is unit-tested; the
engine (:meth:`pytest_k3s.engine.docker_engine.DockerEngine.access`) decides
once and remembers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import Literal


#: Files container engines create in their containers (Docker, Podman).
MARKER_FILES = ("/.dockerenv", "/run/.containerenv")
_ID = r"[0-9a-f]{64}"
#: Docker bind-mounts /etc/hostname, /etc/hosts and /etc/resolv.conf from
#: ``<data-root>/containers/<id>/`` (Podman from ``.../<id>/userdata/``).
#: The mount point must be ours: on some hosts those bind mounts of other
#: containers propagate to the host's mount table, onto
#: ``<data-root>/overlay2/<layer>/merged/etc/hostname``, so a process on
#: the host sees them too (and would take a node of a cluster for itself).
_MOUNTED_FROM = re.compile(
    rf"/({_ID})/(?:userdata/)?(hostname|hosts|resolv\.conf) /etc/\2 "
)
#: cgroup v1 paths (``/docker/<id>``, ``docker-<id>.scope``); v2 shows ``/``.
_CGROUP = re.compile(rf"(?:/docker/|docker-|libpod-)({_ID})(?:\.scope)?$", re.M)
#: Docker's default hostname: the id's first 12 characters.
_SHORT_ID = re.compile(r"[0-9a-f]{12}")

Mode = Literal["published", "network"]


@dataclass(frozen=True)
class Access:
    """How the test process reaches a cluster's API, and why.

    :param mode: ``published``: the port published on the engine's host;
        ``network``: server-0's (or the load balancer's) name and port 6443
        on the cluster network, which ``container`` (our container's id) joins
    """

    mode: Mode
    reason: str
    container: str | None = None

    def describe(self) -> str:
        """The report header's account of it."""
        if self.mode == "network":
            return (
                "k3s API: via the cluster network (https://<cluster>-server-0:6443, "
                f"or <cluster>-serverlb:6443 with a load balancer); {self.reason}"
            )
        return f"k3s API: the published port; {self.reason}"


@dataclass(frozen=True)
class Surroundings:
    """What this process can read about being in a container."""

    marker: bool
    hostname: str = ""
    cgroup: str = ""
    mountinfo: str = ""

    @classmethod
    def read(cls, root: Path = Path("/")) -> Surroundings:
        """Read the markers, hostname, cgroups and mounts of this process."""

        def text(path: str) -> str:
            try:
                return (root / path.lstrip("/")).read_text(errors="replace")
            except OSError:
                return ""

        return cls(
            marker=any((root / m.lstrip("/")).exists() for m in MARKER_FILES),
            hostname=text("/etc/hostname").strip(),
            cgroup=text("/proc/self/cgroup"),
            mountinfo=text("/proc/self/mountinfo"),
        )

    def candidates(self) -> list[str]:
        """Container ids that may be ours, most reliable first (none: no container)."""
        found = [m.group(1) for m in _MOUNTED_FROM.finditer(self.mountinfo)]
        found += [m.group(1) for m in _CGROUP.finditer(self.cgroup)]
        if self.marker and _SHORT_ID.fullmatch(self.hostname):
            found.append(self.hostname)
        return list(dict.fromkeys(found))


def decide(
    surroundings: Surroundings,
    *,
    local: bool,
    inspect: Callable[[str], Mapping[str, Any] | None],
) -> Access:
    """Choose how to reach cluster APIs from here.

    :param local: the engine is reached through a unix socket (a remote
        engine's published ports are on its host, which the kubeconfig names)
    :param inspect: the engine's ``inspect_container``, None for unknown ids
    """
    if not local:
        return Access("published", "the engine is remote (DOCKER_HOST)")
    candidates = surroundings.candidates()
    if not candidates:
        return Access("published", "the tests run on the engine's host")
    for candidate in candidates:
        info = inspect(candidate)
        if info is None or not str(info.get("Id", "")).startswith(candidate):
            continue
        ours = str(info["Id"])
        network = str((info.get("HostConfig") or {}).get("NetworkMode") or "")
        if network == "host":
            return Access(
                "published", f"in container {ours[:12]} on the host's network"
            )
        if network.startswith("container:"):
            return Access(
                "published",
                f"in container {ours[:12]}, which shares another container's "
                "network and cannot join the cluster's; set --k3s-api-host / "
                "--k3s-api-bind if 127.0.0.1 does not reach the engine's host",
            )
        return Access("network", f"the tests run in container {ours[:12]}", ours)
    return Access(
        "published",
        "in a container the engine does not know (the engine runs in it, "
        "as with Docker-in-Docker), so 127.0.0.1 reaches it",
    )
