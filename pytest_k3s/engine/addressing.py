"""Addresses and ports that outlive a restart: the pure rules, no engine calls.

Docker rebuilds a container's port bindings at every start, and an empty
host port means "pick a new one"; a bridge network without a configured
subnet hands out the first free address. Either way a stopped and started
server can come back somewhere else, while its kubeconfig, its clients and
its etcd peers (whose peer URL ``https://<node-ip>:2380`` k3s rewrites only
on ``--cluster-reset``) still know the old place. So every cluster network
gets a subnet of its own, nodes get fixed addresses from its lower half
(dynamic allocations, such as a test container joining the network, come
from the upper half), and every published port gets a concrete host port
when the container is created.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import replace

from pytest_k3s.spec import PortMapping


#: Host ports we choose from: below Kubernetes' NodePort range
#: (30000-32767) and Linux's ephemeral ports (32768-60999), so that neither a
#: NodePort nor an outgoing connection takes a stopped node's port meanwhile.
HOST_PORTS = range(20000, 30000)
#: What Docker (or its userland proxy) says when a host port is taken.
PORT_TAKEN = ("port is already allocated", "address already in use")
#: Docker, when a requested subnet overlaps another network's.
SUBNET_TAKEN = ("overlaps", "already in use", "already used")


def dynamic_range(subnet: str) -> str:
    """The upper half of ``subnet``: where the engine allocates addresses itself."""
    network = ipaddress.IPv4Network(subnet)
    return str(list(network.subnets(prefixlen_diff=1))[1])


def fixed_addresses(subnet: str) -> Iterable[str]:
    """The fixed addresses of ``subnet``, in order: its lower half's hosts.

    The first host address is the gateway; nodes start at the second.
    """
    network = ipaddress.IPv4Network(subnet)
    lower = next(iter(network.subnets(prefixlen_diff=1)))
    gateway = lower.network_address + 1
    for address in lower.hosts():
        if address > gateway:
            yield str(address)


def next_address(used: Iterable[str]) -> str | None:
    """The fixed address after the highest of ``used`` (None: no fixed addresses).

    The next after the highest, not the lowest free: a removed node's
    address is never handed to a new one while a peer may still know it.
    """
    taken = [ipaddress.IPv4Address(a) for a in used if a]
    if not taken:
        return None
    return str(max(taken) + 1)


def port_taken(message: str) -> bool:
    """Whether an engine's start error says a host port is taken."""
    return any(needle in message for needle in PORT_TAKEN)


def choose_host_ports(
    ports: Sequence[tuple[str, PortMapping]],
    is_free: Callable[[str, int, str], bool],
    rng: random.Random | None = None,
) -> tuple[tuple[str, PortMapping], ...]:
    """Give every mapping without a host port a concrete one from :data:`HOST_PORTS`.

    ``is_free(host_ip, port, protocol)`` vets a candidate (a local engine's host can be
    asked; for a remote one it says yes and the engine's answer decides).
    """
    rng = rng or random.Random()
    chosen: set[int] = {m.host_port for _, m in ports if m.host_port is not None}
    result = []
    for host_ip, mapping in ports:
        if mapping.host_port is None:
            candidate = rng.choice(HOST_PORTS)
            for _ in range(50):
                if candidate not in chosen and is_free(
                    host_ip, candidate, mapping.protocol
                ):
                    break
                candidate = rng.choice(HOST_PORTS)
            else:  # none looked free: one of ours it is not, the engine decides
                while candidate in chosen:
                    candidate = rng.choice(HOST_PORTS)
            chosen.add(candidate)
            mapping = replace(mapping, host_port=candidate)
        result.append((host_ip, mapping))
    return tuple(result)


def bindable(host_ip: str, port: int, protocol: str = "tcp") -> bool:
    """Whether this machine can bind ``host_ip:port`` now (a local engine's host)."""
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("" if host_ip == "0.0.0.0" else host_ip, port))
        except OSError:
            return False
    return True
