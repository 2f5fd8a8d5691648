"""Each node's command line, environment, ports and files (pure, no Docker)."""

from __future__ import annotations

import pytest

from pytest_k3s import ClusterSpec
from pytest_k3s import PortMapping
from pytest_k3s.engine.node_container import API_PORT
from pytest_k3s.engine.node_container import HA_RESTART_RETRIES
from pytest_k3s.engine.node_container import KUBECONFIG_OUTPUT
from pytest_k3s.engine.node_container import REGISTRIES_PATH
from pytest_k3s.engine.node_container import Node
from pytest_k3s.engine.node_container import NodeContainer
from pytest_k3s.engine.node_container import Role
from pytest_k3s.engine.node_container import node_container
from pytest_k3s.engine.node_container import node_order
from pytest_k3s.lifecycle.load_balancer import api_endpoint
from pytest_k3s.lifecycle.readiness import start_timeout


#: What every node's kubelet is given, spelt out rather than read from the
#: code: the kubelet's eviction thresholds are ``<signal><<quantity>`` and
#: minimum reclaims ``<signal>=<quantity>``, comma-separated
#: (kubernetes.io/docs/concepts/scheduling-eviction/node-pressure-eviction:
#: the defaults are nodefs.available<10%, imagefs.available<15%), and k3s
#: hands ``--kubelet-arg=<flag>=<value>`` to the kubelet as ``--<flag>=<value>``.
KUBELET_ARGS = [
    "--kubelet-arg=eviction-hard=imagefs.available<1%,nodefs.available<1%",
    "--kubelet-arg=eviction-minimum-reclaim=imagefs.available=1%,nodefs.available=1%",
]


def node(spec: ClusterSpec, role: Role, index: int = 0) -> NodeContainer:
    return node_container(
        spec,
        role,
        index,
        cluster="k3s-test",
        token="s3cret",
        api_host="10.0.0.9",
        api_bind="0.0.0.0",
        labels={"io.pytest-k3s.cluster": "k3s-test"},
    )


def test_server_zero_of_one_server() -> None:
    server = node(ClusterSpec(), "server")
    assert server.name == "k3s-test-server-0"
    assert server.network == "k3s-test"
    assert list(server.command) == [
        "server",
        "--tls-san",
        "10.0.0.9",
        "--tls-san",
        "k3s-test-server-0",
        *KUBELET_ARGS,
        "--disable=traefik,metrics-server",
    ]
    assert server.environment == {
        "K3S_TOKEN": "s3cret",
        "K3S_KUBECONFIG_OUTPUT": KUBECONFIG_OUTPUT,
    }
    assert list(server.ports) == [("0.0.0.0", PortMapping(API_PORT))]
    assert server.restart_retries == 0
    assert server.files == {}
    assert server.labels == {"io.pytest-k3s.cluster": "k3s-test"}


def test_ha_init_server_and_joining_servers() -> None:
    spec = ClusterSpec(servers=3)
    init, joiner = node(spec, "server", 0), node(spec, "server", 2)
    assert "--cluster-init" in init.command
    assert "K3S_URL" not in init.environment
    assert "--cluster-init" not in joiner.command
    assert joiner.environment["K3S_URL"] == f"https://k3s-test-server-0:{API_PORT}"
    assert joiner.name == "k3s-test-server-2"
    assert joiner.ports == ()
    assert init.restart_retries == joiner.restart_retries == HA_RESTART_RETRIES


def test_every_server_names_the_in_network_api_endpoint_in_its_certificate() -> None:
    # Internal kubeconfigs name it, whether or not the tests reach the API
    # through the network: it must be a SAN in every mode.
    spec = ClusterSpec(servers=3, load_balancer=False)
    for index in range(3):
        command = " ".join(node(spec, "server", index).command)
        assert "--tls-san 10.0.0.9 --tls-san k3s-test-server-0 " in command
        assert api_endpoint("k3s-test", balanced=False) in command
    balanced = node_container(
        ClusterSpec(servers=3),
        "server",
        1,
        cluster="k3s-test",
        token="s3cret",
        api_host="127.0.0.1",
        api_bind="127.0.0.1",
        labels={},
        balancer=("k3s-test-serverlb", "172.30.1.2"),
    )
    command = " ".join(balanced.command)
    assert "--tls-san k3s-test-serverlb --tls-san 172.30.1.2 " in command
    assert api_endpoint("k3s-test", balanced=True) == "k3s-test-serverlb"
    assert list(node(ClusterSpec(), "server").command).count("--tls-san") == 2
    same = node_container(
        ClusterSpec(),
        "server",
        0,
        cluster="k3s-test",
        token="s3cret",
        api_host="k3s-test-server-0",  # the tests run in one of the containers
        api_bind="127.0.0.1",
        labels={},
    )
    assert list(same.command).count("--tls-san") == 1, "each SAN once"


def test_agents_join_server_zero_and_never_publish() -> None:
    spec = ClusterSpec(
        agents=2, ports=(PortMapping(30080),), agent_args=("--node-label=a=b",)
    )
    agent = node(spec, "agent", 1)
    assert agent.name == "k3s-test-agent-1"
    assert list(agent.command) == ["agent", *KUBELET_ARGS, "--node-label=a=b"]
    assert "--tls-san" not in agent.command
    assert agent.environment["K3S_URL"] == f"https://k3s-test-server-0:{API_PORT}"
    assert agent.environment["K3S_TOKEN"] == "s3cret"
    assert agent.ports == ()
    assert agent.restart_retries == 0


def test_user_arguments_follow_ours_so_theirs_win() -> None:
    own = "--kubelet-arg=eviction-hard=memory.available<1Mi"
    server = node(ClusterSpec(server_args=(own, "--disable=traefik")), "server")
    command = list(server.command)
    assert command[-2:] == [own, "--disable=traefik"]
    assert command.index(KUBELET_ARGS[0]) < command.index(own)


def test_user_environment_is_added_per_role() -> None:
    spec = ClusterSpec(agents=1, server_env=("A=1", "B=x=y"), agent_env=("C=",))
    server, agent = node(spec, "server"), node(spec, "agent")
    assert server.environment["A"] == "1"
    assert server.environment["B"] == "x=y"
    assert "C" not in server.environment
    assert agent.environment["C"] == ""
    assert "A" not in agent.environment


def test_server_zero_publishes_the_api_then_the_spec_ports_on_loopback() -> None:
    server = node(
        ClusterSpec(
            ports=(PortMapping.parse("8080:30080"), PortMapping.parse("53/udp"))
        ),
        "server",
    )
    assert list(server.ports) == [
        ("0.0.0.0", PortMapping(API_PORT)),
        ("127.0.0.1", PortMapping(30080, "tcp", 8080)),
        ("127.0.0.1", PortMapping(53, "udp")),
    ]
    public = node(ClusterSpec(ports=(PortMapping(80),), ports_bind="0.0.0.0"), "server")
    assert list(public.ports)[1] == ("0.0.0.0", PortMapping(80))


@pytest.mark.parametrize("role", ["server", "agent"])
def test_registries_are_written_on_every_node(role: Role) -> None:
    spec = ClusterSpec(agents=1, registries={"mirrors": {"docker.io": {}}})
    assert node(spec, role).files == {
        REGISTRIES_PATH: b'{"mirrors": {"docker.io": {}}}'
    }


def test_nodes_sort_servers_first_then_by_index() -> None:
    nodes = [
        Node("c-agent-10", "agent", "4"),
        Node("c-agent-2", "agent", "3"),
        Node("c-server-1", "server", "2"),
        Node("c-server-0", "server", "1"),
    ]
    assert [n.name for n in sorted(nodes, key=node_order)] == [
        "c-server-0",
        "c-server-1",
        "c-agent-2",
        "c-agent-10",
    ]


def test_ha_tolerates_ten_restarts_and_a_longer_start() -> None:
    # Real HA joins crash-loop ("too many learners") before they succeed.
    assert HA_RESTART_RETRIES == 10
    assert node(ClusterSpec(servers=3), "server", 1).restart_retries == 10
    assert start_timeout(ClusterSpec()) == 180
    assert start_timeout(ClusterSpec(servers=3)) == 300
    assert start_timeout(ClusterSpec(servers=2, timeout=30)) == 90


@pytest.mark.parametrize(
    ("server_args", "expected"),
    [
        ((), ["--disable=traefik,metrics-server"]),
        (("--disable=servicelb",), ["--disable=servicelb"]),
        (("--disable", "traefik"), ["--disable", "traefik"]),
        (("--disable=",), []),
    ],
)
def test_bundled_components_off_unless_the_user_disables_own(
    server_args: tuple[str, ...], expected: list[str]
) -> None:
    command = list(node(ClusterSpec(server_args=server_args), "server").command)
    disables = [a for a in command if a.startswith("--disable") or a == "traefik"]
    assert disables == expected
    agent = node(ClusterSpec(agents=1), "agent")
    assert not any(a.startswith("--disable") for a in agent.command)
