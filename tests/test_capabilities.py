"""What the capability fallback drops comes from the engine, never from us.

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

import docker
import pytest

from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s import labels
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.engine.host_policy import CAPABILITIES
from pytest_k3s.engine.host_policy import without_unknown_names
from pytest_k3s.engine.node_container import NodeContainer


#: /proc/self/status of a process in a container with Docker's default
#: capabilities: no PERFMON, BPF, CHECKPOINT_RESTORE, SYS_ADMIN, NET_ADMIN...
CONTAINER_STATUS = (
    "Name:\tpython\nCapInh:\t0000000000000000\nCapPrm:\t00000000a80425fb\n"
    "CapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\n"
)


@pytest.fixture
def client_in_a_container(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process read a container's capabilities, as in a devcontainer."""
    real = pathlib.Path.read_text

    def read_text(self: pathlib.Path, *args: object, **kwargs: object) -> str:
        if str(self) == "/proc/self/status":
            return CONTAINER_STATUS
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)


def _effective(client: docker.DockerClient, container_id: str) -> set[str]:
    status = client.containers.get(container_id).exec_run(["cat", "/proc/1/status"])
    output: bytes = status.output  # type: ignore[assignment]
    line = next(x for x in output.decode().splitlines() if x.startswith("CapEff:"))
    bits = int(line.split()[1], 16)
    return {name for bit, name in enumerate(CAPABILITIES) if bits >> bit & 1}


@pytest.mark.docker
@pytest.mark.usefixtures("client_in_a_container")
def test_fallback_nodes_get_what_the_engine_grants_not_what_we_have(
    double_image: str, docker_client: docker.DockerClient, docker_engine: DockerEngine
) -> None:
    spec = ClusterSpec(
        image=double_image, privileged="capabilities", wait_for_coredns=False
    )
    with K3sCluster.start(spec, engine=docker_engine) as cluster:
        server = cluster.servers[0].container_id
        config = docker_client.api.inspect_container(server)["HostConfig"]
        effective = _effective(docker_client, server)
    assert config["CapAdd"] == ["ALL"]
    # What k3s needs, which a container's bounding set lacks.
    assert {"SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE"} <= effective
    assert not set(config["CapDrop"] or []) & effective


class OlderEngine:
    """Creates containers as an engine that knows only some capability names does."""

    def __init__(self, unknown: set[str]) -> None:
        self.unknown = unknown
        self.asked: list[list[str]] = []

    def create(self, cap_drop: list[str]) -> str:
        self.asked.append(cap_drop)
        for name in cap_drop:
            if name in self.unknown:
                # Docker 20.10's answer to a name it does not know.
                raise RuntimeError(f'invalid CapDrop: unknown capability: "CAP_{name}"')
        return "created"


def test_names_an_engine_does_not_know_are_left_out_one_by_one() -> None:
    engine = OlderEngine(unknown={"PERFMON", "BPF"})
    cap_drop = ["SYS_RESOURCE", "PERFMON", "BPF"]
    created = without_unknown_names(engine.create, cap_drop, str)
    assert created == "created"
    assert engine.asked == [
        ["SYS_RESOURCE", "PERFMON", "BPF"],
        ["SYS_RESOURCE", "BPF"],
        ["SYS_RESOURCE"],
    ]
    assert cap_drop == ["SYS_RESOURCE"], "what the engine accepted is remembered"


def test_an_engine_that_knows_every_name_gets_them_all_at_once() -> None:
    engine = OlderEngine(unknown=set())
    cap_drop = ["SYS_RESOURCE", "PERFMON", "BPF"]
    without_unknown_names(engine.create, cap_drop, str)
    assert engine.asked == [["SYS_RESOURCE", "PERFMON", "BPF"]]
    assert cap_drop == ["SYS_RESOURCE", "PERFMON", "BPF"]


def test_other_create_errors_are_not_retried() -> None:
    def create(cap_drop: list[str]) -> str:
        raise RuntimeError("no such image")

    with pytest.raises(RuntimeError, match="no such image"):
        without_unknown_names(create, ["SYS_RESOURCE"], str)


@pytest.mark.docker
def test_a_real_engine_drops_exactly_what_it_was_asked_to(
    double_image: str, docker_engine: DockerEngine
) -> None:
    """Names the engine knows are dropped; names it rejects are left out, and noted.

    Docker 20.10 (Debian's) rejects PERFMON and BPF as unknown, Docker 23
    and later know them: either way the node is created, and drops exactly
    what the engine accepted, which the engine remembers for later nodes.
    """
    node = NodeContainer(
        name=f"caps-{uuid.uuid4().hex[:8]}",
        image=double_image,
        command=["server"],
        environment={},
        labels={"io.pytest-k3s.cluster": "caps-probe-test"},
        network="bridge",
    )
    answer = docker_engine.missing_capabilities(node)
    asked = sorted({*answer, "PERFMON", "BPF"})
    docker_engine._missing = list(asked)
    container_id = docker_engine.create_node(node, privileged=False)
    try:
        config = docker_engine.api.inspect_container(container_id)["HostConfig"]
    finally:
        docker_engine.remove_container(container_id)
    dropped = sorted(config["CapDrop"] or [])
    assert dropped == sorted(docker_engine._missing or [])
    assert set(answer) <= set(dropped) <= set(asked)
    assert config["CapAdd"] == ["ALL"]


@pytest.mark.docker
def test_the_probe_container_carries_its_clusters_labels(
    double_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed while the engine is asked leaves a probe a sweep can find."""
    node = NodeContainer(
        name=f"caps-{uuid.uuid4().hex[:8]}",
        image=double_image,
        command=["server"],
        environment={},
        labels={labels.CLUSTER: "caps-probe-test", labels.RUN: "run-x"},
        network="bridge",
    )
    engine = DockerEngine.connect()  # one that has not asked yet
    seen: dict[str, str] = {}
    remove = engine.remove_container

    def look_then_remove(container_id: str) -> None:
        seen.update(engine.labels_of(container_id))
        remove(container_id)

    monkeypatch.setattr(engine, "remove_container", look_then_remove)
    try:
        engine.missing_capabilities(node)
    finally:
        engine.close()
    assert seen[labels.CLUSTER] == "caps-probe-test"
    assert seen[labels.RUN] == "run-x"
    assert seen[labels.PROBE] == "capabilities"
    assert seen[labels.ROLE] == "probe", "never taken for one of the nodes"
