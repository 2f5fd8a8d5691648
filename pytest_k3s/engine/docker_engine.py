"""The Docker engine: :class:`DockerEngine`, the docker-SDK Engine.

It turns node descriptions into labelled containers on a labelled network
and removes them again; its mixins read files and logs out of containers
and run commands in them (:mod:`~pytest_k3s.engine.docker_containers`) and
handle images (:mod:`~pytest_k3s.engine.docker_images`). It knows nothing
about readiness or Kubernetes. What it learns about its engine (privileged
mode refused, what the host can grant, how this process reaches its
containers) it keeps as attributes: create one per process and engine with
:meth:`DockerEngine.connect`, and pass it down.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors

from pytest_k3s import labels
from pytest_k3s.engine import addressing
from pytest_k3s.engine import host_policy
from pytest_k3s.engine.access import Access
from pytest_k3s.engine.access import Surroundings
from pytest_k3s.engine.access import decide
from pytest_k3s.engine.docker_containers import DockerContainers
from pytest_k3s.engine.docker_images import DockerImages
from pytest_k3s.engine.docker_images import explain
from pytest_k3s.engine.docker_networks import DockerNetworks
from pytest_k3s.engine.node_container import NodeContainer
from pytest_k3s.engine.protocol import Listed
from pytest_k3s.errors import DockerUnavailableError
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import NameConflictError


#: How often a node is created again when a host port we chose was taken.
PORT_ATTEMPTS = 8


class DockerEngine(DockerImages, DockerNetworks, DockerContainers):
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

    # creation ---------------------------------------------------------------

    def check_free(self, names: Iterable[str]) -> None:
        """Raise NameConflictError if a container or network has one of ``names``."""
        for name in names:
            exact: dict[str, Any] = {"name": f"^{name}$"}
            for kind, found in (
                ("container", self.api.containers(all=True, filters=exact)),
                ("network", self.api.networks(filters=exact)),
            ):
                if found:
                    raise NameConflictError(
                        f"a {kind} named {name!r} already exists on the Docker "
                        f"engine at {self.address}; remove it ('docker rm -f "
                        f"{name}' / 'docker network rm {name}') or choose "
                        "another cluster name"
                    )

    def create_node(self, node: NodeContainer, *, privileged: bool) -> str:
        """Create (not start) a node container and copy its files in; return its id.

        In the capability fallback the node drops what the engine cannot
        grant (:meth:`missing_capabilities`); a name the engine rejects as
        unknown is left out and the create tried again. Its ports must have
        concrete host ports by now (:meth:`start_node` chooses them).
        """
        try:
            if privileged:
                container = self._create(node, True, None)
            else:
                cap_drop = self.missing_capabilities(node)
                try:
                    container = host_policy.without_unknown_names(
                        lambda drop: self._create(node, False, drop), cap_drop, explain
                    )
                finally:
                    self._missing = cap_drop  # less what the engine rejected
        except docker.errors.APIError as exc:
            raise K3sError(
                f"Docker could not create node {node.name}: {explain(exc)}"
            ) from exc
        container_id = str(container["Id"])
        self._copy_in(container_id, node)
        return container_id

    def _copy_in(self, container_id: str, node: NodeContainer) -> None:
        self.write_files(container_id, node.files)
        if node.seed_archive:
            with open(node.seed_archive, "rb") as stream:  # streamed, not read whole
                self.api.put_archive(container_id, "/", stream)

    def write_files(self, container_id: str, files: Mapping[str, bytes]) -> None:
        """Write ``files`` (path: content) into a container, running or not."""
        for path, data in files.items():
            self.api.put_archive(container_id, "/", _tar_of(path, data))

    def signal(self, container_id: str, signal: str) -> None:
        """Send ``signal`` (a name such as ``SIGUSR2``) to the container's process."""
        self.api.kill(container_id, signal=signal)

    def _create(
        self, node: NodeContainer, privileged: bool, cap_drop: list[str] | None
    ) -> dict[str, Any]:
        restart: dict[str, Any] = {"Name": "no"}
        if node.restart_retries:
            restart = {"Name": "on-failure", "MaximumRetryCount": node.restart_retries}
        options = host_policy.privilege_options(
            privileged, cap_drop=cap_drop, local=self.api_host() is None
        )
        unmask = options.pop("unmask", False)
        entrypoint = options.pop("entrypoint", None)
        # Pinned rather than left to daemon defaults (as kind and k3d do): an
        # init process would take PID 1 from k3s, which then stays in the
        # root cgroup (fatal for the kubelet on cgroup v2); a host cgroup
        # namespace changes what k3s sees; userns-remap breaks privileges.
        host_config = self.api.create_host_config(
            port_bindings=_bindings(node),
            tmpfs={"/run": "", "/var/run": ""},
            restart_policy=restart,
            network_mode=node.network,
            init=False,
            cgroupns="private",
            userns_mode="host",
            **options,
        )
        if unmask:
            # What `docker run --security-opt systempaths=unconfined` sends.
            host_config["MaskedPaths"] = []
            host_config["ReadonlyPaths"] = []
        created: dict[str, Any] = self.api.create_container(
            node.image,
            command=list(node.command),
            entrypoint=entrypoint,
            name=node.name,
            hostname=node.name,
            environment=dict(node.environment),
            labels=dict(node.labels),
            ports=[(m.container_port, m.protocol) for _, m in node.ports],
            host_config=host_config,
            networking_config=self._endpoint(node),
        )
        return created

    def _endpoint(self, node: NodeContainer) -> dict[str, Any] | None:
        """The node's fixed address on its network, if it has one."""
        if node.address is None:
            return None
        # What the SDK's create_endpoint_config builds, without its typing.
        endpoint = {"IPAMConfig": {"IPv4Address": node.address}}
        return {"EndpointsConfig": {node.network: endpoint}}

    def missing_capabilities(self, node: NodeContainer) -> list[str]:
        """The capabilities this engine's host cannot grant a container.

        Asked of the engine once (:data:`host_policy.PROBE_SCRIPT`, run in a
        throwaway container of the node's image, which is present by now,
        labelled as the node is so that a sweep or ``rm`` of its cluster
        finds it if this process dies meanwhile), never read from our own
        process: a client in a container has a container's bounding set.
        When the engine cannot be asked, the fallback drops
        :data:`host_policy.FALLBACK_DROP`.
        """
        if self._missing is not None:
            return list(self._missing)
        missing: list[str] | None = None
        probe: str | None = None
        try:
            probe = str(
                self.api.create_container(
                    node.image,
                    ["-c", host_policy.PROBE_SCRIPT],
                    entrypoint=["/bin/sh"],
                    labels={
                        **node.labels,
                        labels.ROLE: "probe",
                        labels.PROBE: "capabilities",
                    },
                    host_config=self.api.create_host_config(
                        pid_mode="host", network_mode="none"
                    ),
                )["Id"]
            )
            self.api.start(probe)
            self.api.wait(probe, timeout=60)
            status = self.api.logs(probe, stdout=True, stderr=False)
            status_text = status.decode("ascii", "replace")
            missing = host_policy.missing_capabilities(status_text)
        except (docker.errors.DockerException, OSError):
            pass  # an engine that refuses the probe's PID namespace, say
        finally:
            if probe is not None:
                self.remove_container(probe)
        if missing is None:
            missing = list(host_policy.FALLBACK_DROP)
        self._missing = missing
        return list(missing)

    def start_node(self, node: NodeContainer, *, privileged: bool | None) -> str:
        """Create and start a node; with ``privileged`` None, fall back if refused.

        Returns the container id. When the daemon refuses privileged mode with
        the error sandboxed hosts give, the container is made again with the
        explicit capability set, and later nodes skip the privileged attempt.
        Ports get concrete host ports (:meth:`_with_host_ports`).
        """

        def start(concrete: NodeContainer) -> str:
            use_privileged = (
                privileged if privileged is not None else not self._refused_privileged
            )
            container_id = self.create_node(concrete, privileged=use_privileged)
            try:
                self.api.start(container_id)
            except docker.errors.APIError as exc:
                if privileged is not None or (
                    host_policy.PRIVILEGE_REFUSED not in str(exc)
                ):
                    self.remove_container(container_id)
                    raise
                self.remove_container(container_id)
                self._refused_privileged = True
                container_id = self.create_node(concrete, privileged=False)
                try:
                    self.api.start(container_id)
                except docker.errors.APIError:
                    self.remove_container(container_id)
                    raise
            return container_id

        return self._with_host_ports(node, start)

    def start_proxy(self, container: NodeContainer) -> str:
        """Create and start a plain container (the load balancer); return its id.

        None of a node's privileges or mounts: only its name, network, fixed
        address, ports and files.
        """

        def start(concrete: NodeContainer) -> str:
            try:
                created = self.api.create_container(
                    concrete.image,
                    command=list(concrete.command),
                    name=concrete.name,
                    hostname=concrete.name,
                    labels=dict(concrete.labels),
                    ports=[(m.container_port, m.protocol) for _, m in concrete.ports],
                    host_config=self.api.create_host_config(
                        port_bindings=_bindings(concrete),
                        network_mode=concrete.network,
                        restart_policy={"Name": "no"},
                    ),
                    networking_config=self._endpoint(concrete),
                )
            except docker.errors.APIError as exc:
                raise K3sError(
                    f"Docker could not create {concrete.name} from image "
                    f"{concrete.image}: {explain(exc)}"
                ) from exc
            container_id = str(created["Id"])
            try:
                self._copy_in(container_id, concrete)
                self.api.start(container_id)
            except BaseException:
                self.remove_container(container_id)
                raise
            return container_id

        return self._with_host_ports(container, start)

    def _with_host_ports(
        self, node: NodeContainer, start: Callable[[NodeContainer], str]
    ) -> str:
        """Run ``start`` with concrete host ports, chosen again if one is taken.

        Docker picks a new host port at every start for a binding without
        one, so we pick it once, here, and it stays the container's. A
        local engine's host is asked whether a port is free; otherwise the
        engine's refusal ("port is already allocated") makes us pick again.
        """
        local = self.api_host() is None and self.access().container is None
        automatic = any(m.host_port is None for _, m in node.ports)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            concrete = replace(
                node,
                ports=addressing.choose_host_ports(
                    node.ports,
                    addressing.bindable if local else lambda *_: True,
                ),
            )
            try:
                return start(concrete)
            except docker.errors.APIError as exc:
                message = explain(exc)
                retry = automatic and attempt < PORT_ATTEMPTS
                if retry and addressing.port_taken(message):
                    continue
                raise K3sError(
                    f"Docker could not start {node.name}: {message}"
                    + (
                        "; a host port given in the spec's ports is taken: "
                        "choose another or free it"
                        if addressing.port_taken(message) and not automatic
                        else ""
                    )
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def privileged_refused(self) -> bool:
        """Whether this engine refused privileged mode (and we fell back)."""
        return self._refused_privileged

    def stop_container(self, container_id: str, *, timeout: int = 10) -> None:
        """Stop a container (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        self.api.stop(container_id, timeout=timeout)

    def start_container(self, container_id: str) -> None:
        """Start a stopped container again."""
        self.api.start(container_id)

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

    def _networks(self, selector: Mapping[str, str]) -> list[Listed]:
        return [
            Listed(n["Id"], n["Name"], n.get("Labels") or {})
            for n in self.api.networks(filters=_label_filter(selector))
        ]

    def _volumes(self, selector: Mapping[str, str]) -> list[Listed]:
        found = self.api.volumes(filters=_label_filter(selector)).get("Volumes")
        return [
            Listed(v["Name"], v["Name"], v.get("Labels") or {}) for v in found or []
        ]

    def labelled(self) -> dict[str, dict[str, str]]:
        """Return every cluster that has objects here, with one object's labels."""
        found: dict[str, dict[str, str]] = {}
        everything = (
            self.containers({labels.CLUSTER: ""})
            + self._networks({labels.CLUSTER: ""})
            + self._volumes({labels.CLUSTER: ""})
        )
        for item in everything:
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
        for network in self._networks(selector):
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


def _bindings(node: NodeContainer) -> dict[int | str, Any]:
    """Docker's port bindings of a node: ``port/proto`` -> (host IP, host port)."""
    return {
        f"{m.container_port}/{m.protocol}": (host_ip, m.host_port)
        for host_ip, m in node.ports
    }


def _tar_of(path: str, data: bytes, mode: int = 0o644) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size = len(data)
        info.mode = mode
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


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
