"""Cluster DNS, as CoreDNS answers pods, and the ``resolv.conf`` pods get.

k3s' CoreDNS pod is simulated in the double (it runs no process), so each
node answers the cluster's DNS itself, the way CoreDNS' ``kubernetes``
plugin does: ``<service>.<namespace>.svc.cluster.local`` is the Service's
ClusterIP (a headless Service's names are its ready pods' IPs), TTL 5,
authoritative; any other name under ``cluster.local`` is NXDOMAIN; names
outside it are forwarded to the node's own nameservers (CoreDNS' ``forward
. /etc/resolv.conf``). The responder listens on the node's IP at
:data:`DNS_PORT` (UDP and TCP); :mod:`.services` sends the kube-dns
ClusterIP's port 53 there, as kube-proxy sends it to CoreDNS' pod.

Pods see it as k3s pods do, through their own ``/etc/resolv.conf``
(:func:`resolv_conf`): ``nameserver 10.43.0.10``, ``search
<ns>.svc.cluster.local svc.cluster.local cluster.local`` and ``options
ndots:5``, so a bare ``<service>`` or ``<service>.<namespace>`` resolves.
The pods' processes share the node's file system, so the kubelet mounts
that file over ``/etc/resolv.conf`` in a mount namespace of the pod's
process (:func:`in_pod`) and leaves the node's own alone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
import threading
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any


#: Where the node's responder listens (the node's IP), TCP and UDP.
DNS_PORT = 10053
#: k3s' ``--cluster-dns`` (the tenth address of the default service CIDR).
CLUSTER_DNS = "10.43.0.10"
CLUSTER_DOMAIN = "cluster.local"
TTL = 5
RESOLV_CONF = "/etc/resolv.conf"
#: Where the kubelet keeps the pods' own files (a volume of the node).
PODS_DIR = "/var/lib/kubelet/pods"
#: The mount namespace a pod's process gets: its resolv.conf over the node's.
_WRAPPER = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'

A, AAAA, ANY = 1, 28, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN = 0, 1, 2, 3


def read_resolv(path: str = RESOLV_CONF) -> tuple[list[str], list[str]]:
    """The nameservers and search domains of a ``resolv.conf``."""
    servers: list[str] = []
    search: list[str] = []
    with contextlib.suppress(OSError), open(path) as handle:
        for line in handle:
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver":
                servers.append(words[1])
            elif words and words[0] in ("search", "domain"):
                search = words[1:]
    return servers, search


def resolv_conf(pod: Mapping[str, Any], host_search: list[str]) -> str | None:
    """The pod's ``resolv.conf`` by its ``dnsPolicy``; None for the node's own."""
    spec = pod.get("spec") or {}
    namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    config = spec.get("dnsConfig") or {}
    if policy == "Default" or (policy == "ClusterFirst" and spec.get("hostNetwork")):
        if not config:
            return None
        servers, search = read_resolv()
        options = ["ndots:1"]
    elif policy == "None":
        servers, search, options = [], [], []
    else:
        servers = [CLUSTER_DNS]
        search = [
            f"{namespace}.svc.{CLUSTER_DOMAIN}",
            f"svc.{CLUSTER_DOMAIN}",
            CLUSTER_DOMAIN,
            *host_search,
        ]
        options = ["ndots:5"]
    servers = servers + [str(s) for s in config.get("nameservers") or []]
    search = search + [str(s) for s in config.get("searches") or []]
    for option in config.get("options") or []:
        name = str(option.get("name", ""))
        value = option.get("value")
        options = [o for o in options if o.split(":")[0] != name]
        options.append(name if value is None else f"{name}:{value}")
    lines = [f"search {' '.join(search)}"] if search else []
    lines += [f"nameserver {server}" for server in servers[:3]]
    if options:
        lines.append(f"options {' '.join(options)}")
    return "\n".join(lines) + "\n"


def write_resolv_conf(uid: str, content: str, root: str = PODS_DIR) -> str:
    """Write a pod's ``resolv.conf`` where the kubelet keeps its files."""
    directory = os.path.join(root, uid)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "resolv.conf")
    with open(path, "w") as handle:
        handle.write(content)
    return path


def in_pod(argv: list[str], resolv: str | None) -> list[str]:
    """``argv`` run with ``resolv`` as its ``/etc/resolv.conf`` (unchanged without)."""
    if resolv is None:
        return argv
    return [
        "/usr/bin/unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        _WRAPPER,
        resolv,
        *argv,
    ]


def _name(packet: bytes, offset: int) -> tuple[str, int]:
    labels: list[str] = []
    while True:
        length = packet[offset]
        if length == 0:
            return ".".join(labels), offset + 1
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii"))
        offset += 1 + length


def _reply(query: bytes, end: int, rcode: int, answers: list[bytes]) -> bytes:
    ident, flags = struct.unpack("!HH", query[:4])
    flags = 0x8000 | (flags & 0x7900) | 0x0400 | 0x0080 | rcode  # QR, AA, RA
    header = struct.pack("!HHHHHH", ident, flags, 1, len(answers), 0, 0)
    return header + query[12:end] + b"".join(answers)


def _error(query: bytes, rcode: int) -> bytes:
    ident, flags = struct.unpack("!HH", query[:4])
    flags = 0x8000 | (flags & 0x7900) | 0x0080 | rcode
    return struct.pack("!HHHHHH", ident, flags, 0, 0, 0, 0)


class Responder:
    """Answers the cluster's names; forwards the rest to the node's nameservers."""

    def __init__(self, upstream: list[str]) -> None:
        self.upstream = [s for s in upstream if s != CLUSTER_DNS]
        self._records: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def update(self, records: dict[str, list[str]]) -> None:
        """Replace the names the cluster has: fully qualified name to IPs."""
        with self._lock:
            self._records = {k.lower(): list(v) for k, v in records.items()}

    def answer(self, query: bytes, forward: Callable[[bytes], bytes | None]) -> bytes:
        """The answer to one query (a DNS message)."""
        if len(query) < 12:
            raise ValueError("short query")
        if struct.unpack("!H", query[4:6])[0] != 1:
            return _error(query, FORMERR)
        try:
            name, offset = _name(query, 12)
            qtype, _qclass = struct.unpack("!HH", query[offset : offset + 4])
        except (ValueError, IndexError, struct.error, UnicodeDecodeError):
            return _error(query, FORMERR)
        end = offset + 4
        name = name.lower().rstrip(".")
        if name != CLUSTER_DOMAIN and not name.endswith("." + CLUSTER_DOMAIN):
            return forward(query) or _error(query, SERVFAIL)
        with self._lock:
            addresses = self._records.get(name)
        if addresses is None:
            return _reply(query, end, NXDOMAIN, [])
        answers = []
        if qtype in (A, ANY):
            for address in addresses:
                answers.append(
                    struct.pack("!HHHIH", 0xC00C, A, 1, TTL, 4)
                    + ipaddress.IPv4Address(address).packed
                )
        return _reply(query, end, NOERROR, answers)

    def forward(self, query: bytes) -> bytes | None:
        """Ask the node's nameservers, in order; None if none answers."""
        for server in self.upstream:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(2)
                try:
                    sock.sendto(query, (server, 53))
                    data, _ = sock.recvfrom(65535)
                except OSError:
                    continue
                if data[:2] == query[:2]:
                    return data
        return None


class DnsServer:
    """The responder on UDP and TCP ``address:port``, in daemon threads."""

    def __init__(self, responder: Responder, address: str, port: int = DNS_PORT):
        self.responder = responder
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        for sock in (self.udp, self.tcp):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.udp.bind((address, port))
            self.tcp.bind((address, port))
            self.tcp.listen(32)
        except OSError:
            self.close()
            raise

    def start(self) -> None:
        """Serve both sockets."""
        threading.Thread(target=self._serve_udp, daemon=True).start()
        threading.Thread(target=self._serve_tcp, daemon=True).start()

    def close(self) -> None:
        """Stop serving."""
        for sock in (self.udp, self.tcp):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _serve_udp(self) -> None:
        while True:
            try:
                query, peer = self.udp.recvfrom(65535)
            except OSError:
                return
            threading.Thread(
                target=self._udp_one, args=(query, peer), daemon=True
            ).start()

    def _udp_one(self, query: bytes, peer: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.udp.sendto(self.responder.answer(query, self.responder.forward), peer)

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._tcp_one, args=(conn,), daemon=True).start()

    def _tcp_one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(ValueError, OSError, struct.error):
            conn.settimeout(5)
            while True:
                head = conn.recv(2, socket.MSG_WAITALL)
                if len(head) < 2:
                    return
                (length,) = struct.unpack("!H", head)
                query = conn.recv(length, socket.MSG_WAITALL)
                reply = self.responder.answer(query, self.responder.forward)
                conn.sendall(struct.pack("!H", len(reply)) + reply)
