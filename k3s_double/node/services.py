"""kube-proxy's ClusterIPs and the cluster's DNS names, on every node.

Real k3s' kube-proxy (iptables mode) rewrites a connection to a Service's
``clusterIP:port`` to one of its ready endpoints, ``podIP:targetPort``,
chosen at random, and rejects it when the Service has none. The double does
the same with the same tool: each node keeps a chain of its own in the
``nat`` table's ``OUTPUT`` (``DNAT`` per endpoint, ``-m statistic --mode
random`` between several) and one in ``filter``'s ``OUTPUT`` (``REJECT`` for
a port without endpoints), so connections made by the node's processes,
which are the processes of its pods, reach the endpoints' real processes.
An endpoint is a pod of the Service's namespace that its ``selector``
matches, Ready and not terminating, with a ``podIP`` (a named
``targetPort`` is looked up in the pod's container ports). A pod the double
only simulates has an IP nothing answers on, so a connection to it fails,
as it would to a pod that serves nothing.

The kube-dns Service (k3s' CoreDNS, a simulated pod) is the exception: its
port 53 goes to the node's own responder (:mod:`.dns`), which this loop
keeps up to date with every Service's name. Services and pods are polled
every half second, like :mod:`.nodeports`; Services without a selector
(hand-made Endpoints), ``ExternalName`` and ``sessionAffinity`` are not
honoured.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from collections.abc import Mapping
from typing import Any

from k3s_double.apiserver.httpd import Upstream

from . import children
from . import dns
from .runtime import Runtime


POLL_SECONDS = 0.5
CHAIN = "K3S-DOUBLE-SERVICES"
IPTABLES = "iptables"
Obj = dict[str, Any]


def _ready(pod: Obj) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if not status.get("podIP") or status.get("phase") != "Running":
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def _target(port: Mapping[str, Any], pod: Obj) -> int | None:
    """The pod's port a Service port's ``targetPort`` names, if any."""
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    protocol = port.get("protocol", "TCP")
    for container in (pod.get("spec") or {}).get("containers") or []:
        for declared in container.get("ports") or []:
            if (
                declared.get("name") == target
                and declared.get("protocol", "TCP") == protocol
            ):
                return int(declared["containerPort"])
    return None


def _selects(selector: Mapping[str, str], pod: Obj) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def is_cluster_dns(service: Obj) -> bool:
    """Whether ``service`` is k3s' kube-dns (CoreDNS, answered by the node)."""
    meta = service.get("metadata") or {}
    return (meta.get("namespace"), meta.get("name")) == ("kube-system", "kube-dns")


def plan(
    services: list[Obj], pods: list[Obj], node_ip: str
) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """The ``nat`` rules, the ``filter`` rules and the DNS names of a cluster."""
    nat: list[str] = []
    reject: list[str] = []
    names: dict[str, list[str]] = {}
    ready = [p for p in pods if _ready(p)]
    for service in sorted(
        services,
        key=lambda s: (s["metadata"]["namespace"], s["metadata"]["name"]),
    ):
        meta, spec = service["metadata"], service.get("spec") or {}
        namespace, name = meta["namespace"], meta["name"]
        fqdn = f"{name}.{namespace}.svc.{dns.CLUSTER_DOMAIN}"
        selector = spec.get("selector") or {}
        members = [
            p
            for p in ready
            if selector
            and p["metadata"].get("namespace") == namespace
            and _selects(selector, p)
        ]
        cluster_ip = spec.get("clusterIP")
        if cluster_ip == "None":
            names[fqdn] = sorted({p["status"]["podIP"] for p in members})
            continue
        if not cluster_ip or spec.get("type") == "ExternalName":
            continue
        names[fqdn] = [cluster_ip]
        for port in spec.get("ports") or []:
            protocol = str(port.get("protocol", "TCP")).lower()
            if protocol not in ("tcp", "udp"):
                continue
            match = (
                f"-d {cluster_ip}/32 -p {protocol} -m {protocol} "
                f"--dport {int(port['port'])}"
            )
            comment = (
                f'-m comment --comment "{namespace}/{name}:{port.get("name", "")}"'
            )
            if is_cluster_dns(service) and int(port["port"]) == 53:
                targets = [f"{node_ip}:{dns.DNS_PORT}"]
            else:
                targets = sorted(
                    {
                        f"{p['status']['podIP']}:{t}"
                        for p in members
                        if (t := _target(port, p)) is not None
                    }
                )
            if not targets:
                reject.append(
                    f"-A {CHAIN} {match} {comment} -j REJECT "
                    "--reject-with icmp-port-unreachable"
                )
                continue
            for index, target in enumerate(targets):
                left = len(targets) - index
                chance = (
                    f"-m statistic --mode random --probability {1 / left:.10f} "
                    if left > 1
                    else ""
                )
                nat.append(
                    f"-A {CHAIN} {match} {comment} {chance}"
                    f"-j DNAT --to-destination {target}"
                )
    return nat, reject, names


def restore_input(nat: list[str], reject: list[str]) -> str:
    """What ``iptables-restore --noflush`` takes to replace the double's chains."""
    text = ""
    for table, rules in (("nat", nat), ("filter", reject)):
        text += f"*{table}\n:{CHAIN} - [0:0]\n"
        text += "".join(rule + "\n" for rule in rules)
        text += "COMMIT\n"
    return text


class ServiceProxy:
    """Keeps this node's ClusterIP rules and DNS names in line with the API."""

    def __init__(self, rt: Runtime, node_ip: str, api: Upstream) -> None:
        self.rt = rt
        self.node_ip = node_ip
        self.api = api
        servers, _ = dns.read_resolv()
        self.responder = dns.Responder(servers)
        self._applied = ""

    def start(self) -> None:
        """Hook the chains in, serve DNS and follow the API in a daemon thread."""
        try:
            for table in ("nat", "filter"):
                self._hook(table)
        except OSError as exc:
            self.rt.log.error(f"cannot program ClusterIPs with iptables: {exc}")
            return
        try:
            dns.DnsServer(self.responder, self.node_ip).start()
        except OSError as exc:
            self.rt.log.error(f"cannot serve cluster DNS: {exc}")
        threading.Thread(target=self.rt.guard(self._run), daemon=True).start()

    def _hook(self, table: str) -> None:
        if iptables("-t", table, "-n", "-L", CHAIN)[0]:
            code, error = iptables("-t", table, "-N", CHAIN)
            if code:
                raise OSError(error)
        jump = ["OUTPUT", "-j", CHAIN]
        if iptables("-t", table, "-C", *jump)[0]:
            code, error = iptables("-t", table, "-I", *jump)
            if code:
                raise OSError(error)

    def _list(self, path: str) -> list[Obj] | None:
        try:
            status, data = self.api.call(
                "GET", path, b"", {"Accept": "application/json"}
            )
        except OSError:
            return None
        if status != 200:
            return None
        try:
            items: list[Obj] = json.loads(data).get("items") or []
        except ValueError:
            return None
        return items

    def _run(self) -> None:
        while True:
            services = self._list("/api/v1/services")
            pods = self._list("/api/v1/pods") if services is not None else None
            if services is not None and pods is not None:
                self.sync(services, pods)
            self.rt.sleep(POLL_SECONDS)

    def sync(self, services: list[Obj], pods: list[Obj]) -> None:
        """Apply the rules and names ``services`` and ``pods`` call for."""
        nat, reject, names = plan(services, pods, self.node_ip)
        self.responder.update(names)
        text = restore_input(nat, reject)
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self._applied:
            return
        try:
            code, error = iptables("--noflush", stdin=text, restore=True)
        except OSError as exc:
            code, error = 1, str(exc)
        if code:
            self.rt.log.error(f"iptables-restore failed: {error}")
            return
        self._applied = digest


def iptables(*args: str, stdin: str = "", restore: bool = False) -> tuple[int, str]:
    """Run ``iptables`` (or ``iptables-restore``): its exit code and stderr.

    Through :func:`.children.popen`, so the node's orphan reaper leaves its
    exit status alone.
    """
    process = children.popen(
        [IPTABLES + ("-restore" if restore else ""), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, error = process.communicate(stdin.encode())
    return children.wait(process), error.decode(errors="replace").strip()
