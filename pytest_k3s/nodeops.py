"""Node operations for failure tests: stop, start, restart, add and remove nodes.

They act on the node containers and wait on the Kubernetes API, so a test can
see the control plane react as it would to a machine going away: after
:func:`stop_node` the Node turns NotReady once the node-monitor grace period
passes (``--kube-controller-manager-arg=node-monitor-grace-period=10s`` in
``server_args`` shortens it); after :func:`start_node` it is Ready again.
They change what every user of the cluster sees, so on a shared cluster they
warn: ``k3s_module_cluster`` is the place for them.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_k3s import labels
from pytest_k3s.errors import ClusterTimeoutError
from pytest_k3s.errors import K3sError
from pytest_k3s.nodes import PRIVILEGE_REQUEST
from pytest_k3s.nodes import Node
from pytest_k3s.nodes import node_container
from pytest_k3s.nodes import node_order
from pytest_k3s.readiness import READY_LOG
from pytest_k3s.readiness import Readiness
from pytest_k3s.startup import forget_seed
from pytest_k3s.startup import seed_archive


if TYPE_CHECKING:
    from pytest_k3s.cluster import K3sCluster
    from pytest_k3s.docker_runtime import DockerRuntime


def _warn_if_shared(cluster: K3sCluster, what: str) -> None:
    if cluster.shared:
        warnings.warn(
            f"{what} on k3s cluster {cluster.name}, which other tests of this run "
            "share: they will see it too. Use k3s_module_cluster for node failures",
            stacklevel=3,
        )


def stop_node(cluster: K3sCluster, name: str, *, timeout: int = 10) -> Node:
    """Stop a node's container, as if the machine went away."""
    node = cluster.node(name)
    _warn_if_shared(cluster, f"stopping node {node.name}")
    cluster.runtime.stop_container(node.container_id, timeout=timeout)
    return node


def start_node(cluster: K3sCluster, name: str, *, timeout: float = 120) -> Node:
    """Start a stopped node again and wait until it is Ready."""
    node = cluster.node(name)
    _warn_if_shared(cluster, f"starting node {node.name}")
    began = time.time()
    cluster.runtime.start_container(node.container_id)
    _wait_ready(cluster, node, timeout, since=began, log=False)
    return node


def restart_node(cluster: K3sCluster, name: str, *, timeout: float = 120) -> Node:
    """Stop and start a node, then wait until it is Ready."""
    stop_node(cluster, name)
    return start_node(cluster, name, timeout=timeout)


def add_agent(cluster: K3sCluster, *, timeout: float = 120) -> Node:
    """Join a new agent to the cluster; return it once it is Ready."""
    _warn_if_shared(cluster, "adding an agent")
    runtime = cluster.runtime
    server0 = cluster.servers[0]
    taken = [int(n.name.rpartition("-")[2]) for n in cluster.agents]
    index = max(taken, default=-1) + 1
    tags = runtime.labels_of(server0.container_id)
    tags[labels.ROLE] = "agent"
    token = runtime.environment(server0.container_id)["K3S_TOKEN"]
    # It starts with the images the others started with (air-gap or cached).
    cache = tags.get(labels.IMAGE_CACHE)
    seed = seed_archive(cluster.spec, Path(cache) if cache else None)
    try:
        description = node_container(
            cluster.spec,
            "agent",
            index,
            cluster=cluster.name,
            token=token,
            api_host="",
            api_bind="",
            labels=tags,
            seed_archive=seed,
        )
        began = time.time()
        container_id = runtime.start_node(
            description, privileged=PRIVILEGE_REQUEST[cluster.spec.privileged]
        )
    finally:
        forget_seed(seed)
    node = Node(description.name, "agent", container_id)
    cluster.nodes = tuple(sorted((*cluster.nodes, node), key=node_order))
    _wait_ready(cluster, node, timeout, since=began, log=True)
    return node


def remove_node(cluster: K3sCluster, name: str) -> None:
    """Remove an agent: its Node object, then its container and volumes."""
    node = cluster.node(name)
    if node.role != "agent":
        raise K3sError(
            f"{node.name} is a server; remove_node removes agents only (taking an "
            "etcd member out is not supported): stop_node it instead"
        )
    _warn_if_shared(cluster, f"removing node {node.name}")
    from pytest_k3s import kube

    kube.delete_node(cluster.api_client, node.name)
    cluster.runtime.remove_container(node.container_id)
    cluster.nodes = tuple(n for n in cluster.nodes if n.name != node.name)


def _wait_ready(
    cluster: K3sCluster, node: Node, timeout: float, *, since: float, log: bool
) -> None:
    """Wait for the node's ready log line (new nodes) and for it to be Ready.

    Ready must have been reported since ``since`` (the start): before it
    re-registers, a restarted node's old condition may still say Ready.
    """
    from pytest_k3s import kube

    runtime: DockerRuntime = cluster.runtime
    ready = Readiness(runtime, cluster.name, timeout, [node])
    if log:
        ready.wait_for_log(node, READY_LOG[node.role])
    deadline = time.monotonic() + timeout
    while True:
        reason, _ = kube.nodes_ready(
            cluster.api_client, {node.name}, heartbeat_after=since
        )
        if reason is None:
            return
        if time.monotonic() > deadline:
            raise ClusterTimeoutError(
                f"node {node.name} of cluster {cluster.name} was not Ready within "
                f"{timeout:.0f}s: {reason}",
                node=node.name,
                logs=ready.tail(node),
            )
        time.sleep(0.2)
