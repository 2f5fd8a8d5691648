"""A cluster's own registry on a real engine: push from the host, pull on every node.

A cluster of the node double (whose containerd pulls over HTTP through
``registries.yaml``, as k3s' does) gets its registry from the test
registry image (Debian's docker-registry, the official image's contract).
An image built here, unique to the run, is pushed through the engine and
run by a pod on each node; the registry's access log (one line a request,
with the client's address) shows which node fetched which blob.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Iterator

import docker
import pytest

from conftest import SHARED_CLUSTERS
from k3s_double.upstream import blob_gets as upstream_blob_gets
from k3s_double.upstream import build_one_file_image
from k3s_double.upstream import run_everywhere
from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s import labels
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.lifecycle.registry import registry_name


pytestmark = pytest.mark.docker

REPOSITORY = "pytest-k3s/own"
_MANIFESTS = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


@pytest.fixture(scope="module")
def cluster(
    double_image: str, registry_image: str, docker_engine: DockerEngine
) -> Iterator[K3sCluster]:
    spec = ClusterSpec(
        image=double_image,
        agents=1,
        registry=True,
        registry_image=registry_image,
        wait_for_coredns=False,
    )
    with K3sCluster.start(spec, engine=docker_engine) as started:
        SHARED_CLUSTERS.add(started.name)
        yield started
    # The cluster's removal took its registry (found by label, as k3d does).
    assert not docker_engine.containers({labels.CLUSTER: started.name})


@pytest.fixture(scope="module")
def local_image(docker_client: docker.DockerClient) -> Iterator[str]:
    """A small image, unique to this run; removed with the tags pushes left."""
    tag = f"{REPOSITORY}:{secrets.token_hex(4)}"
    build_one_file_image(docker_client, tag)
    yield tag
    remove_tags(docker_client, tag)


def remove_tags(client: docker.DockerClient, tag: str) -> None:
    """Remove local image ``tag`` and every registry's tag of it (``*/tag``)."""
    for found in client.images.list(name=f"*{tag.rpartition(':')[0]}"):
        for reference in found.tags:
            if reference == tag or reference.endswith(f"/{tag}"):
                client.images.remove(reference, force=True)


@pytest.fixture(scope="module")
def pushed(cluster: K3sCluster, local_image: str) -> str:
    return cluster.registry.push(local_image)


def in_node(cluster: K3sCluster, engine: DockerEngine, url: str) -> str:
    """GET ``url`` from server-0, as a pod's pull reaches the registry."""
    status, output = engine.exec(
        cluster.servers[0].container_id,
        ["wget", "-qO-", f"--header=Accept: {_MANIFESTS}", url],
    )
    assert status == 0, output
    return output


def blob_gets(cluster: K3sCluster, engine: DockerEngine) -> Counter[tuple[str, str]]:
    """(client address, blob) of every blob the registry served, counted."""
    return upstream_blob_gets(engine.logs(cluster.registry.container_id), REPOSITORY)


def test_a_pushed_image_is_in_the_registry_under_the_name_pods_use(
    cluster: K3sCluster,
    local_image: str,
    pushed: str,
    docker_engine: DockerEngine,
    docker_client: docker.DockerClient,
) -> None:
    port = int(cluster.registry.host.rpartition(":")[2])
    assert pushed == f"localhost:{port}/{local_image}"
    assert cluster.registry.image(local_image) == pushed
    registry = docker_client.containers.get(registry_name(cluster.name))
    assert registry.ports["5000/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": str(port)}
    ]
    assert registry.labels[labels.ROLE] == labels.REGISTRY_ROLE
    assert registry_name(cluster.name) not in [n.name for n in cluster.nodes]

    base = f"http://{registry_name(cluster.name)}:5000/v2"
    catalog = json.loads(in_node(cluster, docker_engine, f"{base}/_catalog"))
    assert catalog == {"repositories": [REPOSITORY]}
    tag = local_image.rpartition(":")[2]
    tags = json.loads(in_node(cluster, docker_engine, f"{base}/{REPOSITORY}/tags/list"))
    assert tags == {"name": REPOSITORY, "tags": [tag]}

    attached = K3sCluster.attach(
        name=cluster.name,
        spec=cluster.spec,
        kubeconfig_path=cluster.kubeconfig_path,
        engine=docker_engine,
    )
    assert attached.registry == cluster.registry


def node_addresses(cluster: K3sCluster, engine: DockerEngine) -> dict[str, str]:
    """Each node's fixed address on the cluster network: name -> address."""
    return {
        node.name: engine.labels_of(node.container_id)[labels.ADDRESS]
        for node in cluster.nodes
    }


def test_every_node_pulls_the_image_from_the_registry(
    cluster: K3sCluster, pushed: str, docker_engine: DockerEngine
) -> None:
    before = blob_gets(cluster, docker_engine)
    assert run_everywhere(cluster, pushed) == sorted(n.name for n in cluster.nodes)
    fetched = blob_gets(cluster, docker_engine) - before
    addresses = node_addresses(cluster, docker_engine)
    by_node: dict[str, set[str]] = {address: set() for address in addresses.values()}
    for address, blob in fetched:
        by_node.setdefault(address, set()).add(blob)
    blobs = set(by_node[addresses[cluster.servers[0].name]])
    assert len(blobs) == 3, f"a config and two layers: {fetched}"
    assert by_node == dict.fromkeys(addresses.values(), blobs), (
        f"each node fetched each blob: {fetched}, nodes at {addresses}"
    )


def test_an_added_agent_pulls_from_the_registry_too(
    cluster: K3sCluster, pushed: str, docker_engine: DockerEngine
) -> None:
    added = cluster.add_agent(timeout=120)
    address = node_addresses(cluster, docker_engine)[added.name]
    before = blob_gets(cluster, docker_engine)
    assert added.name in run_everywhere(cluster, pushed)
    fetched = blob_gets(cluster, docker_engine) - before
    assert {client for client, _ in fetched} == {address}
    assert len(fetched) == 3, f"a config and two layers: {fetched}"


def test_the_marker_gives_a_test_its_clusters_registry(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    registry_image: str,
    docker_client: docker.DockerClient,
) -> None:
    tag = f"{REPOSITORY}:{secrets.token_hex(4)}"
    build_one_file_image(docker_client, tag)
    monkeypatch.setenv("PYTEST_K3S_REGISTRY_IMAGE", registry_image)
    monkeypatch.setenv("LOCAL_IMAGE", tag)
    pytester.makepyfile(
        """
        import os, pytest
        from pytest_k3s import K3sError

        @pytest.mark.k3s(registry=True)
        def test_pushes(k3s_cluster):
            assert k3s_cluster.registry.host.startswith("localhost:")
            image = k3s_cluster.registry.push(os.environ["LOCAL_IMAGE"])
            assert image == k3s_cluster.registry.host + "/" + os.environ["LOCAL_IMAGE"]

        def test_the_default_cluster_has_none(k3s_cluster):
            with pytest.raises(K3sError, match="the --k3s-registry option"):
                k3s_cluster.registry
        """
    )
    try:
        result = pytester.runpytest_subprocess("-p", "no:randomly", timeout=300)
    finally:
        remove_tags(docker_client, tag)
    result.assert_outcomes(passed=2)
