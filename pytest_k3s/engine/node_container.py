"""What each node container is: its name, k3s command line, environment and ports.

:func:`node_container` is a pure function from a spec and a node's place in
the cluster to a :class:`NodeContainer`, the description the engine
creates; it reads nothing and calls nothing, so every flag and environment
rule is unit-tested without Docker (k3d's ``translate.go`` plays this part).
Only server-0 publishes ports (the API port, and the spec's ``ports``),
unless a load balancer (:mod:`pytest_k3s.lifecycle.load_balancer`) does.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Literal

from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import PortMapping


Role = Literal["server", "agent"]

#: Where nodes write the kubeconfig we read out (as k3d does).
KUBECONFIG_OUTPUT = "/output/kubeconfig.yaml"
REGISTRIES_PATH = "/etc/rancher/k3s/registries.yaml"
#: k3s imports every image archive here when it starts, instead of pulling.
AIRGAP_DIR = "/var/lib/rancher/k3s/agent/images"
API_PORT = 6443
#: HA servers crash-loop while etcd members join ("too many learners",
#: member-list errors) before they succeed; Docker restarts them. k3d
#: tolerates 10 restarts too.
HA_RESTART_RETRIES = 10
#: Bundled components every node would pull from Docker Hub at start (slow,
#: and rate-limited per IP) that tests rarely need. A ``--disable`` of the
#: user's own replaces this one (``--disable=`` alone: disable nothing).
DEFAULT_DISABLED = ("traefik", "metrics-server")
#: Test machines' disks are often fuller than the kubelet's default eviction
#: threshold (5% free), which would evict pods with DiskPressure. Given first,
#: so a user's own --kubelet-arg for the same setting wins.
TEST_KUBELET_ARGS = (
    "--kubelet-arg=eviction-hard=imagefs.available<1%,nodefs.available<1%",
    "--kubelet-arg=eviction-minimum-reclaim=imagefs.available=1%,nodefs.available=1%",
)


@dataclass(frozen=True)
class Node:
    """One node of a cluster: its name (= container name = hostname) and role."""

    name: str
    role: Role
    container_id: str


@dataclass(frozen=True)
class NodeContainer:
    """What Docker needs to create one node container."""

    name: str
    image: str
    command: Sequence[str]
    environment: Mapping[str, str]
    labels: Mapping[str, str]
    network: str
    #: (host address to publish on, port) pairs; a port without a host port
    #: gets a concrete one when the container is created, kept across restarts.
    ports: Sequence[tuple[str, PortMapping]] = ()
    #: A fixed address on ``network`` (kept across restarts), or None.
    address: str | None = None
    restart_retries: int = 0
    files: Mapping[str, bytes] = field(default_factory=dict)
    #: A tar file on this machine to unpack at ``/`` before the start (the
    #: air-gap or cached image archives, see :data:`AIRGAP_DIR`).
    seed_archive: Path | None = None
    #: What to mount (source: path in the container): an absolute source is
    #: a directory of the engine's host, any other a named volume.
    mounts: Mapping[str, str] = field(default_factory=dict)


#: What the runtime is asked for, by privilege setting: privileged mode,
#: the capability set, or (None) privileged with a fallback if refused.
PRIVILEGE_REQUEST: dict[str, bool | None] = {
    "auto": None,
    "privileged": True,
    "capabilities": False,
}


def node_name(cluster: str, role: Role, index: int) -> str:
    """The container name, hostname and Kubernetes node name of a node."""
    return f"{cluster}-{role}-{index}"


def node_order(node: Node) -> tuple[int, int]:
    """Sort key: servers before agents, then by index."""
    index = node.name.rpartition("-")[2]
    return (0 if node.role == "server" else 1, int(index) if index.isdigit() else 0)


def node_container(
    spec: ClusterSpec,
    role: Role,
    index: int,
    *,
    cluster: str,
    token: str,
    api_host: str,
    api_bind: str,
    labels: Mapping[str, str],
    seed_archive: Path | None = None,
    address: str | None = None,
    balancer: tuple[str, str | None] | None = None,
    registries: str | None = None,
) -> NodeContainer:
    """Describe node ``index`` of ``role`` in ``cluster``.

    - Every node gets the join token and writes its kubeconfig to
      :data:`KUBECONFIG_OUTPUT`; every node but server-0 joins it through
      ``K3S_URL`` (as k3d does; k3s maps it to ``--server``).
    - Servers get ``--tls-san <api_host>`` so the published API's address is
      in the certificate, and ``--tls-san <cluster>-server-0`` (the in-network
      API address without a load balancer, which internal kubeconfigs name:
      in the certificate whatever mode the tests reach the API in); server-0
      of an HA cluster gets ``--cluster-init``.
    - With a load balancer (``balancer``: its name and fixed address), servers
      get its name and address as SANs instead of server-0's name, joining
      nodes join through it, and it publishes the API and the TCP ports
      instead of server-0 (which publishes only UDP ports: HAProxy forwards
      no UDP).
    - ``address`` is the node's fixed address on the cluster network.
    - The test kubelet arguments come first, the user's arguments after them
      (so the user's win), and the user's environment entries last.
    - Only server-0 publishes ports: the API port on ``api_bind``, then the
      spec's ports on ``spec.ports_bind`` (127.0.0.1 unless asked: NodePorts
      are often unauthenticated, and a remote engine's 0.0.0.0 is public).
    - Servers disable :data:`DEFAULT_DISABLED` unless the user's server
      arguments have a ``--disable`` of their own, which replaces ours; a
      bare ``--disable=`` only drops ours and is not passed on.
    - HA servers may restart while etcd members join.
    - ``registries`` is the node's ``registries.yaml`` where it is more than
      the spec's (the registry mirror's endpoints merged in).
    """
    environment = {"K3S_TOKEN": token, "K3S_KUBECONFIG_OUTPUT": KUBECONFIG_OUTPUT}
    sans = [api_host]
    if balancer is not None:
        sans += [part for part in balancer if part]
    else:
        sans.append(node_name(cluster, "server", 0))
    if role == "server":
        command = ["server"]
        for san in dict.fromkeys(sans):
            command += ["--tls-san", san]
        command += TEST_KUBELET_ARGS
        if not _has_disable(spec.server_args):
            command.append("--disable=" + ",".join(DEFAULT_DISABLED))
        if spec.servers > 1 and index == 0:
            command.append("--cluster-init")
        command += [arg for arg in spec.server_args if arg != "--disable="]
        extra_env = spec.server_env
    else:
        command = ["agent", *TEST_KUBELET_ARGS, *spec.agent_args]
        extra_env = spec.agent_env
    first = (role, index) == ("server", 0)
    if not first:
        joins = balancer[0] if balancer else node_name(cluster, "server", 0)
        environment["K3S_URL"] = f"https://{joins}:{API_PORT}"
    for entry in extra_env:
        key, _, value = entry.partition("=")
        environment[key] = value
    files = {}
    yaml = registries or spec.registries
    if isinstance(yaml, str):  # the spec made a mapping YAML text
        files[REGISTRIES_PATH] = yaml.encode()
    return NodeContainer(
        name=node_name(cluster, role, index),
        image=spec.image,
        command=command,
        environment=environment,
        labels=dict(labels),
        network=cluster,
        ports=_published(spec, api_bind, balanced=balancer is not None)
        if first
        else (),
        address=address,
        restart_retries=HA_RESTART_RETRIES
        if role == "server" and spec.servers > 1
        else 0,
        files=files,
        seed_archive=seed_archive,
    )


def _published(
    spec: ClusterSpec, api_bind: str, *, balanced: bool
) -> tuple[tuple[str, PortMapping], ...]:
    """What server-0 publishes: everything, or what a load balancer cannot."""
    if balanced:
        return tuple((spec.ports_bind, p) for p in spec.ports if p.protocol != "tcp")
    return (
        (api_bind, PortMapping(API_PORT)),
        *((spec.ports_bind, p) for p in spec.ports),
    )


def _has_disable(args: Sequence[str]) -> bool:
    return any(arg == "--disable" or arg.startswith("--disable=") for arg in args)
