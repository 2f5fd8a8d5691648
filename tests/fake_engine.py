"""A fake container engine for unit tests: the Engine Protocol, in memory.

It keeps containers, networks and images in dictionaries, answers listings
by label as Docker does, and plays k3s nodes by their role: a started server
logs k3s's ready lines and writes its kubeconfig, an agent logs that it
registered. A test makes a node crash, stay silent, or refuse privileged
mode by name, and reads back what the engine was asked (``calls``). It runs
no process; what only a real engine can tell is tested against one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import IO
from typing import Any

from pytest_k3s import labels
from pytest_k3s.engine.access import Access
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.engine.no_engine import NoEngine
from pytest_k3s.engine.node_container import KUBECONFIG_OUTPUT
from pytest_k3s.engine.node_container import NodeContainer
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.engine.protocol import Listed
from pytest_k3s.engine.protocol import LogCursor
from pytest_k3s.errors import ImageUnavailableError
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import NameConflictError
from pytest_k3s.run.existing import ExistingPool
from pytest_k3s.run.pool import DockerPool
from pytest_k3s.run.pool import Pool
from pytest_k3s.spec import DEFAULT_LOAD_BALANCER_IMAGE


#: What k3s writes to ``--write-kubeconfig`` (the data need only be present).
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: default
  cluster: {server: "https://127.0.0.1:6443", certificate-authority-data: Q0E=}
users:
- name: default
  user: {client-certificate-data: Q0VSVA==, client-key-data: S0VZ}
contexts:
- name: default
  context: {cluster: default, user: default}
current-context: default
"""

#: What a registry logs once it serves.
LISTENING = 'level=info msg="listening on [::]:5000"'


@dataclass
class FakeContainer:
    """One container: what it was created with, and what it did."""

    id: str
    node: NodeContainer
    privileged: bool | None
    status: str = "created"
    exit_code: int = 0
    log: list[str] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    #: How far its published ports moved (``ports_move``: at every start).
    port_shift: int = 0


class FakeEngine:
    """An in-memory Engine.

    :param images: images present from the start
    :param crash: node names that exit with status 1 when started
    :param silent: node names that start but never log a ready line
    :param refuse_privileged: refuse privileged containers, as sandboxed
        hosts do ("unable to apply caps")
    :param ports_move: publish a container's ports elsewhere at each start
        (an engine that does not keep host ports)
    :param in_container: this process is one of the engine's containers (it
        reaches APIs on the cluster networks)
    """

    def __init__(
        self,
        *,
        images: Iterable[str] = ("k3s:test", DEFAULT_LOAD_BALANCER_IMAGE),
        crash: Iterable[str] = (),
        silent: Iterable[str] = (),
        refuse_privileged: bool = False,
        ports_move: bool = False,
        in_container: bool = False,
    ) -> None:
        self.images = set(images)
        #: Labels of images, by reference (tests set them).
        self.image_label_values: dict[str, dict[str, str]] = {}
        self.crash = set(crash)
        self.silent = set(silent)
        self.refuse_privileged = refuse_privileged
        self.ports_move = ports_move
        self.in_container = in_container
        self.containers_by_id: dict[str, FakeContainer] = {}
        self.network_labels: dict[str, dict[str, str]] = {}
        self.volumes: dict[str, dict[str, str]] = {}
        #: What was pushed where: (local image, reference).
        self.pushed: list[tuple[str, str]] = []
        self.calls: list[str] = []
        self.closed = False
        self._ids = itertools.count(1)
        self._refused = False

    # the engine and its host ------------------------------------------------

    @property
    def address(self) -> str:
        return "fake://engine"

    def close(self) -> None:
        self.closed = True

    def api_host(self) -> str | None:
        return None

    def access(self) -> Access:
        if self.in_container:
            return Access("network", "a fake container", container="fake")
        return Access("published", "the fake engine publishes on 127.0.0.1")

    def join_network(self, network: str) -> None:
        self.calls.append(f"join {network}")

    def host_warnings(self) -> list[str]:
        return []

    @property
    def privileged_refused(self) -> bool:
        return self._refused

    # images -------------------------------------------------------------------

    def has_image(self, image: str) -> bool:
        return image in self.images

    def image_tags(self, repository: str) -> list[str]:
        return [
            i.rpartition(":")[2] for i in self.images if i.startswith(f"{repository}:")
        ]

    def pull_image(self, image: str) -> None:
        self.calls.append(f"pull {image}")
        self.images.add(image)

    def save_image(self, image: str, destination: IO[bytes]) -> None:
        destination.write(f"archive of {image}".encode())

    def image_platform(self, image: str) -> str:
        return "linux/amd64"

    def image_labels(self, image: str) -> dict[str, str]:
        return dict(self.image_label_values.get(image, {}))

    def push_image(self, image: str, reference: str) -> None:
        if image not in self.images:
            raise ImageUnavailableError(f"image {image!r} is not on the fake engine")
        self.images.add(reference)
        self.pushed.append((image, reference))

    # creating, starting and stopping ---------------------------------------

    def check_free(self, names: Iterable[str]) -> None:
        taken = {c.node.name for c in self.containers_by_id.values()} | set(
            self.network_labels
        )
        for name in names:
            if name in taken:
                raise NameConflictError(f"a container named {name!r} already exists")

    def create_network(self, name: str, network_labels: Mapping[str, str]) -> str:
        self.calls.append(f"network {name}")
        self.network_labels[name] = dict(network_labels)
        return f"172.30.{len(self.network_labels)}.0/24"

    def start_proxy(self, container: NodeContainer) -> str:
        found = FakeContainer(f"id{next(self._ids)}", container, None)
        found.files.update(container.files)
        found.status = "running"
        if "REGISTRY_PROXY_REMOTEURL" in container.environment:
            # A registry in pull-through mode: it pings its upstream first.
            if container.name in self.crash:
                found.status, found.exit_code = "exited", 2
                found.log += ['panic: Get "x/v2/": no such host', "goroutine 1"]
            else:
                found.log.append(LISTENING)
        elif container.labels.get(labels.ROLE) == labels.REGISTRY_ROLE:
            if container.name in self.crash:
                found.status, found.exit_code = "exited", 1
                found.log.append('level=fatal msg="the fake registry crashed"')
            else:
                found.log.append(LISTENING)
        self.containers_by_id[found.id] = found
        self.calls.append(f"start {container.name}")
        return found.id

    def create_volume(self, name: str, volume_labels: Mapping[str, str]) -> None:
        self.volumes.setdefault(name, dict(volume_labels))

    def remove_volume(self, name: str) -> None:
        self.volumes.pop(name, None)

    def connect_network(self, container_id: str, network: str) -> None:
        if network not in self.network_labels:
            raise K3sError(f"network {network} not found")
        self.calls.append(f"connect {self.containers_by_id[container_id].node.name}")

    def write_files(self, container_id: str, files: Mapping[str, bytes]) -> None:
        container = self.containers_by_id[container_id]
        container.files.update(files)
        self.calls.append(f"write {container.node.name} {' '.join(sorted(files))}")

    def signal(self, container_id: str, signal: str) -> None:
        self.calls.append(
            f"signal {self.containers_by_id[container_id].node.name} {signal}"
        )

    def start_node(self, node: NodeContainer, *, privileged: bool | None) -> str:
        use = privileged if privileged is not None else not self._refused
        if use and self.refuse_privileged:
            if privileged is not None:
                raise RuntimeError("unable to apply caps: operation not permitted")
            self._refused = True
            use = False
        container = FakeContainer(f"id{next(self._ids)}", node, use)
        container.files.update(node.files)
        self.containers_by_id[container.id] = container
        self.calls.append(f"start {node.name}")
        self._run(container)
        return container.id

    def _run(self, container: FakeContainer) -> None:
        name = container.node.name
        if "REGISTRY_PROXY_REMOTEURL" in container.node.environment:
            container.status = "running"
            container.log.append(LISTENING)
            return
        if name in self.crash:
            container.status, container.exit_code = "exited", 1
            container.log.append('level=fatal msg="the fake node crashed"')
            return
        container.status = "running"
        if name in self.silent:
            return
        if container.node.command[0] == "server":
            container.log += ["containerd is now running", "k3s is up and running"]
            container.files[KUBECONFIG_OUTPUT] = KUBECONFIG.encode()
        else:
            container.log.append('"Successfully registered node" node="x"')

    def stop_container(self, container_id: str, *, timeout: int = 10) -> None:
        self.calls.append(f"stop {self.containers_by_id[container_id].node.name}")
        self.containers_by_id[container_id].status = "exited"

    def start_container(self, container_id: str) -> None:
        container = self.containers_by_id[container_id]
        self.calls.append(f"restart {container.node.name}")
        if self.ports_move:
            container.port_shift += 1
        self._run(container)

    # inspection ---------------------------------------------------------------

    def environment(self, container_id: str) -> dict[str, str]:
        return dict(self.containers_by_id[container_id].node.environment)

    def labels_of(self, container_id: str) -> dict[str, str]:
        return dict(self.containers_by_id[container_id].node.labels)

    def state(self, container_id: str) -> Mapping[str, Any]:
        container = self.containers_by_id[container_id]
        return {"Status": container.status, "ExitCode": container.exit_code}

    def published_port(self, container_id: str, port: str = "6443/tcp") -> int:
        container = self.containers_by_id[container_id]
        if container.status != "running":
            raise K3sError(f"container {container.node.name} does not publish {port}")
        return 40000 + 100 * container.port_shift + int(container_id.removeprefix("id"))

    def containers(self, selector: Mapping[str, str]) -> list[Listed]:
        return [
            Listed(c.id, c.node.name, dict(c.node.labels))
            for c in self.containers_by_id.values()
            if _matches(c.node.labels, selector)
        ]

    def networks(self, selector: Mapping[str, str]) -> list[Listed]:
        return [
            Listed(name, name, tags)
            for name, tags in self.network_labels.items()
            if _matches(tags, selector)
        ]

    def labelled(self) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        objects = [dict(c.node.labels) for c in self.containers_by_id.values()]
        for tags in [*objects, *self.network_labels.values(), *self.volumes.values()]:
            if labels.CLUSTER in tags and labels.MIRROR not in tags:
                found.setdefault(tags[labels.CLUSTER], tags)
        return found

    # inside containers -------------------------------------------------------

    def read_file(self, container_id: str, path: str) -> bytes:
        try:
            return self.containers_by_id[container_id].files[path]
        except KeyError:
            raise FileNotFoundError(path) from None

    def new_log_lines(self, container_id: str, cursor: LogCursor) -> list[str]:
        log = self.containers_by_id[container_id].log
        fresh = log[cursor.since :]
        cursor.since = len(log)
        cursor.lines = (cursor.lines + fresh)[-cursor.keep :]
        return fresh

    def logs(self, container_id: str, *, tail: int | None = None) -> str:
        log = self.containers_by_id[container_id].log
        return "\n".join(log if tail is None else log[-tail:])

    def exec(
        self,
        container_id: str,
        command: Sequence[str],
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
    ) -> tuple[int, str]:
        self.calls.append(f"exec {' '.join(command)}")
        return 0, ""

    # removal ----------------------------------------------------------------

    def remove_container(self, container_id: str) -> None:
        self.containers_by_id.pop(container_id, None)

    def remove_cluster(self, name: str, *, run: str | None = None) -> list[str]:
        selector = {labels.CLUSTER: name, **({labels.RUN: run} if run else {})}
        removed = []
        for listed in self.containers(selector):
            self.remove_container(listed.id)
            removed.append(f"container {listed.name}")
        for network, tags in list(self.network_labels.items()):
            if _matches(tags, selector):
                del self.network_labels[network]
                removed.append(f"network {network}")
        for volume, tags in list(self.volumes.items()):
            if _matches(tags, selector):
                del self.volumes[volume]
                removed.append(f"volume {volume}")
        self.calls.append(f"remove {name}")
        return removed

    # for tests -----------------------------------------------------------------

    def names(self) -> list[str]:
        """The containers, networks and volumes that exist, sorted."""
        containers = [c.node.name for c in self.containers_by_id.values()]
        return sorted([*containers, *self.network_labels, *self.volumes])


def _matches(found: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(
        key in found and (not value or found[key] == value)
        for key, value in selector.items()
    )


#: mypy checks every engine and pool against its Protocol here.
_ENGINES: tuple[type[Engine], ...] = (FakeEngine, DockerEngine, NoEngine)
_POOLS: tuple[type[Pool], ...] = (DockerPool, ExistingPool)


class FakeApi:
    """The Kubernetes API as the readiness layers ask it: ready, or not yet.

    :param not_ready: a reason the nodes are not Ready, or None
    """

    def __init__(self, not_ready: str | None = None) -> None:
        self.not_ready = not_ready
        self.asked: list[str] = []

    def install(self, monkeypatch: Any) -> FakeApi:
        """Answer for ``pytest_k3s.kube.client`` for the rest of the test."""
        from pytest_k3s.kube import client

        def answer(what: str, reason: str | None = None) -> Any:
            def probe(*args: object, **kwargs: object) -> Any:
                self.asked.append(what)
                return (reason, None) if what == "nodes" else reason

            return probe

        monkeypatch.setattr(client, "api_client", lambda config: _Closable())
        monkeypatch.setattr(client, "readyz", answer("readyz"))
        monkeypatch.setattr(client, "nodes_ready", answer("nodes", self.not_ready))
        for name in (
            "default_service_account",
            "coredns_available",
            "delete_node",
            "delete_namespaces",
        ):
            monkeypatch.setattr(client, name, answer(name))
        return self


class _Closable:
    def close(self) -> None:
        pass
