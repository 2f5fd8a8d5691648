"""A running k3s cluster: how it is started, waited for, handed over and removed.

:meth:`K3sCluster.start` turns a :class:`~pytest_k3s.spec.ClusterSpec` into
labelled containers on their own network, waits in layers until the cluster is
usable (each layer under one deadline, polling, no fixed sleeps), and returns
a handle. Whatever happens during the start (a crashing node, a timeout,
Ctrl-C), everything created so far is removed before the error propagates.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from typing import Literal

from pytest_k3s import kubeconfig
from pytest_k3s import labels
from pytest_k3s.errors import ClusterCommandError
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import ClusterTimeoutError
from pytest_k3s.errors import K3sError
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import PortMapping


if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from pytest_k3s.docker_runtime import DockerRuntime
    from pytest_k3s.docker_runtime import LogCursor

Role = Literal["server", "agent"]
Progress = Callable[[str], None]

#: Where nodes write the kubeconfig we read out (as k3d does).
KUBECONFIG_OUTPUT = "/output/kubeconfig.yaml"
API_PORT = 6443
#: Lower-cased log lines that mark a node as started, by role (k3d's table).
READY_LOG = {"server": "k3s is up and running", "agent": "successfully registered node"}
#: What the init server of an HA cluster logs before others may join it.
INIT_READY_LOG = "containerd is now running"
#: HA servers crash-loop while etcd members join; Docker restarts them.
HA_RESTART_RETRIES = 5
#: Test machines' disks are often fuller than the kubelet's default eviction
#: threshold (5% free), which would evict pods with DiskPressure. Given first,
#: so a user's own --kubelet-arg for the same setting wins.
TEST_KUBELET_ARGS = (
    "--kubelet-arg=eviction-hard=imagefs.available<1%,nodefs.available<1%",
    "--kubelet-arg=eviction-minimum-reclaim=imagefs.available=1%,nodefs.available=1%",
)


@dataclass(frozen=True)
class Node:
    """One node of a cluster: its name (= container name = hostname) and role."""

    name: str
    role: Role
    container_id: str


@dataclass
class Timings:
    """Where start-up time went: phases, and how much of it was waiting for nodes."""

    phases: dict[str, float] = field(default_factory=dict)
    waiting: float = 0.0
    total: float = 0.0

    @contextmanager
    def phase(self, name: str, *, waiting: bool = False) -> Iterator[None]:
        """Time the block as phase ``name`` (and as waiting if ``waiting``)."""
        began = time.monotonic()
        try:
            yield
        finally:
            spent = time.monotonic() - began
            self.phases[name] = self.phases.get(name, 0.0) + spent
            if waiting:
                self.waiting += spent

    @property
    def own(self) -> float:
        """Time spent in pytest-k3s and Docker calls rather than waiting."""
        return max(0.0, self.total - self.waiting)


def new_cluster_name() -> str:
    """A fresh cluster name: short, valid as a DNS label and a container name."""
    return f"k3s-{secrets.token_hex(4)}"


class K3sCluster:
    """A handle on a running k3s-in-Docker cluster.

    Use :meth:`start` to make one (or :meth:`attach` to use one another process
    started); it is a context manager that stops the cluster on exit.

    :ivar name: the cluster name; containers are ``<name>-server-N`` and
        ``<name>-agent-N``, the network is ``<name>``
    :ivar spec: the spec the cluster was started from
    :ivar kubeconfig_path: a kubeconfig of this cluster only (mode 0600)
    :ivar nodes: the cluster's nodes, servers first
    :ivar timings: where start-up time went
    """

    def __init__(
        self,
        *,
        name: str,
        spec: ClusterSpec,
        runtime: DockerRuntime,
        nodes: Sequence[Node],
        kubeconfig_path: Path,
        owned: bool,
        private_dir: Path | None = None,
        timings: Timings | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.nodes = tuple(nodes)
        self.kubeconfig_path = kubeconfig_path
        self.timings = timings or Timings()
        self._runtime = runtime
        self._owned = owned
        self._private_dir = private_dir
        self._api_client: ApiClient | None = None
        self._stopped = False

    # lifecycle -----------------------------------------------------------------

    @classmethod
    def start(
        cls,
        spec: ClusterSpec | None = None,
        *,
        name: str | None = None,
        kubeconfig_dir: Path | None = None,
        run_id: str | None = None,
        owner: labels.Owner | None = None,
        keep: bool = False,
        progress: Progress | None = None,
    ) -> K3sCluster:
        """Start a cluster and return once it is usable.

        :param spec: what to start (default: one server from the default image)
        :param name: the cluster name (default: a fresh random one)
        :param kubeconfig_dir: where to write the kubeconfig (default: a new
            private temporary directory, removed by :meth:`stop`)
        :param run_id: the test run the cluster belongs to (a label)
        :param owner: the process whose death makes the cluster a leftover
            (default: this one)
        :param keep: label the cluster as kept, so the automatic sweep of
            dead runs' leftovers spares it
        :param progress: called with a line of text at each step
        :raises ClusterStartError: a node crashed or the deadline passed
        """
        from pytest_k3s.docker_runtime import DockerRuntime

        spec = spec or ClusterSpec()
        runtime = DockerRuntime.connect()
        starter = _Starter(
            spec=spec,
            runtime=runtime,
            name=name or new_cluster_name(),
            kubeconfig_dir=kubeconfig_dir,
            run_id=run_id or secrets.token_hex(8),
            owner=owner or labels.Owner.current(),
            keep=keep,
            progress=progress or (lambda line: None),
        )
        try:
            return starter.run()
        except BaseException:
            starter.clean_up()
            runtime.close()
            raise

    @classmethod
    def attach(
        cls, *, name: str, spec: ClusterSpec, kubeconfig_path: Path
    ) -> K3sCluster:
        """Use a cluster another process started; :meth:`stop` will not remove it."""
        from pytest_k3s.docker_runtime import DockerRuntime

        runtime = DockerRuntime.connect()
        containers = runtime.containers({labels.CLUSTER: name})
        if not containers:
            runtime.close()
            raise K3sError(
                f"cluster {name} has no containers on the Docker engine at "
                f"{runtime.address}; it was removed, or belongs to another engine"
            )
        nodes = sorted(
            (Node(c.name, _role(c.labels.get(labels.ROLE)), c.id) for c in containers),
            key=_node_order,
        )
        return cls(
            name=name,
            spec=spec,
            runtime=runtime,
            nodes=nodes,
            kubeconfig_path=kubeconfig_path,
            owned=False,
        )

    def stop(self) -> None:
        """Remove the cluster's containers, volumes and network (safe to repeat).

        A handle from :meth:`attach` only lets go of its connections.
        """
        self._release(remove=self._owned)

    def detach(self) -> None:
        """Let go of this handle's connections and leave the cluster running."""
        self._release(remove=False)

    def _release(self, *, remove: bool) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self._api_client is not None:
            self._api_client.close()  # type: ignore[no-untyped-call]
        try:
            if remove:
                _remove(
                    self._runtime, self.name, self._private_dir, self.kubeconfig_path
                )
        finally:
            self._runtime.close()

    def __enter__(self) -> K3sCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<K3sCluster {self.name}: {self.spec.describe()}>"

    # access ----------------------------------------------------------------------

    @property
    def api_client(self) -> ApiClient:
        """A ``kubernetes.client.ApiClient`` for this cluster (and only this one)."""
        if self._api_client is None:
            from pytest_k3s import kube

            config = kubeconfig.parse(self.kubeconfig_path.read_bytes())
            self._api_client = kube.api_client(config)
        return self._api_client

    @property
    def api_url(self) -> str:
        """The API server URL the kubeconfig points at."""
        config = kubeconfig.parse(self.kubeconfig_path.read_bytes())
        return str(config["clusters"][0]["cluster"]["server"])

    @property
    def servers(self) -> tuple[Node, ...]:
        """The server nodes, server-0 first."""
        return tuple(n for n in self.nodes if n.role == "server")

    @property
    def agents(self) -> tuple[Node, ...]:
        """The agent nodes."""
        return tuple(n for n in self.nodes if n.role == "agent")

    def node(self, name: str) -> Node:
        """Return the node called ``name`` (or ``server-0``-style short names)."""
        for node in self.nodes:
            if name in (node.name, node.name.removeprefix(f"{self.name}-")):
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise K3sError(f"cluster {self.name} has no node {name!r}; it has {known}")

    def host_port(self, port: int | str) -> int:
        """Return the host port where server-0's ``port`` (e.g. 30080) is published."""
        mapping = PortMapping.parse(port)
        return self._runtime.published_port(
            self.servers[0].container_id, f"{mapping.container_port}/{mapping.protocol}"
        )

    # helpers ---------------------------------------------------------------------

    def container_states(self) -> list[str]:
        """One line per node: its container's state (for failure reports)."""
        lines = []
        for node in self.nodes:
            try:
                state = self._runtime.state(node.container_id)
            except Exception as exc:  # gone, or the engine is: report, don't fail
                lines.append(f"container {node.name}: unknown ({exc})")
                continue
            status = state.get("Status", "?")
            if status != "running":
                status += f" (exit code {state.get('ExitCode')})"
            lines.append(f"container {node.name}: {status}")
        return lines

    def logs(self, node: Node | str, *, tail: int | None = None) -> str:
        """Return a node's container log (all of it, or the last ``tail`` lines)."""
        target = node if isinstance(node, Node) else self.node(node)
        return self._runtime.logs(target.container_id, tail=tail)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        """Run ``kubectl`` against this cluster and return its output.

        :raises ClusterCommandError: kubectl is missing or exits non-zero
        """
        executable = shutil.which("kubectl")
        if executable is None:
            raise ClusterCommandError(
                "kubectl is not on PATH; install it, or use cluster.api_client"
            )
        command = [executable, "--kubeconfig", str(self.kubeconfig_path), *args]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ClusterCommandError(
                f"kubectl {' '.join(args)} failed with exit status "
                f"{result.returncode}: {result.stderr.strip()}"
            )
        return result.stdout

    def load_image(self, image: str) -> None:
        """Import a local Docker image into every node's containerd.

        Pods can then use it without a registry (with ``imagePullPolicy:
        IfNotPresent`` or ``Never``, or a tag other than ``latest``).
        """
        with tempfile.TemporaryDirectory(prefix="pytest-k3s-image-") as directory:
            archive = Path(directory) / "image.tar"
            with archive.open("wb") as stream:
                self._runtime.save_image(image, stream)

            def load(node: Node) -> None:
                with archive.open("rb") as stream:
                    code, output = self._runtime.exec(
                        node.container_id,
                        ["ctr", "images", "import", "--all-platforms", "-"],
                        stdin=stream,
                    )
                if code != 0:
                    raise ClusterCommandError(
                        f"importing {image} into node {node.name} failed with exit "
                        f"status {code}: {output.strip()}"
                    )

            with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
                list(pool.map(load, self.nodes))


def _remove(
    runtime: DockerRuntime, name: str, private_dir: Path | None, kubeconfig_path: Path
) -> None:
    """Remove a cluster's Docker objects (by label) and the files we wrote for it."""
    try:
        runtime.remove_cluster(name)
    finally:
        if private_dir is not None:
            shutil.rmtree(private_dir, ignore_errors=True)
        else:
            kubeconfig_path.unlink(missing_ok=True)


def _role(value: str | None) -> Role:
    return "server" if value == "server" else "agent"


def _node_order(node: Node) -> tuple[int, int]:
    index = node.name.rpartition("-")[2]
    return (0 if node.role == "server" else 1, int(index) if index.isdigit() else 0)


class _Starter:
    """The steps of :meth:`K3sCluster.start`, sharing their state."""

    def __init__(
        self,
        *,
        spec: ClusterSpec,
        runtime: DockerRuntime,
        name: str,
        kubeconfig_dir: Path | None,
        run_id: str,
        owner: labels.Owner,
        keep: bool,
        progress: Progress,
    ) -> None:
        self.spec = spec
        self.runtime = runtime
        self.name = name
        self.run_id = run_id
        self.owner = owner
        self.keep = keep
        self.progress = progress
        self.timings = Timings()
        self.began = time.monotonic()
        self.deadline: float  # set once the image is present
        self.private_dir: Path | None = None
        if kubeconfig_dir is None:
            self.private_dir = Path(tempfile.mkdtemp(prefix=f"pytest-k3s-{name}-"))
            kubeconfig_dir = self.private_dir
        self.kubeconfig_path = kubeconfig_dir / f"{name}.kubeconfig.yaml"
        self.nodes: list[Node] = []
        self.cursors: dict[str, LogCursor] = {}
        self.token = secrets.token_hex(16)
        remote = runtime.api_host()
        self.api_host = spec.api_host or remote or "127.0.0.1"
        self.bind_ip = spec.api_bind or ("0.0.0.0" if remote else "127.0.0.1")

    # the whole start ------------------------------------------------------------

    def run(self) -> K3sCluster:
        spec = self.spec
        self.progress(f"starting k3s cluster {self.name}: {spec.describe()}")
        for warning in self.runtime.host_warnings():
            self.progress(f"  {warning}")
        with self.timings.phase("image"):
            if not self.runtime.has_image(spec.image):
                self.progress(f"  pulling {spec.image} (once; later runs reuse it)")
                self.runtime.pull_image(spec.image)
        # A first run's pull is not start-up time: the deadline starts now.
        self.deadline = time.monotonic() + spec.timeout
        with self.timings.phase("network"):
            self.runtime.check_free([self.name, self._node_name("server", 0)])
            self.runtime.create_network(self.name, self._labels("network"))
        with self.timings.phase("server-0"):
            self._start_node("server", 0)
        if self.runtime.discovered_refusal:
            self.progress(
                "  the Docker engine refused privileged mode (unable to apply caps); "
                "running nodes with an explicit capability set instead"
            )
        with ThreadPoolExecutor(max_workers=4) as pool:
            agents = pool.map(
                lambda index: self._start_node("agent", index), range(spec.agents)
            )
            with self.timings.phase("servers"):
                # Joining servers go one at a time, each once the one before it
                # runs (etcd admits one new member at a time); agents are being
                # added to self.nodes meanwhile, so look servers up by name.
                for index in range(1, spec.servers):
                    previous = self._node(self._node_name("server", index - 1))
                    needle = INIT_READY_LOG if index == 1 else READY_LOG["server"]
                    self._wait_for_log(previous, needle)
                    self._start_node("server", index)
            with self.timings.phase("agents"):
                list(agents)
        for node in self.nodes:
            self._wait_for_log(node, READY_LOG[node.role])
        with self.timings.phase("kubeconfig"):
            config = self._write_kubeconfig()
        self._wait_for_api(config)
        self.timings.total = time.monotonic() - self.began
        self.progress(
            f"k3s cluster {self.name} ready in {self.timings.total:.1f}s "
            f"(kubeconfig: {self.kubeconfig_path})"
        )
        return K3sCluster(
            name=self.name,
            spec=spec,
            runtime=self.runtime,
            nodes=sorted(self.nodes, key=_node_order),
            kubeconfig_path=self.kubeconfig_path,
            owned=True,
            private_dir=self.private_dir,
            timings=self.timings,
        )

    def clean_up(self) -> None:
        """Remove whatever this start created (by label, so half-made objects too)."""
        _remove(self.runtime, self.name, self.private_dir, self.kubeconfig_path)

    # nodes ----------------------------------------------------------------------

    def _node_name(self, role: Role, index: int) -> str:
        return f"{self.name}-{role}-{index}"

    def _node(self, name: str) -> Node:
        return next(node for node in list(self.nodes) if node.name == name)

    def _labels(self, role: str) -> dict[str, str]:
        result = labels.labels_for(
            self.name,
            role,
            run=self.run_id,
            spec_hash=self.spec.digest(),
            owner=self.owner,
        )
        if self.keep:
            result[labels.KEEP] = "true"
        return result

    def _start_node(self, role: Role, index: int) -> None:
        from pytest_k3s.docker_runtime import LogCursor
        from pytest_k3s.docker_runtime import NodeContainer

        spec = self.spec
        name = self._node_name(role, index)
        environment = {
            "K3S_TOKEN": self.token,
            "K3S_KUBECONFIG_OUTPUT": KUBECONFIG_OUTPUT,
        }
        if role == "server":
            command = ["server", "--tls-san", self.api_host, *TEST_KUBELET_ARGS]
            if spec.servers > 1 and index == 0:
                command.append("--cluster-init")
            command += spec.server_args
            extra_env = spec.server_env
        else:
            command = ["agent", *TEST_KUBELET_ARGS, *spec.agent_args]
            extra_env = spec.agent_env
        if (role, index) != ("server", 0):
            environment["K3S_URL"] = (
                f"https://{self._node_name('server', 0)}:{API_PORT}"
            )
        for entry in extra_env:
            key, _, value = entry.partition("=")
            environment[key] = value
        files = {}
        if isinstance(spec.registries, str):  # a mapping was made YAML text
            files["/etc/rancher/k3s/registries.yaml"] = spec.registries.encode()
        node = NodeContainer(
            name=name,
            image=spec.image,
            command=command,
            environment=environment,
            labels=self._labels(role),
            network=self.name,
            ports=(
                (PortMapping(API_PORT), *spec.ports)
                if (role, index) == ("server", 0)
                else ()
            ),
            bind_ip=self.bind_ip,
            restart_retries=HA_RESTART_RETRIES
            if role == "server" and spec.servers > 1
            else 0,
            files=files,
        )
        privileged = {"auto": None, "privileged": True, "capabilities": False}[
            spec.privileged
        ]
        container_id = self.runtime.start_node(node, privileged=privileged)
        self.cursors[name] = LogCursor()
        self.nodes.append(Node(name, role, container_id))
        self.progress(f"  started {role} {name}")

    # waiting ----------------------------------------------------------------------

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _tail(self, node: Node) -> list[str]:
        return self.runtime.logs(node.container_id, tail=30).splitlines()

    def _check_alive(self) -> None:
        """Fail fast when a node's container has stopped for good."""
        for node in list(self.nodes):
            state = self.runtime.state(node.container_id)
            if state.get("Status") in ("exited", "dead") and not state.get(
                "Restarting"
            ):
                raise ClusterStartError(
                    f"k3s {node.role} {node.name} of cluster {self.name} exited with "
                    f"status {state.get('ExitCode')} during start-up",
                    node=node.name,
                    logs=self._tail(node),
                )

    def _poll(
        self, what: str, probe: Callable[[], tuple[str | None, Node | None]]
    ) -> None:
        """Call ``probe`` until it reports no obstacle, or fail at the deadline.

        ``probe`` returns (None, None) when done, or (why not yet, the node at
        fault if one is).
        """
        with self.timings.phase(what, waiting=True):
            delay = 0.05
            while True:
                self._check_alive()
                reason, culprit = probe()
                if reason is None:
                    return
                if self._remaining() <= 0:
                    culprit = culprit or self.nodes[0]
                    raise ClusterTimeoutError(
                        f"k3s cluster {self.name} was not usable within "
                        f"{self.spec.timeout:.0f}s: waiting for {what}: {reason}. "
                        "Raise the timeout (--k3s-timeout / ClusterSpec.timeout) if "
                        "the machine is just slow",
                        node=culprit.name,
                        logs=self._tail(culprit),
                    )
                time.sleep(min(delay, max(self._remaining(), 0.0)))
                delay = min(delay * 2, 0.5)

    def _wait_for_log(self, node: Node, needle: str) -> None:
        cursor = self.cursors[node.name]
        seen = any(needle in line.lower() for line in cursor.lines)

        def probe() -> tuple[str | None, Node | None]:
            nonlocal seen
            fresh = self.runtime.new_log_lines(node.container_id, cursor)
            seen = seen or any(needle in line.lower() for line in fresh)
            return (None, None) if seen else (f"{node.name} to log {needle!r}", node)

        self._poll(f"{node.name} to start", probe)

    def _write_kubeconfig(self) -> kubeconfig.Kubeconfig:
        server0 = self.nodes[0]
        try:
            raw = self.runtime.read_file(server0.container_id, KUBECONFIG_OUTPUT)
        except Exception as exc:
            raise ClusterStartError(
                f"could not read {KUBECONFIG_OUTPUT} from {server0.name}: {exc}",
                node=server0.name,
                logs=self._tail(server0),
            ) from exc
        port = self.runtime.published_port(server0.container_id, f"{API_PORT}/tcp")
        config = kubeconfig.rewrite(
            kubeconfig.parse(raw),
            server=kubeconfig.server_url(self.api_host, port),
            name=self.name,
        )
        kubeconfig.write(config, self.kubeconfig_path)
        return config

    def _wait_for_api(self, config: kubeconfig.Kubeconfig) -> None:
        from pytest_k3s import kube

        api = kube.api_client(config)
        by_name = {node.name: node for node in self.nodes}
        server0 = self.nodes[0]
        try:
            self._poll("the API server (/readyz)", lambda: (kube.readyz(api), server0))

            def nodes() -> tuple[str | None, Node | None]:
                reason, culprit = kube.nodes_ready(api, set(by_name))
                return reason, by_name.get(culprit or "")

            self._poll("all nodes to be Ready", nodes)
            self._poll(
                "the default ServiceAccount",
                lambda: (kube.default_service_account(api), server0),
            )
            if self.spec.wait_for_coredns and self.spec.coredns_enabled:
                self._poll("CoreDNS", lambda: (kube.coredns_available(api), server0))
        finally:
            api.close()  # type: ignore[no-untyped-call]
