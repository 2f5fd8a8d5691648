from __future__ import annotations

import re

import pytest

from pytest_k3s.kube.client import namespace_name
from pytest_k3s.kube.client import node_roles


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
