from __future__ import annotations

import re
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from pytest_k3s.kube.client import failure
from pytest_k3s.kube.client import namespace_name
from pytest_k3s.kube.client import node_roles
from pytest_k3s.kube.client import readyz


DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("test_create", "test-create-abc123"),
        ("test_x[A very [long] Name/]", "test-x-a-very-long-name-abc123"),
        ("___", "test-abc123"),
        ("t" * 100, "t" * 56 + "-abc123"),
        ("test_" + "a" * 52 + "_b", "test-" + "a" * 51 + "-abc123"),
    ],
)
def test_namespace_names_are_valid_labels(text: str, expected: str) -> None:
    name = namespace_name(text, suffix="abc123")
    assert name == expected
    assert len(name) <= 63
    assert DNS1123_LABEL.match(name)


def test_node_roles_come_from_role_labels() -> None:
    labels = {
        "node-role.kubernetes.io/control-plane": "true",
        "node-role.kubernetes.io/master": "true",
        "kubernetes.io/hostname": "n",
    }
    assert node_roles(labels) == ("control-plane", "master")
    assert node_roles(None) == ()


class Answers:
    """A REST client that answers ``/readyz`` with a status, or fails."""

    def __init__(self, status: int | None) -> None:
        self.status = status

    def request(self, method: str, url: str, **options: object) -> object:
        if self.status is None:
            raise ConnectionRefusedError("connection refused")
        return type("Response", (), {"status": self.status})()


class Api:
    def __init__(self, status: int | None) -> None:
        self.configuration = type("Configuration", (), {"host": "https://x:1"})()
        self.rest_client = Answers(status)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (200, None),
        (500, "/readyz answered HTTP 500"),
        (None, "ConnectionRefusedError: connection refused"),
    ],
)
def test_readyz_says_why_the_api_server_is_not_ready(
    status: int | None, reason: str | None
) -> None:
    api: Any = Api(status)
    assert readyz(api) == reason


def test_failures_read_as_the_api_says_them() -> None:
    assert failure(ApiException(status=404, reason="Not Found")) == "HTTP 404 Not Found"
    assert failure(TimeoutError("timed out")) == "TimeoutError: timed out"
