"""Issue 9 item 2: what the capability fallback drops comes from the engine.

The fallback used to compute ``cap_drop`` from this process's bounding set.
Inside a container (a devcontainer, a CI job container) that set is a
container's, without PERFMON, BPF, SYS_ADMIN and more: the nodes lost what
k3s needs, or an engine that does not know a name (Docker 20.10 stops at
AUDIT_READ) rejected the create with ``invalid CapDrop: unknown capability:
"CAP_PERFMON"``. These tests make our own process look like a container's and
check that the nodes still get what the engine can grant.
"""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator

import docker
import pytest

from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s import host
from pytest_k3s.docker_runtime import DockerRuntime
from pytest_k3s.host import CAPABILITIES
from pytest_k3s.nodes import NodeContainer


pytestmark = pytest.mark.docker

#: /proc/self/status of a process in a container with Docker's default
#: capabilities: no PERFMON, BPF, CHECKPOINT_RESTORE, SYS_ADMIN, NET_ADMIN...
CONTAINER_STATUS = (
    "Name:\tpython\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n"
    "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n"
)


@pytest.fixture
def client_in_a_container(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Make this process read a container's capabilities; forget what engines said."""
    real = pathlib.Path.read_text

    def read_text(self: pathlib.Path, *args: object, **kwargs: object) -> str:
        if str(self) == "/proc/self/status":
            return CONTAINER_STATUS
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    saved = dict(getattr(host, "_ENGINE_MISSING", {}))
    getattr(host, "_ENGINE_MISSING", {}).clear()
    yield
    getattr(host, "_ENGINE_MISSING", {}).clear()
    getattr(host, "_ENGINE_MISSING", {}).update(saved)


def _effective(client: docker.DockerClient, container_id: str) -> set[str]:
    status = client.containers.get(container_id).exec_run(["cat", "/proc/1/status"])
    output: bytes = status.output  # type: ignore[assignment]
    line = next(x for x in output.decode().splitlines() if x.startswith("CapEff:"))
    bits = int(line.split()[1], 16)
    return {name for bit, name in enumerate(CAPABILITIES) if bits >> bit & 1}


@pytest.mark.usefixtures("client_in_a_container")
def test_fallback_nodes_get_what_the_engine_grants_not_what_we_have(
    double_image: str, docker_client: docker.DockerClient
) -> None:
    spec = ClusterSpec(
        image=double_image, privileged="capabilities", wait_for_coredns=False
    )
    with K3sCluster.start(spec) as cluster:
        server = cluster.servers[0].container_id
        config = docker_client.api.inspect_container(server)["HostConfig"]
        effective = _effective(docker_client, server)
    assert config["CapAdd"] == ["ALL"]
    # What k3s needs, which a container's bounding set lacks.
    assert {"SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"} <= effective
    assert not set(config["CapDrop"] or []) & effective


def test_names_the_engine_does_not_know_are_not_sent(double_image: str) -> None:
    runtime = DockerRuntime.connect()
    saved = host.engine_missing(runtime.address)
    try:
        answer = runtime.missing_capabilities(double_image)
        # A kernel name every engine may not know, as a container's set lacks it.
        host.note_engine_missing(runtime.address, [*answer, "PERFMON", "BPF"])
        node = NodeContainer(
            name=f"caps-{uuid.uuid4().hex[:8]}",
            image=double_image,
            command=["server"],
            environment={},
            labels={"io.pytest-k3s.cluster": "caps-probe-test"},
            network="bridge",
        )
        container_id = runtime.create_node(node, privileged=False)
        try:
            dropped = runtime.api.inspect_container(container_id)["HostConfig"][
                "CapDrop"
            ]
        finally:
            runtime.remove_container(container_id)
        assert set(answer) <= set(dropped or [])
    finally:
        host.note_engine_missing(runtime.address, saved or [])
        if saved is None:
            getattr(host, "_ENGINE_MISSING", {}).pop(runtime.address, None)
        runtime.close()
