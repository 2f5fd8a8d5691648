"""The Docker engine's pure helpers (its Docker calls are covered by test_cluster)."""

from __future__ import annotations

import docker.errors
import pytest

from pytest_k3s.engine.access import Access
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.engine.docker_engine import _unavailable
from pytest_k3s.engine.docker_images import pull_arguments


DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("rancher/k3s:v1.31.4-k3s1", ("rancher/k3s", "v1.31.4-k3s1")),
        ("rancher/k3s", ("rancher/k3s", "latest")),
        (f"rancher/k3s@{DIGEST}", ("rancher/k3s", DIGEST)),
        (f"registry:5000/k3s:v1@{DIGEST}", ("registry:5000/k3s", DIGEST)),
        ("registry:5000/k3s", ("registry:5000/k3s", "latest")),
        ("registry:5000/team/k3s:dev", ("registry:5000/team/k3s", "dev")),
        ("localhost:5000/k3s", ("localhost:5000/k3s", "latest")),
    ],
)
def test_pull_arguments(image: str, expected: tuple[str, str]) -> None:
    assert pull_arguments(image) == expected


def test_a_refused_socket_says_permission_denied_and_what_to_do() -> None:
    try:
        try:
            raise PermissionError(13, "Permission denied")
        except PermissionError as cause:
            raise ConnectionError("Connection aborted.") from cause
    except ConnectionError as exc:
        message = _unavailable("unix:///var/run/docker.sock", exc)
    assert message.startswith(
        "permission denied on the Docker engine's socket at unix:///var/run/docker.sock"
    )
    assert "usermod -aG docker" in message
    absent = _unavailable("unix:///x.sock", FileNotFoundError(2, "No such file"))
    assert absent.startswith("no Docker engine answers at unix:///x.sock")
    assert "start the Docker engine" in absent


class _PodmanCompat:
    """What Podman's Docker-compatible API answers about a container's networks.

    Podman cannot run on our machines, so its answers are scripted here:
    a container attached to ``attached``, and a connect of an attached
    container refused with 403 "network is already connected"
    (``pkg/api/handlers/compat/networks.go``), where Docker says "already
    exists".
    """

    def __init__(self, attached: set[str], reported: set[str]) -> None:
        self.attached = attached
        self.reported = reported
        self.connects: list[str] = []

    def inspect_container(self, container: str) -> dict[str, object]:
        return {"NetworkSettings": {"Networks": {n: {} for n in self.reported}}}

    def connect_container_to_network(self, container: str, network: str) -> None:
        import requests

        self.connects.append(network)
        if network in self.attached:
            response = requests.Response()
            response.status_code = 403
            raise docker.errors.APIError(
                "403 Client Error: Forbidden",
                response=response,
                explanation="network is already connected",
            )
        self.attached.add(network)


def _engine_in_a_container(api: _PodmanCompat) -> DockerEngine:
    client = type("Client", (), {"api": api})()
    engine = DockerEngine(client)
    engine._access = Access("network", "in a container", container="c0ffee")
    return engine


def test_a_container_on_the_network_already_is_not_connected_again() -> None:
    api = _PodmanCompat(attached={"k3s-x"}, reported={"bridge", "k3s-x"})
    _engine_in_a_container(api).join_network("k3s-x")
    assert api.connects == [], "a second xdist worker in the same container"


def test_podmans_already_connected_is_no_error() -> None:
    # Another worker connected the container after we looked.
    api = _PodmanCompat(attached={"k3s-x"}, reported={"bridge"})
    _engine_in_a_container(api).join_network("k3s-x")
    assert api.connects == ["k3s-x"]


def test_a_container_joins_a_network_it_is_not_on() -> None:
    api = _PodmanCompat(attached=set(), reported={"bridge"})
    _engine_in_a_container(api).join_network("k3s-x")
    assert api.attached == {"k3s-x"}


class _Allocating:
    """Docker's answers when a host port we chose was taken meanwhile.

    The first start fails as Docker's port allocator says; the container is
    made again with another port. A stopped container of ours keeps 25000.
    """

    def __init__(self) -> None:
        self.created: list[dict[str, object]] = []
        self.removed: list[str] = []
        self.starts = 0

    def containers(self, all: bool, filters: object) -> list[dict[str, str]]:
        return [{"Id": "stopped"}]

    def inspect_container(self, container: str) -> dict[str, object]:
        bindings = {"6443/tcp": [{"HostIp": "127.0.0.1", "HostPort": "25000"}]}
        return {"HostConfig": {"PortBindings": bindings}, "Name": "/x"}

    def create_host_config(self, **options: object) -> dict[str, object]:
        return options

    def create_container(self, image: str, **options: object) -> dict[str, str]:
        self.created.append(options)
        return {"Id": f"c{len(self.created)}"}

    def put_archive(self, container: str, path: str, data: object) -> None:
        pass

    def start(self, container: str) -> None:
        import requests

        self.starts += 1
        if self.starts == 1:
            response = requests.Response()
            response.status_code = 500
            raise docker.errors.APIError(
                "500 Server Error",
                response=response,
                explanation="driver failed programming external connectivity on "
                "endpoint x: Bind for 127.0.0.1:21000 failed: port is already "
                "allocated",
            )

    def remove_container(self, container: str, **options: object) -> None:
        self.removed.append(container)


def test_a_host_port_taken_meanwhile_is_chosen_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pytest_k3s.engine import addressing
    from pytest_k3s.engine.node_container import NodeContainer
    from pytest_k3s.spec import PortMapping

    monkeypatch.setattr(addressing, "HOST_PORTS", range(25000, 25003))
    api = _Allocating()
    engine = _engine_in_a_container(api)  # type: ignore[arg-type]
    balancer = NodeContainer(
        name="k3s-x-serverlb",
        image="haproxy:test",
        command=["-f", "/cfg"],
        environment={},
        labels={},
        network="k3s-x",
        ports=(("127.0.0.1", PortMapping(6443)),),
    )
    assert engine.start_proxy(balancer) == "c2"
    assert api.removed == ["c1"], "the container that could not start"
    ports = [c["host_config"]["port_bindings"]["6443/tcp"] for c in api.created]  # type: ignore[index]
    assert [host_port for _, host_port in ports if host_port == 25000] == [], (
        "25000 is a stopped container's"
    )
