"""Real pulls in a double node, from a real registry, through the Docker engine.

One server node whose ``registries.yaml`` names a registry container on the
cluster network (Debian's docker-registry with ``registry:2``'s contract,
:mod:`k3s_double.registry_image`), a mirror in front of a name that does
not resolve (a created, never started container), and a rewrite. A tiny
image is built and pushed from the host through the registry's published
port (Docker trusts loopback registries), then pulled by the node.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from docker.models.containers import Container
from kubernetes import client as k8s

from k3s_double.registry_image import ensure_registry_image
from k3s_double.upstream import blob_gets

from .test_node_contract import TOKEN
from .test_node_contract import Cluster
from .test_node_contract import api_client
from .test_node_contract import kubeconfig_for
from .test_node_contract import new_cluster
from .test_node_contract import ours
from .test_node_contract import wait_for_log
from .test_node_contract import wait_until


pytestmark = pytest.mark.docker

REPO = "test/hello"


@dataclass
class Setup:
    cluster: Cluster
    registry: Container
    #: The registry as the node names it: ``<container>:5000``.
    host: str
    #: What the push gave the tag: ``sha256:...`` of the manifest.
    digest: str
    core: Any


def _build_context() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in (
            ("Dockerfile", "FROM scratch\nCOPY hello.txt /hello.txt\n"),
            ("hello.txt", "hello from a real registry\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _push(client: docker.DockerClient, port: int) -> str:
    """Build the test image, push it as ``127.0.0.1:<port>/test/hello:1``."""
    target = f"127.0.0.1:{port}/{REPO}"
    image, _ = client.images.build(
        fileobj=io.BytesIO(_build_context()), custom_context=True, tag=f"{target}:1"
    )
    try:
        for line in client.images.push(target, "1", stream=True, decode=True):
            assert "error" not in line, line
        image.reload()
        digests = [d for d in image.attrs["RepoDigests"] if d.startswith(target)]
        return str(digests[0].partition("@")[2])
    finally:
        client.images.remove(f"{target}:1", force=True)


@pytest.fixture(scope="module")
def setup(docker_client: docker.DockerClient, double_image: str) -> Iterator[Setup]:
    registry_image = ensure_registry_image()
    with new_cluster(docker_client, double_image) as c:
        published: Any = {"5000/tcp": ("127.0.0.1", None)}
        registry = docker_client.containers.run(
            registry_image,
            name=f"{c.name}-registry",
            labels=ours(c.name),
            network=c.network.name,
            ports=published,
            detach=True,
        )
        stopped = docker_client.containers.create(
            registry_image,
            name=f"{c.name}-stopped",
            labels=ours(c.name),
            network=c.network.name,
        )
        registry.reload()
        port = int(
            registry.attrs["NetworkSettings"]["Ports"]["5000/tcp"][0]["HostPort"]
        )
        wait_for_log(registry, "listening on")
        digest = _push(docker_client, port)
        host = f"{registry.name}:5000"
        registries = f"""
mirrors:
  "{host}":
    endpoint: ["http://{host}"]
  upstream.test:5000:
    endpoint:
      - http://{stopped.name}:5000
      - http://{host}
    rewrite:
      "^team/(.*)": "test/$1"
"""
        server = c.run(
            "server", ["server", "--tls-san", "127.0.0.1"], {"K3S_TOKEN": TOKEN},
            publish=True, files={"/etc/rancher/k3s/registries.yaml": registries},
        )  # fmt: skip
        wait_for_log(server, "k3s is up and running")
        c.api = api_client(kubeconfig_for(server))
        yield Setup(c, registry, host, digest, k8s.CoreV1Api(c.api))


def _run_pod(setup: Setup, name: str, image: str) -> None:
    setup.core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": name},
            "spec": {
                "containers": [
                    {"name": "main", "image": image, "command": ["sleep", "3600"]}
                ],
                "terminationGracePeriodSeconds": 0,
            },
        },
    )


def _phase(setup: Setup, name: str) -> str:
    pod = setup.core.read_namespaced_pod(name, "default")
    return str(pod.status.phase)


def _node_log(setup: Setup, path: str) -> str:
    done = setup.cluster.servers[0].exec_run(["cat", path])
    return done.output.decode(errors="replace")


CONTAINERD_LOG = "/var/lib/rancher/k3s/agent/containerd/containerd.log"
IMAGES = "/var/lib/rancher/k3s/agent/containerd/images.json"


def test_a_pod_runs_an_image_pulled_by_tag_and_by_digest(setup: Setup) -> None:
    tagged = f"{setup.host}/{REPO}:1"
    _run_pod(setup, "by-tag", tagged)
    wait_until(lambda: _phase(setup, "by-tag") == "Running", 60, "the pod to run")
    node = setup.core.list_node().items[0]
    entry = next(i for i in node.status.images if tagged in i.names)
    assert f"{setup.host}/{REPO}@{setup.digest}" in entry.names
    stored = json.loads(_node_log(setup, IMAGES))["k8s.io"]
    manifest = stored[tagged]
    assert manifest["digest"] == setup.digest
    assert entry.size_bytes == manifest["size"] > 0
    listed = setup.cluster.servers[0].exec_run(["ctr", "images", "ls", "-q"])
    names = listed.output.decode().split()
    assert tagged in names
    assert manifest["image_id"] in names
    # The registry served the blobs: its access log has their GETs.
    served = blob_gets(setup.registry.logs().decode(), REPO)
    assert sum(served.values()) == 2  # the config and the one layer

    # ctr images export writes the pulled bytes, which import again.
    done = setup.cluster.servers[0].exec_run(
        ["sh", "-c", f"ctr images export --local /tmp/x.tar {tagged} && "
         "ctr -n other images import /tmp/x.tar && ctr -n other images ls -q && "
         "tar -tf /tmp/x.tar"]
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert tagged in done.output.decode().split()
    assert f"blobs/sha256/{setup.digest[7:]}" in done.output.decode().split()

    by_digest = f"{setup.host}/{REPO}@{setup.digest}"
    _run_pod(setup, "by-digest", by_digest)
    wait_until(lambda: _phase(setup, "by-digest") == "Running", 60, "the pod to run")


def test_a_mirror_falls_back_past_a_stopped_one_and_rewrites(setup: Setup) -> None:
    _run_pod(setup, "mirrored", "upstream.test:5000/team/hello:1")
    wait_until(lambda: _phase(setup, "mirrored") == "Running", 60, "the pod to run")
    log = _node_log(setup, CONTAINERD_LOG)
    stopped = f"{setup.cluster.name}-stopped"
    assert 'msg="trying next host" error="failed to do request: Head ' in log
    assert f"lookup {stopped} on " in log
    logs = setup.registry.logs().decode()
    assert f"/v2/{REPO}/manifests/1?ns=upstream.test%3A5000" in logs


def test_an_unreachable_registry_is_err_image_pull_then_back_off(setup: Setup) -> None:
    image = "unreachable.test:5000/app:1"
    _run_pod(setup, "unreachable", image)

    def waiting() -> Any:
        pod = setup.core.read_namespaced_pod("unreachable", "default")
        statuses = pod.status.container_statuses or []
        return statuses[0].state.waiting if statuses else None

    first = wait_until(
        lambda: (w := waiting()) is not None and w.reason == "ErrImagePull" and w,
        30, "ErrImagePull",
    )  # fmt: skip
    prefix = (
        f"rpc error: code = Unknown desc = failed to pull and unpack image "
        f'"{image}": failed to resolve reference "{image}": failed to do request: '
        f'Head "https://unreachable.test:5000/v2/app/manifests/1": dial tcp: '
        "lookup unreachable.test on "
    )
    assert first.message.startswith(prefix)
    assert first.message.endswith(":53: no such host")
    later = wait_until(
        lambda: (w := waiting()) is not None and w.reason == "ImagePullBackOff" and w,
        30, "ImagePullBackOff",
    )  # fmt: skip
    assert later.message == f'Back-off pulling image "{image}"'
    events = setup.core.list_namespaced_event(
        "default", field_selector="involvedObject.name=unreachable"
    ).items
    reasons = [(e.reason, e.message) for e in events]
    assert ("Pulling", f'Pulling image "{image}"') in reasons
    assert any(
        r == "Failed" and m.startswith(f'Failed to pull image "{image}"')
        for r, m in reasons
    )
    assert ("Failed", "Error: ErrImagePull") in reasons
    assert ("BackOff", f'Back-off pulling image "{image}"') in reasons
    assert _phase(setup, "unreachable") == "Pending"


def test_docker_hub_images_without_a_mirror_are_still_simulated(setup: Setup) -> None:
    _run_pod(setup, "hub", "busybox:1.36")
    wait_until(lambda: _phase(setup, "hub") == "Running", 60, "the pod to run")
    assert "busybox" not in setup.registry.logs().decode()
    log = _node_log(setup, CONTAINERD_LOG)
    assert 'Pulled image \\"docker.io/library/busybox:1.36\\"' in log
    assert "trying next host" not in log.split("busybox:1.36")[-1]
