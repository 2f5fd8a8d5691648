"""The example suite, run from inside a container of the engine.

This is how a devcontainer, a GitHub Actions ``container:`` job or a CI job
with the host's Docker socket mounted runs pytest-k3s: the engine's socket
is mounted, and 127.0.0.1 is the container's own loopback. The test starts
such a container from the k3s node double's image (Debian bookworm) with
this interpreter (its installation and its virtual environment, at the same
paths), this checkout and kubectl mounted read-only, and runs ``pytest
examples`` in it: so every Python tox runs tests the in-container path.
Its nodes start in whatever privilege mode the engine allows, from a process
whose own capabilities are a container's.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import docker
import pytest

from conftest import LABEL
from pytest_k3s.labels import OWNER


pytestmark = pytest.mark.docker

CHECKOUT = Path(__file__).resolve().parents[1]
#: Long enough for 2 workers starting a 1+2 cluster in the capability fallback.
TIMEOUT = 600


def _socket() -> Path | None:
    """The local engine's socket, or None when the engine is not reached by one."""
    address = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    parts = urlsplit(address)
    return Path(parts.path) if parts.scheme == "unix" else None


def _made_by(client: docker.DockerClient, host: str) -> set[str]:
    """Our labelled containers and networks whose owner ran on ``host``.

    The run in the container names its container's hostname in its owner
    labels; other sessions on the engine name theirs.
    """
    api = client.api
    found = api.containers(all=True, filters={"label": LABEL})
    found += api.networks(filters={"label": LABEL})
    return {
        str(item.get("Name") or item["Names"][0])
        for item in found
        if (item.get("Labels") or {}).get(OWNER, "").startswith(f"{host}/")
    }


def test_examples_pass_inside_a_container_of_the_engine(
    double_image: str, docker_client: docker.DockerClient
) -> None:
    output = _pytest_in_a_container(
        docker_client, double_image, ["examples"], {}, workers=2
    )
    assert "passed" in output


def test_a_ha_cluster_is_reached_through_its_balancer_from_a_container(
    double_image: str, balancer_image: str, docker_client: docker.DockerClient
) -> None:
    output = _pytest_in_a_container(
        docker_client,
        double_image,
        ["examples/test_deployment.py"],
        {
            "PYTEST_K3S_SERVERS": "3",
            "PYTEST_K3S_AGENTS": "1",
            "PYTEST_K3S_LOAD_BALANCER_IMAGE": balancer_image,
        },
        workers=0,
    )
    assert "1 passed" in output
    assert "3 server(s) + 1 agent(s)" in output
    assert "started load balancer" in output, "its kubeconfig names serverlb:6443"


def _pytest_in_a_container(
    client: docker.DockerClient,
    image: str,
    arguments: list[str],
    environment: dict[str, str],
    *,
    workers: int,
) -> str:
    """Run pytest with ``arguments`` in a container of the engine; return its output.

    It fails the test if pytest fails, if the run did not reach the API
    through the cluster network, or if it left labelled objects behind.
    """
    socket = _socket()
    if socket is None or not socket.exists():
        pytest.skip("the engine is not reached through a local unix socket")
    site = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    volumes = {
        str(socket): {"bind": "/var/run/docker.sock", "mode": "rw"},
        str(CHECKOUT): {"bind": str(CHECKOUT), "mode": "ro"},
        **{path: {"bind": path, "mode": "ro"} for path in site},
        **_interpreter(),
    }
    kubectl = shutil.which("kubectl")
    if kubectl:
        volumes[kubectl] = {"bind": "/usr/local/bin/kubectl", "mode": "ro"}
    command = ["-m", "pytest", *arguments, "-p", "no:randomly"]
    command += ["-p", "no:cacheprovider", "-rA"]
    if workers and _has_xdist():
        command += ["-n", str(workers)]
    container = client.containers.create(
        image,
        command,
        entrypoint=[_python()],
        name=f"pytest-k3s-incontainer-{uuid.uuid4().hex[:8]}",
        working_dir=str(CHECKOUT),
        environment={
            "PYTHONPATH": os.pathsep.join([str(CHECKOUT), *sorted(site)]),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTEST_DEBUG_TEMPROOT": "/tmp",
            "PYTEST_K3S_IMAGE": image,
            "PYTEST_K3S_REQUIRE_DOCKER": "1",
            "DOCKER_HOST": "unix:///var/run/docker.sock",
            **environment,
        },
        volumes=volumes,
        labels={"io.pytest-k3s.test": "in-container"},
    )
    try:
        container.start()
        code = container.wait(timeout=TIMEOUT)["StatusCode"]
        output = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True, v=True)  # the image declares VOLUMEs
    assert code == 0, f"pytest in the container failed:\n{output[-6000:]}"
    assert "k3s API: via the cluster network" in output, output[:3000]
    left = _made_by(client, str(container.id)[:12])  # its default hostname
    assert not left, f"the run in the container left labelled objects: {left}"
    return output


def _interpreter() -> dict[str, dict[str, str]]:
    """Mounts that make this interpreter run in the container, at the same paths.

    The node double's image is Debian bookworm, as are the machines that
    build Python for tox here (pyenv, python.org builds): their shared
    libraries are there. The image's own /usr is left alone: a Debian
    system Python is used as the image's python3, which must then be the
    same version.
    """
    if _in_usr() and sys.version_info[:2] != (3, 11):
        pytest.skip(
            f"this is the system's Python {sys.version_info[0]}.{sys.version_info[1]}"
            " in /usr, and the double's image has 3.11 there"
        )
    return {
        prefix: {"bind": prefix, "mode": "ro"}
        for prefix in {sys.base_prefix, sys.prefix}
        if not Path(prefix).resolve().is_relative_to("/usr")
    }


def _in_usr() -> bool:
    return Path(sys.base_prefix).resolve().is_relative_to("/usr")


def _python() -> str:
    """The interpreter the container runs: this one, unless it is /usr's."""
    return "python3" if _in_usr() and sys.prefix == sys.base_prefix else sys.executable


def _has_xdist() -> bool:
    import importlib.util

    return importlib.util.find_spec("xdist") is not None
