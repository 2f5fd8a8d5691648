"""The Docker engine's images: presence, pulls, ``docker save`` and platforms.

:class:`DockerImages` is the image part of
:class:`~pytest_k3s.engine.docker_engine.DockerEngine`.
"""

from __future__ import annotations

from typing import IO

import docker
import docker.errors

from pytest_k3s.errors import ImageUnavailableError
from pytest_k3s.errors import K3sError


#: ``docker info``'s kernel architecture names, as Go (and platforms) spell them.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


class DockerImages:
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

    def image_tags(self, repository: str) -> list[str]:
        """The tags of ``repository`` present on the engine (no pull)."""
        found: list[str] = []
        for entry in self.api.images(name=repository):
            for reference in entry.get("RepoTags") or ():
                name, _, tag = reference.rpartition(":")
                if name.removeprefix("docker.io/") == repository.removeprefix(
                    "docker.io/"
                ):
                    found.append(tag)
        return found

    def pull_image(self, image: str) -> None:
        """Pull ``image``; raise ImageUnavailableError saying how else to get it."""
        try:
            repository, tag = pull_arguments(image)
            self.api.pull(repository, tag=tag)
        except docker.errors.APIError as exc:
            raise ImageUnavailableError(self._image_hint(image, exc)) from exc

    def _image_hint(self, image: str, exc: Exception) -> str:
        return (
            f"image {image!r} is not available: pulling it failed: "
            f"{explain(exc)}. Provide it on the "
            f"Docker engine at {self.address}: 'docker pull {image}' where a "
            f"registry is reachable, 'docker load -i k3s-image.tar' from a "
            "saved copy, or a registry mirror configured in the engine"
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
            raise self._not_here(image) from exc

    def push_image(self, image: str, reference: str) -> None:
        """Tag the local ``image`` as ``reference`` and push it there.

        The tag stays, as ``docker tag`` and ``docker push`` leave it: a
        test of another xdist worker may be pushing the same image to the
        same (shared) cluster's registry right now.
        """
        repository, tag = pull_arguments(reference)
        try:
            self.api.tag(image, repository, tag)
        except docker.errors.NotFound as exc:
            raise self._not_here(image) from exc
        try:
            # Errors come in the stream (the call itself succeeds).
            for line in self.api.push(repository, tag=tag, stream=True, decode=True):
                if line.get("error"):
                    raise K3sError(
                        f"pushing {image} as {reference} failed: {line['error']}"
                    )
        except docker.errors.APIError as exc:
            raise K3sError(
                f"pushing {image} as {reference} failed: {explain(exc)}"
            ) from exc

    def _not_here(self, image: str) -> ImageUnavailableError:
        return ImageUnavailableError(
            f"image {image!r} is not on the Docker engine at {self.address}; "
            f"build or pull it first ('docker pull {image}')"
        )

    def image_platform(self, image: str) -> str:
        """The platform (``linux/<arch>``) of a local image, e.g. the node image."""
        try:
            info = self.api.inspect_image(image)  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound:  # removed since: the engine's own
            machine = str(self.api.info().get("Architecture", ""))
            return f"linux/{_GOARCH.get(machine, machine or 'amd64')}"
        return f"{info.get('Os') or 'linux'}/{info.get('Architecture') or 'amd64'}"

    def image_labels(self, image: str) -> dict[str, str]:
        """The labels of a local image (empty if it has none or is gone)."""
        try:
            info = self.api.inspect_image(image)  # type: ignore[no-untyped-call]
        except docker.errors.ImageNotFound:
            return {}
        found = (info.get("Config") or {}).get("Labels") or {}
        return {str(key): str(value) for key, value in found.items()}


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
