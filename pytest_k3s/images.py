"""Loading local Docker images into the nodes' containerd (``load_image``).

The image is saved from the Docker engine under the exact reference asked
for, imported into each node for the node's own platform (an engine with the
containerd image store saves only the host platform's blobs, so
``--all-platforms`` would fail on a multi-platform index), and the node's
image list is checked for the name the kubelet will look up: containerd's
normalized form, ``docker.io/library/x:tag``.

:class:`ImageOperations` is the image part of the Docker adapter
(:class:`~pytest_k3s.docker_runtime.DockerRuntime` inherits it): presence,
pulls, ``docker save`` and platforms.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO
from typing import TYPE_CHECKING

import docker
import docker.errors

from pytest_k3s.ctr import NAMESPACE
from pytest_k3s.ctr import import_command
from pytest_k3s.ctr import list_command
from pytest_k3s.ctr import normalized_reference
from pytest_k3s.errors import ClusterCommandError
from pytest_k3s.errors import ImageUnavailableError


if TYPE_CHECKING:
    from pytest_k3s.cluster import K3sCluster
    from pytest_k3s.nodes import Node


#: ``docker info``'s kernel architecture names, as Go (and platforms) spell them.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


class ImageOperations:
    """The engine's images: what is there, pulling, saving, platforms."""

    client: docker.DockerClient
    api: docker.APIClient

    @property
    def address(self) -> str:
        """The engine's address as the SDK uses it."""
        return str(self.api.base_url)

    def has_image(self, image: str) -> bool:
        """Whether ``image`` is present on the engine."""
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return False
        return True

    def pull_image(self, image: str) -> None:
        """Pull ``image``; raise ImageUnavailableError saying how else to get it."""
        try:
            repository, tag = pull_arguments(image)
            self.api.pull(repository, tag=tag)
        except docker.errors.APIError as exc:
            raise ImageUnavailableError(self._image_hint(image, exc)) from exc

    def _image_hint(self, image: str, exc: Exception) -> str:
        return (
            f"node image {image!r} is not available: pulling it failed: "
            f"{explain(exc)}. Provide it on the "
            f"Docker engine at {self.address}: 'docker pull {image}' where a "
            f"registry is reachable, 'docker load -i k3s-image.tar' from a "
            "saved copy, or a registry mirror configured in the engine; or "
            "choose another image with --k3s-image / PYTEST_K3S_IMAGE"
        )

    def save_image(self, image: str, destination: IO[bytes]) -> None:
        """Write ``docker save image`` to ``destination``, under that reference.

        The low-level call saves the reference asked for; the high-level
        ``Image.save(named=True)`` names the archive after the image's first
        tag, so an image with two tags would load under the other one.
        """
        try:
            for chunk in self.api.get_image(image):
                destination.write(chunk)
        except docker.errors.NotFound as exc:  # "reference does not exist"
            raise ImageUnavailableError(
                f"image {image!r} is not on the Docker engine at {self.address}; "
                f"build or pull it first ('docker pull {image}')"
            ) from exc

    def image_platform(self, image: str) -> str:
        """The platform (``linux/<arch>``) of a local image, e.g. the node image."""
        try:
            info = self.api.inspect_image(image)  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound:  # removed since: the engine's own
            machine = str(self.api.info().get("Architecture", ""))
            return f"linux/{_GOARCH.get(machine, machine or 'amd64')}"
        return f"{info.get('Os') or 'linux'}/{info.get('Architecture') or 'amd64'}"


def pull_arguments(image: str) -> tuple[str, str]:
    """Split an image reference into the repository and tag (or digest) to pull.

    A digest wins over a tag (``name:tag@sha256:...`` pulls the digest, as
    ``docker pull`` does), a registry's port is not a tag, and no tag means
    ``latest``.
    """
    repository, digest = image.rsplit("@", 1) if "@" in image else (image, "")
    name, _, tag = repository.rpartition(":")
    if not name or "/" in tag:
        name, tag = repository, ""
    return name, digest or tag or "latest"


def explain(exc: BaseException | None) -> str:
    """The engine's own explanation of an API error, or the error as text."""
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc)


def load_image(cluster: K3sCluster, image: str) -> None:
    """Import ``image`` into every node of ``cluster`` (see K3sCluster.load_image)."""
    runtime = cluster.runtime
    expected = normalized_reference(image)
    platform = runtime.image_platform(cluster.spec.image)
    with tempfile.TemporaryDirectory(prefix="pytest-k3s-image-") as directory:
        archive = Path(directory) / "image.tar"
        with archive.open("wb") as stream:
            runtime.save_image(image, stream)

        def load(node: Node) -> None:
            with archive.open("rb") as stream:
                code, output = runtime.exec(
                    node.container_id, import_command(platform), stdin=stream
                )
            if code != 0:
                raise ClusterCommandError(
                    f"importing {image} ({platform}) into node {node.name} "
                    f"failed with exit status {code}: {output.strip()}"
                )
            code, listing = runtime.exec(node.container_id, list_command())
            if "@" not in image and expected not in listing.split():
                raise ClusterCommandError(
                    f"node {node.name} does not list {expected} after importing "
                    f"{image}: its containerd (namespace {NAMESPACE}) "
                    f"lists {', '.join(listing.split()) or 'nothing'} (ctr exit "
                    f"status {code}); check that the image exists for "
                    f"{platform} ('docker image inspect {image}')"
                )

        with ThreadPoolExecutor(max_workers=len(cluster.nodes)) as pool:
            list(pool.map(load, cluster.nodes))
