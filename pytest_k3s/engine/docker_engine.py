"""The Docker engine: :class:`DockerEngine`, the docker-SDK Engine.

It finds, inspects and removes labelled containers, networks and volumes;
its mixins create and start containers
(:mod:`~pytest_k3s.engine.docker_creation`), make cluster networks
(:mod:`~pytest_k3s.engine.docker_networks`), read files and logs out of
containers and run commands in them
(:mod:`~pytest_k3s.engine.docker_containers`) and handle images
(:mod:`~pytest_k3s.engine.docker_images`). It knows nothing
about readiness or Kubernetes. What it learns about its engine (privileged
mode refused, what the host can grant, how this process reaches its
containers) it keeps as attributes: create one per process and engine with
:meth:`DockerEngine.connect`, and pass it down.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors

from pytest_k3s import labels
from pytest_k3s.engine import host_policy
from pytest_k3s.engine.access import Access
from pytest_k3s.engine.access import Surroundings
from pytest_k3s.engine.access import decide
from pytest_k3s.engine.docker_containers import DockerContainers
from pytest_k3s.engine.docker_creation import DockerCreation
from pytest_k3s.engine.docker_images import DockerImages
from pytest_k3s.engine.docker_images import explain
from pytest_k3s.engine.docker_networks import DockerNetworks
from pytest_k3s.engine.protocol import Listed
from pytest_k3s.errors import DockerUnavailableError
from pytest_k3s.errors import K3sError


class DockerEngine(DockerImages, DockerNetworks, DockerCreation, DockerContainers):
    """A connection to one Docker engine, with the operations clusters need.

    :param client: a connected ``docker.DockerClient``
    :param surroundings: what this process can read about being in a
        container (default: read it when first needed)
    """

    def __init__(
        self, client: docker.DockerClient, surroundings: Surroundings | None = None
    ) -> None:
        self.client = client
        self.api = client.api
        self._surroundings = surroundings
        self._access: Access | None = None
        self._refused_privileged = False
        #: What the engine's host cannot grant, once asked (or told by a
        #: create that rejected a name).
        self._missing: list[str] | None = None
        self._host_checked = False

    @classmethod
    def connect(cls) -> DockerEngine:
        """Connect to the engine named by the environment (``DOCKER_HOST``)."""
        address = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        try:
            client = docker.from_env(timeout=120)
            client.ping()
        except Exception as exc:
            raise DockerUnavailableError(_unavailable(address, exc)) from exc
        return cls(client)

    def close(self) -> None:
        """Close the connection."""
        self.client.close()

    def api_host(self) -> str | None:
        """Return the remote engine's host name, or None for a local engine.

        Published ports live on the engine's host: for ``tcp://`` and
        ``ssh://`` engines that is another machine, for sockets this one.
        """
        docker_host = os.environ.get("DOCKER_HOST", "")
        parts = urlsplit(docker_host)
        remote = parts.scheme in ("tcp", "ssh", "http", "https")
        if remote and parts.hostname not in (None, "localhost", "127.0.0.1", "::1"):
            return parts.hostname
        return None

    def access(self) -> Access:
        """How this process reaches cluster APIs on this engine (decided once)."""
        if self._access is None:
            local = self.address.startswith("http+docker://localhost")  # a socket
            self._access = decide(
                self._surroundings or Surroundings.read(),
                local=local,
                inspect=self._inspect,
            )
        return self._access

    def _inspect(self, container: str) -> Mapping[str, Any] | None:
        try:
            info: Mapping[str, Any] = self.api.inspect_container(container)
        except docker.errors.APIError:  # not found, or not a container of it
            return None
        return info

    def host_warnings(self) -> list[str]:
        """Advice about the engine host's limits, the first time only.

        Only a local engine's host can be read; a remote one is not checked.
        """
        if self._host_checked or self.api_host() is not None:
            return []
        self._host_checked = True
        warning = host_policy.inotify_warning()
        return [warning] if warning else []

    # inspection ---------------------------------------------------------------

    def environment(self, container_id: str) -> dict[str, str]:
        """The container's environment, as it was created."""
        entries = self.api.inspect_container(container_id)["Config"]["Env"] or []
        return dict(entry.partition("=")[::2] for entry in entries)

    def labels_of(self, container_id: str) -> dict[str, str]:
        """The container's labels."""
        found: dict[str, str] = self.api.inspect_container(container_id)["Config"][
            "Labels"
        ]
        return dict(found or {})

    def state(self, container_id: str) -> Mapping[str, Any]:
        """Return the container's ``State`` (Status, ExitCode, Restarting, ...)."""
        state: Mapping[str, Any] = self.api.inspect_container(container_id)["State"]
        return state

    def published_port(self, container_id: str, port: str = "6443/tcp") -> int:
        """Return the host port Docker chose for the container's ``port``."""
        info = self.api.inspect_container(container_id)
        bindings = (info["NetworkSettings"]["Ports"] or {}).get(port) or []
        if not bindings:
            raise K3sError(f"container {info['Name'][1:]} does not publish {port}")
        return int(bindings[0]["HostPort"])

    # discovery and removal -------------------------------------------------------

    # Listing uses the low-level API: the high-level one inspects every object
    # it lists and fails when another process removes one meanwhile.

    def containers(self, selector: Mapping[str, str]) -> list[Listed]:
        """Return all containers (running or not) whose labels match ``selector``.

        An empty value matches any value of that label.
        """
        return [
            Listed(c["Id"], c["Names"][0].lstrip("/"), c.get("Labels") or {})
            for c in self.api.containers(all=True, filters=_label_filter(selector))
        ]

    def networks(self, selector: Mapping[str, str]) -> list[Listed]:
        """Return all networks whose labels match ``selector``."""
        return [
            Listed(n["Id"], n["Name"], n.get("Labels") or {})
            for n in self.api.networks(filters=_label_filter(selector))
        ]

    def _volumes(self, selector: Mapping[str, str]) -> list[Listed]:
        found = self.api.volumes(filters=_label_filter(selector)).get("Volumes")
        return [
            Listed(v["Name"], v["Name"], v.get("Labels") or {}) for v in found or []
        ]

    def create_volume(self, name: str, volume_labels: Mapping[str, str]) -> None:
        """Create a labelled named volume; one of that name already there is fine."""
        try:
            self.api.create_volume(name, labels=dict(volume_labels))
        except docker.errors.APIError as exc:
            raise K3sError(
                f"Docker could not create volume {name}: {explain(exc)}"
            ) from exc

    def remove_volume(self, name: str) -> None:
        """Remove a named volume; gone already is fine."""
        with contextlib.suppress(docker.errors.NotFound):
            self.api.remove_volume(name, force=True)

    def labelled(self) -> dict[str, dict[str, str]]:
        """Return every cluster that has objects here, with one object's labels."""
        found: dict[str, dict[str, str]] = {}
        everything = (
            self.containers({labels.CLUSTER: ""})
            + self.networks({labels.CLUSTER: ""})
            + self._volumes({labels.CLUSTER: ""})
        )
        for item in everything:
            if labels.MIRROR not in item.labels:
                found.setdefault(item.labels[labels.CLUSTER], dict(item.labels))
        return found

    def remove_container(self, container_id: str) -> None:
        """Remove a container with its anonymous volumes; gone already is fine."""
        try:
            self.api.remove_container(container_id, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if "already in progress" not in str(exc):
                raise

    def remove_cluster(self, name: str, *, run: str | None = None) -> list[str]:
        """Remove the cluster's containers (with volumes), network and volumes.

        Safe to call twice and on a half-created cluster; returns what it
        removed. With ``run``, only objects of that run are removed (a failed
        start must not remove another run's cluster of the same name).
        """
        removed: list[str] = []
        selector = {labels.CLUSTER: name, **({labels.RUN: run} if run else {})}
        containers = self.containers(selector)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(containers)))) as pool:
            list(pool.map(lambda c: self.remove_container(c.id), containers))
        removed += [f"container {c.name}" for c in containers]
        for network in self.networks(selector):
            with contextlib.suppress(docker.errors.NotFound):
                self._remove_network(network.id)
            removed.append(f"network {network.name}")
        for volume in self._volumes(selector):
            with contextlib.suppress(docker.errors.NotFound):
                self.api.remove_volume(volume.id, force=True)
            removed.append(f"volume {volume.name}")
        return removed


def _unavailable(address: str, exc: BaseException) -> str:
    """Say why no engine answers at ``address``, and what to do about it."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, PermissionError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None or "Permission denied" in str(exc):
        return (
            f"permission denied on the Docker engine's socket at {address}: add "
            "your user to the docker group ('sudo usermod -aG docker $USER', then "
            "log in again), or point DOCKER_HOST at a socket you may use"
        )
    return (
        f"no Docker engine answers at {address} ({exc}); start the Docker engine "
        "(e.g. 'systemctl start docker'), or point DOCKER_HOST at one that runs"
    )


def _label_filter(selector: Mapping[str, str]) -> dict[str, list[str]]:
    """A Docker list filter for ``selector``; an empty value matches any value."""
    return {"label": [f"{k}={v}" if v else k for k, v in selector.items()]}


def describe_access() -> str:
    """The report header's line on how cluster APIs are reached, asking the engine.

    For a process that may be in one of the engine's containers.
    """
    try:
        engine = DockerEngine.connect()
    except DockerUnavailableError:
        return "k3s API: undecided (no Docker engine answers)"
    try:
        if engine.api_host() is not None:
            return "k3s API: the published port; the engine is remote (DOCKER_HOST)"
        return engine.access().describe()
    finally:
        engine.close()
