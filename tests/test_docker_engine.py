"""The Docker engine's pure helpers (its Docker calls are covered by test_cluster)."""

from __future__ import annotations

import pytest

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
