"""Who a k3s node is: its name, IP, labels and taints, from flags and host."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from dataclasses import field

from k3s_double.constants import go_arch

from . import flags
from .pki import random_secret


def detect_node_ip() -> str:
    """The address of the default-route interface, as k3s picks the node IP."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("8.8.8.8", 53))
        address: str = probe.getsockname()[0]
        return address
    except OSError:
        return socket.gethostbyname(socket.gethostname())
    finally:
        probe.close()


def parse_taint(text: str) -> dict[str, str]:
    """``key[=value]:Effect`` as kubelet's ``--register-with-taints`` reads it."""
    spec, sep, effect = text.rpartition(":")
    if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(f"invalid taint spec: {text}")
    key, _, value = spec.partition("=")
    if not key:
        raise ValueError(f"invalid taint spec: {text}")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def parse_label(text: str) -> tuple[str, str]:
    """``key=value`` as kubelet's ``--node-labels`` reads it."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"invalid node label: {text}")
    return key, value


@dataclass
class Node:
    """What a k3s node registers: its name, IP, labels and taints."""

    name: str
    hostname: str
    ip: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    extra_labels: list[str] = field(default_factory=list)


def make_node(opts: flags.Options, *, server: bool, etcd: bool) -> Node:
    """The node this process registers, with the labels k3s gives it."""
    hostname = socket.gethostname().lower()
    name = opts.text("node-name") or hostname
    if opts.flag("with-node-id"):
        name = f"{name}-{random_secret()[:8]}"
    node_ips = opts.split("node-ip")
    ip = node_ips[0] if node_ips else detect_node_ip()
    arch = go_arch()
    labels = {
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "k3s",
        "beta.kubernetes.io/instance-type": "k3s",
        "k3s.io/hostname": hostname,
        "k3s.io/internal-ip": ip,
    }
    external = opts.split("node-external-ip")
    if external:
        labels["k3s.io/external-ip"] = external[0]
    if server:
        labels["node-role.kubernetes.io/control-plane"] = "true"
        labels["node-role.kubernetes.io/master"] = "true"
        if etcd:
            labels["node-role.kubernetes.io/etcd"] = "true"
    for text in opts.items("node-label"):
        key, value = parse_label(text)
        labels[key] = value
    taints = [parse_taint(text) for text in opts.items("node-taint")]
    return Node(name, hostname, ip, labels, taints, opts.items("node-label"))
