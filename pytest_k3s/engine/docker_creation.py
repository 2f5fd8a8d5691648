"""Creating and starting containers on Docker (part of the Docker engine).

:class:`DockerCreation` is the part of
:class:`~pytest_k3s.engine.docker_engine.DockerEngine` that turns a
:class:`~pytest_k3s.engine.node_container.NodeContainer` into a started
container: privileged, or with the capability set the engine's host can
grant (:mod:`~pytest_k3s.engine.host_policy`); with its fixed address on the
cluster network and concrete host ports
(:mod:`~pytest_k3s.engine.addressing`), chosen again when the engine says
one is taken; and the plain container of a load balancer.
"""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import docker
import docker.errors

from pytest_k3s import labels
from pytest_k3s.engine import addressing
from pytest_k3s.engine import host_policy
from pytest_k3s.engine.access import Access
from pytest_k3s.engine.docker_images import explain
from pytest_k3s.engine.node_container import NodeContainer
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import NameConflictError


#: How often a node is created again when a host port we chose was taken.
PORT_ATTEMPTS = 8


class DockerCreation:
    """Containers made, started, stopped and started again."""

    api: docker.APIClient
    _refused_privileged: bool
    _missing: list[str] | None

    @property
    def address(self) -> str:  # pragma: no cover - the engine's own
        """The engine's address (:class:`DockerEngine` has it)."""
        raise NotImplementedError

    def access(self) -> Access:  # pragma: no cover - the engine's own
        """How this process reaches cluster APIs (:class:`DockerEngine` decides)."""
        raise NotImplementedError

    def api_host(self) -> str | None:  # pragma: no cover - the engine's own
        """The remote engine's host name (:class:`DockerEngine` knows)."""
        raise NotImplementedError

    def remove_container(self, container_id: str) -> None:  # pragma: no cover
        """Remove a container (:class:`DockerEngine` does)."""
        raise NotImplementedError

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
                    _raise_for_limits(exc, concrete.name)
                    raise
                self.remove_container(container_id)
                self._refused_privileged = True
                container_id = self.create_node(concrete, privileged=False)
                try:
                    self.api.start(container_id)
                except docker.errors.APIError as again:
                    self.remove_container(container_id)
                    _raise_for_limits(again, concrete.name)
                    raise
            return container_id

        return self._with_host_ports(node, start)

    def start_proxy(self, container: NodeContainer) -> str:
        """Create and start a plain container (a load balancer, a registry).

        None of a node's privileges: only its name, network, fixed address,
        ports, environment, mounts and files.
        """

        def start(concrete: NodeContainer) -> str:
            try:
                created = self.api.create_container(
                    concrete.image,
                    command=list(concrete.command) or None,
                    name=concrete.name,
                    hostname=concrete.name,
                    labels=dict(concrete.labels),
                    environment=dict(concrete.environment),
                    ports=[(m.container_port, m.protocol) for _, m in concrete.ports],
                    host_config=self.api.create_host_config(
                        port_bindings=_bindings(concrete),
                        binds={
                            source: {"bind": target, "mode": "rw"}
                            for source, target in concrete.mounts.items()
                        },
                        network_mode=concrete.network,
                        restart_policy={"Name": "no"},
                        # The official haproxy image runs as a user: ports
                        # below 1024 (an ingress' 80) need this, which Docker
                        # sets by default and Podman does not.
                        sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
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
        # Ports of our stopped containers are free on the host, but theirs.
        claimed = self._claimed_host_ports() if automatic else set()

        def free(host_ip: str, port: int, protocol: str) -> bool:
            if port in claimed:
                return False
            return addressing.bindable(host_ip, port, protocol) if local else True

        for attempt in range(1, PORT_ATTEMPTS + 1):
            concrete = replace(
                node, ports=addressing.choose_host_ports(node.ports, free)
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

    def _claimed_host_ports(self) -> set[int]:
        """The host ports our containers keep, running or stopped."""
        claimed: set[int] = set()
        for found in self.api.containers(all=True, filters={"label": labels.CLUSTER}):
            try:
                info = self.api.inspect_container(found["Id"])
            except docker.errors.NotFound:
                continue  # removed meanwhile
            bindings = (info.get("HostConfig") or {}).get("PortBindings") or {}
            for entries in bindings.values():
                for entry in entries or ():
                    if str(entry.get("HostPort") or "").isdigit():
                        claimed.add(int(entry["HostPort"]))
        return claimed

    @property
    def privileged_refused(self) -> bool:
        """Whether this engine refused privileged mode (and we fell back)."""
        return self._refused_privileged

    def stop_container(self, container_id: str, *, timeout: int = 10) -> None:
        """Stop a container (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        self.api.stop(container_id, timeout=timeout)

    def start_container(self, container_id: str) -> None:
        """Start a stopped container again (on the host ports it was made with)."""
        try:
            self.api.start(container_id)
        except docker.errors.APIError as exc:
            name = self.api.inspect_container(container_id)["Name"].lstrip("/")
            message = explain(exc)
            hint = (
                ": another process took its host port while it was stopped; free "
                "that port, or remove the cluster and start a new one"
                if addressing.port_taken(message)
                else ""
            )
            raise K3sError(f"Docker could not start {name}: {message}{hint}") from exc


def _raise_for_limits(exc: docker.errors.APIError, name: str) -> None:
    """Explain an engine that cannot apply its own default resource limits.

    Podman gives every container ``nofile`` and ``nproc`` limits from
    ``containers.conf`` (``default_ulimits``; 1048576 open files by default);
    where they exceed the host's hard limits and the runtime lacks
    CAP_SYS_RESOURCE (sandboxed hosts, some CI runners), runc fails with
    "error setting rlimit type 6/7: operation not permitted", whatever the
    container asks.
    """
    message = explain(exc)
    if "error setting rlimit" not in message:
        return
    raise K3sError(
        f"the container engine could not start {name}: {message}. Its default "
        "resource limits exceed this host's hard limits, which it may not raise "
        "here. With Podman, set lower ones in /etc/containers/containers.conf "
        '(e.g. [containers] default_ulimits = ["nofile=16384:16384", '
        '"nproc=16384:16384"]; below `ulimit -Hn` and `ulimit -Hu`) and restart '
        "`podman system service`"
    ) from exc


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
