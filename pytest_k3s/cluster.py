"""The handle on a running cluster: :class:`K3sCluster`.

A handle gives access to the cluster (its kubeconfig, an API client, kubectl,
node logs, published ports), loads images into its nodes, and removes the
cluster when the handle that started it is stopped. How a cluster is started
and waited for lives in :mod:`pytest_k3s.startup` and
:mod:`pytest_k3s.readiness`.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from typing import Any
from typing import cast

from pytest_k3s import imagecache
from pytest_k3s import kubeconfig
from pytest_k3s import labels
from pytest_k3s.errors import ClusterCommandError
from pytest_k3s.errors import K3sError
from pytest_k3s.nodes import Node
from pytest_k3s.nodes import Role
from pytest_k3s.nodes import node_order
from pytest_k3s.readiness import Timings
from pytest_k3s.spec import DEFAULT_KEEP_FOR
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import PortMapping
from pytest_k3s.startup import Progress


if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from pytest_k3s.docker_runtime import DockerRuntime
    from pytest_k3s.objects import Manifests


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
        runtime: DockerRuntime | None,
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
        #: Whether the cluster runs in Docker containers pytest-k3s started
        #: (else it is an existing cluster: see :meth:`existing`).
        self.in_docker = runtime is not None
        self._runtime = runtime or _no_docker(name)
        self._owned = owned
        self._private_dir = private_dir
        self._api_client: ApiClient | None = None
        self._stopped = False
        self._shared = False

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
        keep_for: float = DEFAULT_KEEP_FOR,
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
            dead runs' leftovers spares it for ``keep_for`` seconds
        :param keep_for: how long a kept cluster is spared (default 24 hours)
        :param progress: called with a line of text at each step
        :raises ClusterStartError: a node crashed or the deadline passed
        """
        from pytest_k3s.startup import start_cluster

        return start_cluster(
            spec or ClusterSpec(),
            name=name,
            kubeconfig_dir=kubeconfig_dir,
            run_id=run_id,
            owner=owner,
            keep=keep,
            keep_for=keep_for,
            progress=progress,
        )

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
            key=node_order,
        )
        if spec.api_host is None and runtime.api_host() is None:
            runtime.join_network(name)  # in a container: as start_cluster did
        return cls(
            name=name,
            spec=spec,
            runtime=runtime,
            nodes=nodes,
            kubeconfig_path=kubeconfig_path,
            owned=False,
        )

    @classmethod
    def existing(
        cls, kubeconfig: Path | str, *, context: str | None = None
    ) -> K3sCluster:
        """Use a cluster pytest-k3s did not start, through a kubeconfig context.

        Nothing talks to Docker: :attr:`api_client`, :meth:`kubectl` and
        :attr:`kubeconfig_path` (a private copy holding only that context)
        work; :meth:`logs`, :meth:`load_image` and :meth:`host_port` raise
        an error saying so. :meth:`stop` leaves the cluster running.

        :param kubeconfig: the kubeconfig file
        :param context: its context to use (default: the current one)
        :raises K3sError: the kubeconfig or context is unusable, or the
            cluster does not answer (the message names its URL)
        """
        from pytest_k3s import existing

        return existing.open_cluster(cls, Path(kubeconfig), context)

    def stop(self) -> None:
        """Remove the cluster's containers, volumes and network (safe to repeat).

        The system images its nodes pulled are saved first, for later
        clusters (``ClusterSpec.image_cache``).

        A handle from :meth:`attach` only lets go of its connections; a shared
        handle (what the ``k3s_cluster`` fixtures give) does nothing but warn,
        since other tests use the cluster: the run removes it when it ends.
        """
        if self._shared:
            warnings.warn(
                f"k3s cluster {self.name} is shared by the tests of this run and "
                "is removed when the run ends; stop() leaves it running. Use "
                "k3s_module_cluster (or K3sCluster.start) for a cluster of your own",
                stacklevel=2,
            )
            return
        self._release(remove=self._owned)

    def share(self) -> None:
        """Make this handle one that tests share: :meth:`stop` leaves it alone."""
        self._shared = True

    @property
    def shared(self) -> bool:
        """Whether other tests of the run share this cluster (see :meth:`share`)."""
        return self._shared

    @property
    def runtime(self) -> DockerRuntime:
        """The Docker engine the nodes run on (for pytest-k3s' own modules)."""
        return self._runtime

    # node operations (see pytest_k3s.nodeops) --------------------------------

    def stop_node(self, name: str) -> Node:
        """Stop a node's container, as if its machine went away."""
        from pytest_k3s import nodeops

        return nodeops.stop_node(self, name)

    def start_node(self, name: str, *, timeout: float = 120) -> Node:
        """Start a stopped node and wait until it is Ready again."""
        from pytest_k3s import nodeops

        return nodeops.start_node(self, name, timeout=timeout)

    def restart_node(self, name: str, *, timeout: float = 120) -> Node:
        """Stop and start a node, then wait until it is Ready."""
        from pytest_k3s import nodeops

        return nodeops.restart_node(self, name, timeout=timeout)

    def add_agent(self, *, timeout: float = 120) -> Node:
        """Join a new agent; return it once it is Ready."""
        from pytest_k3s import nodeops

        return nodeops.add_agent(self, timeout=timeout)

    def remove_node(self, name: str) -> None:
        """Remove an agent: its Node object, its container and volumes."""
        from pytest_k3s import nodeops

        nodeops.remove_node(self, name)

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
                remove_cluster(
                    self._runtime, self.name, self._private_dir, self.kubeconfig_path
                )
            elif not self.in_docker and self._private_dir is not None:
                shutil.rmtree(self._private_dir, ignore_errors=True)
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
        lines: list[str] = []
        if not self.in_docker:
            return lines
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

    def apply(
        self, manifests: Manifests, *, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Server-side-apply manifests; return the objects as the server has them.

        :param manifests: a path (a file or a folder of YAML/JSON files,
            multi-document YAML welcome), YAML text, a dict, or a list of
            dicts. CustomResourceDefinitions go first, each waited for until
            Established, then Namespaces, then the rest in order.
        :param namespace: for namespaced objects that name none
        :raises K3sError: invalid manifests, or the server refused one
        """
        from pytest_k3s import objects

        return objects.apply(self.api_client, manifests, namespace=namespace)

    def wait_for(
        self,
        kind: str,
        name: str,
        *,
        namespace: str | None = None,
        condition: str | None = None,
        jsonpath: str | None = None,
        delete: bool = False,
        timeout: float = 60,
    ) -> dict[str, Any] | None:
        """Wait, with a watch, until an object is as asked; return it.

        :param kind: as kubectl takes it: ``Deployment``, ``deployments.apps``,
            ``deploy``, a custom resource's kind or plural
        :param condition: a condition type that must be True (``Available``,
            ``Ready``, ``Established``), or ``Type=Status``
        :param jsonpath: kubectl wait's form, e.g. ``{.status.phase}=Running``
        :param delete: wait until it is gone (returns None)
        :raises WaitTimeoutError: not in time; the message carries the
            object's last status and recent events
        """
        from pytest_k3s import objects

        return objects.wait_for(
            self.api_client,
            kind,
            name,
            namespace=namespace,
            condition=condition,
            jsonpath=jsonpath,
            delete=delete,
            timeout=timeout,
        )

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
        IfNotPresent`` or ``Never``, or a tag other than ``latest``). The
        image is imported under exactly the reference given, for the nodes'
        platform, and each node is checked to list it afterwards.

        :raises ImageUnavailableError: the engine does not have ``image``
        :raises ClusterCommandError: a node's import failed, or the node does
            not list the image afterwards (the error names the node)
        """
        from pytest_k3s import images

        images.load_image(self, image)


def remove_cluster(
    runtime: DockerRuntime, name: str, private_dir: Path | None, kubeconfig_path: Path
) -> None:
    """Remove a cluster's Docker objects (by label) and the files we wrote for it.

    Its system images are saved first, for later clusters
    (:mod:`pytest_k3s.imagecache`).
    """
    try:
        imagecache.save(runtime, name)
    finally:  # Ctrl-C while saving still removes the cluster
        try:
            runtime.remove_cluster(name)
        finally:
            if private_dir is not None:
                shutil.rmtree(private_dir, ignore_errors=True)
            else:
                kubeconfig_path.unlink(missing_ok=True)


def _no_docker(name: str) -> DockerRuntime:
    from pytest_k3s.existing import NoDocker

    return cast("DockerRuntime", NoDocker(name))


def _role(value: str | None) -> Role:
    return "server" if value == "server" else "agent"
