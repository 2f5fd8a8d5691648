"""The registry mirror on a real engine: each blob comes from the upstream once.

An "upstream" registry (Debian's docker-registry, the official image's
contract) holds a test image pushed from the host. Clusters of the node
double, whose containerd really pulls over HTTP, run that image on every
node; the upstream's access log (one ``response completed`` line a request)
counts what was fetched from it. The image's name is the upstream's, which
nodes reach through the user's ``registries.yaml`` (an ``http://``
endpoint, as for any registry without TLS), with or without the mirror.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from k3s_double import upstream as upstream_registry
from k3s_double.upstream import Upstream
from k3s_double.upstream import run_everywhere
from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s import RegistryMirror
from pytest_k3s import labels
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.lifecycle import mirror
from pytest_k3s.owner import Owner


@pytest.fixture(scope="module")
def upstream(
    docker_client: docker.DockerClient, docker_engine: DockerEngine
) -> Iterator[Upstream]:
    """A registry holding the test image, on the mirror's network."""
    owner = Owner.current()
    found = Upstream.start(
        docker_client,
        labels={
            labels.CLUSTER: f"pytest-k3s-upstream-{secrets.token_hex(3)}",
            labels.OWNER: str(owner),
            labels.OWNER_NS: owner.namespace,
        },
    )
    try:
        found.join(mirror.ensure_network(docker_engine))
        yield found
    finally:
        found.remove()
        mirror.remove(docker_engine)


def fresh_mirror(upstream: Upstream, engine: DockerEngine) -> None:
    """No mirror yet (another test's is removed), the upstream on its network."""
    mirror.remove(engine)
    upstream.join(mirror.ensure_network(engine))


def spec(double_image: str, registry_image: str, storage: Path | None) -> ClusterSpec:
    return ClusterSpec(
        image=double_image,
        agents=2,
        registries=upstream_registry.REGISTRIES,
        registry_mirror=None
        if storage is None
        else RegistryMirror(
            storage=str(storage),
            image=registry_image,
            upstreams=(upstream_registry.MIRRORED,),
        ),
    )


def test_without_the_mirror_every_node_fetches_every_blob(
    upstream: Upstream, double_image: str, registry_image: str
) -> None:
    before = upstream.fetches()
    with K3sCluster.start(spec(double_image, registry_image, None)) as cluster:
        upstream.join(cluster.network)
        nodes = run_everywhere(cluster, upstream)
        assert nodes == sorted(n.name for n in cluster.nodes)
    assert upstream.fetches() - before == Counter(dict.fromkeys(upstream.blobs, 3))


def test_with_the_mirror_each_blob_comes_from_the_upstream_once(
    upstream: Upstream,
    double_image: str,
    registry_image: str,
    docker_engine: DockerEngine,
    tmp_path: Path,
) -> None:
    fresh_mirror(upstream, docker_engine)
    storage = tmp_path / "mirror"
    before = upstream.fetches()
    for _ in range(2):  # two clusters of three nodes: six pulls
        with K3sCluster.start(spec(double_image, registry_image, storage)) as cluster:
            upstream.join(cluster.network)
            nodes = run_everywhere(cluster, upstream)
            assert nodes == sorted(n.name for n in cluster.nodes)
    assert upstream.fetches() - before == Counter(dict.fromkeys(upstream.blobs, 1))
    assert any(storage.rglob("data")), "the blobs are kept in the directory"

    # A later run (a CI job with the directory restored from its cache):
    # the mirror starts afresh on the kept blobs and fetches none.
    fresh_mirror(upstream, docker_engine)
    with K3sCluster.start(spec(double_image, registry_image, storage)) as cluster:
        upstream.join(cluster.network)
        run_everywhere(cluster, upstream)
    assert upstream.fetches() - before == Counter(dict.fromkeys(upstream.blobs, 1))


STOPS_THE_MIRROR = """
import docker
import pytest
from k3s_double import upstream

pytestmark = pytest.mark.k3s(registries=upstream.REGISTRIES)


def test_pods_start_from_the_upstream(k3s_cluster):
    client = docker.from_env()
    client.api.connect_container_to_network(
        "{upstream}", k3s_cluster.network, aliases=[upstream.HOST]
    )
    client.containers.get("{mirror}").stop(timeout=1)
    k3s_cluster.apply(
        {{
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {{"name": "blobs", "namespace": "default"}},
            "spec": {{"containers": [{{
                "name": "blobs", "image": "{image}", "command": ["sleep", "3600"]
            }}]}},
        }}
    )
    k3s_cluster.wait_for(
        "pod", "blobs", namespace="default", condition="Ready", timeout=120
    )
"""


def test_a_stopped_mirror_costs_a_warning_line_not_a_test(
    pytester: pytest.Pytester,
    upstream: Upstream,
    registry_image: str,
    docker_engine: DockerEngine,
) -> None:
    fresh_mirror(upstream, docker_engine)
    hub = mirror.Mirror(upstream_registry.REGISTRY, "")
    pytester.makepyfile(
        test_inner=STOPS_THE_MIRROR.format(
            upstream=upstream.container.name, mirror=hub.container, image=upstream.image
        )
    )
    before = upstream.fetches()
    result = pytester.runpytest_subprocess(
        "-p",
        "no:randomly",
        "--k3s-registry-mirror=on",
        f"--k3s-registry-mirror-upstreams={upstream_registry.MIRRORED}",
        f"--k3s-registry-image={registry_image}",
        timeout=300,
    )
    result.assert_outcomes(passed=1)
    warned = [line for line in result.outlines if "warning" in line.lower()]
    assert len(warned) == 1, result.stdout.str()
    assert warned[0].startswith(f"warning: registry mirror {hub.container} is exited")
    # The node fetched the blobs itself.
    assert upstream.fetches() - before == Counter(dict.fromkeys(upstream.blobs, 1))
