"""Cluster networks on Docker, with subnets of their own (part of the Docker engine).

:class:`DockerNetworks` is the part of
:class:`~pytest_k3s.engine.docker_engine.DockerEngine` that creates a
cluster's bridge network, connects this process's own container to it, and
removes it. A network gets an explicit subnet, so its nodes can have fixed
addresses (:mod:`~pytest_k3s.engine.addressing`): the engine is asked for
one first (a network created without a subnet gets the next free pool of the
daemon's ``default-address-pools``, so a daemon configured around a VPN's
routes is respected), and the network is then made again with that subnet
pinned. Concurrent runs on this machine do this one at a time (a file lock
per engine); another machine's run can still take the pool in between, and
Docker then refuses the overlap and we ask again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import docker
import docker.errors
import docker.types

from pytest_k3s import userdirs
from pytest_k3s.engine.access import Access
from pytest_k3s.engine.addressing import SUBNET_TAKEN
from pytest_k3s.engine.addressing import dynamic_range
from pytest_k3s.engine.docker_images import explain
from pytest_k3s.errors import K3sError


#: How often a subnet is asked for again when another engine client took it.
SUBNET_ATTEMPTS = 5


class DockerNetworks:
    """The cluster networks of one engine."""

    api: docker.APIClient
    client: docker.DockerClient

    @property
    def address(self) -> str:  # pragma: no cover - the engine's own
        """The engine's address (:class:`DockerEngine` has it)."""
        raise NotImplementedError

    def access(self) -> Access:  # pragma: no cover - the engine's own
        """How this process reaches cluster APIs (:class:`DockerEngine` decides)."""
        raise NotImplementedError

    def create_network(self, name: str, network_labels: Mapping[str, str]) -> str:
        """Create the cluster's bridge network; return its subnet (CIDR)."""
        options = {"com.docker.network.bridge.enable_ip_masquerade": "true"}
        with userdirs.engine_lock(self.address, "networks"):
            for _ in range(SUBNET_ATTEMPTS):
                subnet = self._free_subnet(name, network_labels, options)
                ipam = docker.types.IPAMConfig(
                    pool_configs=[
                        docker.types.IPAMPool(
                            subnet=subnet, iprange=dynamic_range(subnet)
                        )
                    ]
                )
                try:
                    self.api.create_network(
                        name,
                        driver="bridge",
                        labels=dict(network_labels),
                        options=options,
                        ipam=ipam,
                    )
                except docker.errors.APIError as exc:
                    if any(n in explain(exc) for n in SUBNET_TAKEN):
                        continue  # another machine's client took it meanwhile
                    raise K3sError(
                        f"Docker could not create network {name} ({subnet}): "
                        f"{explain(exc)}"
                    ) from exc
                return subnet
        raise K3sError(
            f"Docker could not create network {name}: the subnet it offered was "
            f"taken {SUBNET_ATTEMPTS} times in a row by other clients of the "
            f"engine at {self.address}; try again"
        )

    def _free_subnet(
        self, name: str, network_labels: Mapping[str, str], options: Mapping[str, str]
    ) -> str:
        """Ask the engine for its next free pool: a network made and removed."""
        try:
            created = self.api.create_network(
                name,
                driver="bridge",
                labels=dict(network_labels),
                options=dict(options),
            )
        except docker.errors.APIError as exc:
            raise K3sError(
                f"Docker could not create network {name}: {explain(exc)}; if its "
                "address pools are used up, remove unused networks ('docker "
                "network prune')"
            ) from exc
        try:
            info = self.api.inspect_network(created["Id"])
            configs = (info.get("IPAM") or {}).get("Config") or []
            subnets = [c["Subnet"] for c in configs if ":" not in c.get("Subnet", ":")]
        finally:
            self.api.remove_network(created["Id"])
        if not subnets:
            raise K3sError(
                f"Docker gave network {name} no IPv4 subnet; pytest-k3s needs one "
                "for fixed node addresses"
            )
        return str(subnets[0])

    def join_network(self, network: str) -> None:
        """Connect our own container to ``network`` if we reach APIs through it.

        Its networks are read first: another xdist worker in the same
        container may have connected it already, and Podman answers a second
        connect with 403 "network is already connected" (Docker with "already
        exists"). The network's removal disconnects us again.
        """
        ours = self.access().container
        if ours is None:
            return
        try:
            attached = self.api.inspect_container(ours)["NetworkSettings"]["Networks"]
        except (docker.errors.APIError, KeyError, TypeError):
            attached = {}
        if network in (attached or {}):
            return
        try:
            self._connect(ours, network)
        except docker.errors.APIError as exc:
            raise K3sError(
                f"could not connect this test container ({ours[:12]}) to the "
                f"cluster network {network}: {explain(exc)}; set --k3s-api-host "
                "(and --k3s-api-bind) to an address of the engine's host that "
                "this container reaches"
            ) from exc

    def connect_network(self, container_id: str, network: str) -> None:
        """Connect a container to ``network``; already connected is fine."""
        try:
            self._connect(container_id, network)
        except docker.errors.APIError as exc:
            raise K3sError(
                f"Docker could not connect container {container_id[:12]} to "
                f"network {network}: {explain(exc)}"
            ) from exc

    def _connect(self, container_id: str, network: str) -> None:
        """Connect the container; an answer that it is connected already counts.

        Another worker may have connected it meanwhile: Docker then says
        "already exists", Podman "already connected".
        """
        try:
            self.api.connect_container_to_network(container_id, network)
        except docker.errors.APIError as exc:
            message = explain(exc)
            if "already exists" not in message and "already connected" not in message:
                raise

    def _remove_network(self, network_id: str) -> None:
        # Stragglers (say, a container a user attached) would block removal.
        attached: Mapping[str, Any] = (
            self.api.inspect_network(network_id).get("Containers") or {}
        )
        for container_id in attached:
            with contextlib.suppress(docker.errors.NotFound):
                self.api.disconnect_container_from_network(
                    container_id, network_id, force=True
                )
        self.api.remove_network(network_id)
