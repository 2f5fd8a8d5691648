"""The example suite on Podman, through its Docker-compatible API.

Podman serves Docker's API on a socket (``podman system service``); users
point ``DOCKER_HOST`` at it. ``.ci/run`` starts one and sets
``PYTEST_K3S_TEST_PODMAN`` to its address; elsewhere these tests are skipped
unless you do the same. The double's and the load balancer's images are
copied from the Docker engine into Podman's store first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from conftest import LABEL
from pytest_k3s.engine.docker_creation import _raise_for_limits
from pytest_k3s.errors import K3sError


PODMAN = "PYTEST_K3S_TEST_PODMAN"
CHECKOUT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def podman() -> Iterator[docker.DockerClient]:
    address = os.environ.get(PODMAN)
    if not address:
        pytest.skip(f"no Podman socket: set {PODMAN}=unix:///path/to/podman.sock")
    client = docker.DockerClient(base_url=address, timeout=300)
    try:
        assert "Podman" in str(client.version().get("Components", "")), "not Podman"
        yield client
    finally:
        client.close()


def _copy_image(
    source: docker.DockerClient, target: docker.DockerClient, ref: str
) -> None:
    try:
        target.images.get(ref)
    except docker.errors.ImageNotFound:
        target.images.load(b"".join(source.images.get(ref).save(named=True)))


@pytest.mark.docker
def test_the_examples_pass_on_podman(
    podman: docker.DockerClient,
    docker_client: docker.DockerClient,
    double_image: str,
    balancer_image: str,
) -> None:
    for ref in (double_image, balancer_image):
        _copy_image(docker_client, podman, ref)
    env = {
        **os.environ,
        "DOCKER_HOST": os.environ[PODMAN],
        "PYTEST_K3S_IMAGE": double_image,
        "PYTEST_K3S_LOAD_BALANCER_IMAGE": balancer_image,
    }
    examples = ["test_deployment.py", "test_nodes.py", "test_workload_access.py"]
    options = ["-n", "2", "-p", "no:randomly", "-p", "no:cacheprovider", "-q"]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *(f"examples/{e}" for e in examples),
            *options,
        ],
        cwd=CHECKOUT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "5 passed" in run.stdout, run.stdout[-2000:]
    left = podman.api.containers(all=True, filters={"label": LABEL})
    left += podman.api.networks(filters={"label": LABEL})
    assert not left, f"left on Podman: {left}"


def test_an_engine_that_cannot_apply_its_limits_is_explained() -> None:
    refused = docker.errors.APIError(
        "500 Server Error",
        explanation="runc: runc create failed: unable to start container "
        "process: error during container init: error setting rlimits for ready "
        "process: error setting rlimit type 7: operation not permitted: OCI "
        "permission denied",
    )
    with pytest.raises(K3sError) as caught:
        _raise_for_limits(refused, "k3s-x-server-0")
    message = str(caught.value)
    assert "could not start k3s-x-server-0" in message
    assert "error setting rlimit type 7" in message
    assert "containers.conf" in message
    assert "default_ulimits" in message
    other = docker.errors.APIError("500", explanation="no such image")
    _raise_for_limits(other, "k3s-x-server-0")  # not ours to explain: no raise
