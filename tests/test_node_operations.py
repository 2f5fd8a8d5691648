"""Node operations for failure tests, against the double's control plane."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from conftest import SHARED_CLUSTERS
from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s import K3sError
from pytest_k3s.engine.docker_engine import DockerEngine


pytestmark = pytest.mark.docker

GRACE = "--kube-controller-manager-arg=node-monitor-grace-period=4s"


@pytest.fixture(scope="module")
def cluster(double_image: str, docker_engine: DockerEngine) -> Iterator[K3sCluster]:
    spec = ClusterSpec(
        image=double_image, agents=1, server_args=(GRACE,), wait_for_coredns=False
    )
    with K3sCluster.start(spec, engine=docker_engine) as started:
        SHARED_CLUSTERS.add(started.name)
        yield started


def test_a_stopped_node_turns_not_ready_then_ready_again(
    cluster: K3sCluster, docker_client: docker.DockerClient
) -> None:
    agent = cluster.stop_node("agent-0")
    assert docker_client.containers.get(agent.container_id).status == "exited"
    gone = cluster.wait_for("Node", agent.name, condition="Ready=Unknown", timeout=30)
    assert gone is not None
    taints = {t["key"] for t in gone["spec"].get("taints") or []}
    assert "node.kubernetes.io/unreachable" in taints
    cluster.start_node(agent.name)
    assert cluster.wait_for("Node", agent.name, condition="Ready", timeout=5)
    restarted = cluster.restart_node("agent-0")
    assert restarted == agent


def test_agents_can_be_added_and_removed(
    cluster: K3sCluster, docker_client: docker.DockerClient
) -> None:
    added = cluster.add_agent()
    assert added.name == f"{cluster.name}-agent-1"
    assert [n.name for n in cluster.agents] == [f"{cluster.name}-agent-0", added.name]
    nodes = cluster.kubectl("get", "nodes", "-o", "name").split()
    assert f"node/{added.name}" in nodes
    cluster.remove_node(added.name)
    assert added.name not in [n.name for n in cluster.nodes]
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(added.container_id)
    cluster.wait_for("Node", added.name, delete=True, timeout=10)
    with pytest.raises(K3sError, match="is a server; remove_node removes agents only"):
        cluster.remove_node("server-0")


def test_node_operations_on_a_shared_cluster_warn(cluster: K3sCluster) -> None:
    shared = K3sCluster.attach(
        name=cluster.name, spec=cluster.spec, kubeconfig_path=cluster.kubeconfig_path
    )
    shared.share()
    try:
        with pytest.warns(UserWarning, match="which other tests of this run share"):
            shared.restart_node("agent-0")
    finally:
        shared.detach()
