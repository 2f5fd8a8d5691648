"""How a cluster is started: creation order, the hand-over, and clean-up on failure.

:func:`start_cluster` turns a :class:`~pytest_k3s.spec.ClusterSpec` into
labelled containers on their own network: the image first (its pull does not
count against the deadline), then the network and server-0, then agents in
parallel with the joining servers (one at a time, each once the one before it
runs), then the readiness layers (:mod:`pytest_k3s.readiness`) and the
kubeconfig. Whatever happens during the start (a crashing node, a timeout,
Ctrl-C), everything it created is removed before the error propagates.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_k3s import imagecache
from pytest_k3s import kubeconfig
from pytest_k3s import labels
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import K3sError
from pytest_k3s.nodes import AIRGAP_DIR
from pytest_k3s.nodes import API_PORT
from pytest_k3s.nodes import KUBECONFIG_OUTPUT
from pytest_k3s.nodes import PRIVILEGE_REQUEST
from pytest_k3s.nodes import Node
from pytest_k3s.nodes import Role
from pytest_k3s.nodes import node_container
from pytest_k3s.nodes import node_name
from pytest_k3s.nodes import node_order
from pytest_k3s.nodes import start_timeout
from pytest_k3s.readiness import INIT_READY_LOG
from pytest_k3s.readiness import READY_LOG
from pytest_k3s.readiness import Readiness
from pytest_k3s.spec import DEFAULT_KEEP_FOR
from pytest_k3s.spec import ClusterSpec


if TYPE_CHECKING:
    from pytest_k3s.cluster import K3sCluster
    from pytest_k3s.docker_runtime import DockerRuntime

Progress = Callable[[str], None]
log = logging.getLogger(__name__)

#: How long server-0's kubeconfig may be missing after its ready line: k3s
#: writes it a moment later on a slow host.
KUBECONFIG_WAIT = 15.0


def new_cluster_name() -> str:
    """A fresh cluster name: short, valid as a DNS label and a container name."""
    return f"k3s-{secrets.token_hex(4)}"


def start_cluster(
    spec: ClusterSpec,
    *,
    name: str | None = None,
    kubeconfig_dir: Path | None = None,
    run_id: str | None = None,
    owner: labels.Owner | None = None,
    keep: bool = False,
    keep_for: float = DEFAULT_KEEP_FOR,
    state_dir: bool = False,
    reusable: bool = False,
    progress: Progress | None = None,
) -> K3sCluster:
    """Start a cluster and return its handle once it is usable.

    The parameters are :meth:`pytest_k3s.K3sCluster.start`'s.
    """
    from pytest_k3s.docker_runtime import DockerRuntime

    runtime = DockerRuntime.connect()
    starter = _Starter(
        spec=spec,
        runtime=runtime,
        name=name or new_cluster_name(),
        kubeconfig_dir=kubeconfig_dir,
        run_id=run_id or secrets.token_hex(8),
        owner=owner or labels.Owner.current(),
        keep_until=time.time() + keep_for if keep else None,
        state_dir=state_dir,
        reusable=reusable,
        progress=progress or (lambda line: None),
    )
    try:
        return starter.run()
    except BaseException:
        starter.clean_up()
        runtime.close()
        raise
    finally:
        forget_seed(starter.seed)


def seed_archive(
    spec: ClusterSpec, cache: Path | None, progress: Progress | None = None
) -> Path | None:
    """One tar of the image archives a node of ``spec`` starts with (None if none).

    Those are the air-gap archives, or the cached system images
    (:mod:`pytest_k3s.imagecache`), at their place in a node. Built once per
    start and unpacked into every node before it starts; k3s imports what it
    finds there instead of pulling. A cache that cannot be packed is left
    out (the nodes pull, as without it); an air-gap archive that cannot be
    is an error. The caller removes the tar (:func:`forget_seed`).
    """
    import tarfile

    airgap = [Path(p) for p in spec.airgap_images]
    cached = list(imagecache.archives(cache).values())
    if not (airgap or cached):
        return None
    if cached and progress is not None:
        progress(f"  seeding {len(cached)} cached system image(s) from {cache}")
    directory = Path(tempfile.mkdtemp(prefix="pytest-k3s-seed-"))
    seed = directory / "seed.tar"
    try:
        with tarfile.open(seed, "w") as tar:
            for archive in airgap + cached:
                tar.add(archive, arcname=f"{AIRGAP_DIR.lstrip('/')}/{archive.name}")
    except BaseException as exc:
        shutil.rmtree(directory, ignore_errors=True)
        if airgap or not isinstance(exc, OSError):
            raise
        log.warning("seeding the cached system images failed: %s", exc)
        return None
    return seed


def forget_seed(seed: Path | None) -> None:
    """Remove a tar :func:`seed_archive` built (the nodes have it by now)."""
    if seed is not None:
        shutil.rmtree(seed.parent, ignore_errors=True)


class _Starter:
    """The steps of one start, sharing their state."""

    def __init__(
        self,
        *,
        spec: ClusterSpec,
        runtime: DockerRuntime,
        name: str,
        kubeconfig_dir: Path | None,
        run_id: str,
        owner: labels.Owner,
        keep_until: float | None,
        state_dir: bool,
        reusable: bool,
        progress: Progress,
    ) -> None:
        self.spec = spec
        self.runtime = runtime
        self.name = name
        self.run_id = run_id
        self.owner = owner
        self.keep_until = keep_until
        self.reusable = reusable
        self.progress = progress
        #: Set when the start fails: agents not yet created are not created.
        self.cancelled = threading.Event()
        self.wrote_kubeconfig = False
        self.began = time.monotonic()
        self.private_dir: Path | None = None
        if kubeconfig_dir is None:
            self.private_dir = Path(tempfile.mkdtemp(prefix=f"pytest-k3s-{name}-"))
            kubeconfig_dir = self.private_dir
        self.kubeconfig_path = kubeconfig_dir / f"{name}.kubeconfig.yaml"
        self.state_dir = str(kubeconfig_dir) if state_dir else None
        self.nodes: list[Node] = []
        self.seed: Path | None = None
        self.cache: Path | None = None
        self.ready = Readiness(runtime, name, start_timeout(spec), self.nodes)
        self.token = secrets.token_hex(16)
        remote = runtime.api_host()
        #: In a container of the engine, we join the cluster network and use
        #: server-0's name and port (:mod:`pytest_k3s.incontainer`); an
        #: explicit api_host means the user knows better.
        self.via_network = (
            spec.api_host is None and not remote and runtime.access().mode == "network"
        )
        server0 = node_name(name, "server", 0)
        self.api_host = (
            spec.api_host or remote or (server0 if self.via_network else "127.0.0.1")
        )
        self.api_bind = spec.api_bind or ("0.0.0.0" if remote else "127.0.0.1")

    def run(self) -> K3sCluster:
        from pytest_k3s.cluster import K3sCluster

        spec = self.spec
        self.progress(f"starting k3s cluster {self.name}: {spec.describe()}")
        for warning in self.runtime.host_warnings():
            self.progress(f"  {warning}")
        if not self.runtime.has_image(spec.image):
            self.progress(f"  pulling {spec.image} (once; later runs reuse it)")
            self.runtime.pull_image(spec.image)
        self.cache = imagecache.directory(spec, self.runtime.image_platform(spec.image))
        self.seed = seed_archive(spec, self.cache, self.progress)
        # A first run's pull is not start-up time: the deadline starts now.
        self.ready.begin()
        self.runtime.check_free([self.name, node_name(self.name, "server", 0)])
        self.runtime.create_network(self.name, self._labels("network"))
        if self.via_network:
            self.runtime.join_network(self.name)
        refused_before = self.runtime.privileged_refused
        self._start_node("server", 0)
        if self.runtime.privileged_refused and not refused_before:
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
        return K3sCluster(
            name=self.name,
            spec=spec,
            runtime=self.runtime,
            nodes=sorted(self.nodes, key=node_order),
            kubeconfig_path=self.kubeconfig_path,
            owned=True,
            private_dir=self.private_dir,
            timings=timings,
        )

    def clean_up(self) -> None:
        """Remove whatever this start created, and nothing else.

        Objects are found by label (so half-made ones too), but only those of
        this start's run: a start that failed because the name was taken must
        not remove the cluster that has it, nor its kubeconfig.
        """
        try:
            self.runtime.remove_cluster(self.name, run=self.run_id)
        finally:
            if self.private_dir is not None:
                shutil.rmtree(self.private_dir, ignore_errors=True)
            elif self.wrote_kubeconfig:
                self.kubeconfig_path.unlink(missing_ok=True)

    def _node(self, name: str) -> Node:
        return next(node for node in list(self.nodes) if node.name == name)

    def _labels(self, role: str) -> dict[str, str]:
        return labels.labels_for(
            self.name,
            role,
            run=self.run_id,
            spec_hash=self.spec.digest(),
            owner=self.owner,
            keep_until=self.keep_until,
            state_dir=self.state_dir,
            reusable=self.reusable,
            image_cache=str(self.cache) if self.cache else None,
        )

    def _start_node(self, role: Role, index: int) -> None:
        if self.cancelled.is_set():
            raise K3sError(f"start of cluster {self.name} cancelled")
        node = node_container(
            self.spec,
            role,
            index,
            cluster=self.name,
            token=self.token,
            api_host=self.api_host,
            api_bind=self.api_bind,
            labels=self._labels(role),
            seed_archive=self.seed,
        )
        privileged = PRIVILEGE_REQUEST[self.spec.privileged]
        container_id = self.runtime.start_node(node, privileged=privileged)
        self.nodes.append(Node(node.name, role, container_id))
        self.progress(f"  started {role} {node.name}")

    def _write_kubeconfig(self) -> kubeconfig.Kubeconfig:
        server0 = self.nodes[0]
        give_up = min(time.monotonic() + KUBECONFIG_WAIT, self.ready.deadline)
        while True:
            try:
                raw = self.runtime.read_file(server0.container_id, KUBECONFIG_OUTPUT)
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
        port = (
            API_PORT
            if self.via_network
            else self.runtime.published_port(server0.container_id, f"{API_PORT}/tcp")
        )
        config = kubeconfig.rewrite(
            kubeconfig.parse(raw),
            server=kubeconfig.server_url(self.api_host, port),
            name=self.name,
        )
        self.wrote_kubeconfig = True
        kubeconfig.write(config, self.kubeconfig_path)
        return config
