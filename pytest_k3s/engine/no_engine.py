"""The engine of a cluster pytest-k3s did not start: none, and it says so.

A handle on an existing cluster (``--k3s-kubeconfig``,
:meth:`pytest_k3s.K3sCluster.existing`) has no containers: every operation
that would need them raises :class:`~pytest_k3s.errors.NoEngineError`
naming the cluster and what to use instead. Closing it is fine.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import IO
from typing import Any
from typing import NoReturn

from pytest_k3s.engine.access import Access
from pytest_k3s.engine.node_container import NodeContainer
from pytest_k3s.engine.protocol import Listed
from pytest_k3s.engine.protocol import LogCursor
from pytest_k3s.errors import NoEngineError


class NoEngine:
    """The Engine of an existing cluster: each operation raises NoEngineError.

    :param cluster: the cluster's name (its kubeconfig context), for messages
    """

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster

    def _refuse(self, what: str) -> NoReturn:
        raise NoEngineError(
            f"cluster {self.cluster} is an existing cluster (--k3s-kubeconfig / "
            f"K3sCluster.existing): it has no Docker containers, so {what} is not "
            "available; use kubectl or the API"
        )

    @property
    def address(self) -> str:
        """No engine has an address."""
        return "(none: an existing cluster)"

    def close(self) -> None:
        """Nothing to close."""

    def api_host(self) -> str | None:
        """Refused: the kubeconfig names the API."""
        self._refuse("the engine's host")

    def access(self) -> Access:
        """Refused: the kubeconfig says how the API is reached."""
        self._refuse("the engine's network")

    def join_network(self, network: str) -> None:
        """Refused: there is no cluster network."""
        self._refuse("the cluster network")

    def host_warnings(self) -> list[str]:
        """No host to check."""
        return []

    @property
    def privileged_refused(self) -> bool:
        """No engine refused anything."""
        return False

    def has_image(self, image: str) -> bool:
        """Refused: no engine holds images."""
        self._refuse("an image store")

    def image_tags(self, repository: str) -> list[str]:
        """Refused: no engine holds images."""
        self._refuse("an image store")

    def pull_image(self, image: str) -> None:
        """Refused: no engine pulls images."""
        self._refuse("pulling images")

    def save_image(self, image: str, destination: IO[bytes]) -> None:
        """Refused: no engine saves images (so load_image is not available)."""
        self._refuse("load_image")

    def image_platform(self, image: str) -> str:
        """Refused: no engine holds images."""
        self._refuse("load_image")

    def image_labels(self, image: str) -> dict[str, str]:
        """Refused: no engine holds images."""
        self._refuse("reading image labels")

    def push_image(self, image: str, reference: str) -> None:
        """Refused: no engine pushes images (and there is no cluster registry)."""
        self._refuse("pushing images")

    def check_free(self, names: Iterable[str]) -> None:
        """Refused: no engine creates anything."""
        self._refuse("creating containers")

    def create_network(self, name: str, network_labels: Mapping[str, str]) -> str:
        """Refused: no engine creates networks."""
        self._refuse("creating networks")

    def start_proxy(self, container: NodeContainer) -> str:
        """Refused: no engine starts a load balancer."""
        self._refuse("starting a load balancer")

    def create_volume(self, name: str, volume_labels: Mapping[str, str]) -> None:
        """Refused: there are no volumes."""
        self._refuse("creating volumes")

    def remove_volume(self, name: str) -> None:
        """Refused: there are no volumes."""
        self._refuse("removing volumes")

    def connect_network(self, container_id: str, network: str) -> None:
        """Refused: there are no networks."""
        self._refuse("connecting containers to networks")

    def write_files(self, container_id: str, files: Mapping[str, bytes]) -> None:
        """Refused: there are no containers to write into."""
        self._refuse("writing files into nodes")

    def signal(self, container_id: str, signal: str) -> None:
        """Refused: there are no containers to signal."""
        self._refuse("signalling nodes")

    def start_node(self, node: NodeContainer, *, privileged: bool | None) -> str:
        """Refused: nodes of an existing cluster are not ours to add."""
        self._refuse("adding nodes")

    def stop_container(self, container_id: str, *, timeout: int = 10) -> None:
        """Refused: nodes of an existing cluster are not ours to stop."""
        self._refuse("stopping nodes")

    def start_container(self, container_id: str) -> None:
        """Refused: nodes of an existing cluster are not ours to start."""
        self._refuse("starting nodes")

    def environment(self, container_id: str) -> dict[str, str]:
        """Refused: there are no containers."""
        self._refuse("a node's container")

    def labels_of(self, container_id: str) -> dict[str, str]:
        """Refused: there are no containers."""
        self._refuse("a node's container")

    def state(self, container_id: str) -> Mapping[str, Any]:
        """Refused: there are no containers."""
        self._refuse("a node's container state")

    def published_port(self, container_id: str, port: str = "6443/tcp") -> int:
        """Refused: nothing is published (so host_port is not available)."""
        self._refuse("host_port")

    def containers(self, selector: Mapping[str, str]) -> list[Listed]:
        """Refused: there are no containers."""
        self._refuse("listing containers")

    def networks(self, selector: Mapping[str, str]) -> list[Listed]:
        """Refused: there are no networks."""
        self._refuse("listing networks")

    def labelled(self) -> dict[str, dict[str, str]]:
        """Refused: there are no containers."""
        self._refuse("listing clusters")

    def read_file(self, container_id: str, path: str) -> bytes:
        """Refused: there are no containers."""
        self._refuse("reading a node's files")

    def new_log_lines(self, container_id: str, cursor: LogCursor) -> list[str]:
        """Refused: there are no container logs."""
        self._refuse("node logs")

    def logs(self, container_id: str, *, tail: int | None = None) -> str:
        """Refused: there are no container logs."""
        self._refuse("node logs")

    def exec(
        self,
        container_id: str,
        command: Sequence[str],
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
    ) -> tuple[int, str]:
        """Refused: there are no containers to run commands in."""
        self._refuse("running commands in nodes")

    def remove_container(self, container_id: str) -> None:
        """Refused: nodes of an existing cluster are not ours to remove."""
        self._refuse("removing nodes")

    def remove_cluster(self, name: str, *, run: str | None = None) -> list[str]:
        """Refused: an existing cluster is not ours to remove."""
        self._refuse("removing the cluster")
