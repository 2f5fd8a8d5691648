"""What real k3s and Docker need of the plugin, checked against a strict double.

Each test here failed before its fix: the double now behaves as k3s/Docker do
in these places (read-only cgroups without privileges, ready lines in
bursts, HA joins that crash first, a kubeconfig written late, multi-platform
archives that ``ctr --all-platforms`` refuses, names normalized by
containerd).
"""

from __future__ import annotations

import io
import tarfile
import time
import uuid
from collections.abc import Iterator
from typing import IO

import docker
import pytest
import yaml

from conftest import LABEL
from conftest import SHARED_CLUSTERS
from pytest_k3s import ClusterCommandError
from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.engine.host_policy import fallback_entrypoint
from pytest_k3s.engine.node_container import KUBECONFIG_OUTPUT
from tests.oci import multi_platform_archive


pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def late_cluster(
    double_image: str, docker_engine: DockerEngine
) -> Iterator[K3sCluster]:
    """One server (writing its kubeconfig 3 s late) and one agent."""
    spec = ClusterSpec(
        image=double_image,
        agents=1,
        timeout=90,
        wait_for_coredns=False,
        server_env=("K3S_DOUBLE_FAULT=kubeconfig-late:3",),
    )
    with K3sCluster.start(spec, engine=docker_engine) as cluster:
        SHARED_CLUSTERS.add(cluster.name)
        yield cluster


@pytest.fixture
def two_tags(docker_client: docker.DockerClient) -> Iterator[tuple[str, str]]:
    """A tiny local image (``docker import`` of one file) with two tags."""
    stamp = uuid.uuid4().hex[:8]
    first, second = f"pytest-k3s-tiny-{stamp}:one", f"pytest-k3s-tiny-{stamp}:two"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    repository, tag = first.split(":")
    docker_client.api.import_image_from_data(
        buffer.getvalue(), repository=repository, tag=tag
    )
    docker_client.images.get(first).tag(*second.split(":"))
    try:
        yield first, second
    finally:
        for ref in (second, first):
            docker_client.images.remove(ref, force=True)


def node_images(client: docker.DockerClient, container_id: str) -> list[str]:
    listing = client.containers.get(container_id).exec_run(
        ["ctr", "-n", "k8s.io", "images", "ls", "-q"]
    )
    output: bytes = listing.output  # type: ignore[assignment]
    return output.decode().split()


def test_load_image_loads_the_tag_asked_for(
    late_cluster: K3sCluster,
    docker_client: docker.DockerClient,
    two_tags: tuple[str, str],
) -> None:
    first, second = two_tags
    late_cluster.load_image(second)
    for node in late_cluster.nodes:
        listed = node_images(docker_client, node.container_id)
        assert f"docker.io/library/{second}" in listed, node.name
        assert f"docker.io/library/{first}" not in listed, node.name


def test_load_image_of_a_multi_platform_index_imports_the_nodes_platform(
    late_cluster: K3sCluster,
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What an engine with the containerd image store saves: an index of two
    # platforms, with the blobs of the host's only.
    arch = docker_client.images.get(late_cluster.spec.image).attrs["Architecture"]
    other = "arm64" if arch != "arm64" else "amd64"
    name = f"docker.io/library/multi-{uuid.uuid4().hex[:6]}:1"
    archive = multi_platform_archive(name, f"linux/{arch}", f"linux/{other}")

    def save(self: DockerEngine, image: str, destination: IO[bytes]) -> None:
        destination.write(archive)

    monkeypatch.setattr(DockerEngine, "save_image", save)
    late_cluster.load_image(name.removeprefix("docker.io/library/"))
    for node in late_cluster.nodes:
        assert name in node_images(docker_client, node.container_id), node.name


def test_load_image_names_the_node_that_does_not_list_it(
    late_cluster: K3sCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An archive whose only name differs from the one asked for.
    archive = multi_platform_archive(
        "docker.io/library/other:1", "linux/amd64", "linux/arm64"
    )

    def save(self: DockerEngine, image: str, destination: IO[bytes]) -> None:
        destination.write(archive)

    monkeypatch.setattr(DockerEngine, "save_image", save)
    if late_cluster.engine.image_platform(late_cluster.spec.image) != "linux/amd64":
        pytest.skip("the hand-made archive is for linux/amd64")
    with pytest.raises(ClusterCommandError, match=r"node k3s-\w+-server-0 does not"):
        late_cluster.load_image("wanted:1")


def test_nodes_pin_init_cgroupns_userns_and_disable_bundled_components(
    late_cluster: K3sCluster, docker_client: docker.DockerClient
) -> None:
    for node in late_cluster.nodes:
        attrs = docker_client.containers.get(node.container_id).attrs
        config = attrs["HostConfig"]
        assert config["Init"] is False, node.name
        assert config["CgroupnsMode"] == "private", node.name
        assert config["UsernsMode"] == "host", node.name
        if not config["Privileged"]:
            assert attrs["Config"]["Entrypoint"] == fallback_entrypoint()
    server = docker_client.containers.get(late_cluster.servers[0].container_id)
    assert "--disable=traefik,metrics-server" in server.attrs["Args"]


def test_kubeconfig_written_late_and_named_after_the_node(
    late_cluster: K3sCluster, docker_client: docker.DockerClient
) -> None:
    server = late_cluster.servers[0]
    raw = docker_client.containers.get(server.container_id).exec_run(
        ["cat", KUBECONFIG_OUTPUT]
    )
    written = yaml.safe_load(raw.output)  # type: ignore[arg-type]
    assert written["current-context"] == server.name  # not "default"
    assert late_cluster.kubectl("get", "nodes", "-o", "name").count("node/") == 2


def test_the_image_lacks_etc_rancher_k3s_and_registries_still_land(
    double_image: str, docker_client: docker.DockerClient, docker_engine: DockerEngine
) -> None:
    # The real image has no /etc/rancher/k3s: put_archive must create it.
    probe = docker_client.containers.run(
        double_image,
        ["-c", "test ! -e /etc/rancher/k3s"],
        entrypoint="/bin/sh",
        detach=True,
    )
    try:
        assert probe.wait(timeout=60)["StatusCode"] == 0
    finally:
        probe.remove(force=True, v=True)  # with the image's anonymous volumes
    spec = ClusterSpec(
        image=double_image,
        wait_for_coredns=False,
        registries={"mirrors": {"docker.io": {"endpoint": ["http://m.invalid"]}}},
    )
    with K3sCluster.start(spec, engine=docker_engine) as cluster:
        server = docker_client.containers.get(cluster.servers[0].container_id)
        result = server.exec_run(["cat", "/etc/rancher/k3s/registries.yaml"])
        assert result.exit_code == 0
        assert b"m.invalid" in result.output


def _run_double(
    client: docker.DockerClient,
    image: str,
    *,
    entrypoint: list[str] | None = None,
    init: bool | None = None,
    environment: dict[str, str] | None = None,
) -> tuple[int, str]:
    """Run the double as the capability fallback does; its exit code (-1: up)."""
    container = client.containers.run(
        image,
        ["server"],
        detach=True,
        labels={LABEL: f"fidelity-{uuid.uuid4().hex[:8]}"},
        tmpfs={"/run": "", "/var/run": ""},
        cap_add=["ALL"],
        cap_drop=["SYS_RESOURCE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        entrypoint=entrypoint,
        init=init,
        environment=environment,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            container.reload()
            logs = container.logs().decode(errors="replace")
            if container.status == "exited" or "k3s is up and running" in logs:
                break
            time.sleep(0.5)
        container.reload()
        code = (
            container.attrs["State"]["ExitCode"] if container.status == "exited" else -1
        )
        return code, logs
    finally:
        container.remove(force=True, v=True)


def test_double_cannot_run_on_read_only_cgroups_without_the_remount(
    double_image: str, docker_client: docker.DockerClient
) -> None:
    code, logs = _run_double(docker_client, double_image)
    assert code == 1
    assert "read-only file system" in logs
    assert "level=fatal" in logs
    code, logs = _run_double(
        docker_client, double_image, entrypoint=fallback_entrypoint()
    )
    assert code == -1
    assert "k3s is up and running" in logs


def test_double_is_fatal_when_not_pid_1_on_cgroup_v2(
    double_image: str, docker_client: docker.DockerClient
) -> None:
    code, logs = _run_double(
        docker_client,
        double_image,
        entrypoint=fallback_entrypoint(),
        init=True,
        environment={"K3S_DOUBLE_FAULT": "cgroup-v2"},
    )
    assert code == 1
    assert "not PID 1" in logs


def test_ha_join_survives_more_crashes_than_the_old_limit(
    double_image: str, balancer_image: str, docker_engine: DockerEngine
) -> None:
    # Six crashes of the joining server: beyond the old limit of 5 restarts.
    spec = ClusterSpec(
        image=double_image,
        load_balancer_image=balancer_image,
        servers=2,
        timeout=120,
        wait_for_coredns=False,
        server_env=("K3S_DOUBLE_FAULT=join-crash:6",),
    )
    with K3sCluster.start(spec, engine=docker_engine) as cluster:
        logs = cluster.logs("server-1")
        assert logs.count("too many learner members") == 6
        assert "k3s is up and running" in logs
