"""The load balancer in front of a cluster's servers (and its published ports).

Without one, the kubeconfig names server-0, and a test that stops server-0
of a three-server cluster loses the API although two servers serve it
(k3s#2964 is what users see). So a cluster with more than one server (or any
cluster whose spec asks) gets ``<cluster>-serverlb``: an HAProxy container
on the cluster network, with the first fixed address, that

- forwards 6443 to every server, checking each with k3s' unauthenticated
  ``GET /ping`` (TLS, every second; a server is out after two failures and
  back after one success), and redispatches a connection that fails to
  connect, so a stopped server costs a client at most a connect timeout;
- forwards the spec's TCP ``ports`` to every node (k3d's
  ``-p 8080:80@loadbalancer``), checked by a TCP connect, so a NodePort
  keeps answering when the node that served it stops;
- is what the kubeconfig, the in-container URL, the internal kubeconfig
  (for containers on the cluster network), the servers' ``--tls-san`` and
  the joining nodes' ``K3S_URL`` name.

The image contract is the official ``haproxy`` image's: arguments that start
with ``-`` are passed to ``haproxy -W -db`` (master-worker mode, in the
foreground), and SIGUSR2 to the master reloads the configuration without
dropping connections, which is how an added or removed agent is taken in.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence

from pytest_k3s import labels
from pytest_k3s.engine.node_container import API_PORT
from pytest_k3s.engine.node_container import NodeContainer
from pytest_k3s.engine.node_container import node_name
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.engine.protocol import node_containers
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import PortMapping


ROLE = labels.BALANCER_ROLE
CONFIG_PATH = "/usr/local/etc/haproxy/haproxy.cfg"
RELOAD_SIGNAL = "SIGUSR2"

_DEFAULTS = """\
global
    log stdout format raw local0 notice
    maxconn 4096

defaults
    mode tcp
    log global
    timeout connect 1s
    timeout check 1s
    # Watches and port-forwards stay open for as long as a test runs.
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    retries 2
    option redispatch 1
    default-server inter 1s fastinter 250ms downinter 250ms fall 2 rise 1
"""


def balancer_name(cluster: str) -> str:
    """The load balancer's container name (and host name on the network)."""
    return f"{cluster}-serverlb"


def api_endpoint(cluster: str, *, balanced: bool) -> str:
    """The container that serves ``cluster``'s API on the cluster network.

    That is the load balancer where there is one, else server-0: what the
    kubeconfig names from inside the network (our own container's, or a
    neighbour's: :meth:`pytest_k3s.K3sCluster.internal_kubeconfig`), and
    what every server's serving certificate names.
    """
    return balancer_name(cluster) if balanced else node_name(cluster, "server", 0)


def forwarded(spec: ClusterSpec) -> tuple[PortMapping, ...]:
    """The spec's ports the load balancer forwards (TCP: HAProxy has no UDP)."""
    return tuple(p for p in spec.ports if p.protocol == "tcp")


def config(
    servers: Sequence[tuple[str, str]],
    nodes: Sequence[tuple[str, str]],
    ports: Sequence[PortMapping],
) -> str:
    """HAProxy's configuration: the API to ``servers``, ``ports`` to ``nodes``.

    Both are (name, address) pairs.
    """
    lines = [
        _DEFAULTS,
        "frontend api",
        f"    bind :{API_PORT}",
        "    default_backend api",
        "",
        "backend api",
        "    option httpchk GET /ping",
        "    http-check expect status 200",
    ]
    lines += [
        f"    server {name} {address}:{API_PORT} check check-ssl verify none"
        for name, address in servers
    ]
    for port in ports:
        section = f"port-{port.container_port}"
        lines += [
            "",
            f"frontend {section}",
            f"    bind :{port.container_port}",
            f"    default_backend {section}",
            "",
            f"backend {section}",
        ]
        lines += [
            f"    server {name} {address}:{port.container_port} check"
            for name, address in nodes
        ]
    return "\n".join(lines) + "\n"


def balancer_container(
    spec: ClusterSpec,
    *,
    cluster: str,
    address: str | None,
    api_bind: str,
    servers: Sequence[tuple[str, str]],
    nodes: Sequence[tuple[str, str]],
    tags: Mapping[str, str],
) -> NodeContainer:
    """Describe the load balancer of ``cluster``: its ports, config and labels."""
    ports = forwarded(spec)
    return NodeContainer(
        name=balancer_name(cluster),
        image=spec.load_balancer_image,
        command=["-f", CONFIG_PATH],
        environment={},
        labels={**tags, labels.ROLE: ROLE},
        network=cluster,
        ports=(
            (api_bind, PortMapping(API_PORT)),
            *((spec.ports_bind, p) for p in ports),
        ),
        address=address,
        files={CONFIG_PATH: config(servers, nodes, ports).encode()},
    )


def check_running(engine: Engine, container_id: str, cluster: str, image: str) -> None:
    """Raise ClusterStartError, with its log, if the load balancer is not running."""
    state = engine.state(container_id)
    if state.get("Status") == "running":
        return
    raise ClusterStartError(
        f"the load balancer {balancer_name(cluster)} of cluster {cluster} exited "
        f"(status {state.get('ExitCode')}); is its image ({image}) an HAProxy "
        "image? set --k3s-load-balancer-image, or --k3s-load-balancer=off "
        "for a cluster of one server",
        node=balancer_name(cluster),
        logs=engine.logs(container_id, tail=20).splitlines(),
    )


def follow_nodes(engine: Engine, container_id: str, spec: ClusterSpec) -> None:
    """Give the load balancer the cluster's nodes as they are now, and reload it.

    Only its forwarded ports go to every node (servers cannot be added), so a
    balancer without any is left alone. A node without a fixed address (one
    made by an older release) is named by its host name, which the
    network's DNS resolves.
    """
    ports = forwarded(spec)
    if not ports:
        return
    cluster = engine.labels_of(container_id)[labels.CLUSTER]
    servers: list[tuple[str, str]] = []
    nodes: list[tuple[str, str]] = []
    for found in sorted(node_containers(engine, cluster), key=lambda f: f.name):
        backend = (found.name, found.labels.get(labels.ADDRESS) or found.name)
        nodes.append(backend)
        if found.labels.get(labels.ROLE) == "server":
            servers.append(backend)
    text = config(servers, nodes, ports)
    engine.write_files(container_id, {CONFIG_PATH: text.encode()})
    engine.signal(container_id, RELOAD_SIGNAL)
