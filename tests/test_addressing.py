"""Fixed addresses, concrete host ports and the load balancer's configuration."""

from __future__ import annotations

import random
import socket
from itertools import islice

from pytest_k3s.engine import addressing
from pytest_k3s.lifecycle import load_balancer
from pytest_k3s.spec import PortMapping


def test_nodes_take_the_lower_half_and_the_engine_the_upper() -> None:
    assert list(islice(addressing.fixed_addresses("172.20.0.0/16"), 3)) == [
        "172.20.0.2",
        "172.20.0.3",
        "172.20.0.4",
    ]
    assert addressing.dynamic_range("172.20.0.0/16") == "172.20.128.0/17"
    lower = list(addressing.fixed_addresses("10.1.2.0/24"))
    assert lower[0] == "10.1.2.2"
    assert lower[-1] == "10.1.2.126", "never in the engine's half"


def test_an_added_node_takes_the_address_after_the_highest() -> None:
    assert addressing.next_address(["10.0.0.2", "10.0.0.5", "10.0.0.3"]) == "10.0.0.6"
    assert addressing.next_address(["", ""]) is None, "a cluster of an older release"
    assert addressing.next_address(["10.0.0.4"]) == "10.0.0.5"


def test_ports_without_a_host_port_get_a_distinct_concrete_one() -> None:
    ports = (
        ("127.0.0.1", PortMapping(6443)),
        ("127.0.0.1", PortMapping(30080, host_port=8080)),
        ("0.0.0.0", PortMapping(53, "udp")),
    )
    chosen = addressing.choose_host_ports(ports, lambda *_: True, random.Random(7))
    assert chosen[1] == ports[1], "a port the user chose stays"
    automatic = [chosen[0][1].host_port, chosen[2][1].host_port]
    assert all(p in addressing.HOST_PORTS for p in automatic if p is not None)
    assert len(set(automatic)) == 2
    assert chosen[2][1].protocol == "udp"


def test_a_port_this_host_has_taken_is_not_chosen() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        assert not addressing.bindable("127.0.0.1", busy)
        candidates = iter([busy, busy, 25000])

        class Picks(random.Random):
            def choice(self, seq: object) -> int:  # type: ignore[override]
                return int(next(candidates))

        rng = Picks()
        chosen = addressing.choose_host_ports(
            (("127.0.0.1", PortMapping(6443)),),
            lambda ip, port, proto: addressing.bindable(ip, port, proto),
            rng,
        )
    assert chosen[0][1].host_port == 25000


def test_port_conflicts_are_recognised_as_docker_words_them() -> None:
    assert addressing.port_taken(
        "driver failed programming external connectivity on endpoint x: Bind for "
        "127.0.0.1:25000 failed: port is already allocated"
    )
    assert addressing.port_taken(
        "listen tcp4 127.0.0.1:25000: bind: address already in use"
    )
    assert not addressing.port_taken("no such image")


def test_the_balancer_checks_servers_by_ping_and_ports_by_connect() -> None:
    text = load_balancer.config(
        [("c-server-0", "10.0.0.3"), ("c-server-1", "10.0.0.4")],
        [("c-server-0", "10.0.0.3"), ("c-agent-0", "10.0.0.5")],
        [PortMapping(30080)],
    )
    assert "bind :6443" in text
    assert "option httpchk GET /ping" in text
    assert "server c-server-1 10.0.0.4:6443 check check-ssl verify none" in text
    assert "bind :30080" in text
    assert "server c-agent-0 10.0.0.5:30080 check\n" in text
    assert "option redispatch" in text
    assert "mode tcp" in text


def test_udp_ports_are_not_forwarded_by_the_balancer() -> None:
    from pytest_k3s.spec import ClusterSpec

    spec = ClusterSpec(servers=3, ports=(PortMapping(30080), PortMapping(30053, "udp")))
    assert load_balancer.forwarded(spec) == (PortMapping(30080),)
