"""What k3s imports from ``agent/images`` at start, release by release.

No Docker: the containerd double runs in process, its ``preload`` called as
``k3s agent`` calls it, claiming the k3s release each test names.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from k3s_double import releases
from k3s_double.node import ctr
from k3s_double.node import oci


PAUSE = "docker.io/rancher/mirrored-pause:3.6"
COREDNS = "docker.io/rancher/mirrored-coredns-coredns:1.12.3"


@pytest.mark.parametrize(
    ("version", "containerd_2", "skips_missing", "cache_file"),
    [
        ("v1.26.15+k3s1", False, False, False),
        ("v1.27.14+k3s1", False, False, False),
        ("v1.27.15+k3s1", False, True, False),
        ("v1.28.10+k3s1", False, False, False),
        ("v1.28.11+k3s1", False, True, False),
        ("v1.29.5+k3s1", False, False, False),
        ("v1.29.6+k3s1", False, True, False),
        ("v1.30.1+k3s1", False, False, False),
        ("v1.30.2+k3s1", False, True, False),
        ("v1.30.12+k3s1", False, True, False),
        ("v1.30.13+k3s1", False, True, True),
        ("v1.31.5+k3s1", False, True, False),
        ("v1.31.6+k3s1", True, True, False),
        ("v1.31.9+k3s1", True, True, True),
        ("v1.32.1+k3s1", False, True, False),
        ("v1.32.2+k3s1", True, True, False),
        ("v1.32.5+k3s1", True, True, True),
        ("v1.33.0+k3s1", True, True, False),
        ("v1.33.1+k3s1", True, True, True),
        ("v1.35.5+k3s1", True, True, True),
    ],
)
def test_release_gates(
    version: str, containerd_2: bool, skips_missing: bool, cache_file: bool
) -> None:
    assert releases.containerd_version(version).startswith("v2.") is containerd_2
    assert releases.imports_missing_platforms(version) is skips_missing
    assert releases.honours_cache_file(version) is cache_file


def test_a_version_that_is_no_release_is_refused() -> None:
    with pytest.raises(ValueError, match="not a k3s version"):
        releases.release("latest")
    assert releases.release("v1.29.4-k3s1") == (1, 29, 4)


def exported(name: str) -> bytes:
    """What ``ctr images export --local --platform <node's>`` gives of a pull."""
    entry = {
        "media_type": oci.OCI_INDEX,
        "platforms": [oci.node_platform()],
        "listed": oci.listed_platforms(),
    }
    return oci.export_archive([(name, entry)], platforms=[oci.node_platform()])


def seeded(tmp_path: Path, *names: str) -> Path:
    images = tmp_path / "agent/images"
    images.mkdir(parents=True)
    for name in names:
        (images / f"{name.rsplit('/', 1)[-1]}.tar").write_bytes(exported(name))
    return images


class Node:
    """One node's containerd across starts: the store persists, as on disk."""

    def __init__(self, tmp_path: Path, version: str) -> None:
        self.data = str(tmp_path / "node")
        self.version = version
        self.infos: list[str] = []
        self.errors: list[str] = []

    def start(self, images: Path) -> tuple[ctr.Containerd, float]:
        daemon = ctr.Containerd(
            self.data, os.path.join(self.data, "none.sock"), k3s_version=self.version
        )
        began = time.monotonic()
        daemon.preload(str(images), self.infos.append, self.errors.append)
        return daemon, time.monotonic() - began

    def imports(self) -> list[str]:
        return [x for x in self.infos if x.startswith("Importing images from")]


def test_before_k3s_10132_an_archive_of_one_platform_fails_to_import(
    tmp_path: Path,
) -> None:
    images = seeded(tmp_path, PAUSE)
    old = Node(tmp_path / "old", "v1.29.5+k3s1")
    daemon, _ = old.start(images)
    path = images / "mirrored-pause:3.6.tar"
    [error] = old.errors
    assert error.startswith(
        f"Error encountered while importing {path}: failed to import images "
        f"from {path}: content digest sha256:"
    )
    assert error.endswith(": not found")
    assert not daemon.has(PAUSE)  # its kubelet pulls it

    fixed = Node(tmp_path / "fixed", "v1.29.6+k3s1")
    daemon, _ = fixed.start(images)
    assert fixed.errors == []
    assert daemon.has(PAUSE)


def test_without_a_cache_file_every_start_imports_every_archive_again(
    tmp_path: Path,
) -> None:
    images = seeded(tmp_path, PAUSE, COREDNS)
    node = Node(tmp_path, "v1.35.5+k3s1")
    for start in (1, 2):
        _, took = node.start(images)
        assert len(node.imports()) == 2 * start
        assert took >= 2 * ctr.IMPORT_SECONDS
    assert not (images / ctr.CACHE_FILE).exists()


def test_an_empty_cache_file_makes_a_restart_import_nothing_unchanged(
    tmp_path: Path,
) -> None:
    images = seeded(tmp_path, PAUSE, COREDNS)
    (images / ctr.CACHE_FILE).write_text("")
    node = Node(tmp_path, "v1.35.5+k3s1")
    daemon, _ = node.start(images)
    assert len(node.imports()) == 2
    assert daemon.has(PAUSE)
    assert daemon.has(COREDNS)
    recorded = json.loads((images / ctr.CACHE_FILE).read_text())
    assert sorted(recorded) == sorted(str(p) for p in images.glob("*.tar"))
    pause = images / "mirrored-pause:3.6.tar"
    assert recorded[str(pause)]["size"] == pause.stat().st_size

    daemon, took = node.start(images)
    assert len(node.imports()) == 2  # none more
    assert took < ctr.IMPORT_SECONDS
    assert daemon.has(PAUSE)

    # A changed archive is imported again; the other is not.
    pause.write_bytes(pause.read_bytes() + b"\0" * 1024)
    node.start(images)
    assert node.imports()[2:] == [f"Importing images from {pause}"]


def test_a_release_before_the_cache_file_ignores_it(tmp_path: Path) -> None:
    images = seeded(tmp_path, PAUSE)
    (images / ctr.CACHE_FILE).write_text("")
    node = Node(tmp_path, "v1.32.4+k3s1")
    node.start(images)
    node.start(images)
    assert len(node.imports()) == 2
    assert (images / ctr.CACHE_FILE).read_text() == ""
