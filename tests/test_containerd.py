"""load_image's pure parts, and the double's ``ctr import`` being as strict as ctr."""

from __future__ import annotations

import io

import pytest

from k3s_double.node import ctr
from pytest_k3s.lifecycle.containerd import import_command
from pytest_k3s.lifecycle.containerd import normalized_reference
from tests.oci import multi_platform_archive


NAME = "docker.io/library/multi:1"


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.27", "docker.io/library/nginx:1.27"),
        ("team/app:2", "docker.io/team/app:2"),
        ("ghcr.io/team/app", "ghcr.io/team/app:latest"),
        ("localhost/app:3", "localhost/app:3"),
        ("registry:5000/app:4", "registry:5000/app:4"),
        ("app@sha256:ab", "docker.io/library/app@sha256:ab"),
    ],
)
def test_normalized_reference_matches_the_doubles_ctr(ref: str, expected: str) -> None:
    assert normalized_reference(ref) == expected
    assert ctr.normalize(ref) == expected


def test_import_is_for_one_platform_not_all() -> None:
    command = import_command("linux/arm64")
    assert "--all-platforms" not in command
    assert command[command.index("--platform") + 1] == "linux/arm64"


def test_doubles_ctr_refuses_all_platforms_when_blobs_are_missing() -> None:
    archive = multi_platform_archive(NAME, "linux/amd64", "linux/arm64")
    with pytest.raises(ctr.ImageFormatError, match=r"content digest sha256:\w+: not"):
        ctr.read_archive(io.BytesIO(archive), all_platforms=True)
    with pytest.raises(ctr.ImageFormatError, match="not found"):
        ctr.read_archive(io.BytesIO(archive), platform="linux/arm64")
    images = ctr.read_archive(io.BytesIO(archive), platform="linux/amd64")
    assert [image.name for image in images] == [NAME]
