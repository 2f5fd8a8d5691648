"""How a cluster is started: creation order, the hand-over, and clean-up on failure.

:func:`start_cluster` turns a :class:`~pytest_k3s.spec.ClusterSpec` into
labelled containers on their own network: the images first (their pull does
not count against the deadline), then the network (a subnet of its own, so
every node gets a fixed address), the cluster's registry and load balancer
where the spec asks (:mod:`~pytest_k3s.lifecycle.registry`,
:mod:`~pytest_k3s.lifecycle.load_balancer`), and server-0, then agents in
parallel with the joining servers (one at a time, each once the one before
it runs), then the readiness layers (:mod:`~pytest_k3s.lifecycle.readiness`) and
the kubeconfig. Whatever happens during the start (a crashing node, a
timeout, Ctrl-C), everything it created is removed before the error
propagates. What the spec does not say (the cluster's name, where its
kubeconfig goes, whose run it belongs to) travels as one
:class:`StartOptions`.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import replace
from itertools import islice
from pathlib import Path

from pytest_k3s import labels
from pytest_k3s.engine.addressing import fixed_addresses
from pytest_k3s.engine.node_container import API_PORT
from pytest_k3s.engine.node_container import KUBECONFIG_OUTPUT
from pytest_k3s.engine.node_container import PRIVILEGE_REQUEST
from pytest_k3s.engine.node_container import Node
from pytest_k3s.engine.node_container import Role
from pytest_k3s.engine.node_container import node_container
from pytest_k3s.engine.node_container import node_name
from pytest_k3s.engine.node_container import node_order
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.engine.protocol import via_network
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import ImageUnavailableError
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import SpecError
from pytest_k3s.kube import kubeconfig
from pytest_k3s.lifecycle import image_cache
from pytest_k3s.lifecycle import load_balancer
from pytest_k3s.lifecycle import mirror
from pytest_k3s.lifecycle import registry
from pytest_k3s.lifecycle import versions
from pytest_k3s.lifecycle.readiness import INIT_READY_LOG
from pytest_k3s.lifecycle.readiness import READY_LOG
from pytest_k3s.lifecycle.readiness import Readiness
from pytest_k3s.lifecycle.readiness import Timings
from pytest_k3s.lifecycle.readiness import start_timeout
from pytest_k3s.lifecycle.seeding import forget_seed
from pytest_k3s.lifecycle.seeding import seed_archive
from pytest_k3s.owner import Owner
from pytest_k3s.spec import ClusterSpec


Progress = Callable[[str], None]
log = logging.getLogger(__name__)

#: How long server-0's kubeconfig may be missing after its ready line: k3s
#: writes it a moment later on a slow host.
KUBECONFIG_WAIT = 15.0


@dataclass(frozen=True, kw_only=True)
class StartOptions:
    """Everything about a start that is not the cluster itself (that is the spec).

    :param name: the cluster name (default: a fresh random one); it must
        pass :func:`check_cluster_name`
    :param kubeconfig_dir: where to write the kubeconfig (default: a new
        private temporary directory, removed with the cluster)
    :param state_dir: a test run's state directory to write the kubeconfig
        into instead, named in a label so that a sweep of the cluster
        removes the kubeconfig too
    :param run_id: the test run the cluster belongs to (default: its own)
    :param owner: the process whose death makes the cluster a leftover
        (default: this one)
    :param keep_until: label the cluster as kept until then (epoch seconds),
        so the sweep of dead runs' leftovers spares it
    :param reusable: label the cluster as kept between runs (``--k3s-reuse``)
    :param progress: called with a line of text at each step
    """

    name: str | None = None
    kubeconfig_dir: Path | None = None
    state_dir: Path | None = None
    run_id: str | None = None
    owner: Owner | None = None
    keep_until: float | None = None
    reusable: bool = False
    progress: Progress | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            check_cluster_name(self.name)


@dataclass(frozen=True)
class Started:
    """A cluster that became usable: what its handle is made of."""

    name: str
    spec: ClusterSpec
    nodes: tuple[Node, ...]
    kubeconfig_path: Path
    #: The temporary directory holding the kubeconfig, removed with the
    #: cluster (None when the kubeconfig went where the options said).
    private_dir: Path | None
    timings: Timings
    #: The load balancer's container id, where there is one.
    balancer: str | None = None


def new_cluster_name() -> str:
    """A fresh cluster name: short, valid as a DNS label and a container name."""
    return f"k3s-{secrets.token_hex(4)}"


#: The longest cluster name: ``<name>-serverlb`` and ``<name>-agent-NN`` are
#: host names (and Kubernetes node names), at most 63 characters.
MAX_NAME_LENGTH = 50
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")


def check_cluster_name(name: str) -> str:
    """Return ``name`` if it can name a cluster, else raise SpecError saying why.

    It becomes the network's name and the prefix of every container's name,
    host name and Kubernetes node name (``<name>-server-0``), so it must be
    valid as all of them: a DNS label (lower-case letters, digits and ``-``,
    starting and ending with a letter or digit) short enough for the
    suffixes, which is a valid Docker name too.
    """
    if not _NAME.match(name):
        raise SpecError(
            f"cluster name {name!r} is not valid: use lower-case letters, digits "
            "and '-', starting and ending with a letter or digit (it names the "
            "cluster's network, containers and Kubernetes nodes, e.g. "
            "<name>-server-0)"
        )
    if name.startswith(mirror.NAME) or name < mirror.NETWORK:
        raise SpecError(
            f"cluster name {name!r} is reserved: the registry mirror's objects "
            f"are {mirror.NAME}*, and its network, {mirror.NETWORK}, must sort "
            "before every cluster network (Docker routes the mirror through the "
            "first); choose another name"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise SpecError(
            f"cluster name {name!r} is {len(name)} characters long; give at most "
            f"{MAX_NAME_LENGTH} (its node names, e.g. <name>-agent-10, are host "
            "names of at most 63)"
        )
    return name


def start_cluster(
    engine: Engine, spec: ClusterSpec, options: StartOptions | None = None
) -> Started:
    """Start a cluster on ``engine`` and return once it is usable.

    :raises ClusterStartError: a node crashed or the deadline passed (the
        error names the node and carries its last log lines)
    """
    options = options or StartOptions()
    if spec.version is not None:  # a release line or channel: resolve it here
        spec = resolve_spec(engine, spec, options.progress or (lambda line: None))
    starter = _Starter(engine, spec, options)
    try:
        return starter.run()
    except BaseException:
        starter.clean_up()
        raise
    finally:
        forget_seed(starter.seed)


def resolve_spec(
    engine: Engine, spec: ClusterSpec, progress: Callable[[str], None]
) -> ClusterSpec:
    """``spec`` with its partial version (``v1.33``, ``stable``) made a full image.

    :raises VersionUnresolvedError: neither the channel server nor the
        engine's images know a release of it
    """
    if spec.version is None:
        return spec
    resolver = versions.Resolver(lambda: engine)
    resolved = resolver.resolve(spec.version)
    if resolved.note:
        progress(f"  {resolved.note}")
    return replace(spec, version=None, image=resolver.image(spec.version))


class _Starter:
    """The steps of one start, sharing their state."""

    def __init__(self, engine: Engine, spec: ClusterSpec, options: StartOptions):
        name = options.name or new_cluster_name()
        self.spec = spec
        self.engine = engine
        self.name = name
        self.run_id = options.run_id or secrets.token_hex(8)
        self.owner = options.owner or Owner.current()
        self.keep_until = options.keep_until
        self.reusable = options.reusable
        self.progress = options.progress or (lambda line: None)
        #: Set when the start fails: agents not yet created are not created.
        self.cancelled = threading.Event()
        self.wrote_kubeconfig = False
        self.began = time.monotonic()
        self.private_dir: Path | None = None
        self.state_dir = options.state_dir
        directory = options.state_dir or options.kubeconfig_dir
        if directory is None:
            self.private_dir = Path(tempfile.mkdtemp(prefix=f"pytest-k3s-{name}-"))
            directory = self.private_dir
        self.kubeconfig_path = directory / f"{name}.kubeconfig.yaml"
        self.nodes: list[Node] = []
        self.seed: Path | None = None
        self.cache: Path | None = None
        self.ready = Readiness(engine, name, start_timeout(spec), self.nodes)
        self.token = secrets.token_hex(16)
        remote = engine.api_host()
        #: In a container of the engine, we join the cluster network and use
        #: server-0's name and port (:mod:`pytest_k3s.engine.access`); an
        #: explicit api_host means the user knows better.
        self.via_network = via_network(engine, spec.api_host)
        #: The container the kubeconfig names: the load balancer, or server-0.
        self.endpoint = load_balancer.api_endpoint(
            name, balanced=spec.has_load_balancer
        )
        self.api_host = (
            spec.api_host
            or remote
            or (self.endpoint if self.via_network else "127.0.0.1")
        )
        #: Fixed addresses on the cluster network, by container name.
        self.addresses: dict[str, str] = {}
        self.balancer_id: str | None = None
        #: The nodes' registries.yaml, the mirror's and the cluster registry's
        #: endpoints merged in.
        self.registries = spec.registries if isinstance(spec.registries, str) else None
        self.api_bind = spec.api_bind or ("0.0.0.0" if remote else "127.0.0.1")

    def run(self) -> Started:
        spec = self.spec
        self.progress(f"starting k3s cluster {self.name}: {spec.describe()}")
        for warning in self.engine.host_warnings():
            self.progress(f"  {warning}")
        images = {spec.image: "the node image: choose another with --k3s-image"}
        if spec.has_load_balancer:
            images[spec.load_balancer_image] = (
                "the load balancer's image: choose another with "
                "--k3s-load-balancer-image, or (one server) --k3s-load-balancer=off"
            )
        if spec.registry:
            images[spec.registry_image] = (
                "the cluster registry's image: choose another with --k3s-registry-image"
            )
        for image, what in images.items():
            if not self.engine.has_image(image):
                self.progress(f"  pulling {image} (once; later runs reuse it)")
                try:
                    self.engine.pull_image(image)
                except ImageUnavailableError as exc:
                    raise ImageUnavailableError(f"{exc}; it is {what}") from exc
        self.cache = image_cache.directory_for(self.engine, spec)
        self.seed = seed_archive(spec, self.cache, self.progress)
        # Started (or waited for, another process starting it) before the
        # deadline, as the images: it is not this cluster's start-up time.
        running = (
            mirror.ensure(
                self.engine, spec.registry_mirror, environ=os.environ, owner=self.owner
            )
            if spec.registry_mirror is not None
            else ()
        )
        # A first run's pull is not start-up time: the deadline starts now.
        self.ready.begin()
        server0 = node_name(self.name, "server", 0)
        self.engine.check_free(
            dict.fromkeys(
                [self.name, server0, self.endpoint]
                + [registry.registry_name(self.name)] * spec.registry
            )
        )
        subnet = self.engine.create_network(self.name, self._labels("network"))
        self._assign_addresses(subnet)
        if self.via_network:
            self.engine.join_network(self.name)
        if running:
            self._use_mirror(running)
        if spec.registry:
            self._start_registry()
        if spec.has_load_balancer:
            self._start_balancer()
        refused_before = self.engine.privileged_refused
        self._start_node("server", 0)
        if self.engine.privileged_refused and not refused_before:
            self.progress(
                "  the Docker engine refused privileged mode (unable to apply caps); "
                "running nodes with an explicit capability set instead"
            )
        with ThreadPoolExecutor(max_workers=4) as pool:
            agents = [
                pool.submit(self._start_node, "agent", index)
                for index in range(spec.agents)
            ]
            try:
                # Joining servers go one at a time, each once the one before
                # it runs (etcd admits one new member at a time); agents are
                # added to self.nodes meanwhile, so look servers up by name.
                for index in range(1, spec.servers):
                    previous = self._node(node_name(self.name, "server", index - 1))
                    needle = INIT_READY_LOG if index == 1 else READY_LOG["server"]
                    self.ready.wait_for_log(previous, needle)
                    self._start_node("server", index)
                for agent in agents:
                    agent.result()
            except BaseException:
                self.cancelled.set()
                for agent in agents:
                    agent.cancel()
                raise
        self.ready.wait_for_nodes_started()
        config = self._write_kubeconfig()
        self.ready.wait_for_api(
            config, coredns=spec.wait_for_coredns and spec.coredns_enabled
        )
        timings = self.ready.timings
        timings.total = time.monotonic() - self.began
        self.progress(
            f"k3s cluster {self.name} ready in {timings.total:.1f}s "
            f"(kubeconfig: {self.kubeconfig_path})"
        )
        return Started(
            name=self.name,
            spec=spec,
            nodes=tuple(sorted(self.nodes, key=node_order)),
            kubeconfig_path=self.kubeconfig_path,
            private_dir=self.private_dir,
            timings=timings,
            balancer=self.balancer_id,
        )

    def _assign_addresses(self, subnet: str) -> None:
        """Fixed addresses, in order: the load balancer, servers, agents."""
        names = [load_balancer.balancer_name(self.name)] * self.spec.has_load_balancer
        names += [node_name(self.name, "server", i) for i in range(self.spec.servers)]
        names += [node_name(self.name, "agent", i) for i in range(self.spec.agents)]
        addresses = list(islice(fixed_addresses(subnet), len(names)))
        if len(addresses) < len(names):
            raise ClusterStartError(
                f"the subnet {subnet} the engine gave cluster {self.name} has "
                f"{len(addresses)} fixed addresses for {len(names)} containers; "
                "start fewer nodes, or give the engine larger address pools "
                "(default-address-pools in its daemon.json)"
            )
        self.addresses = dict(zip(names, addresses, strict=True))

    def _balancer(self) -> tuple[str, str | None] | None:
        if not self.spec.has_load_balancer:
            return None
        name = load_balancer.balancer_name(self.name)
        return name, self.addresses.get(name)

    def _use_mirror(self, running: Sequence[mirror.Mirror]) -> None:
        """Connect the running mirrors to the network, name them to the nodes."""
        connected = mirror.connect(self.engine, running, self.name)
        self.registries = mirror.registries_yaml(self.registries, connected)
        if connected:
            self.progress(
                "  pulling "
                + ", ".join(each.registry for each in connected)
                + " images through the registry mirror"
            )

    def _start_registry(self) -> None:
        """Start the cluster's registry, named in every node's registries.yaml."""
        started = registry.start(
            self.engine,
            self.spec,
            cluster=self.name,
            tags=self._labels(labels.REGISTRY_ROLE),
        )
        try:
            self.registries = mirror.merge_endpoints(
                self.registries, registry.endpoints(self.name, started.host)
            )
        except K3sError as exc:
            raise SpecError(
                f"{exc}, so the cluster's registry cannot be added to it: give "
                "registries as a mapping (mirrors:, configs:)"
            ) from exc
        self.progress(
            f"  started registry {registry.registry_name(self.name)} ({started.host})"
        )

    def _start_balancer(self) -> None:
        """Start the load balancer, its backends being every node's fixed address."""
        servers = [node_name(self.name, "server", i) for i in range(self.spec.servers)]
        agents = [node_name(self.name, "agent", i) for i in range(self.spec.agents)]
        name = load_balancer.balancer_name(self.name)
        container = load_balancer.balancer_container(
            self.spec,
            cluster=self.name,
            address=self.addresses.get(name),
            api_bind=self.api_bind,
            servers=[(n, self.addresses[n]) for n in servers],
            nodes=[(n, self.addresses[n]) for n in servers + agents],
            tags=self._labels(load_balancer.ROLE, name),
        )
        self.balancer_id = self.engine.start_proxy(container)
        self.progress(f"  started load balancer {name}")

    def clean_up(self) -> None:
        """Remove whatever this start created, and nothing else.

        Objects are found by label (so half-made ones too), but only those of
        this start's run: a start that failed because the name was taken must
        not remove the cluster that has it, nor its kubeconfig.
        """
        try:
            self.engine.remove_cluster(self.name, run=self.run_id)
        finally:
            if self.private_dir is not None:
                shutil.rmtree(self.private_dir, ignore_errors=True)
            elif self.wrote_kubeconfig:
                self.kubeconfig_path.unlink(missing_ok=True)

    def _node(self, name: str) -> Node:
        return next(node for node in list(self.nodes) if node.name == name)

    def _labels(self, role: str, container: str | None = None) -> dict[str, str]:
        found = labels.labels_for(
            self.name,
            role,
            run=self.run_id,
            spec_hash=self.spec.digest(),
            owner=self.owner,
            keep_until=self.keep_until,
            state_dir=str(self.state_dir) if self.state_dir else None,
            reusable=self.reusable,
            image_cache=str(self.cache) if self.cache else None,
        )
        if container in self.addresses:
            found[labels.ADDRESS] = self.addresses[container]
        return found

    def _start_node(self, role: Role, index: int) -> None:
        if self.cancelled.is_set():
            raise K3sError(f"start of cluster {self.name} cancelled")
        if self.balancer_id is not None and (role, index) != ("server", 0):
            # Joining nodes join through it: a balancer that exited (a wrong
            # image, say) must fail the start now, not after the deadline.
            load_balancer.check_running(
                self.engine, self.balancer_id, self.name, self.spec.load_balancer_image
            )
        name = node_name(self.name, role, index)
        node = node_container(
            self.spec,
            role,
            index,
            cluster=self.name,
            token=self.token,
            api_host=self.api_host,
            api_bind=self.api_bind,
            labels=self._labels(role, name),
            seed_archive=self.seed,
            address=self.addresses.get(name),
            balancer=self._balancer(),
            registries=self.registries,
        )
        privileged = PRIVILEGE_REQUEST[self.spec.privileged]
        container_id = self.engine.start_node(node, privileged=privileged)
        self.nodes.append(Node(node.name, role, container_id))
        self.progress(f"  started {role} {node.name}")

    def _write_kubeconfig(self) -> kubeconfig.Kubeconfig:
        server0 = self.nodes[0]
        give_up = min(time.monotonic() + KUBECONFIG_WAIT, self.ready.deadline)
        while True:
            try:
                raw = self.engine.read_file(server0.container_id, KUBECONFIG_OUTPUT)
                break
            except Exception as exc:  # not written yet, or the node is gone
                if time.monotonic() >= give_up:
                    raise ClusterStartError(
                        f"could not read {KUBECONFIG_OUTPUT} from {server0.name} "
                        f"(retried for {KUBECONFIG_WAIT:.0f}s after its ready "
                        f"line): {exc}",
                        node=server0.name,
                        logs=self.ready.tail(server0),
                    ) from exc
                time.sleep(0.25)
        endpoint = self.balancer_id or server0.container_id
        if self.balancer_id is not None:
            load_balancer.check_running(
                self.engine, self.balancer_id, self.name, self.spec.load_balancer_image
            )
        port = (
            API_PORT
            if self.via_network
            else self.engine.published_port(endpoint, f"{API_PORT}/tcp")
        )
        config = kubeconfig.rewrite(
            kubeconfig.parse(raw),
            server=kubeconfig.server_url(self.api_host, port),
            name=self.name,
        )
        self.wrote_kubeconfig = True
        kubeconfig.write(config, self.kubeconfig_path)
        return config
