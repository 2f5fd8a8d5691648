"""When a starting cluster counts as usable: the readiness layers and their deadline.

A cluster is ready in layers, each polled (no fixed sleeps) under one deadline
for the whole start: every node logs its ready line, then the API server's
``/readyz`` answers, every node is Ready, the ``default`` ServiceAccount
exists and (unless disabled) CoreDNS is available. A node that stops for good
fails the wait at once; a deadline that passes fails it naming the layer and
the node at fault, with that node's last log lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pytest_k3s.engine import host_policy
from pytest_k3s.engine.node_container import Node
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.engine.protocol import LogCursor
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import ClusterTimeoutError
from pytest_k3s.kube import client as kube
from pytest_k3s.kube.kubeconfig import Kubeconfig
from pytest_k3s.spec import ClusterSpec


#: Lower-cased log lines that mark a node as started, by role (k3d's table).
READY_LOG = {"server": "k3s is up and running", "agent": "successfully registered node"}
#: What the init server of an HA cluster logs before others may join it.
INIT_READY_LOG = "containerd is now running"
#: Every line we wait for: each is remembered per node once seen, since k3s
#: logs in bursts and a line can scroll out of the cursor's short buffer
#: while we wait for another one.
NEEDLES = (*READY_LOG.values(), INIT_READY_LOG)
#: Log lines attached to an error about a node.
TAIL_LINES = 30
#: Seconds added to the start-up deadline per joining server: each joins
#: only once the one before it runs, and may crash-loop meanwhile.
HA_JOIN_SECONDS = 60.0

Probe = Callable[[], "tuple[str | None, Node | None]"]


def start_timeout(spec: ClusterSpec) -> float:
    """Return the start-up deadline in seconds for ``spec``.

    It is ``spec.timeout`` plus :data:`HA_JOIN_SECONDS` for every server
    after the first (3 servers at the default 180 s: 300 s).
    """
    return spec.timeout + HA_JOIN_SECONDS * max(0, spec.servers - 1)


@dataclass
class Timings:
    """Where start-up time went: in total, and how much of it was waiting."""

    waiting: float = 0.0
    total: float = 0.0

    @contextmanager
    def wait(self) -> Iterator[None]:
        """Count the block as time spent waiting for nodes."""
        began = time.monotonic()
        try:
            yield
        finally:
            self.waiting += time.monotonic() - began

    @property
    def own(self) -> float:
        """Time spent in pytest-k3s and Docker calls rather than waiting."""
        return max(0.0, self.total - self.waiting)


class Readiness:
    """The readiness checks of one starting cluster, under one deadline.

    :param engine: the engine the nodes run on
    :param cluster: the cluster name (for messages)
    :param timeout: seconds the whole start may take from :meth:`begin`
    :param nodes: the nodes started so far (read live: it grows meanwhile)
    """

    def __init__(
        self,
        engine: Engine,
        cluster: str,
        timeout: float,
        nodes: Sequence[Node],
    ) -> None:
        self.engine = engine
        self.cluster = cluster
        self.timeout = timeout
        self.nodes = nodes
        self.timings = Timings()
        self.deadline = time.monotonic() + timeout
        self._cursors: dict[str, LogCursor] = {}
        self._seen: dict[str, set[str]] = {}

    def begin(self) -> None:
        """Start the deadline now (once the image is present)."""
        self.deadline = time.monotonic() + self.timeout

    def remaining(self) -> float:
        """Seconds left before the deadline."""
        return self.deadline - time.monotonic()

    def tail(self, node: Node) -> list[str]:
        """The node's last log lines, for an error message."""
        return self.engine.logs(node.container_id, tail=TAIL_LINES).splitlines()

    def _check_alive(self) -> None:
        """Fail fast when a node's container has stopped for good."""
        for node in list(self.nodes):
            state = self.engine.state(node.container_id)
            stopped = state.get("Status") in ("exited", "dead")
            if stopped or state.get("Restarting"):
                self._check_remount(node)
            if stopped and not state.get("Restarting"):
                raise ClusterStartError(
                    f"k3s {node.role} {node.name} of cluster {self.cluster} exited "
                    f"with status {state.get('ExitCode')} during start-up",
                    node=node.name,
                    logs=self.tail(node),
                )

    def _check_remount(self, node: Node) -> None:
        """Explain a node of the capability fallback that could not remount."""
        lines = self.tail(node)
        failure = host_policy.remount_failure(lines)
        if failure is not None:
            raise ClusterStartError(
                f"the Docker host cannot run k3s in containers: its engine refuses "
                f"privileged mode, and in the capability fallback node {node.name} "
                f"of cluster {self.cluster} could not make /sys and the cgroup "
                f"hierarchy writable ({failure}), so k3s could not create cgroups. "
                "Run the tests where Docker allows --privileged containers",
                node=node.name,
                logs=lines,
            )

    def poll(self, what: str, probe: Probe) -> None:
        """Call ``probe`` until it reports no obstacle, or fail at the deadline.

        ``probe`` returns (None, None) when done, or (why not yet, the node at
        fault if one is).
        """
        with self.timings.wait():
            delay = 0.05
            while True:
                self._check_alive()
                reason, culprit = probe()
                if reason is None:
                    return
                if self.remaining() <= 0:
                    culprit = culprit or self.nodes[0]
                    raise ClusterTimeoutError(
                        f"k3s cluster {self.cluster} was not usable within "
                        f"{self.timeout:.0f}s: waiting for {what}: {reason}. "
                        "Raise the timeout (--k3s-timeout / ClusterSpec.timeout) if "
                        "the machine is just slow",
                        node=culprit.name,
                        logs=self.tail(culprit),
                    )
                time.sleep(min(delay, max(self.remaining(), 0.0)))
                delay = min(delay * 2, 0.5)

    def wait_for_log(self, node: Node, needle: str) -> None:
        """Wait until ``node`` has logged ``needle`` (lower-case) since it started."""
        cursor = self._cursors.setdefault(node.name, LogCursor())
        seen = self._seen.setdefault(node.name, set())
        watched = {*NEEDLES, needle}

        def probe() -> tuple[str | None, Node | None]:
            if needle not in seen:
                for line in self.engine.new_log_lines(node.container_id, cursor):
                    lowered = line.lower()
                    seen.update(n for n in watched if n in lowered)
            if needle in seen:
                return None, None
            return f"{node.name} to log {needle!r}", node

        self.poll(f"{node.name} to start", probe)

    def wait_for_nodes_started(self) -> None:
        """Wait until every node has logged its role's ready line."""
        for node in list(self.nodes):
            self.wait_for_log(node, READY_LOG[node.role])

    def wait_for_api(self, config: Kubeconfig, *, coredns: bool) -> None:
        """Wait for the API layers: /readyz, nodes Ready, ServiceAccount, CoreDNS."""
        api = kube.api_client(config)
        by_name = {node.name: node for node in self.nodes}
        server0 = self.nodes[0]
        try:
            self.poll("the API server (/readyz)", lambda: (kube.readyz(api), server0))

            def nodes() -> tuple[str | None, Node | None]:
                reason, culprit = kube.nodes_ready(api, set(by_name))
                return reason, by_name.get(culprit or "")

            self.poll("all nodes to be Ready", nodes)
            self.poll(
                "the default ServiceAccount",
                lambda: (kube.default_service_account(api), server0),
            )
            if coredns:
                self.poll("CoreDNS", lambda: (kube.coredns_available(api), server0))
        finally:
            api.close()  # type: ignore[no-untyped-call]
