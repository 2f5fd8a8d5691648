"""The nodes' cluster network, in process: ClusterIP rules, DNS answers, resolv.conf.

The rules and the DNS responder run for real in the node containers
(``test_workloads_contract.py``); here are what they are made of, without
Docker: the iptables rules a cluster's Services and pods call for, the
responder's answers on a real UDP socket, and a pod's ``resolv.conf``.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from k3s_double.node import dns
from k3s_double.node import services


def _service(name: str, ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name},
        "spec": {"selector": {"app": name}, "ports": ports, **spec},
    }


def _pod(name: str, app: str, ip: str, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "labels": {"app": app}},
        "spec": {
            "containers": [
                {"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}
            ]
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_ready_endpoints_are_dnat_targets_and_a_service_without_is_rejected() -> None:
    web = _service(
        "web", [{"name": "front", "port": 80, "targetPort": "http"}],
        clusterIP="10.43.0.20",
    )  # fmt: skip
    empty = _service("empty", [{"port": 81, "targetPort": 81}], clusterIP="10.43.0.21")
    headless = _service("hl", [{"port": 80}], clusterIP="None")
    pods = [
        _pod("a", "web", "172.18.0.2"),
        _pod("b", "web", "172.18.0.3"),
        _pod("c", "web", "172.18.0.4", ready=False),
        _pod("d", "hl", "172.18.0.5"),
    ]
    nat, reject, names = services.plan([web, empty, headless], pods, "172.18.0.9")
    assert len(nat) == 2
    assert "-m statistic --mode random --probability 0.5000000000" in nat[0]
    assert nat[0].endswith("-j DNAT --to-destination 172.18.0.2:8080")
    assert "statistic" not in nat[1]
    assert nat[1].endswith("-j DNAT --to-destination 172.18.0.3:8080")
    assert all("-d 10.43.0.20/32 -p tcp -m tcp --dport 80" in rule for rule in nat)
    (rejected,) = reject
    assert "-d 10.43.0.21/32 -p tcp -m tcp --dport 81" in rejected
    assert "-j REJECT" in rejected
    assert names == {
        "web.ns.svc.cluster.local": ["10.43.0.20"],
        "empty.ns.svc.cluster.local": ["10.43.0.21"],
        "hl.ns.svc.cluster.local": ["172.18.0.5"],
    }
    text = services.restore_input(nat, reject)
    assert text.startswith(f"*nat\n:{services.CHAIN} - [0:0]\n")
    assert text.count("COMMIT\n") == 2


def test_kube_dns_port_53_goes_to_the_nodes_responder() -> None:
    kube_dns = {
        "metadata": {"namespace": "kube-system", "name": "kube-dns"},
        "spec": {
            "selector": {"k8s-app": "kube-dns"},
            "clusterIP": dns.CLUSTER_DNS,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
            ],
        },
    }
    nat, reject, _ = services.plan([kube_dns], [], "172.18.0.9")
    assert reject == []
    assert [rule.split(" -p ")[1].split()[0] for rule in nat] == ["udp", "tcp"]
    assert all(
        rule.endswith(f"--to-destination 172.18.0.9:{dns.DNS_PORT}") for rule in nat
    )


def _query(name: str, qtype: int = dns.A) -> bytes:
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return (
        struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
        + question
        + struct.pack("!HH", qtype, 1)
    )


def _ask(port: int, name: str) -> tuple[int, list[str]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(_query(name), ("127.0.0.1", port))
        reply, _ = sock.recvfrom(65535)
    ident, flags, _, count = struct.unpack("!HHHH", reply[:8])
    assert ident == 0x1234
    assert flags & 0x8000
    addresses = [
        socket.inet_ntoa(reply[len(reply) - 16 * count + 16 * i + 12 :][:4])
        for i in range(count)
    ]
    return flags & 0xF, addresses


def test_the_responder_answers_cluster_names_and_forwards_the_rest() -> None:
    responder = dns.Responder([])
    responder.update({"web.ns.svc.cluster.local": ["10.43.0.20"]})
    forwarded: list[bytes] = []
    upstream = dns.Responder([])
    upstream.update({"example.com": ["192.0.2.1"]})

    def forward(query: bytes) -> bytes:
        forwarded.append(query)
        return b"forwarded"

    server = dns.DnsServer(responder, "127.0.0.1", 0)
    port = server.udp.getsockname()[1]
    server.udp.close()
    server.tcp.close()
    server = dns.DnsServer(responder, "127.0.0.1", port)
    server.start()
    try:
        assert _ask(port, "web.ns.svc.cluster.local") == (dns.NOERROR, ["10.43.0.20"])
        assert _ask(port, "WEB.ns.svc.cluster.local") == (dns.NOERROR, ["10.43.0.20"])
        assert _ask(port, "web.other.svc.cluster.local") == (dns.NXDOMAIN, [])
    finally:
        server.close()
    assert responder.answer(_query("example.com"), forward) == b"forwarded"
    assert forwarded == [_query("example.com")]
    # No upstream nameserver answers: SERVFAIL.
    failed = responder.answer(_query("example.com"), lambda _: None)
    assert struct.unpack("!H", failed[2:4])[0] & 0xF == dns.SERVFAIL
    # AAAA of a cluster name: no error, no answer.
    aaaa = responder.answer(_query("web.ns.svc.cluster.local", 28), forward)
    assert struct.unpack("!HH", aaaa[2:4] + aaaa[6:8]) == (0x8580, 0)


def test_a_pods_resolv_conf_follows_its_dns_policy() -> None:
    pod = {"metadata": {"namespace": "ns"}, "spec": {}}
    assert dns.resolv_conf(pod, ["example.org"]) == (
        "search ns.svc.cluster.local svc.cluster.local cluster.local example.org\n"
        "nameserver 10.43.0.10\n"
        "options ndots:5\n"
    )
    assert dns.resolv_conf({**pod, "spec": {"dnsPolicy": "Default"}}, []) is None
    assert dns.resolv_conf({**pod, "spec": {"hostNetwork": True}}, []) is None
    custom = {
        "dnsPolicy": "None",
        "dnsConfig": {
            "nameservers": ["192.0.2.53"],
            "searches": ["a.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
        },
    }
    assert dns.resolv_conf({**pod, "spec": custom}, []) == (
        "search a.example\nnameserver 192.0.2.53\noptions ndots:2 edns0\n"
    )
    assert dns.in_pod(["wget", "x"], None) == ["wget", "x"]
    wrapped = dns.in_pod(["wget", "x"], "/r")
    assert wrapped[:2] == ["/usr/bin/unshare", "--mount"]
    assert wrapped[-3:] == ["/r", "wget", "x"]
