"""Control-plane failures that hold, against real Docker and the double's HA.

Restarting or stopping servers must not cut a test off from its cluster:
host ports and node addresses survive restarts
(:mod:`pytest_k3s.engine.addressing`), and clusters with more than one
server are reached through a load balancer
(:mod:`pytest_k3s.lifecycle.load_balancer`).
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from typing import Any
from typing import Protocol

import docker
import pytest

from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.kube import client as kube
from pytest_k3s.kube import kubeconfig
from pytest_k3s.spec import PortMapping


pytestmark = pytest.mark.docker

#: The balancer drops a server after two failed checks a second apart; a
#: client's connection to it is redispatched after a 1 s connect timeout.
BALANCER_FAIL_TIMEOUT = 5.0


class Start(Protocol):
    def __call__(self, servers: int, agents: int, **extra: Any) -> K3sCluster: ...


@pytest.fixture
def start(
    double_image: str, balancer_image: str, docker_engine: DockerEngine
) -> Iterator[Start]:
    started: list[K3sCluster] = []

    def start_cluster(servers: int, agents: int, **extra: Any) -> K3sCluster:
        spec = ClusterSpec(
            image=double_image,
            load_balancer_image=balancer_image,
            servers=servers,
            agents=agents,
            wait_for_coredns=False,
            **extra,
        )
        cluster = K3sCluster.start(spec, engine=docker_engine)
        started.append(cluster)
        return cluster

    yield start_cluster
    for cluster in started:
        cluster.stop()


def _use(cluster: K3sCluster, tag: str) -> None:
    """Write through ``apply``, read through ``api_client`` and ``kubectl``."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"cm-{tag}", "namespace": "default"},
            "data": {"tag": tag},
        }
    )
    from kubernetes.client import CoreV1Api

    found = CoreV1Api(cluster.api_client).read_namespaced_config_map(
        f"cm-{tag}", "default"
    )
    assert found.data == {"tag": tag}
    assert cluster.kubectl("get", "configmap", f"cm-{tag}", "-o", "name").strip() == (
        f"configmap/cm-{tag}"
    )


def _address(client: docker.DockerClient, cluster: K3sCluster, node: str) -> str:
    info = client.api.inspect_container(cluster.node(node).container_id)
    return str(info["NetworkSettings"]["Networks"][cluster.name]["IPAddress"])


@pytest.mark.parametrize("servers", [1, 3], ids=["1+1", "3+1"])
def test_restarting_server_0_keeps_every_way_in(start: Start, servers: int) -> None:
    cluster = start(servers, 1)
    _use(cluster, "before")
    url = cluster.api_url
    cluster.restart_node("server-0", timeout=60)
    assert cluster.api_url == url, "the published port moved"
    _use(cluster, "after")
    _use(cluster, "before")  # what was written before the restart is still there
    names = {name for name, _ in kube.list_nodes(cluster.api_client)}
    assert names == {n.name for n in cluster.nodes}


def test_stopping_server_0_of_three_leaves_the_api_to_the_others(
    start: Start,
) -> None:
    cluster = start(3, 1)
    cluster.stop_node("server-0")
    began = time.monotonic()
    config = kubeconfig.parse(cluster.kubeconfig_path.read_bytes())
    while True:
        api = kube.api_client(config)
        try:
            names = {name for name, _ in kube.list_nodes(api)}
            break
        except Exception:
            if time.monotonic() - began > BALANCER_FAIL_TIMEOUT:
                raise
            time.sleep(0.2)
        finally:
            api.close()
    assert time.monotonic() - began < BALANCER_FAIL_TIMEOUT
    assert f"{cluster.name}-server-0" in names
    _use(cluster, "without-server-0")
    cluster.start_node("server-0", timeout=60)
    _use(cluster, "with-server-0")


def test_every_server_restarts_in_turn(
    start: Start, docker_client: docker.DockerClient
) -> None:
    cluster = start(3, 0)
    addresses = {
        n.name: _address(docker_client, cluster, n.name) for n in cluster.nodes
    }
    for server in cluster.servers:
        cluster.restart_node(server.name, timeout=60)
        _use(cluster, server.name.rpartition("-")[2])
    after = {n.name: _address(docker_client, cluster, n.name) for n in cluster.nodes}
    assert after == addresses


def test_an_agent_added_while_a_server_is_stopped_leaves_it_its_address(
    start: Start, docker_client: docker.DockerClient
) -> None:
    cluster = start(3, 0)
    before = _address(docker_client, cluster, "server-2")
    cluster.stop_node("server-2")
    added = cluster.add_agent(timeout=60)
    assert _address(docker_client, cluster, added.name) != before
    cluster.start_node("server-2", timeout=60)
    assert _address(docker_client, cluster, "server-2") == before
    node = cluster.wait_for("Node", f"{cluster.name}-server-2", condition="Ready")
    assert node is not None
    _use(cluster, "rejoined")


def test_a_node_port_through_the_balancer_outlives_the_node_that_served_it(
    start: Start,
) -> None:
    cluster = start(1, 2, load_balancer=True, ports=(PortMapping(30080),))
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "NodePort",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "nodePort": 30080}],
            },
        }
    )
    url = f"http://127.0.0.1:{cluster.host_port(30080)}/"

    def served_by() -> str:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode().strip().rpartition(" via ")[2])

    agents = {n.name for n in cluster.agents}
    deadline = time.monotonic() + 30
    while True:
        try:
            first = served_by()
        except OSError:
            first = ""
        if first in agents or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert first in agents, "no agent answered on the NodePort"
    cluster.stop_node(first)
    answers = [served_by() for _ in range(6)]  # each within the connect timeout
    assert first not in answers
    assert set(answers) <= {n.name for n in cluster.nodes}
    # An added agent is taken in by a reload of the running balancer.
    added = cluster.add_agent(timeout=60)
    deadline = time.monotonic() + 15
    while added.name not in answers and time.monotonic() < deadline:
        answers.append(served_by())
    assert added.name in answers
