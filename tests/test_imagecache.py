"""The system image cache: which images count, where they go (no Docker here).

The round trip through real nodes (a cluster pulls, the next is seeded and
pulls nothing) is in ``test_imagecache_nodes.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_k3s import ClusterSpec
from pytest_k3s import SpecError
from pytest_k3s import imagecache


@pytest.mark.parametrize(
    ("ref", "system"),
    [
        ("docker.io/rancher/mirrored-pause:3.6", True),
        ("docker.io/rancher/mirrored-coredns-coredns:1.12.3", True),
        ("docker.io/rancher/local-path-provisioner:v0.0.32", True),
        # --system-default-registry moves them, under the same path.
        ("registry.example.com:5000/rancher/klipper-lb:v0.4.13", True),
        # containerd lists every pulled image by digest and by id too.
        ("docker.io/rancher/mirrored-pause@sha256:" + "a" * 64, False),
        ("sha256:" + "b" * 64, False),
        # What a test loads or pulls is not k3s's.
        ("docker.io/library/nginx:1.27", False),
        ("docker.io/rancherlabs/tool:1", False),
        ("ghcr.io/example/rancher/x:1", False),
        ("docker.io/pytest-k3s/app:v1", False),
    ],
)
def test_system_images_are_tagged_rancher_images(ref: str, system: bool) -> None:
    assert imagecache.is_system_image(ref) is system


def test_archive_names_round_trip_through_a_directory(tmp_path: Path) -> None:
    refs = [
        "docker.io/rancher/mirrored-pause:3.6",
        "registry.example.com:5000/rancher/klipper-lb:v0.4.13",
    ]
    for ref in refs:
        name = imagecache.archive_name(ref)
        assert "/" not in name
        assert name.endswith(".tar")
        (tmp_path / name).write_bytes(b"archive")
    # Partial exports and the lock are not archives.
    (tmp_path / ".x.tar.123.partial").write_bytes(b"half")
    (tmp_path / ".lock").write_bytes(b"")
    found = imagecache.archives(tmp_path)
    assert sorted(found) == sorted(refs)
    assert all(path.parent == tmp_path for path in found.values())


def test_a_missing_or_disabled_cache_has_no_archives(tmp_path: Path) -> None:
    assert imagecache.archives(tmp_path / "never-made") == {}
    assert imagecache.archives(None) == {}


def test_each_k3s_image_and_platform_has_its_own_directory(tmp_path: Path) -> None:
    spec = ClusterSpec(image="rancher/k3s:v1.31.4-k3s1", image_cache=str(tmp_path))
    amd = imagecache.directory(spec, "linux/amd64")
    arm = imagecache.directory(spec, "linux/arm/v7")
    other = imagecache.directory(
        ClusterSpec(image="rancher/k3s:v1.32.0-k3s1", image_cache=str(tmp_path)),
        "linux/amd64",
    )
    assert len({amd, arm, other, None}) == 4
    assert amd.parent.parent == tmp_path
    # The short and the full name of one image share a directory.
    same = ClusterSpec(
        image="docker.io/rancher/k3s:v1.31.4-k3s1", image_cache=str(tmp_path)
    )
    assert imagecache.directory(same, "linux/amd64") == amd


def test_the_default_cache_is_under_the_users_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    found = imagecache.directory(ClusterSpec(), "linux/amd64")
    assert found is not None
    assert found.is_relative_to(tmp_path / "pytest-k3s" / "images")


def test_no_cache_when_off_or_when_airgap_images_bring_the_system_images(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "k3s-airgap-images-amd64.tar"
    archive.write_bytes(b"")
    assert imagecache.directory(ClusterSpec(image_cache=False), "linux/amd64") is None
    airgap = ClusterSpec(airgap_images=(str(archive),), image_cache=str(tmp_path))
    assert imagecache.directory(airgap, "linux/amd64") is None


def test_the_cache_setting_is_checked_and_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert ClusterSpec(image_cache="cache").image_cache == str(tmp_path / "cache")
    with pytest.raises(SpecError, match="image_cache must be True"):
        ClusterSpec(image_cache=3)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="image_cache must be True"):
        ClusterSpec(image_cache="  ")


def test_the_cache_is_not_part_of_a_clusters_identity(tmp_path: Path) -> None:
    # Specs that differ only in where images are cached share one cluster.
    assert (
        ClusterSpec(image_cache=False).digest()
        == ClusterSpec(image_cache=str(tmp_path)).digest()
        == ClusterSpec().digest()
    )
