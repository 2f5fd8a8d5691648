"""The pool of a run against a cluster pytest-k3s did not start (``--k3s-kubeconfig``).

The same fixtures hand out a cluster that already runs (EKS, GKE, a shared
k3s) through :meth:`pytest_k3s.K3sCluster.existing`, and nothing talks to
Docker.

Markers become requirements: a test runs if the cluster has at least the
control-plane nodes and the other nodes its topology asks for, and is skipped
otherwise; markers that shape a cluster of our own (image, arguments,
environment, ports, registries) cannot be met and skip too.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from pytest_k3s.cluster import K3sCluster
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import UnsuitableClusterError
from pytest_k3s.spec import INCIDENTAL_FIELDS
from pytest_k3s.spec import ClusterSpec


#: What a marker may ask of an existing cluster: its topology (as minimums).
_TOPOLOGY = ("servers", "agents")


def unmet_requirements(
    spec: ClusterSpec, base: ClusterSpec, control_planes: int, others: int
) -> str | None:
    """Why ``spec`` cannot run on a cluster with these nodes; None if it can.

    ``base`` is the run's default spec: a field that differs from it (other
    than topology and waiting) asks for a cluster of our own. A cluster
    whose control plane is hidden (managed ones) counts as having one.
    """
    own = [
        f.name
        for f in fields(ClusterSpec)
        if f.name not in (*_TOPOLOGY, *INCIDENTAL_FIELDS)
        and getattr(spec, f.name) != getattr(base, f.name)
    ]
    if own:
        return (
            f"needs a cluster of its own ({', '.join(own)}), but this run uses an "
            "existing cluster (--k3s-kubeconfig)"
        )
    seen = control_planes or 1
    if spec.servers > seen or spec.agents > others:
        return (
            f"needs {spec.servers} control-plane node(s) and {spec.agents} other(s); "
            f"the existing cluster has {seen} and {others}"
        )
    return None


class ExistingPool:
    """The fixtures' source of clusters when the run uses an existing cluster.

    :param path: the user's kubeconfig
    :param context: the context to use (default: its current one)
    :param base: the run's default spec, to tell which markers ask for more
    """

    def __init__(self, path: Path, context: str | None, base: ClusterSpec) -> None:
        self.path = path
        self.context = context
        self.base = base
        self._cluster: K3sCluster | None = None
        self._error: K3sError | None = None

    def acquire(self, spec: ClusterSpec) -> K3sCluster:
        """Return the existing cluster if it meets ``spec``'s topology.

        :raises UnsuitableClusterError: it does not (the caller skips the test)
        :raises K3sError: it cannot be reached; every later call raises the
            same error at once
        """
        cluster = self._connect()
        control_planes = len(cluster.servers)
        reason = unmet_requirements(
            spec, self.base, control_planes, len(cluster.nodes) - control_planes
        )
        if reason is not None:
            raise UnsuitableClusterError(reason)
        return cluster

    def start_private(self, spec: ClusterSpec) -> K3sCluster:
        """Refused: this run has one existing cluster, and no engine to start one.

        :raises UnsuitableClusterError: always (the fixture skips the test)
        """
        raise UnsuitableClusterError(
            "k3s_module_cluster needs a cluster of its own, but this run uses an "
            "existing cluster (--k3s-kubeconfig)"
        )

    def release_private(self, cluster: K3sCluster, *, keep: bool) -> None:
        """Nothing to release: :meth:`start_private` never gives a cluster."""
        cluster.detach()

    def _connect(self) -> K3sCluster:
        if self._error is not None:
            raise self._error
        if self._cluster is None:
            try:
                self._cluster = K3sCluster.existing(self.path, context=self.context)
            except K3sError as exc:
                self._error = exc
                raise
            self._cluster.share()
        return self._cluster

    def close(self) -> None:
        """Let go of the cluster (it keeps running) and remove our kubeconfig copy."""
        if self._cluster is not None:
            self._cluster.detach()
