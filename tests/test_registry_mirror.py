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

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from conftest import SHARED_CLUSTERS
from k3s_double import upstream as upstream_registry
from k3s_double.upstream import Upstream
from k3s_double.upstream import run_everywhere
from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s import RegistryMirror
from pytest_k3s import labels
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.lifecycle import mirror


@pytest.fixture(scope="module")
def upstream(
    docker_client: docker.DockerClient, docker_engine: DockerEngine
) -> Iterator[Upstream]:
    """A registry holding the test image, on the mirror's network."""
    found = Upstream.start(docker_client)
    # Both outlive a test: the module's end removes them.
    SHARED_CLUSTERS.update({found.container.name, mirror.NAME})
    try:
        found.join_mirror(mirror.ensure_network(docker_engine))
        yield found
    finally:
        found.remove()
        mirror.remove(docker_engine, [upstream_registry.REGISTRY])


def fresh_mirror(upstream: Upstream, engine: DockerEngine) -> None:
    """No mirror of the upstream yet (a test's is removed), the upstream on its network.

    Only the upstream's: a developer's own mirrors on this engine stay.
    """
    mirror.remove(engine, [upstream_registry.REGISTRY])
    upstream.join_mirror(mirror.ensure_network(engine))


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
        nodes = run_everywhere(cluster, upstream.image)
        assert nodes == sorted(n.name for n in cluster.nodes)
    assert upstream.fetches() - before == Counter(dict.fromkeys(upstream.blobs, 3))


def test_with_the_mirror_blobs_come_from_the_upstream_once_per_machine(
    upstream: Upstream,
    double_image: str,
    registry_image: str,
    docker_engine: DockerEngine,
    tmp_path: Path,
) -> None:
    """Two clusters of three nodes pull through the mirror; a later run too.

    Distribution 2.8 (Debian's, and ``registry:2.8.3``) fetches a blob it
    lacks twice, once to keep and once to stream, and once more for each
    pull that asks while the first is under way: the first cluster's nodes
    may cost up to that. Nothing after it fetches a blob again.
    """
    fresh_mirror(upstream, docker_engine)
    storage = tmp_path / "mirror"
    counts = [upstream.fetches()]
    for _ in range(2):
        with K3sCluster.start(spec(double_image, registry_image, storage)) as cluster:
            upstream.join(cluster.network)
            nodes = run_everywhere(cluster, upstream.image)
            assert nodes == sorted(n.name for n in cluster.nodes)
        counts.append(upstream.fetches())
    first, second = counts[1] - counts[0], counts[2] - counts[1]
    assert all(1 <= first[blob] <= 2 + 2 for blob in upstream.blobs), first
    assert second == Counter(), "the second cluster fetched from the upstream"
    assert any(storage.rglob("data")), "the blobs are kept in the directory"

    # A later run (a CI job with the directory restored from its cache):
    # the mirror starts afresh on the kept blobs and fetches none.
    fresh_mirror(upstream, docker_engine)
    with K3sCluster.start(spec(double_image, registry_image, storage)) as cluster:
        upstream.join(cluster.network)
        run_everywhere(cluster, upstream.image)
    assert upstream.fetches() == counts[2]


def test_the_mirrors_way_out_is_its_own_network(
    upstream: Upstream,
    double_image: str,
    registry_image: str,
    docker_client: docker.DockerClient,
    docker_engine: DockerEngine,
    tmp_path: Path,
) -> None:
    """Joining a cluster's network leaves the mirror's default route alone."""
    fresh_mirror(upstream, docker_engine)
    with K3sCluster.start(spec(double_image, registry_image, tmp_path)) as cluster:
        container = docker_client.containers.get(
            mirror.Mirror(upstream_registry.REGISTRY, "").container
        )
        networks = container.attrs["NetworkSettings"]["Networks"]
        assert set(networks) == {mirror.NETWORK, cluster.network}
        routes = container.exec_run(["cat", "/proc/net/route"]).output.decode()
        (gateway,) = [
            line.split()[2]
            for line in routes.splitlines()[1:]
            if line.split()[1] == "00000000"
        ]
        as_ip = ".".join(str(int(gateway[i : i + 2], 16)) for i in (6, 4, 2, 0))
        assert as_ip == networks[mirror.NETWORK]["Gateway"]


STOPS_THE_MIRROR = """
import docker
import pytest

pytestmark = pytest.mark.k3s(registries={registries!r})


def test_pods_start_from_the_upstream(k3s_cluster):
    client = docker.from_env()
    client.api.connect_container_to_network(
        "{upstream}", k3s_cluster.network, aliases=["{host}"]
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
            registries=upstream_registry.REGISTRIES,
            upstream=upstream.container.name,
            host=upstream_registry.HOST,
            mirror=hub.container,
            image=upstream.image,
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
    # The run's own warning lines, and any Python warning (RegistryMirrorWarning).
    warned = [
        line
        for line in result.outlines
        if line.startswith("warning:") or "Warning" in line
    ]
    assert len(warned) == 1, result.stdout.str()
    assert warned[0].startswith(f"warning: registry mirror {hub.container} is exited")
    # The node fetched the blobs itself.
    assert upstream.fetches() - before == Counter(dict.fromkeys(upstream.blobs, 1))


def test_the_command_line_shows_and_removes_the_mirror(
    upstream: Upstream,
    registry_image: str,
    docker_engine: DockerEngine,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pytest_k3s.cli import main

    fresh_mirror(upstream, docker_engine)
    wanted = RegistryMirror(
        storage=str(tmp_path),
        image=registry_image,
        upstreams=(upstream_registry.MIRRORED,),
    )
    (started,) = mirror.ensure(docker_engine, wanted, environ={})
    assert main(["mirror", "status"]) == 0
    line = next(
        line
        for line in capsys.readouterr().out.splitlines()
        if started.container in line
    )
    assert line.split("\t") == [
        upstream_registry.REGISTRY,
        started.container,
        "running",
        f"upstream http://{upstream_registry.MIRROR_HOST}:5000",
        f"storage {tmp_path / 'upstream.pytest-k3s.test-5000'}",
    ]
    assert main(["mirror", "rm", upstream_registry.REGISTRY]) == 0
    assert f"removed container {started.container}" in capsys.readouterr().out
    assert not docker_engine.containers({labels.MIRROR: upstream_registry.REGISTRY})
