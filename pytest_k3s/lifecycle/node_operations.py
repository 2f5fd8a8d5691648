"""Node operations for failure tests: stop, start, add and remove nodes.

They act on the node containers and wait on the Kubernetes API, so a test can
see the control plane react as it would to a machine going away: after
:func:`stop_node` the Node turns NotReady once the node-monitor grace period
passes (``--kube-controller-manager-arg=node-monitor-grace-period=10s`` in
``server_args`` shortens it); after :func:`start_node` it is Ready again,
with a heartbeat newer than the start (before it re-registers, a restarted
node's old condition may still say Ready). The handle
(:class:`pytest_k3s.K3sCluster`) offers them, and warns on a shared cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from kubernetes.client import ApiClient

from pytest_k3s import labels
from pytest_k3s.engine.addressing import next_address
from pytest_k3s.engine.node_container import API_PORT
from pytest_k3s.engine.node_container import PRIVILEGE_REQUEST
from pytest_k3s.engine.node_container import REGISTRIES_PATH
from pytest_k3s.engine.node_container import Node
from pytest_k3s.engine.node_container import node_container
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.errors import ClusterTimeoutError
from pytest_k3s.errors import K3sError
from pytest_k3s.kube import client as kube
from pytest_k3s.kube import kubeconfig
from pytest_k3s.lifecycle import load_balancer
from pytest_k3s.lifecycle.load_balancer import balancer_name
from pytest_k3s.lifecycle.readiness import READY_LOG
from pytest_k3s.lifecycle.readiness import Readiness
from pytest_k3s.lifecycle.seeding import forget_seed
from pytest_k3s.lifecycle.seeding import seed_archive
from pytest_k3s.spec import ClusterSpec


def stop_node(engine: Engine, node: Node, *, timeout: int = 10) -> None:
    """Stop a node's container, as if the machine went away."""
    engine.stop_container(node.container_id, timeout=timeout)


def start_node(
    engine: Engine,
    client: Callable[[], ApiClient],
    cluster: str,
    node: Node,
    *,
    timeout: float,
) -> None:
    """Start a stopped node again and wait until it is Ready.

    ``client`` is asked for the API client once the container runs, so the
    handle can first check that its kubeconfig names the API's port.
    """
    began = time.time()
    engine.start_container(node.container_id)
    _wait_ready(engine, client(), cluster, node, timeout, since=began, log=False)


def add_agent(
    engine: Engine,
    api: ApiClient,
    cluster: str,
    spec: ClusterSpec,
    nodes: Sequence[Node],
    *,
    timeout: float,
    balancer: str | None = None,
) -> Node:
    """Join a new agent to the cluster of ``nodes``; return it once it is Ready.

    It gets server-0's labels and join token, the image archives the other
    nodes started with (air-gap or cached), and the fixed address after the
    highest one taken (a stopped node keeps its own). With a load balancer
    (``balancer``, its container id) it joins through it, and the balancer
    forwards the published ports to it too.
    """
    server0 = next(node for node in nodes if node.role == "server")
    taken = [int(n.name.rpartition("-")[2]) for n in nodes if n.role == "agent"]
    index = max(taken, default=-1) + 1
    tags = engine.labels_of(server0.container_id)
    tags[labels.ROLE] = "agent"
    everything = engine.containers({labels.CLUSTER: cluster})
    address = next_address(c.labels.get(labels.ADDRESS, "") for c in everything)
    if address is not None:
        tags[labels.ADDRESS] = address
    else:
        tags.pop(labels.ADDRESS, None)
    joins: tuple[str, str | None] | None = None
    if balancer is not None:
        found = engine.labels_of(balancer)
        joins = (balancer_name(cluster), found.get(labels.ADDRESS))
    token = engine.environment(server0.container_id)["K3S_TOKEN"]
    cache = tags.get(labels.IMAGE_CACHE)
    seed = seed_archive(spec, Path(cache) if cache else None)
    try:
        # The registry mirror's endpoints, merged in at the cluster's start.
        registries = engine.read_file(server0.container_id, REGISTRIES_PATH).decode()
    except FileNotFoundError:
        registries = None
    try:
        description = node_container(
            spec,
            "agent",
            index,
            cluster=cluster,
            token=token,
            api_host="",
            api_bind="",
            labels=tags,
            seed_archive=seed,
            address=address,
            balancer=joins,
            registries=registries,
        )
        began = time.time()
        container_id = engine.start_node(
            description, privileged=PRIVILEGE_REQUEST[spec.privileged]
        )
    finally:
        forget_seed(seed)
    node = Node(description.name, "agent", container_id)
    if balancer is not None:
        load_balancer.follow_nodes(engine, balancer, spec)
    _wait_ready(engine, api, cluster, node, timeout, since=began, log=True)
    return node


def remove_node(
    engine: Engine,
    api: ApiClient,
    node: Node,
    *,
    spec: ClusterSpec,
    balancer: str | None = None,
) -> None:
    """Remove an agent: its Node object, then its container and volumes.

    A load balancer (``balancer``) stops forwarding to it.
    """
    if node.role != "agent":
        raise K3sError(
            f"{node.name} is a server; remove_node removes agents only (taking an "
            "etcd member out is not supported): stop_node it instead"
        )
    kube.delete_node(api, node.name)
    engine.remove_container(node.container_id)
    if balancer is not None:
        load_balancer.follow_nodes(engine, balancer, spec)


def follow_published_port(
    engine: Engine, path: Path, name: str, container_id: str, *, cluster: str
) -> bool:
    """Point the kubeconfig at ``path`` to the API's host port as it is now.

    ``name`` and ``container_id`` are the container the kubeconfig names
    (the load balancer, or server-0). Returns whether it had to change: a
    kubeconfig that names the container itself (on the cluster network) or
    a container that is not running has nothing to follow.
    """
    config = kubeconfig.parse(path.read_bytes())
    parts = urlsplit(str(config["clusters"][0]["cluster"]["server"]))
    if parts.hostname is None or parts.hostname == name:
        return False
    try:
        port = engine.published_port(container_id, f"{API_PORT}/tcp")
    except K3sError:
        return False
    if port == parts.port:
        return False
    config = kubeconfig.rewrite(
        config, server=kubeconfig.server_url(parts.hostname, port), name=cluster
    )
    kubeconfig.write(config, path)
    return True


def _wait_ready(
    engine: Engine,
    api: ApiClient,
    cluster: str,
    node: Node,
    timeout: float,
    *,
    since: float,
    log: bool,
) -> None:
    """Wait for the node's ready log line (new nodes) and for it to be Ready.

    Ready must have been reported since ``since`` (the start).
    """
    ready = Readiness(engine, cluster, timeout, [node])
    if log:
        ready.wait_for_log(node, READY_LOG[node.role])
    deadline = time.monotonic() + timeout
    while True:
        reason, _ = kube.nodes_ready(api, {node.name}, heartbeat_after=since)
        if reason is None:
            return
        if time.monotonic() > deadline:
            raise ClusterTimeoutError(
                f"node {node.name} of cluster {cluster} was not Ready within "
                f"{timeout:.0f}s: {reason}",
                node=node.name,
                logs=ready.tail(node),
            )
        time.sleep(0.2)
