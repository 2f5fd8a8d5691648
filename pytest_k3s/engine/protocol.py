"""What pytest-k3s asks of a container engine: the :class:`Engine` Protocol.

Everything above this package (the start sequence, readiness, node
operations, the run's pools and its clean-up) talks to the engine through
this Protocol alone. :class:`~pytest_k3s.engine.docker_engine.DockerEngine`
is the implementation, :class:`~pytest_k3s.engine.no_engine.NoEngine` the
one an existing cluster has (none), and the tests' fake engine a third: mypy
checks each against it. One engine object is created per process and engine
and passed down; it holds what it learnt about its engine (privileged mode
refused, what its host can grant, how this process reaches its containers).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import IO
from typing import Any
from typing import Protocol

from pytest_k3s import labels
from pytest_k3s.engine.access import Access
from pytest_k3s.engine.node_container import NodeContainer


@dataclass(frozen=True)
class Listed:
    """A container, network or volume as a listing shows it."""

    id: str
    name: str
    labels: Mapping[str, str]


@dataclass
class LogCursor:
    """Where we are in a container's log, plus the lines seen so far (bounded)."""

    since: int = 0
    last: tuple[int, int] = (0, 0)
    #: How many lines stamped ``last`` were taken: Podman stamps to the
    #: second, so many lines share a stamp, and a later read (from that
    #: second on) must skip only those.
    at_last: int = 0
    lines: list[str] = field(default_factory=list)
    keep: int = 200


class Engine(Protocol):
    """A connection to one container engine, with the operations clusters need."""

    @property
    def address(self) -> str:
        """The engine's address, for messages."""

    def close(self) -> None:
        """Let go of the connection."""

    # the engine and its host ------------------------------------------------

    def api_host(self) -> str | None:
        """The remote engine's host name (where ports are published), or None."""

    def access(self) -> Access:
        """How this process reaches cluster APIs on this engine."""

    def join_network(self, network: str) -> None:
        """Connect our own container to ``network`` if we reach APIs through it."""

    def host_warnings(self) -> list[str]:
        """Advice about the engine host's limits (once per engine)."""

    @property
    def privileged_refused(self) -> bool:
        """Whether this engine refused privileged mode (and nodes fell back)."""

    # images ---------------------------------------------------------------

    def has_image(self, image: str) -> bool:
        """Whether ``image`` is present on the engine."""

    def pull_image(self, image: str) -> None:
        """Pull ``image``, or raise ImageUnavailableError saying how to get it."""

    def image_tags(self, repository: str) -> list[str]:
        """The tags of ``repository`` present on the engine (no pull)."""

    def save_image(self, image: str, destination: IO[bytes]) -> None:
        """Write ``docker save image`` to ``destination``, under that reference."""

    def image_platform(self, image: str) -> str:
        """The platform (``linux/<arch>``) of a local image."""

    def image_labels(self, image: str) -> dict[str, str]:
        """The labels of a local image (empty if it has none or is gone)."""

    def push_image(self, image: str, reference: str) -> None:
        """Tag the local ``image`` as ``reference`` and push it there.

        The engine pushes, so ``reference``'s registry is as the engine's
        host reaches it (``localhost:<port>`` is the engine host's).

        :raises ImageUnavailableError: the engine does not have ``image``
        :raises K3sError: the push failed (the message says the registry's
            answer)
        """

    # creating, starting and stopping ---------------------------------------

    def check_free(self, names: Iterable[str]) -> None:
        """Raise NameConflictError if a container or network has one of ``names``."""

    def create_network(self, name: str, network_labels: Mapping[str, str]) -> str:
        """Create a cluster's bridge network with a subnet of its own; return it.

        Nodes get fixed addresses from its lower half
        (:mod:`~pytest_k3s.engine.addressing`).
        """

    def start_node(self, node: NodeContainer, *, privileged: bool | None) -> str:
        """Create and start a node container; return its id.

        ``privileged`` None asks for privileged mode with the capability
        fallback where the engine refuses it.
        """

    def start_proxy(self, container: NodeContainer) -> str:
        """Create and start a plain container (a load balancer, a registry).

        Return its id. It gets the container's name, network, fixed address,
        ports, environment, mounts and files, none of a node's privileges.
        """

    def create_volume(self, name: str, volume_labels: Mapping[str, str]) -> None:
        """Create a labelled named volume; one of that name already there is fine."""

    def remove_volume(self, name: str) -> None:
        """Remove a named volume; gone already is fine."""

    def connect_network(self, container_id: str, network: str) -> None:
        """Connect a container to ``network``; already connected is fine."""

    def stop_container(self, container_id: str, *, timeout: int = 10) -> None:
        """Stop a container (SIGTERM, then SIGKILL after ``timeout`` seconds)."""

    def start_container(self, container_id: str) -> None:
        """Start a stopped container again."""

    # inspection -------------------------------------------------------------

    def environment(self, container_id: str) -> dict[str, str]:
        """The container's environment, as it was created."""

    def labels_of(self, container_id: str) -> dict[str, str]:
        """The container's labels."""

    def state(self, container_id: str) -> Mapping[str, Any]:
        """The container's state (Status, ExitCode, Restarting, ...)."""

    def published_port(self, container_id: str, port: str = "6443/tcp") -> int:
        """The host port the engine published the container's ``port`` on."""

    def containers(self, selector: Mapping[str, str]) -> list[Listed]:
        """Every container whose labels match ``selector`` ("" matches any value)."""

    def networks(self, selector: Mapping[str, str]) -> list[Listed]:
        """Every network whose labels match ``selector`` ("" matches any value)."""

    def labelled(self) -> dict[str, dict[str, str]]:
        """Every cluster that has objects here, with one object's labels.

        The registry mirror's objects (:data:`labels.MIRROR`) are not a
        cluster, and are left out.
        """

    # inside containers -------------------------------------------------------

    def read_file(self, container_id: str, path: str) -> bytes:
        """The contents of ``path`` inside the container (FileNotFoundError if none)."""

    def new_log_lines(self, container_id: str, cursor: LogCursor) -> list[str]:
        """The log lines written since ``cursor``; advances it."""

    def logs(self, container_id: str, *, tail: int | None = None) -> str:
        """The container's log (all of it, or the last ``tail`` lines)."""

    def write_files(self, container_id: str, files: Mapping[str, bytes]) -> None:
        """Write ``files`` (path: content) into a container, running or not."""

    def signal(self, container_id: str, signal: str) -> None:
        """Send ``signal`` (a name such as ``SIGUSR2``) to the container's process."""

    def exec(
        self,
        container_id: str,
        command: Sequence[str],
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
    ) -> tuple[int, str]:
        """Run ``command`` in the container; return its exit code and output."""

    # removal ----------------------------------------------------------------

    def remove_container(self, container_id: str) -> None:
        """Remove a container with its anonymous volumes; gone already is fine."""

    def remove_cluster(self, name: str, *, run: str | None = None) -> list[str]:
        """Remove a cluster's containers, network and volumes (of ``run`` only)."""


def via_network(engine: Engine, api_host: str | None) -> bool:
    """Whether this process reaches cluster APIs on their networks.

    So it is in one of the engine's containers, which joins each cluster's
    network (:meth:`Engine.join_network`); an ``api_host`` given by the user
    means the user knows better, and a remote engine's API is published.
    """
    return (
        api_host is None
        and engine.api_host() is None
        and engine.access().mode == "network"
    )


#: The ROLEs of a cluster's containers that are not nodes.
NOT_NODES = (labels.BALANCER_ROLE, labels.REGISTRY_ROLE)


def node_containers(engine: Engine, cluster: str) -> list[Listed]:
    """The node containers of ``cluster``: its labelled containers but the others.

    A start's capability probe carries its cluster's labels (so a sweep finds
    it) for the second it runs, and the load balancer and the registry for
    the cluster's life; none is a node.
    """
    return [
        found
        for found in engine.containers({labels.CLUSTER: cluster})
        if labels.PROBE not in found.labels
        and found.labels.get(labels.ROLE) not in NOT_NODES
    ]


def balancer_container(engine: Engine, cluster: str) -> Listed | None:
    """The load balancer of ``cluster``, if it has one."""
    return role_container(engine, cluster, labels.BALANCER_ROLE)


def role_container(engine: Engine, cluster: str, role: str) -> Listed | None:
    """The container of ``cluster`` with ``role`` (of :data:`NOT_NODES`), if any."""
    found = engine.containers({labels.CLUSTER: cluster, labels.ROLE: role})
    return found[0] if found else None
