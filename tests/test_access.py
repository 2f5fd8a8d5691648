"""Detecting a test process in one of the engine's containers, from its files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_k3s.engine.access import Surroundings
from pytest_k3s.engine.access import decide


OURS = "ef28f31f28d59a2761ecfe00ba54696dff548a562628b8014b92fc05af2bb947"
MOUNTINFO = (
    f"172 154 254:0 /var/lib/docker/containers/{OURS}/resolv.conf /etc/resolv.conf "
    "rw,relatime - ext4 /dev/vda rw\n"
    f"173 154 254:0 /var/lib/docker/containers/{OURS}/hostname /etc/hostname "
    "rw,relatime - ext4 /dev/vda rw\n"
)
CGROUP_V1 = f"9:name=systemd:/docker/{OURS}\n8:pids:/docker/{OURS}\n"
CGROUP_SYSTEMD = f"0::/system.slice/docker-{OURS}.scope\n"


def _engine(*known: Mapping[str, Any]) -> Any:
    def inspect(container: str) -> Mapping[str, Any] | None:
        for info in known:
            if str(info["Id"]).startswith(container):
                return info
        return None

    return inspect


def _container(network: str = "bridge", cid: str = OURS) -> dict[str, Any]:
    return {"Id": cid, "HostConfig": {"NetworkMode": network}}


@pytest.mark.parametrize(
    "surroundings",
    [
        Surroundings(marker=True, mountinfo=MOUNTINFO),
        Surroundings(marker=False, mountinfo=MOUNTINFO),  # no /.dockerenv
        Surroundings(marker=True, cgroup=CGROUP_V1),
        Surroundings(marker=False, cgroup=CGROUP_SYSTEMD),
        Surroundings(marker=True, hostname=OURS[:12], cgroup="0::/\n"),
    ],
)
def test_our_container_id_is_found(surroundings: Surroundings) -> None:
    assert surroundings.candidates()[0].startswith(OURS[:12])
    access = decide(surroundings, local=True, inspect=_engine(_container()))
    assert access.mode == "network"
    assert access.container == OURS
    assert "cluster network" in access.describe()


def test_podman_mounts_are_read_too() -> None:
    podman = (
        f"1 2 0:1 /containers/storage/overlay-containers/{OURS}/userdata/hostname "
        "/etc/hostname rw - x y\n"
    )
    assert Surroundings(marker=True, mountinfo=podman).candidates() == [OURS]


def test_on_the_host_nothing_is_a_candidate() -> None:
    host = Surroundings(
        marker=False,
        hostname="abcdefabcdef",  # hex, but no marker: a host's own name
        cgroup="0::/user.slice/user-1000.slice/session-2.scope\n",
        mountinfo="22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n",
    )
    assert host.candidates() == []
    access = decide(host, local=True, inspect=_engine(_container(cid=OURS)))
    assert access.mode == "published"
    assert "do not" not in access.reason  # says where the tests run


def test_a_marker_without_a_container_the_engine_knows_is_no_container() -> None:
    # /.dockerenv, but the engine runs inside our container (Docker-in-Docker,
    # a sandbox): 127.0.0.1 reaches its published ports.
    inside = Surroundings(marker=True, hostname="vm", cgroup="9:pids:/\n")
    assert decide(inside, local=True, inspect=_engine()).mode == "published"
    other = Surroundings(marker=True, mountinfo=MOUNTINFO)
    access = decide(other, local=True, inspect=_engine())  # another engine's id
    assert access.mode == "published"
    assert "does not know" in access.reason


def test_an_id_prefix_of_another_container_is_not_ours() -> None:
    # A name or prefix lookup can return some other container: the id must
    # start with what we read.
    somebody = _container(cid="0" * 64)
    inside = Surroundings(marker=True, hostname=OURS[:12])

    def inspect(container: str) -> Mapping[str, Any]:
        return somebody

    assert decide(inside, local=True, inspect=inspect).mode == "published"


@pytest.mark.parametrize(
    ("network", "says"),
    [("host", "host's network"), ("container:abc", "--k3s-api-host")],
)
def test_containers_that_cannot_join_a_network_use_the_published_port(
    network: str, says: str
) -> None:
    inside = Surroundings(marker=True, mountinfo=MOUNTINFO)
    access = decide(inside, local=True, inspect=_engine(_container(network)))
    assert access.mode == "published"
    assert says in access.reason


def test_a_remote_engine_is_left_to_docker_host() -> None:
    inside = Surroundings(marker=True, mountinfo=MOUNTINFO)
    access = decide(inside, local=False, inspect=_engine(_container()))
    assert access.mode == "published"
    assert "remote" in access.reason


def test_other_containers_mounts_seen_from_the_host_are_not_ours() -> None:
    # Seen on a CI host: a node container's bind mounts propagated to the
    # host's mount table, onto its rootfs. The run took the node for itself,
    # chose the cluster network, and could not resolve server-0's name.
    node = "a1b265e3c6a7b9eb680837193e37966d201de603661386decdea0c306337bae2"
    merged = "/var/lib/docker/overlay2/a8ca5581/merged"
    seen = (
        f"109 71 254:0 /var/lib/docker/containers/{node}/resolv.conf "
        f"{merged}/etc/resolv.conf rw,relatime - ext4 /dev/vda rw\n"
        f"111 71 254:0 /var/lib/docker/containers/{node}/hostname "
        f"{merged}/etc/hostname rw,relatime - ext4 /dev/vda rw\n"
    )
    host = Surroundings(marker=True, hostname="vm", mountinfo=seen)
    assert host.candidates() == []
    access = decide(host, local=True, inspect=_engine({"Id": node}))
    assert access.mode == "published"


def test_surroundings_are_read_from_the_files(tmp_path: Path) -> None:
    (tmp_path / ".dockerenv").touch()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hostname").write_text(OURS[:12] + "\n")
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/mountinfo").write_text(MOUNTINFO)
    read = Surroundings.read(tmp_path)
    assert read.marker
    assert read.hostname == OURS[:12]
    assert read.candidates() == [OURS, OURS[:12]]
    assert Surroundings.read(tmp_path / "nowhere") == Surroundings(marker=False)
