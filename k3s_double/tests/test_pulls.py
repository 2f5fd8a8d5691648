"""Image pulls and ``ctr images export``: as strict as the kubelet and containerd.

No Docker: the containerd double runs in process on a socket under
``tmp_path`` and ``ctr`` runs as a subprocess against it, as a plugin runs it
through ``docker exec``.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from k3s_double.apiserver.server import KubeAPI
from k3s_double.controllers import start_controllers
from k3s_double.controllers.nodes import go_duration_ms
from k3s_double.node import ctr
from k3s_double.node import oci
from k3s_double.node.nodeinfo import node_object
from k3s_double.node.pulls import ImagePuller
from k3s_double.node.pulls import node_images
from k3s_double.tests.conftest import NO_KUBELET
from k3s_double.tests.conftest import wait_for


PAUSE = "docker.io/rancher/mirrored-pause:3.6"
COREDNS = "docker.io/rancher/mirrored-coredns-coredns:1.12.3"
ARCH = oci.node_platform()
OTHER = "linux/arm64" if ARCH != "linux/arm64" else "linux/amd64"


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[ctr.Containerd]:
    daemon = ctr.Containerd(str(tmp_path / "node"), str(tmp_path / "ctr.sock"))
    daemon.start()
    yield daemon
    daemon.stop()


def run_ctr(
    daemon: ctr.Containerd, *args: str, stdin: bytes = b"", k3s: str = ""
) -> subprocess.CompletedProcess[bytes]:
    """``ctr`` against ``daemon``, as the ``ctr`` of k3s release ``k3s`` if given."""
    env = {**os.environ, "CONTAINERD_ADDRESS": daemon.socket_path}
    env.pop("K3S_DOUBLE_VERSION", None)
    if k3s:
        env["K3S_DOUBLE_VERSION"] = k3s
    code = "import sys; from k3s_double.node import ctr; sys.exit(ctr.main(sys.argv))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}


def listed(daemon: ctr.Containerd) -> list[str]:
    done = run_ctr(daemon, "-n", "k8s.io", "images", "ls", "-q")
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().split()


# ---------------------------------------------------------------------------
# pulls


def test_a_pull_records_tag_digest_and_id_and_logs_like_containerd(
    containerd: ctr.Containerd,
) -> None:
    # The double models a pull as 0.2 s (README: "a pull takes a fifth of a
    # second"): a small image from a registry on the same network; real pulls
    # vary, so the value is a model, pinned here so a change is deliberate.
    assert ctr.PULL_SECONDS == 0.2
    image_id = containerd.pull("rancher/mirrored-pause:3.6")
    names = listed(containerd)
    digest = containerd.store.list("k8s.io")[PAUSE]["digest"]
    assert names == sorted(
        [PAUSE, f"docker.io/rancher/mirrored-pause@{digest}", image_id]
    )
    assert image_id.startswith("sha256:")
    log = Path(containerd.log_path).read_text()
    # containerd's own measure of the pull, as its log line reports it.
    took = re.search(r'Pulled image .* in ([0-9.]+)ms"', log)
    assert took is not None
    assert float(took.group(1)) >= 200
    assert 'msg="PullImage \\"rancher/mirrored-pause:3.6\\""' in log
    assert (
        f'msg="PullImage \\"rancher/mirrored-pause:3.6\\" returns image reference '
        f'\\"{image_id}\\""'
    ) in log
    assert (
        f'msg="Pulled image \\"{PAUSE}\\" with image id \\"{image_id}\\", repo tag '
        f'\\"{PAUSE}\\", repo digest \\"docker.io/rancher/mirrored-pause@{digest}\\"'
    ) in log
    # The kubelet reports one image, by digest and tag (not by ID).
    assert node_images(containerd) == [
        {
            "names": [f"docker.io/rancher/mirrored-pause@{digest}", PAUSE],
            "sizeBytes": containerd.store.list("k8s.io")[PAUSE]["size"],
        }
    ]
    table = run_ctr(containerd, "images", "ls").stdout.decode()
    assert "application/vnd.oci.image.index.v1+json" in table
    assert ",".join(oci.listed_platforms()) in table


def finished(containerd: ctr.Containerd) -> list[str]:
    """The repo tags of containerd's ``Pulled image`` lines, in order."""
    log = Path(containerd.log_path).read_text()
    return re.findall(r'msg="Pulled image .*?, repo tag \\"([^"\\]+)\\"', log)


def _pod(uid: str, *containers: tuple[str, str], **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"uid": uid, **meta},
        "spec": {
            "containers": [
                {"name": f"c{i}", "image": image, "imagePullPolicy": policy}
                for i, (image, policy) in enumerate(containers)
            ]
        },
        "status": {"phase": "Pending"},
    }


def test_the_puller_follows_pull_policies_and_pulls_the_sandbox_first(
    containerd: ctr.Containerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctr, "PULL_SECONDS", 0)
    pods: list[dict[str, Any]] = []
    reports: list[list[dict[str, Any]]] = []

    def report(images: list[dict[str, Any]]) -> bool:
        reports.append(images)
        return True

    puller = ImagePuller(containerd, lambda: pods, report)
    puller.sync()
    assert listed(containerd) == []
    assert reports == [[]]  # the first pass reports what the node holds

    pods.append(_pod("a", ("nginx:1.27", "IfNotPresent"), ("busybox", "Always")))
    pods.append(_pod("b", ("ghcr.io/o/never:1", "Never")))
    pods.append(_pod("c", ("ghcr.io/o/gone:1", "IfNotPresent"), deletionTimestamp="x"))
    puller.sync()
    puller.sync()
    pulls = [
        line.split('PullImage \\"')[1].split('\\"')[0]
        for line in Path(containerd.log_path).read_text().splitlines()
        if "PullImage" in line and "returns" not in line
    ]
    # CRI pulls the sandbox image for itself: no PullImage lines, only the
    # "Pulled image" line every pull gets.
    assert pulls == ["nginx:1.27", "busybox:latest"]
    assert finished(containerd) == [
        PAUSE,
        "docker.io/library/nginx:1.27",
        "docker.io/library/busybox:latest",
    ]
    assert len(reports) == 4  # after each pull, at once
    assert {n for e in reports[-1] for n in e["names"]} >= {
        "docker.io/library/nginx:1.27",
        "docker.io/library/busybox:latest",
    }
    # Always pulls again for another pod; present IfNotPresent images never.
    pods.append(_pod("d", ("nginx:1.27", "IfNotPresent"), ("busybox", "Always")))
    puller.sync()
    text = Path(containerd.log_path).read_text()
    assert text.count('PullImage \\"busybox:latest\\" returns') == 2
    assert text.count('PullImage \\"nginx:1.27\\" returns') == 1
    assert finished(containerd).count(PAUSE) == 1


def test_a_custom_pause_image_and_an_imported_one_are_not_pulled(
    containerd: ctr.Containerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctr, "PULL_SECONDS", 0)
    pods = [_pod("a", ("rancher/mirrored-coredns-coredns:1.12.3", "IfNotPresent"))]
    archive = oci.export_archive([(COREDNS, {"platforms": [ARCH], "listed": [ARCH]})])
    assert run_ctr(containerd, "images", "import", "-", stdin=archive).returncode == 0
    puller = ImagePuller(
        containerd, lambda: pods, lambda images: True, "registry.k8s.io/pause:3.10"
    )
    puller.sync()
    text = Path(containerd.log_path).read_text()
    assert "PullImage" not in text
    assert finished(containerd) == ["registry.k8s.io/pause:3.10"]
    assert "coredns" not in text


# ---------------------------------------------------------------------------
# ctr images export


def test_export_writes_an_oci_layout_that_imports_under_the_same_name(
    containerd: ctr.Containerd, tmp_path: Path
) -> None:
    containerd.pull("rancher/mirrored-pause:3.6")
    done = run_ctr(
        containerd, "-n", "k8s.io", "images", "export", "--local", "--platform", ARCH,
        "-", PAUSE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = members(done.stdout)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    [entry] = index["manifests"]
    assert entry["annotations"] == {
        "io.containerd.image.name": PAUSE,
        "org.opencontainers.image.ref.name": "3.6",
    }
    stored = containerd.store.list("k8s.io")[PAUSE]
    assert entry["digest"] == stored["digest"]
    assert entry["mediaType"] == oci.OCI_INDEX
    # Every blob is named by its own digest: index, manifest, config, layer.
    blobs = {n: d for n, d in files.items() if n.startswith("blobs/sha256/")}
    assert len(blobs) == 4
    for name, data in blobs.items():
        assert oci.digest_of(data) == "sha256:" + name.rsplit("/", 1)[1]
    child = next(
        m
        for m in json.loads(blobs[f"blobs/sha256/{entry['digest'][7:]}"])["manifests"]
        if f"{m['platform']['os']}/{m['platform']['architecture']}" == ARCH
    )
    manifest = json.loads(blobs[f"blobs/sha256/{child['digest'][7:]}"])
    config_digest = manifest["config"]["digest"]
    assert f"blobs/sha256/{config_digest[7:]}" in blobs
    assert config_digest == stored["image_id"]
    assert json.loads(files["manifest.json"]) == [
        {
            "Config": f"blobs/sha256/{config_digest[7:]}",
            "RepoTags": ["rancher/mirrored-pause:3.6"],
            "Layers": [f"blobs/sha256/{manifest['layers'][0]['digest'][7:]}"],
        }
    ]
    # To a file, and back in through ctr import and through k3s' preload.
    out = tmp_path / "pause.tar"
    exported = run_ctr(containerd, "images", "export", "--local", str(out), PAUSE)
    assert exported.returncode == 0
    assert out.read_bytes() == done.stdout
    other = ctr.Containerd(str(tmp_path / "other"), str(tmp_path / "other.sock"))
    other.start()
    try:
        imported = run_ctr(other, "images", "import", str(out))
        assert imported.returncode == 0, imported.stderr
        assert listed(other) == [PAUSE]
        assert other.store.list("k8s.io")[PAUSE]["digest"] == stored["digest"]
    finally:
        other.stop()
    seeded = ctr.Containerd(str(tmp_path / "seeded"), str(tmp_path / "seeded.sock"))
    images_dir = tmp_path / "seeded/agent/images"
    images_dir.mkdir(parents=True)
    (images_dir / "pause.tar").write_bytes(out.read_bytes())
    lines: list[str] = []
    seeded.preload(str(images_dir), lines.append)
    assert list(seeded.store.list("k8s.io")) == [PAUSE]
    assert lines[0] == f"Importing images from {images_dir / 'pause.tar'}"
    assert lines[1] == f"Imported {PAUSE}"
    assert not seeded.has("rancher/mirrored-pause:3.7")
    assert seeded.has("rancher/mirrored-pause:3.6")


def test_export_of_several_images_and_without_manifest_json(
    containerd: ctr.Containerd,
) -> None:
    containerd.pull("rancher/mirrored-pause:3.6")
    containerd.pull("rancher/mirrored-coredns-coredns:1.12.3")
    done = run_ctr(
        containerd, "images", "export", "--local", "--skip-manifest-json", "-", PAUSE,
        COREDNS,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = members(done.stdout)
    assert "manifest.json" not in files
    names = [
        m["annotations"]["io.containerd.image.name"]
        for m in json.loads(files["index.json"])["manifests"]
    ]
    assert names == [PAUSE, COREDNS]
    assert [i.name for i in ctr.read_archive(io.BytesIO(done.stdout))] == names


def test_export_is_as_strict_as_containerd(
    containerd: ctr.Containerd, tmp_path: Path
) -> None:
    containerd.pull("rancher/mirrored-pause:3.6")
    out = tmp_path / "out.tar"

    def fails(*args: str) -> str:
        done = run_ctr(containerd, "images", "export", *args)
        assert done.returncode == 1, done
        assert done.stdout == b""
        assert not out.exists()
        return done.stderr.decode()

    # Names are not normalized: only what ``ls -q`` prints exports.
    for name in ("rancher/mirrored-pause:3.6", "docker.io/library/nope:1"):
        assert fails(str(out), name) == f'ctr: image "{name}": not found\n'
    assert fails(str(out), PAUSE, "docker.io/library/nope:1") == (
        'ctr: image "docker.io/library/nope:1": not found\n'
    )
    both = (
        "ctr: please provide both an output filename and an image reference to export\n"
    )
    assert fails(str(out)) == both
    assert fails() == both
    # A pulled image has content for this node's platform only.
    assert "content digest sha256:" in fails("--all-platforms", str(out), PAUSE)
    assert fails("--platform", OTHER, str(out), PAUSE).endswith(": not found\n")
    assert "content digest" in fails(f"--platform={OTHER}", str(out), PAUSE)
    assert "no match for platform" in fails("--platform", "linux/s390x", "-", PAUSE)
    # Flags come before the operands, as Go's flag package parses them.
    assert "not found" in fails(str(out), PAUSE, "--all-platforms")
    assert "flag provided but not defined: -bogus" in fails("--bogus", "-", PAUSE)
    # With a platform it has, and with several, one of which it has: fine.
    assert run_ctr(containerd, "images", "export", "-", PAUSE).returncode == 0
    done = run_ctr(
        containerd, "images", "export", "--platform", "linux/s390x", "--platform",
        ARCH, "-", PAUSE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_containerd_2_exports_through_transfer_and_loses_the_tail_without_local(
    containerd: ctr.Containerd, tmp_path: Path
) -> None:
    containerd.pull("rancher/mirrored-pause:3.6")
    local = run_ctr(containerd, "images", "export", "--local", "-", PAUSE)
    assert local.returncode == 0, local.stderr
    whole = local.stdout
    assert "index.json" in members(whole)
    # ctr exits 0, as containerd 2's does when its copy goroutine lost the end.
    for flags in ((), ("--local=false",), ("-local=0",)):
        streamed = run_ctr(containerd, "images", "export", *flags, "-", PAUSE)
        assert streamed.returncode == 0, streamed.stderr
        assert streamed.stdout == ctr.transfer_loss(whole) != whole
        with pytest.raises(tarfile.TarError):
            members(streamed.stdout)
    # To a file alike: the race is inside ctr, not in the pipe.
    out = tmp_path / "pause.tar"
    assert run_ctr(containerd, "images", "export", str(out), PAUSE).returncode == 0
    assert out.read_bytes() == ctr.transfer_loss(whole)
    for spelling in ("--local=true", "-local", "--local=1"):
        again = run_ctr(containerd, "images", "export", spelling, "-", PAUSE)
        assert again.stdout == whole
    bad = run_ctr(containerd, "images", "export", "--local=yes", "-", PAUSE)
    assert bad.returncode == 1
    assert b"invalid boolean value" in bad.stderr


def test_the_transfer_loses_the_last_chunk_it_read() -> None:
    chunk = ctr.TRANSFER_CHUNK
    assert ctr.transfer_loss(b"") == b""
    assert ctr.transfer_loss(b"x" * (chunk - 1)) == b""
    assert ctr.transfer_loss(b"x" * chunk) == b""
    assert len(ctr.transfer_loss(b"x" * (chunk + 1))) == chunk
    assert len(ctr.transfer_loss(b"x" * (3 * chunk))) == 2 * chunk


def test_containerd_1_7_exports_locally_unless_told_otherwise(tmp_path: Path) -> None:
    old = "v1.30.14+k3s2"
    daemon = ctr.Containerd(
        str(tmp_path / "node"), str(tmp_path / "ctr.sock"), k3s_version=old
    )
    daemon.start()
    try:
        daemon.pull("rancher/mirrored-pause:3.6")
        version = run_ctr(daemon, "version", k3s=old)
        assert b"Version:  v1.7.27-k3s1" in version.stdout
        whole = run_ctr(daemon, "images", "export", "-", PAUSE, k3s=old).stdout
        assert "index.json" in members(whole)
        local = run_ctr(daemon, "images", "export", "--local", "-", PAUSE, k3s=old)
        assert local.stdout == whole
        streamed = run_ctr(
            daemon, "images", "export", "--local=false", "-", PAUSE, k3s=old
        )
        assert streamed.stdout == ctr.transfer_loss(whole)
    finally:
        daemon.stop()


def test_export_fails_without_containerd(tmp_path: Path) -> None:
    daemon = ctr.Containerd(str(tmp_path / "node"), str(tmp_path / "none.sock"))
    done = run_ctr(daemon, "images", "export", "-", PAUSE)
    assert done.returncode == 1
    assert b"connect: no such file or directory" in done.stderr


# ---------------------------------------------------------------------------
# the control plane's kubelet


def test_go_durations() -> None:
    assert go_duration_ms(0) == "0s"
    assert go_duration_ms(0.2125) == "212ms"
    assert go_duration_ms(1.5) == "1.5s"
    assert go_duration_ms(2.0) == "2s"
    assert go_duration_ms(61.25) == "1m1.25s"


def _events(api: KubeAPI, name: str) -> list[tuple[str, str]]:
    return [
        (e["reason"], e["message"])
        for e in api.objects("Event", "default")
        if e["involvedObject"]["name"] == name
    ]


def test_a_pod_waits_in_container_creating_until_its_node_has_the_image(
    api: KubeAPI, core: Any
) -> None:
    body = node_object(
        "quiet", internal_ip="172.18.0.7", labels={NO_KUBELET: ""}, ready=True
    )
    body["status"]["images"] = [  # type: ignore[index]
        {"names": ["docker.io/library/busybox:1.36"], "sizeBytes": 4000}
    ]
    core.create_node(body)
    start_controllers(api)
    wait_for(lambda: api.find("ServiceAccount", "default", "default"))
    containers = [
        {"name": "web", "image": "nginx:1.27"},
        {"name": "side", "image": "busybox:1.36"},
    ]
    core.create_namespaced_pod(
        "default", {"metadata": {"name": "waits"}, "spec": {"containers": containers}}
    )

    def creating() -> Any:
        pod = api.find("Pod", "default", "waits")
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or []
        return statuses if statuses else None

    statuses = wait_for(creating, 5)
    assert {s["state"]["waiting"]["reason"] for s in statuses} == {"ContainerCreating"}
    # A later pod whose image the node has: once it runs, the kubelet
    # controller has passed over "waits" after its start delay too.
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "later"},
            "spec": {"containers": [{"name": "m", "image": "busybox:1.36"}]},
        },
    )
    wait_for(
        lambda: (
            (api.find("Pod", "default", "later") or {}).get("status", {}).get("phase")
            == "Running"
        ),
        5,
    )
    pod = api.find("Pod", "default", "waits")
    assert pod is not None
    assert pod["status"]["phase"] == "Pending"
    assert ("Pulling", 'Pulling image "nginx:1.27"') in _events(api, "waits")
    assert "Pulled" not in [reason for reason, _ in _events(api, "waits")]

    def pulled(node: dict[str, Any]) -> None:
        node["status"]["images"].append(
            {
                "names": [
                    "docker.io/library/nginx@sha256:" + "ab" * 32,
                    "docker.io/library/nginx:1.27",
                ],
                "sizeBytes": 1234,
            }
        )

    api.mutate("Node", "", "quiet", pulled)
    running = wait_for(
        lambda: (
            (api.find("Pod", "default", "waits") or {}).get("status", {}).get("phase")
            == "Running"
        ),
        5,
    )
    assert running
    events = _events(api, "waits")
    messages = dict(events)
    assert messages["Pulling"] == 'Pulling image "nginx:1.27"'
    [web, side] = [m for reason, m in events if reason == "Pulled"]
    assert web.startswith('Successfully pulled image "nginx:1.27" in ')
    assert web.endswith(" including waiting). Image size: 1234 bytes.")
    assert side == 'Container image "busybox:1.36" already present on machine'
    pod = api.find("Pod", "default", "waits")
    assert pod is not None
    assert pod["status"]["containerStatuses"][0]["imageID"] == (
        "docker.io/library/nginx@sha256:" + "ab" * 32
    )


def test_pods_run_once_the_in_process_kubelet_pulled_their_images(
    api: KubeAPI, core: Any, node: str
) -> None:
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "always"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        },
    )
    wait_for(
        lambda: (
            (api.find("Pod", "default", "always") or {}).get("status", {}).get("phase")
            == "Running"
        ),
        10,
    )
    kubelets: Any = api.kubelets  # type: ignore[attr-defined]
    names = kubelets.containerd(node).store.list("k8s.io")
    assert "docker.io/library/busybox:latest" in names
    assert "docker.io/rancher/mirrored-pause:3.6" in names
    reasons = [reason for reason, _ in _events(api, "always")]
    assert reasons[1:] == [
        "Pulling",
        "Pulled",
        "Created",
        "Started",
        "DoubleSimulated",
        "DoubleSimulated",
    ]
