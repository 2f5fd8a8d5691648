"""The system image cache: which images count, where they go, and the round
trip through nodes: a cluster pulls, saves, and the next one pulls nothing.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from kubernetes.client import CoreV1Api

from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s import SpecError
from pytest_k3s import labels
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.engine.node_container import AIRGAP_DIR
from pytest_k3s.lifecycle import image_cache
from pytest_k3s.lifecycle.containerd import export_command
from pytest_k3s.lifecycle.seeding import IMPORT_CACHE
from pytest_k3s.lifecycle.seeding import forget_seed
from pytest_k3s.lifecycle.seeding import seed_archive
from tests.fake_engine import FakeEngine


#: Where k3s has containerd log, its pulls among them.
CONTAINERD_LOG = "/var/lib/rancher/k3s/agent/containerd/containerd.log"
#: containerd's line for every finished pull, the sandbox image's too (the
#: ``PullImage "..."`` lines are only for the kubelet's requests); the repo
#: tag is the normalized name.
_PULLED = re.compile(
    r'Pulled image \\"[^"\\]+\\" with image id \\"[^"\\]*\\", repo tag \\"([^"\\]+)\\"'
)


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
        # What a test loads or pulls is not k3s's, even from rancher/.
        ("docker.io/library/nginx:1.27", False),
        ("docker.io/rancher/hello-world:latest", False),
        ("docker.io/rancher/local-path-provisioner-test:1", False),
        ("docker.io/rancherlabs/tool:1", False),
        ("ghcr.io/example/rancher/x:1", False),
        ("docker.io/pytest-k3s/app:v1", False),
    ],
)
def test_system_images_are_tagged_rancher_images(ref: str, system: bool) -> None:
    assert image_cache.is_system_image(ref) is system


def test_archive_names_round_trip_through_a_directory(tmp_path: Path) -> None:
    refs = [
        "docker.io/rancher/mirrored-pause:3.6",
        "registry.example.com:5000/rancher/klipper-lb:v0.4.13",
    ]
    for ref in refs:
        name = image_cache.archive_name(ref)
        assert "/" not in name
        assert name.endswith(".tar")
        (tmp_path / name).write_bytes(b"archive")
    # Partial exports and the lock are not archives.
    (tmp_path / ".x.tar.123.partial").write_bytes(b"half")
    (tmp_path / ".lock").write_bytes(b"")
    found = image_cache.archives(tmp_path)
    assert sorted(found) == sorted(refs)
    assert all(path.parent == tmp_path for path in found.values())


def test_a_missing_or_disabled_cache_has_no_archives(tmp_path: Path) -> None:
    assert image_cache.archives(tmp_path / "never-made") == {}
    assert image_cache.archives(None) == {}


def test_each_k3s_image_and_platform_has_its_own_directory(tmp_path: Path) -> None:
    spec = ClusterSpec(image="rancher/k3s:v1.31.4-k3s1", image_cache=str(tmp_path))
    amd = image_cache.directory(spec, "linux/amd64")
    arm = image_cache.directory(spec, "linux/arm/v7")
    other = image_cache.directory(
        ClusterSpec(image="rancher/k3s:v1.32.0-k3s1", image_cache=str(tmp_path)),
        "linux/amd64",
    )
    assert len({amd, arm, other, None}) == 4
    assert amd.parent.parent == tmp_path
    # The short and the full name of one image share a directory.
    same = ClusterSpec(
        image="docker.io/rancher/k3s:v1.31.4-k3s1", image_cache=str(tmp_path)
    )
    assert image_cache.directory(same, "linux/amd64") == amd


def test_the_default_cache_is_under_the_users_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    found = image_cache.directory(ClusterSpec(), "linux/amd64")
    assert found is not None
    assert found.is_relative_to(tmp_path / "pytest-k3s" / "images")


def test_no_cache_when_off_or_when_airgap_images_bring_the_system_images(
    tmp_path: Path,
) -> None:
    archive = tmp_path / "k3s-airgap-images-amd64.tar"
    archive.write_bytes(b"")
    assert image_cache.directory(ClusterSpec(image_cache=False), "linux/amd64") is None
    airgap = ClusterSpec(airgap_images=(str(archive),), image_cache=str(tmp_path))
    assert image_cache.directory(airgap, "linux/amd64") is None


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


def test_exports_run_in_ctr_itself_not_through_the_transfer_service() -> None:
    # containerd 2's transfer path can exit 0 before the archive's end is out.
    command = export_command("linux/amd64", "docker.io/rancher/mirrored-pause:3.6")
    assert command[:6] == ["ctr", "-n", "k8s.io", "images", "export", "--local"]
    assert command[-2:] == ["-", "docker.io/rancher/mirrored-pause:3.6"]


@pytest.mark.parametrize(
    ("image", "image_labels", "release"),
    [
        ("rancher/k3s:v1.29.4-k3s1", {}, (1, 29, 4)),
        ("docker.io/rancher/k3s:v1.30.2-k3s2", {}, (1, 30, 2)),
        ("registry.local:5000/rancher/k3s:v1.27.15-k3s1", {}, (1, 27, 15)),
        ("rancher/k3s:v1.28.9-k3s1@sha256:" + "a" * 64, {}, (1, 28, 9)),
        # The tag wins over a label; a tag that names none leaves it to the label.
        (
            "rancher/k3s:v1.29.4-k3s1",
            {image_cache.VERSION_LABEL: "v1.35.5+k3s1"},
            (1, 29, 4),
        ),
        (
            "pytest-k3s-double:1580829597098eeb",
            {image_cache.VERSION_LABEL: "v1.35.5+k3s1"},
            (1, 35, 5),
        ),
        ("registry.local:5000/k3s", {image_cache.VERSION_LABEL: "1.29.1"}, (1, 29, 1)),
        ("rancher/k3s:latest", {}, None),
        ("rancher/k3s@sha256:" + "b" * 64, {"other": "v1.2.3"}, None),
    ],
)
def test_the_k3s_release_comes_from_the_tag_or_the_version_label(
    image: str, image_labels: dict[str, str], release: tuple[int, ...] | None
) -> None:
    assert image_cache.k3s_release(image, image_labels) == release


@pytest.mark.parametrize(
    ("release", "imports"),
    [
        ((1, 26, 15), False),
        ((1, 27, 14), False),
        ((1, 27, 15), True),
        ((1, 28, 10), False),
        ((1, 28, 11), True),
        ((1, 29, 5), False),
        ((1, 29, 6), True),
        ((1, 30, 1), False),
        ((1, 30, 2), True),
        ((1, 31, 0), True),
        ((1, 35, 5), True),
        ((2, 0, 0), True),
        (None, True),  # unknown: taken for a recent one
    ],
)
def test_only_k3s_since_10132_imports_archives_of_one_platform(
    release: tuple[int, ...] | None, imports: bool
) -> None:
    assert image_cache.imports_single_platform_archives(release) is imports


def test_an_old_k3s_gets_no_cache_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = FakeEngine(images=["rancher/k3s:v1.29.5-k3s1", "k3s:custom"])
    caplog.set_level(logging.INFO, logger=image_cache.__name__)
    old = ClusterSpec(image="rancher/k3s:v1.29.5-k3s1", image_cache=str(tmp_path))
    assert image_cache.directory_for(engine, old) is None
    assert image_cache.directory_for(engine, old) is None
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("image cache off for rancher/k3s:v1.29.5-k3s1: k3s 1.29.5")
    assert "k3s#10132" in line
    # A tag that names no release: the image's label does.
    engine.image_label_values["k3s:custom"] = {image_cache.VERSION_LABEL: "v1.35.5"}
    custom = ClusterSpec(image="k3s:custom", image_cache=str(tmp_path))
    assert image_cache.directory_for(engine, custom) == image_cache.directory(
        custom, "linux/amd64"
    )
    engine.image_label_values["k3s:custom"] = {image_cache.VERSION_LABEL: "v1.28.3"}
    assert image_cache.directory_for(engine, custom) is None
    # Off stays off, without a word.
    caplog.clear()
    off = ClusterSpec(image="rancher/k3s:v1.29.5-k3s1", image_cache=False)
    assert image_cache.directory_for(engine, off) is None
    assert caplog.records == []


def test_the_seed_holds_an_empty_import_cache_file_beside_the_archives(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (
        cache / image_cache.archive_name("docker.io/rancher/mirrored-pause:3.6")
    ).write_bytes(b"archive")
    seed = seed_archive(ClusterSpec(image_cache=str(cache)), cache)
    assert seed is not None
    try:
        with tarfile.open(seed) as tar:
            found = {m.name: m for m in tar.getmembers()}
        marker = found[f"{AIRGAP_DIR.lstrip('/')}/{IMPORT_CACHE}"]
        assert marker.isfile()
        assert marker.size == 0
        assert len(found) == 2
    finally:
        forget_seed(seed)
    # Nothing to seed: no file either (k3s has nothing to import).
    assert seed_archive(ClusterSpec(image_cache=str(cache)), tmp_path / "none") is None


# Through real Docker and the node double -------------------------------------


def pulls(cluster: K3sCluster) -> dict[str, list[str]]:
    """The images each node's containerd pulled, from its log."""
    found = {}
    for node in cluster.nodes:
        code, log = cluster.engine.exec(node.container_id, ["cat", CONTAINERD_LOG])
        assert code == 0, f"{node.name}: {log}"
        found[node.name] = _PULLED.findall(log)
    return found


def pulling_events(cluster: K3sCluster) -> list[str]:
    """``Pulling`` events of the kubelets, in every namespace."""
    events = cluster.kubectl(
        "get", "events", "-A", "--field-selector=reason=Pulling", "-o", "name"
    )
    return events.split()


def wait_for_system_pods(cluster: K3sCluster) -> None:
    """Until every kube-system pod runs (or is done): no pull is under way."""
    core = CoreV1Api(cluster.api_client)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod("kube-system").items
        phases = [str(p.status.phase) for p in pods]
        if phases and all(phase in ("Running", "Succeeded") for phase in phases):
            return
        time.sleep(0.5)
    raise AssertionError(f"kube-system pods not all running: {pods}")


def stamps(cache: Path | None) -> dict[str, int]:
    """Each archive of the cache by reference, with when it was written."""
    return {ref: p.stat().st_mtime_ns for ref, p in image_cache.archives(cache).items()}


def pod(name: str, image: str, *command: str) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": image}
    container["imagePullPolicy"] = "IfNotPresent"
    if command:
        container["command"] = list(command)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [container]},
    }


def platform_of(docker_client: docker.DockerClient, image: str) -> str:
    return f"linux/{docker_client.images.get(image).attrs['Architecture']}"


def test_a_cluster_saves_what_its_nodes_pulled_and_the_next_one_pulls_nothing(
    double_image: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    docker_engine: DockerEngine,
) -> None:
    spec = ClusterSpec(image=double_image, agents=1, image_cache=str(tmp_path))
    cache = image_cache.directory(spec, platform_of(docker_client, double_image))
    with K3sCluster.start(spec, engine=docker_engine) as first:
        # A test's own image is pulled, and never cached.
        first.apply(pod("app", "busybox:1.36", "sleep", "3600"))
        first.wait_for("pod", "app", namespace="default", condition="Ready")
        wait_for_system_pods(first)
        pulled = {ref for refs in pulls(first).values() for ref in refs}
        assert pulling_events(first)
    system = {ref for ref in pulled if image_cache.is_system_image(ref)}
    assert {ref.rpartition(":")[0] for ref in system} >= {
        "docker.io/rancher/mirrored-pause",
        "docker.io/rancher/mirrored-coredns-coredns",
        "docker.io/rancher/local-path-provisioner",
    }
    assert "docker.io/library/busybox:1.36" in pulled
    saved = stamps(cache)
    assert set(saved) == system

    with K3sCluster.start(spec, engine=docker_engine) as second:
        added = second.add_agent()
        assert len(second.nodes) == 3
        # On every node a pod of a system image: each node needs it locally.
        pause = next(ref for ref in system if "/mirrored-pause:" in ref)
        for node in second.nodes:
            on_node = pod(node.name, pause)
            on_node["spec"]["nodeName"] = node.name
            second.apply(on_node)
        for node in second.nodes:
            second.wait_for("pod", node.name, namespace="default", condition="Ready")
        wait_for_system_pods(second)
        for node in second.nodes:
            assert f"Importing images from {AIRGAP_DIR}" in second.logs(node), node.name
        assert pulls(second) == {node.name: [] for node in second.nodes}, added.name
        assert pulling_events(second) == []
    assert stamps(cache) == saved  # nothing new to save, nothing written again


def test_a_cache_in_use_or_unusable_never_fails_a_cluster(
    double_image: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    docker_engine: DockerEngine,
) -> None:
    from filelock import FileLock

    spec = ClusterSpec(image=double_image, image_cache=str(tmp_path))
    cache = image_cache.directory(spec, platform_of(docker_client, double_image))
    assert cache is not None
    cache.mkdir(parents=True)
    # Another process saving into the directory: this one leaves it be.
    with (
        FileLock(str(cache / ".lock")),
        K3sCluster.start(spec, engine=docker_engine) as cluster,
    ):
        wait_for_system_pods(cluster)
        name = cluster.name
    assert stamps(cache) == {}
    assert docker_client.containers.list(all=True, filters={"name": name}) == []
    # A cache path that is a file: no seeding, no saving, no error.
    blocked = ClusterSpec(image=double_image, image_cache=str(tmp_path / "file"))
    (tmp_path / "file").write_text("not a directory")
    with K3sCluster.start(blocked, engine=docker_engine) as cluster:
        wait_for_system_pods(cluster)
        assert pulls(cluster)[cluster.servers[0].name]
    assert (tmp_path / "file").read_text() == "not a directory"


def test_the_run_saves_at_its_end_seeds_the_next_and_can_be_off(
    pytester: pytest.Pytester, double_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = pytester.path / "home-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    pytester.makepyfile(
        """
        def test_uses_a_cluster(k3s_cluster):
            k3s_cluster.wait_for(
                "deploy", "coredns", namespace="kube-system", condition="Available"
            )
        """
    )
    cache = pytester.path / "cache"
    first = pytester.runpytest_subprocess(f"--k3s-image-cache={cache}")
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(
        ["*k3s cluster k3s-*: saved * system image(s) for later clusters*"]
    )
    (directory,) = cache.glob("*/*")
    saved = stamps(directory)
    assert saved
    again = pytester.runpytest_subprocess(f"--k3s-image-cache={cache}")
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(
        [f"*seeding {len(saved)} cached system image(s) from {directory}*"]
    )
    assert "system image(s) for later clusters" not in again.stdout.str()
    assert stamps(directory) == saved
    # Off: nothing seeded, nothing saved, not even in the default place.
    off = pytester.runpytest_subprocess("--k3s-image-cache=off")
    off.assert_outcomes(passed=1)
    assert "system image(s)" not in off.stdout.str()
    assert not (home / "pytest-k3s" / "images").exists()


#: System images the double's nodes pull at start.
SEEDED = (
    "docker.io/rancher/mirrored-pause:3.6",
    "docker.io/rancher/mirrored-coredns-coredns:1.12.3",
    "docker.io/rancher/local-path-provisioner:v0.0.32",
)


def fill(cache: Path | None) -> None:
    """Fill ``cache`` as a cluster's save would (``ctr images export --local``)."""
    from k3s_double.node import oci

    assert cache is not None
    cache.mkdir(parents=True)
    entry = {
        "media_type": oci.OCI_INDEX,
        "platforms": [oci.node_platform()],
        "listed": oci.listed_platforms(),
    }
    for ref in SEEDED:
        data = oci.export_archive([(ref, entry)], platforms=[oci.node_platform()])
        (cache / image_cache.archive_name(ref)).write_bytes(data)


@pytest.fixture
def old_k3s_image(
    docker_client: docker.DockerClient, double_image: str
) -> Iterator[str]:
    """The double claiming k3s v1.29.5, as a tag that names no release."""
    version = "v1.29.5+k3s1"
    dockerfile = (
        f"FROM {double_image}\n"
        f"ENV K3S_DOUBLE_VERSION={version}\n"
        f'LABEL org.opencontainers.image.version="{version}"\n'
    )
    tag = f"pytest-k3s-double-old:{uuid.uuid4().hex[:12]}"
    docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()),
        tag=tag,
        labels={labels.CLUSTER: "image-cache-test"},
        rm=True,
    )
    try:
        yield tag
    finally:
        docker_client.images.remove(tag, force=True)


def test_an_old_k3s_is_not_seeded_so_its_nodes_log_no_import_error(
    old_k3s_image: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    docker_engine: DockerEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = ClusterSpec(image=old_k3s_image, image_cache=str(tmp_path))
    cache = image_cache.directory(spec, platform_of(docker_client, old_k3s_image))
    fill(cache)
    before = stamps(cache)
    caplog.set_level(logging.INFO, logger=image_cache.__name__)
    with K3sCluster.start(spec, engine=docker_engine) as cluster:
        wait_for_system_pods(cluster)
        server = cluster.servers[0]
        assert "Starting k3s v1.29.5+k3s1" in cluster.logs(server)
        log = cluster.logs(server)
        # Seeded, k3s v1.29.5 would fail every archive and pull anyway.
        assert "Error encountered while importing" not in log
        assert "Importing images from" not in log
        assert set(SEEDED) <= set(pulls(cluster)[server.name])
    assert any("image cache off for" in r.getMessage() for r in caplog.records)
    assert stamps(cache) == before  # nor is anything saved


def test_a_restarted_node_does_not_import_its_archives_again(
    double_image: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    docker_engine: DockerEngine,
) -> None:
    spec = ClusterSpec(image=double_image, agents=1, image_cache=str(tmp_path))
    fill(image_cache.directory(spec, platform_of(docker_client, double_image)))
    with K3sCluster.start(spec, engine=docker_engine) as cluster:
        agent = cluster.node("agent-0")
        first = cluster.logs(agent).count("Importing images from")
        assert first == len(SEEDED)
        cluster.restart_node("agent-0")
        log = cluster.logs(agent)
        assert log.count("Starting k3s agent") == 2
        # Without the .cache.json seeded beside them, k3s imports all again.
        assert log.count("Importing images from") == first
        assert "Error encountered while importing" not in log
