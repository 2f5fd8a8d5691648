"""The handle on a running cluster: :class:`K3sCluster`.

A handle gives access to the cluster (its kubeconfig, an API client, kubectl,
node logs, published ports, its network and a kubeconfig for containers on
it), loads images into its nodes or pushes them to its registry, stops and
starts them, and removes the cluster when the handle that started it is
stopped.
What happens to a cluster lives in :mod:`pytest_k3s.lifecycle` (start,
readiness, node operations, removal); the handle holds the engine it runs on
(:class:`~pytest_k3s.engine.protocol.Engine`) and passes it down.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

from kubernetes.client import ApiClient

from pytest_k3s import labels
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.engine.no_engine import NoEngine
from pytest_k3s.engine.node_container import API_PORT
from pytest_k3s.engine.node_container import Node
from pytest_k3s.engine.node_container import Role
from pytest_k3s.engine.node_container import node_order
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.engine.protocol import balancer_container
from pytest_k3s.engine.protocol import node_containers
from pytest_k3s.engine.protocol import via_network
from pytest_k3s.errors import ClusterCommandError
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import NoEngineError
from pytest_k3s.kube import client as kube
from pytest_k3s.kube import diagnostics
from pytest_k3s.kube import kubeconfig
from pytest_k3s.kube import objects
from pytest_k3s.kube import streams
from pytest_k3s.kube.objects import Manifests
from pytest_k3s.lifecycle import node_operations
from pytest_k3s.lifecycle import registry
from pytest_k3s.lifecycle.load_balancer import api_endpoint
from pytest_k3s.lifecycle.load_balancer import balancer_name
from pytest_k3s.lifecycle.load_image import load_image
from pytest_k3s.lifecycle.readiness import Timings
from pytest_k3s.lifecycle.registry import ClusterRegistry
from pytest_k3s.lifecycle.removal import remove_clusters
from pytest_k3s.lifecycle.start import Progress
from pytest_k3s.lifecycle.start import Started
from pytest_k3s.lifecycle.start import StartOptions
from pytest_k3s.lifecycle.start import start_cluster
from pytest_k3s.owner import Owner
from pytest_k3s.spec import DEFAULT_KEEP_FOR
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import PortMapping


class K3sCluster:
    """A handle on a running k3s-in-Docker cluster.

    Use :meth:`start` to make one (or :meth:`attach` to use one another process
    started, :meth:`existing` for one pytest-k3s did not start); it is a
    context manager that stops the cluster on exit.

    :ivar name: the cluster name; containers are ``<name>-server-N`` and
        ``<name>-agent-N``, the network is ``<name>`` (:attr:`network`)
    :ivar spec: the spec the cluster was started from
    :ivar kubeconfig_path: a kubeconfig of this cluster only (mode 0600)
    :ivar nodes: the cluster's nodes, servers first
    :ivar timings: where start-up time went
    :ivar in_docker: whether the nodes are containers pytest-k3s started
        (else it is an existing cluster)
    """

    def __init__(
        self,
        *,
        name: str,
        spec: ClusterSpec,
        engine: Engine,
        nodes: Sequence[Node],
        kubeconfig_path: Path,
        owned: bool,
        owns_engine: bool = False,
        private_dir: Path | None = None,
        timings: Timings | None = None,
        balancer: str | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.nodes = tuple(nodes)
        self.kubeconfig_path = kubeconfig_path
        self.timings = timings or Timings()
        self.in_docker = not isinstance(engine, NoEngine)
        self._engine = engine
        self._owns_engine = owns_engine
        self._owned = owned
        self._private_dir = private_dir
        self._api_client: ApiClient | None = None
        #: The load balancer's container id, where there is one.
        self._balancer = balancer
        self._registry: ClusterRegistry | None = None
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
        owner: Owner | None = None,
        keep: bool = False,
        keep_for: float = DEFAULT_KEEP_FOR,
        progress: Progress | None = None,
        engine: Engine | None = None,
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
        :param engine: the engine to start it on (default: connect to the
            Docker engine ``DOCKER_HOST`` names; the handle closes that
            connection when it stops, and never one it was given)
        :raises DockerUnavailableError: no Docker engine answers
        :raises ClusterStartError: a node crashed or the deadline passed
        """
        options = StartOptions(
            name=name,
            kubeconfig_dir=kubeconfig_dir,
            run_id=run_id,
            owner=owner,
            keep_until=time.time() + keep_for if keep else None,
            progress=progress,
        )
        return cls.start_with(spec or ClusterSpec(), options, engine=engine)

    @classmethod
    def start_with(
        cls, spec: ClusterSpec, options: StartOptions, *, engine: Engine | None = None
    ) -> K3sCluster:
        """:meth:`start` with the options as one object (as the test run gives them)."""
        owns_engine = engine is None
        used = DockerEngine.connect() if engine is None else engine
        try:
            started = start_cluster(used, spec, options)
        except BaseException:
            if owns_engine:
                used.close()
            raise
        return cls.from_started(started, used, owns_engine=owns_engine)

    @classmethod
    def from_started(
        cls, started: Started, engine: Engine, *, owns_engine: bool = False
    ) -> K3sCluster:
        """The handle of a cluster this process started (and stopping removes)."""
        return cls(
            name=started.name,
            spec=started.spec,
            engine=engine,
            nodes=started.nodes,
            kubeconfig_path=started.kubeconfig_path,
            owned=True,
            owns_engine=owns_engine,
            private_dir=started.private_dir,
            timings=started.timings,
            balancer=started.balancer,
        )

    @classmethod
    def attach(
        cls,
        *,
        name: str,
        spec: ClusterSpec,
        kubeconfig_path: Path,
        engine: Engine | None = None,
    ) -> K3sCluster:
        """Use a cluster another process started; :meth:`stop` will not remove it.

        :param engine: the engine it runs on (default: connect to the one
            ``DOCKER_HOST`` names, closed when the handle stops)
        """
        owns_engine = engine is None
        used = DockerEngine.connect() if engine is None else engine
        try:
            containers = node_containers(used, name)
            if not containers:
                raise K3sError(
                    f"cluster {name} has no containers on the Docker engine at "
                    f"{used.address}; it was removed, or belongs to another engine"
                )
            nodes = sorted(
                (
                    Node(c.name, _role(c.labels.get(labels.ROLE)), c.id)
                    for c in containers
                ),
                key=node_order,
            )
            balancer = balancer_container(used, name)
            if via_network(used, spec.api_host):
                used.join_network(name)  # as the start did
        except BaseException:
            if owns_engine:
                used.close()
            raise
        return cls(
            name=name,
            spec=spec,
            engine=used,
            nodes=nodes,
            kubeconfig_path=kubeconfig_path,
            owned=False,
            owns_engine=owns_engine,
            balancer=balancer.id if balancer else None,
        )

    @classmethod
    def existing(
        cls, kubeconfig_file: Path | str, *, context: str | None = None
    ) -> K3sCluster:
        """Use a cluster pytest-k3s did not start, through a kubeconfig context.

        Nothing talks to Docker: :attr:`api_client`, :meth:`kubectl` and
        :attr:`kubeconfig_path` (a private copy holding only that context,
        relative file paths made absolute) work; :meth:`logs`,
        :meth:`load_image`, :meth:`host_port`, :attr:`network`,
        :meth:`internal_kubeconfig` and the node operations raise
        :class:`~pytest_k3s.errors.NoEngineError` saying so. :meth:`stop`
        leaves the cluster running.

        :param kubeconfig_file: the kubeconfig file
        :param context: its context to use (default: the current one)
        :raises K3sError: the kubeconfig or context is unusable, or the
            cluster does not answer (the message names its URL)
        """
        path = Path(kubeconfig_file)
        config, name = kubeconfig.read_context(path, context)
        server = str(config["clusters"][0].get("cluster", {}).get("server", "?"))
        directory, copy = kubeconfig.private_copy(config, name)
        try:
            api = kube.api_client(config)
            try:
                found = kube.list_nodes(api)
            finally:
                api.close()  # type: ignore[no-untyped-call]
        except Exception as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise K3sError(
                f"the existing cluster at {server} (context {name!r} of {path}) "
                f"does not answer: {kube.failure(exc)}"
            ) from exc
        nodes = [Node(n, "server" if control else "agent", "") for n, control in found]
        return cls(
            name=name,
            spec=ClusterSpec(),
            engine=NoEngine(name),
            nodes=nodes,
            kubeconfig_path=copy,
            owned=False,
            private_dir=directory,
        )

    def stop(self) -> None:
        """Remove the cluster's containers (with their volumes) and network.

        Safe to repeat.

        The system images its nodes pulled are saved first, for later
        clusters (``ClusterSpec.image_cache``).

        A handle from :meth:`attach` or :meth:`existing` only lets go of its
        connections; a shared handle (what the ``k3s_cluster`` and
        ``k3s_session_cluster`` fixtures give) does nothing but warn, since
        other tests use the cluster: the run removes it when it ends.
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
    def engine(self) -> Engine:
        """The engine the nodes run on (:class:`NoEngine` for an existing cluster)."""
        return self._engine

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
                remove_clusters(self._engine, [self.name], save_images=True)
        finally:
            # The files we wrote for it: our temporary directory, or the
            # kubeconfig alone where the caller chose the directory.
            if self._private_dir is not None and (remove or not self.in_docker):
                shutil.rmtree(self._private_dir, ignore_errors=True)
            elif remove:
                self.kubeconfig_path.unlink(missing_ok=True)
                kubeconfig.internal_path(self.kubeconfig_path).unlink(missing_ok=True)
            if self._owns_engine:
                self._engine.close()

    # node operations (see pytest_k3s.lifecycle.node_operations) ------------------

    def stop_node(self, name: str) -> Node:
        """Stop a node's container, as if its machine went away."""
        node = self.node(name)
        self._warn_if_shared(f"stopping node {node.name}")
        node_operations.stop_node(self._engine, node)
        return node

    def start_node(self, name: str, *, timeout: float = 120) -> Node:
        """Start a stopped node and wait until it is Ready again."""
        node = self.node(name)
        self._warn_if_shared(f"starting node {node.name}")
        node_operations.start_node(
            self._engine, self._follow_endpoint, self.name, node, timeout=timeout
        )
        return node

    def restart_node(self, name: str, *, timeout: float = 120) -> Node:
        """Stop and start a node, then wait until it is Ready."""
        self.stop_node(name)
        return self.start_node(name, timeout=timeout)

    def add_agent(self, *, timeout: float = 120) -> Node:
        """Join a new agent; return it once it is Ready."""
        self._warn_if_shared("adding an agent")
        node = node_operations.add_agent(
            self._engine,
            self.api_client,
            self.name,
            self.spec,
            self.nodes,
            timeout=timeout,
            balancer=self._balancer,
        )
        self.nodes = tuple(sorted((*self.nodes, node), key=node_order))
        return node

    def remove_node(self, name: str) -> None:
        """Remove an agent: its Node object, its container and volumes."""
        node = self.node(name)
        self._warn_if_shared(f"removing node {node.name}")
        node_operations.remove_node(
            self._engine,
            self.api_client,
            node,
            spec=self.spec,
            balancer=self._balancer,
        )
        self.nodes = tuple(n for n in self.nodes if n.name != node.name)

    def _follow_endpoint(self) -> ApiClient:
        """The API client, once the kubeconfig names the port the API has now.

        Host ports are chosen once, when a container is created, so a restart
        keeps them on Docker; an engine that still hands back another port
        gets the kubeconfig rewritten and the cached client dropped.
        """
        if self._balancer is not None:
            endpoint = (balancer_name(self.name), self._balancer)
        else:
            endpoint = (self.servers[0].name, self.servers[0].container_id)
        if (
            node_operations.follow_published_port(
                self._engine, self.kubeconfig_path, *endpoint, cluster=self.name
            )
            and self._api_client is not None
        ):
            self._api_client.close()  # type: ignore[no-untyped-call]
            self._api_client = None
        return self.api_client

    def _warn_if_shared(self, what: str) -> None:
        if self._shared:
            warnings.warn(
                f"{what} on k3s cluster {self.name}, which other tests of this run "
                "share: they will see it too. Use k3s_module_cluster for node "
                "failures",
                stacklevel=3,
            )

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
            config = kubeconfig.parse(self.kubeconfig_path.read_bytes())
            self._api_client = kube.api_client(config)
        return self._api_client

    @property
    def api_url(self) -> str:
        """The API server URL the kubeconfig points at."""
        config = kubeconfig.parse(self.kubeconfig_path.read_bytes())
        return str(config["clusters"][0]["cluster"]["server"])

    @property
    def network(self) -> str:
        """The name of the cluster's Docker network, for containers beside it.

        A container started on it reaches the API with
        :meth:`internal_kubeconfig`, and NodePorts at the nodes' names.

        :raises NoEngineError: the cluster is an existing one (no Docker)
        """
        self._need_docker("network to start containers on")
        return self.name

    def internal_kubeconfig(self) -> Path:
        """A kubeconfig for containers on :attr:`network`; return its path.

        Its server is ``https://<endpoint>:6443``, where the endpoint is the
        load balancer's container name where there is one, else server-0's:
        the API as the cluster's network reaches it, named in the servers'
        certificate. The file (mode 0600) is written next to
        :attr:`kubeconfig_path` on first call (later calls rewrite it only
        if the kubeconfig changed), and removed with the cluster, as the
        kubeconfig is.

        :raises NoEngineError: the cluster is an existing one (no Docker)
        """
        self._need_docker("internal kubeconfig")
        endpoint = api_endpoint(self.name, balanced=self._balancer is not None)
        return kubeconfig.write_internal(
            self.kubeconfig_path,
            server=kubeconfig.server_url(endpoint, API_PORT),
            name=self.name,
        )

    @property
    def registry(self) -> ClusterRegistry:
        """The cluster's own registry, for images of yours that pods run.

        ``image = cluster.registry.push("my-app:dev")`` pushes a local image
        and returns the name pods pull it by (``localhost:<port>/my-app:dev``).
        Only a cluster started with ``registry=True`` (the marker's argument,
        ``--k3s-registry``) has one; a handle from :meth:`attach` finds it
        by its label.

        :raises K3sError: the cluster has no registry (the message says how
            to ask for one), or its container is gone
        :raises NoEngineError: the cluster is an existing one (no Docker)
        """
        self._need_docker("registry")
        if not self.spec.registry:
            raise K3sError(
                f"cluster {self.name} has no registry: ask for one with "
                "@pytest.mark.k3s(registry=True), the --k3s-registry option "
                "(PYTEST_K3S_REGISTRY) or ClusterSpec(registry=True)"
            )
        if self._registry is None:
            self._registry = registry.find(self._engine, self.name)
        return self._registry

    def _need_docker(self, what: str) -> None:
        if not self.in_docker:
            raise NoEngineError(
                f"cluster {self.name} is an existing cluster (--k3s-kubeconfig / "
                "K3sCluster.existing) and has no Docker network, so it has no "
                f"{what}; reach it through kubeconfig_path"
            )

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
        """Return the host port where a node port (e.g. 30080) is published.

        That is on the load balancer, which forwards it to every node, where
        there is one (UDP ports: on server-0), else on server-0.
        """
        mapping = PortMapping.parse(port)
        container = self.servers[0].container_id
        if self._balancer is not None and mapping.protocol == "tcp":
            container = self._balancer
        return self._engine.published_port(
            container, f"{mapping.container_port}/{mapping.protocol}"
        )

    # helpers ---------------------------------------------------------------------

    def container_states(self) -> list[str]:
        """One line per container (nodes, load balancer, registry): its state."""
        lines: list[str] = []
        if not self.in_docker:
            return lines
        containers = [(node.name, node.container_id) for node in self.nodes]
        if self._balancer is not None:
            containers.append((balancer_name(self.name), self._balancer))
        if self._registry is not None:  # asked for: its pulls may have failed
            containers.append(
                (registry.registry_name(self.name), self._registry.container_id)
            )
        for name, container_id in containers:
            try:
                state = self._engine.state(container_id)
            except Exception as exc:  # gone, or the engine is: report, don't fail
                lines.append(f"container {name}: unknown ({exc})")
                continue
            status = state.get("Status", "?")
            if status != "running":
                status += f" (exit code {state.get('ExitCode')})"
            lines.append(f"container {name}: {status}")
        return lines

    def logs(self, node: Node | str, *, tail: int | None = None) -> str:
        """Return a node's container log (all of it, or the last ``tail`` lines)."""
        target = node if isinstance(node, Node) else self.node(node)
        return self._engine.logs(target.container_id, tail=tail)

    def pod_logs(
        self,
        pod: str,
        *,
        namespace: str = "default",
        container: str | None = None,
        previous: bool = False,
        tail: int | None = None,
    ) -> str:
        """Return a pod's container log, as ``kubectl logs`` prints it.

        Through the API only, so an existing cluster has it too.

        :param container: the container (needed when the pod has more than one)
        :param previous: the log of the container's previous run, after a restart
        :param tail: only the last ``tail`` lines
        :raises K3sError: no such pod or container, the container has not
            started (or, with ``previous``, not restarted); the message says which
        """
        return diagnostics.pod_logs(
            self.api_client,
            pod,
            namespace=namespace,
            container=container,
            previous=previous,
            tail=tail,
        )

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

    def exec(
        self,
        pod: str,
        command: Sequence[str],
        *,
        namespace: str = "default",
        container: str | None = None,
        stdin: str | bytes | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in a pod's container, as ``kubectl exec`` does.

        Returns its ``returncode``, ``stdout`` and ``stderr`` (text), like
        :func:`subprocess.run`; a non-zero exit is a result, not an error.
        Through the API server's ``pods/exec`` stream, in this process.

        :param command: the program and its arguments (a shell line needs
            ``["sh", "-c", line]``)
        :param stdin: text (or bytes) for its standard input
        :raises K3sError: the pod is not there, the command could not start,
            or it ran longer than ``timeout`` seconds
        """
        if isinstance(command, str):
            raise K3sError(
                f"exec takes the command as a list of arguments, not the string "
                f"{command!r}; for a shell line use ['sh', '-c', {command!r}]"
            )
        api = self._new_client()
        try:
            return streams.exec_in_pod(
                api,
                pod,
                command,
                namespace=namespace,
                container=container,
                stdin=stdin,
                timeout=timeout,
            )
        finally:
            api.close()  # type: ignore[no-untyped-call]

    def port_forward(
        self,
        target: str,
        port: int | str,
        *,
        namespace: str = "default",
        local_port: int = 0,
    ) -> AbstractContextManager[streams.Forwarded]:
        """Forward a local port to a pod, Service or Deployment while in the block.

        ``with cluster.port_forward("svc/web", "http") as fwd: get(fwd.url)``.
        ``target`` is ``pod/NAME``, ``svc/NAME``, ``deploy/NAME`` or a pod's
        name; ``port`` a number or a named port, resolved as kubectl does
        (a Service's port to its ``targetPort`` on a ready pod). Each new
        connection resolves a Service or Deployment again, so a replaced pod
        is picked up; a connection that cannot be forwarded is closed and
        logged. It listens on 127.0.0.1, on a free port unless
        ``local_port`` says which.

        :raises K3sError: the target or its port cannot be resolved now
        """
        return streams.forward(
            self._new_client,
            target,
            port,
            namespace=namespace,
            local_port=local_port,
        )

    def _new_client(self) -> ApiClient:
        """An ApiClient of its own (streams borrow the one they are given)."""
        return kube.api_client(kubeconfig.parse(self.kubeconfig_path.read_bytes()))

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
        load_image(self._engine, image, self.nodes, node_image=self.spec.image)


def _role(value: str | None) -> Role:
    return "server" if value == "server" else "agent"
