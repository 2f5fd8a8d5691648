"""What cluster to start: the frozen :class:`ClusterSpec` and its validation.

A spec is a value: hashable, comparable, with no I/O, so equal specs can share
one running cluster. Invalid values raise :class:`~pytest_k3s.errors.SpecError`
when the spec is made, naming the field and what would be valid.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import asdict
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import Literal

from pytest_k3s.errors import SpecError


K3S_REPOSITORY = "rancher/k3s"
DEFAULT_VERSION = "v1.35.5+k3s1"
DEFAULT_IMAGE = f"{K3S_REPOSITORY}:v1.35.5-k3s1"
DEFAULT_TIMEOUT = 180.0
#: The load balancer's image: the official HAProxy image, alpine variant
#: (about 30 MB). HAProxy checks its backends actively (k3d's nginx only
#: notices a dead server when a request to it fails) and reloads its
#: configuration without dropping connections when an agent joins.
DEFAULT_LOAD_BALANCER_IMAGE = "haproxy:3.4.8-alpine"
#: The registry image, for the mirror and clusters' own registries: the
#: official registry (CNCF Distribution), whose pull-through mode proxies one
#: upstream registry per container.
DEFAULT_REGISTRY_IMAGE = "registry:2.8.3"
#: Where a mirror of a registry fetches from, where that is not
#: ``https://<registry>`` (Docker Hub's API is not at docker.io).
REGISTRY_REMOTES = {"docker.io": "https://registry-1.docker.io"}
#: How long kept clusters are spared by the sweep of leftovers (24 hours).
DEFAULT_KEEP_FOR = 24 * 3600.0
#: How long an unused reusable cluster is kept (7 days).
DEFAULT_REUSE_FOR = 7 * 24 * 3600.0

PrivilegeMode = Literal["auto", "privileged", "capabilities"]
PRIVILEGE_MODES: tuple[PrivilegeMode, ...] = ("auto", "privileged", "capabilities")

#: Flags pytest-k3s sets itself; letting users pass them would break joining,
#: the kubeconfig hand-over or the API address.
MANAGED_FLAGS = frozenset(
    {
        "--token",
        "-t",
        "--token-file",
        "--agent-token",
        "--server",
        "-s",
        "--cluster-init",
        "--write-kubeconfig",
        "-o",
        "--https-listen-port",
        "--node-name",
        "--data-dir",
        "-d",
    }
)

#: Environment variables pytest-k3s sets itself, or that stand for the managed
#: flags (k3s reads each as the flag it names).
MANAGED_ENV = frozenset(
    {
        "K3S_TOKEN",
        "K3S_TOKEN_FILE",
        "K3S_AGENT_TOKEN",
        "K3S_URL",
        "K3S_CLUSTER_INIT",
        "K3S_KUBECONFIG_OUTPUT",
        "K3S_NODE_NAME",
        "K3S_DATA_DIR",
    }
)
#: What a spec holds without being part of the cluster's identity: how long
#: and for what we wait, and where system images are cached. Two specs that
#: differ only here share one cluster.
INCIDENTAL_FIELDS = (
    "timeout",
    "wait_for_coredns",
    "image_cache",
    "load_balancer_image",
    "registry_mirror",
    "registry_image",
)

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:[+-](k3s\d+))?$")
#: A release line: ``v1.33`` or ``1.33``.
_MINOR = re.compile(r"^v?(\d+)\.(\d+)$")
#: k3s's channels that name a release: the newest stable and newest overall.
CHANNELS = ("stable", "latest")
_PORT = re.compile(r"^(?:(\d{1,5}):)?(\d{1,5})(?:/(tcp|udp))?$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
#: A registry as image names spell it: ``ghcr.io``, ``localhost:5000``.
_REGISTRY = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$")


def parse_version(text: str) -> tuple[int, int, int, int] | None:
    """``v1.31.4+k3s2`` (``1.31.4``, ``v1.31.4-k3s2``) as numbers; None if not one."""
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    major, minor, patch, k3s = match.groups()
    return int(major), int(minor), int(patch), int((k3s or "k3s1")[3:])


def spell_version(numbers: tuple[int, int, int, int]) -> str:
    """:func:`parse_version`'s numbers as k3s spells them: ``v1.31.4+k3s2``."""
    major, minor, patch, k3s = numbers
    return f"v{major}.{minor}.{patch}+k3s{k3s}"


def is_partial_version(text: str) -> bool:
    """Whether ``text`` names a release line or channel (``v1.33``, ``stable``).

    Such a version is resolved to a full one before a cluster starts
    (:mod:`pytest_k3s.lifecycle.versions`).
    """
    return bool(_MINOR.match(text.strip())) or text.strip() in CHANNELS


def image_for_version(version: str, repository: str = K3S_REPOSITORY) -> str:
    """Map a full k3s version (``v1.31.4+k3s1``, ``1.31.4``) to its image.

    Docker tags cannot hold ``+``, so ``rancher/k3s`` tags use ``-`` instead.
    ``repository`` is where the image is (a registry's mirror of rancher/k3s).
    """
    numbers = parse_version(version)
    if numbers is None:
        raise SpecError(
            f"version {version!r} is not a k3s version; give one like "
            f"{DEFAULT_VERSION!r} (major.minor.patch, optionally +k3sN), a "
            "release line such as 'v1.33', or 'stable' or 'latest'"
        )
    return f"{repository}:{spell_version(numbers).replace('+', '-')}"


def version_of_image(image: str) -> str | None:
    """Return the k3s version an image's tag names (``v1.31.4-k3s1``), or None."""
    numbers = parse_version(image.rpartition(":")[2])
    if numbers is None or "/" in image.rpartition(":")[2]:
        return None
    return spell_version(numbers)


@dataclass(frozen=True)
class PortMapping:
    """A node port published on the Docker host; ``host_port`` None lets Docker pick."""

    container_port: int
    protocol: str = "tcp"
    host_port: int | None = None

    @classmethod
    def parse(cls, value: str | int) -> PortMapping:
        """Parse ``80``, ``"80/udp"`` or ``"8080:80"`` (host:container)."""
        match = _PORT.match(str(value).strip())
        if match is None:
            raise SpecError(
                f"port {value!r} is not valid; use CONTAINER_PORT[/tcp|udp] or "
                "HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. '30080' or '8080:30080'"
            )
        host, container, protocol = match.groups()
        mapping = cls(int(container), protocol or "tcp", int(host) if host else None)
        for port in (mapping.container_port, mapping.host_port):
            if port is not None and not 0 < port < 65536:
                raise SpecError(f"port {value!r} is out of range 1-65535")
        return mapping

    def __str__(self) -> str:
        prefix = f"{self.host_port}:" if self.host_port is not None else ""
        return f"{prefix}{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class RegistryMirror:
    """A pull-through mirror of registries, shared by every cluster on the engine.

    One registry container per upstream registry (``pytest-k3s-mirror-<name>``,
    see :mod:`pytest_k3s.lifecycle.mirror`) outlives runs, and every node's
    ``registries.yaml`` names it first for that registry, so an image is
    fetched from the upstream once per machine, not once per node.

    :param storage: a directory to keep the mirrored blobs in (so CI can
        cache it between jobs), or None for a volume on the engine
    :param image: the registry image (the official one, or one that runs like it)
    :param upstreams: the registries to mirror, as image names spell them
        (``docker.io``, ``ghcr.io``), each optionally ``=URL`` to say where
        its API is (``quay.io=https://quay.io``); by default
        :data:`REGISTRY_REMOTES` or ``https://<registry>``
    """

    storage: str | None = None
    image: str = DEFAULT_REGISTRY_IMAGE
    upstreams: tuple[str, ...] = ("docker.io",)

    def __post_init__(self) -> None:
        storage: object = self.storage
        if storage is not None:
            if not isinstance(storage, str) or not storage.strip():
                raise SpecError(
                    f"registry mirror storage must be a directory, not {self.storage!r}"
                )
            path = os.path.abspath(os.path.expanduser(storage))
            object.__setattr__(self, "storage", path)
        image: object = self.image
        if not isinstance(image, str) or not image or " " in image:
            raise SpecError(
                f"registry mirror image {self.image!r} is not a valid image reference"
            )
        upstreams = _strings("registry mirror upstreams", self.upstreams)
        if not upstreams:
            raise SpecError("a registry mirror needs at least one upstream registry")
        object.__setattr__(self, "upstreams", upstreams)
        self.remotes()  # validates each entry

    def remotes(self) -> tuple[tuple[str, str], ...]:
        """(registry, URL the mirror fetches it from) for every upstream."""
        found: dict[str, str] = {}
        for entry in self.upstreams:
            registry, _, url = (part.strip() for part in entry.partition("="))
            if not _REGISTRY.match(registry):
                raise SpecError(
                    f"registry mirror upstream {entry!r}: {registry!r} is not a "
                    "registry as image names spell it (e.g. docker.io, ghcr.io, "
                    "registry.example.com:5000)"
                )
            url = url or REGISTRY_REMOTES.get(registry, f"https://{registry}")
            if not re.match(r"^https?://[^/\s]+/?$", url):
                raise SpecError(
                    f"registry mirror upstream {entry!r}: {url!r} is not a "
                    "registry URL (http(s)://host[:port])"
                )
            found[registry] = url.rstrip("/")
        return tuple(found.items())


def _strings(name: str, value: object) -> tuple[str, ...]:
    """Accept a sequence of strings, or one string as a sequence of one."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable):
        raise SpecError(f"{name} must be a string or a list of strings, not {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str) or not item:
            raise SpecError(f"{name} must hold non-empty strings; got {item!r}")
    return items


def _ports(value: object) -> tuple[PortMapping, ...]:
    """Accept a sequence of ports, or one port (a string, number or mapping)."""
    if isinstance(value, str | int | PortMapping) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, Iterable):
        raise SpecError(f"ports must be a port or a list of ports, not {value!r}")
    return tuple(_port(p) for p in value)


def _port(value: object) -> PortMapping:
    if isinstance(value, PortMapping):
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        return PortMapping.parse(value)
    raise SpecError(f"port {value!r} is not valid; give a string such as '8080:80'")


def _check_args(name: str, args: tuple[str, ...]) -> None:
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in MANAGED_FLAGS:
            raise SpecError(
                f"{name} may not set {flag}: pytest-k3s manages it for every node "
                "(token, join address, kubeconfig, API port and node names)"
            )


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    """A k3s cluster to start: topology, image, extra arguments, and how to wait.

    :param servers: server nodes (at least 1); more than one uses embedded etcd
    :param agents: agent nodes (0 or more)
    :param image: the node image; defaults to a pinned ``rancher/k3s`` tag
    :param version: shorthand for ``image``: a k3s version such as
        ``v1.31.4+k3s1``; it sets ``image`` and is then cleared (read the
        version back with :attr:`k3s_version`). A release line (``v1.33``)
        or channel (``stable``, ``latest``) stays here until the cluster
        starts, which resolves it to the newest such release
        (:mod:`pytest_k3s.lifecycle.versions`)
    :param server_args: extra ``k3s server`` arguments, e.g. ``("--disable=traefik",)``
    :param agent_args: extra ``k3s agent`` arguments
    :param server_env: extra ``KEY=VALUE`` environment entries for servers
    :param agent_env: extra ``KEY=VALUE`` environment entries for agents
    :param ports: extra node ports to publish (see :class:`PortMapping`): on
        the load balancer, which forwards them to every node, where there is
        one, else on server-0
    :param airgap_images: image archives (``k3s-airgap-images-<arch>.tar``,
        or ``docker save`` output) copied into every node before it starts;
        k3s imports them instead of pulling
    :param image_cache: where the system images the nodes pull are kept and
        seeded into later clusters of the same image
        (:mod:`pytest_k3s.imagecache`): True for this user's cache directory,
        a directory, or False for none. Off when ``airgap_images`` are given
    :param ports_bind: the engine host's address those ports are published
        on: 127.0.0.1 unless you ask for more (``"0.0.0.0"``), since NodePorts
        are often unauthenticated
    :param registries: a k3s ``registries.yaml``, as YAML text or a mapping
    :param privileged: ``auto`` (privileged, falling back to an explicit
        capability set where the host refuses privileged mode),
        ``privileged`` or ``capabilities``
    :param timeout: seconds the start-up may take once the image is present
    :param wait_for_coredns: also wait until CoreDNS is available
    :param api_host: the address the kubeconfig uses; None derives it from the
        Docker address (127.0.0.1 for a local engine)
    :param api_bind: the host address the API port is published on; None is
        127.0.0.1 for a local engine and 0.0.0.0 for a remote one
    :param load_balancer: put a load balancer in front of the servers' API
        (and the ``ports``, forwarded to every node) that the kubeconfig
        names, so that the API outlives any one server; None (the default)
        means: when there is more than one server
    :param load_balancer_image: the load balancer's image (HAProxy's
        official image, or one that runs like it)
    :param registry_mirror: pull workload images through the engine's shared
        pull-through mirror (:class:`RegistryMirror`), or None. Nodes fall
        back to the upstream when it fails, so it changes speed, not results
    :param registry: give the cluster a registry of its own for the user's
        images (``<name>-registry``, see :mod:`pytest_k3s.lifecycle.registry`),
        reached as :attr:`pytest_k3s.K3sCluster.registry`
    :param registry_image: that registry's image (the official ``registry``
        image, or one that runs like it)
    """

    servers: int = 1
    agents: int = 0
    image: str = DEFAULT_IMAGE
    version: str | None = None
    server_args: tuple[str, ...] = ()
    agent_args: tuple[str, ...] = ()
    server_env: tuple[str, ...] = ()
    agent_env: tuple[str, ...] = ()
    ports: tuple[PortMapping, ...] = ()
    ports_bind: str = "127.0.0.1"
    airgap_images: tuple[str, ...] = ()
    image_cache: bool | str = True
    #: Left out of repr: registries.yaml may hold credentials.
    registries: str | Mapping[str, Any] | None = field(default=None, repr=False)
    privileged: PrivilegeMode = "auto"
    timeout: float = DEFAULT_TIMEOUT
    wait_for_coredns: bool = True
    api_host: str | None = None
    api_bind: str | None = None
    load_balancer: bool | None = None
    load_balancer_image: str = DEFAULT_LOAD_BALANCER_IMAGE
    registry_mirror: RegistryMirror | None = None
    registry: bool = False
    registry_image: str = DEFAULT_REGISTRY_IMAGE

    def __post_init__(self) -> None:
        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        for name in ("servers", "agents"):
            count = getattr(self, name)
            if isinstance(count, bool) or not isinstance(count, int):
                raise SpecError(f"{name} must be a whole number, not {count!r}")
        if self.servers < 1:
            raise SpecError(f"servers must be at least 1, not {self.servers}")
        if self.agents < 0:
            raise SpecError(f"agents must be 0 or more, not {self.agents}")

        if self.version is not None and is_partial_version(self.version):
            if self.image != DEFAULT_IMAGE:
                raise SpecError(
                    f"give image or version, not both (image={self.image!r}, "
                    f"version={self.version!r})"
                )
            # Kept: K3sCluster.start resolves it (that needs the network).
            put("version", self.version.strip())
        elif self.version is not None:
            from_version = image_for_version(self.version)
            if self.image not in (DEFAULT_IMAGE, from_version):
                raise SpecError(
                    f"give image or version, not both (image={self.image!r}, "
                    f"version={self.version!r})"
                )
            put("image", from_version)
            # Normalised away, so ClusterSpec(version=v) == ClusterSpec(image=...).
            put("version", None)
        for name in ("image", "load_balancer_image", "registry_image"):
            image: object = getattr(self, name)
            if not isinstance(image, str) or not image or " " in image:
                raise SpecError(f"{name} {image!r} is not a valid image reference")
        if not isinstance(self.registry, bool):
            raise SpecError(f"registry must be True or False, not {self.registry!r}")
        if self.load_balancer is not None and not isinstance(self.load_balancer, bool):
            raise SpecError(
                f"load_balancer must be True, False or None (with more than one "
                f"server), not {self.load_balancer!r}"
            )

        for name in (
            "server_args",
            "agent_args",
            "server_env",
            "agent_env",
            "airgap_images",
        ):
            put(name, _strings(name, getattr(self, name)))
        put("airgap_images", tuple(os.path.abspath(p) for p in self.airgap_images))
        for archive in self.airgap_images:
            if not os.path.isfile(archive):
                raise SpecError(
                    f"airgap image archive {archive!r} is not a file; give the "
                    "path of a k3s-airgap-images-<arch>.tar (or docker save) file"
                )
        cache: object = self.image_cache
        if isinstance(cache, str) and cache.strip():
            put("image_cache", os.path.abspath(os.path.expanduser(cache)))
        elif not isinstance(cache, bool):
            raise SpecError(
                f"image_cache must be True (this user's cache), False (none) or a "
                f"directory, not {cache!r}"
            )
        _check_args("server_args", self.server_args)
        _check_args("agent_args", self.agent_args)
        for name in ("server_env", "agent_env"):
            for entry in getattr(self, name):
                if not _ENV.match(entry):
                    raise SpecError(f"{name} entry {entry!r} is not KEY=VALUE")
                key = entry.partition("=")[0]
                if key in MANAGED_ENV:
                    raise SpecError(
                        f"{name} may not set {key}: pytest-k3s manages it for every "
                        "node (token, join address, kubeconfig and node names)"
                    )

        put("ports", _ports(self.ports))
        import ipaddress  # lazily: the plugin loads with every pytest run

        try:
            ipaddress.ip_address(self.ports_bind)
        except ValueError:
            raise SpecError(
                f"ports_bind {self.ports_bind!r} is not an IP address; give "
                "'127.0.0.1' (the default) or '0.0.0.0'"
            ) from None
        mirror: object = self.registry_mirror
        if mirror is not None and not isinstance(mirror, RegistryMirror):
            raise SpecError(
                f"registry_mirror must be a RegistryMirror or None, not {mirror!r}"
            )
        registries: object = self.registries
        if isinstance(registries, Mapping):
            # JSON is YAML, and a canonical string keeps the spec hashable.
            put("registries", json.dumps(registries, sort_keys=True))
        elif registries is not None and not isinstance(registries, str):
            raise SpecError("registries must be YAML text or a mapping")

        if self.privileged not in PRIVILEGE_MODES:
            raise SpecError(
                f"privileged must be one of {', '.join(PRIVILEGE_MODES)}, "
                f"not {self.privileged!r}"
            )
        timeout = self.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise SpecError(f"timeout must be a number of seconds, not {timeout!r}")
        if not math.isfinite(timeout) or timeout <= 0:
            raise SpecError(f"timeout must be a positive, finite number, not {timeout}")
        put("timeout", float(timeout))

    @property
    def k3s_version(self) -> str | None:
        """The k3s version the image's tag names (as ``rancher/k3s`` tags do)."""
        return version_of_image(self.image)

    @property
    def has_load_balancer(self) -> bool:
        """Whether the cluster gets a load balancer (asked, or several servers)."""
        if self.load_balancer is None:
            return self.servers > 1
        return self.load_balancer

    @property
    def coredns_enabled(self) -> bool:
        """Whether the servers run CoreDNS (not ``--disable coredns``)."""
        return "coredns" not in disabled_components(self.server_args)

    def digest(self) -> str:
        """A short hash of everything that shapes the cluster (for labels and reuse).

        :data:`INCIDENTAL_FIELDS` are left out: specs that differ only there
        describe the same cluster.
        """
        import hashlib  # lazily: OpenSSL's start-up costs pytest's every run

        fields = asdict(self)
        for name in INCIDENTAL_FIELDS:
            del fields[name]
        fields["ports"] = [str(p) for p in self.ports]
        blob = json.dumps(fields, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def describe(self) -> str:
        """One line for humans: topology and image."""
        image = f"k3s {self.version}" if self.version else self.image
        return f"{self.servers} server(s) + {self.agents} agent(s), {image}"


def disabled_components(args: Iterable[str]) -> frozenset[str]:
    """Return the components that ``--disable`` arguments turn off."""
    disabled: set[str] = set()
    items = list(args)
    for index, arg in enumerate(items):
        value: str | None = None
        if arg.startswith("--disable="):
            value = arg.partition("=")[2]
        elif arg == "--disable" and index + 1 < len(items):
            value = items[index + 1]
        if value:
            disabled.update(part.strip() for part in value.split(",") if part.strip())
    return frozenset(disabled)
