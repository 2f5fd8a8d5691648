"""Running against a cluster pytest-k3s did not start: one context of a kubeconfig.

With ``--k3s-kubeconfig`` (or :meth:`pytest_k3s.K3sCluster.existing`) the
same fixtures hand out a cluster that already runs (EKS, GKE, a shared k3s),
and nothing talks to Docker. The chosen context is copied into a private
kubeconfig (mode 0600) holding only it, with relative file paths made
absolute. The user's kubeconfig is trusted as given: managed clusters need
``exec`` credential plugins.

Markers become requirements: a test runs if the cluster has at least the
control-plane nodes and the other nodes its topology asks for, and is skipped
otherwise; markers that shape a cluster of our own (image, arguments,
environment, ports, registries) cannot be met and skip too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from pytest_k3s import kubeconfig
from pytest_k3s.errors import K3sError
from pytest_k3s.spec import INCIDENTAL_FIELDS
from pytest_k3s.spec import ClusterSpec


if TYPE_CHECKING:
    from pytest_k3s.cluster import K3sCluster

#: Kubeconfig fields naming files, resolved against the kubeconfig's folder
#: (as kubectl does).
_FILE_FIELDS = ("certificate-authority", "client-certificate", "client-key")
#: What a marker may ask of an existing cluster: its topology (as minimums).
_TOPOLOGY = ("servers", "agents")


class UnsuitableCluster(K3sError):
    """The existing cluster cannot give what a test asks for (the test is skipped)."""


def read_context(path: Path, context: str | None) -> tuple[kubeconfig.Kubeconfig, str]:
    """Return a kubeconfig holding only ``context`` (default: the current one).

    :raises K3sError: the file cannot be read, or has no such context
    """
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise K3sError(f"cannot read the kubeconfig {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise K3sError(f"{path} is not a kubeconfig")
    name = context or document.get("current-context")
    if not name:
        raise K3sError(f"{path} has no current-context; choose one with --k3s-context")

    def entry(kind: str, wanted: object) -> dict[str, Any]:
        for item in document.get(kind) or []:
            if isinstance(item, dict) and item.get("name") == wanted:
                return item
        known = ", ".join(
            str(i.get("name")) for i in document.get(kind) or [] if isinstance(i, dict)
        )
        raise K3sError(
            f"{path} has no {kind[:-1]} {wanted!r} (it has: {known or 'none'}); "
            "choose another with --k3s-context"
        )

    chosen = entry("contexts", name)
    details = chosen.get("context") or {}
    cluster = entry("clusters", details.get("cluster"))
    user = entry("users", details.get("user"))
    base = path.resolve().parent
    for section in (cluster.get("cluster") or {}, user.get("user") or {}):
        for key in _FILE_FIELDS:
            value = section.get(key)
            if isinstance(value, str) and value and not os.path.isabs(value):
                section[key] = str(base / value)
    only = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [user],
        "contexts": [chosen],
        "current-context": name,
    }
    return only, str(name)


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

        :raises UnsuitableCluster: it does not (the caller skips the test)
        :raises K3sError: it cannot be reached; every later call raises the
            same error at once
        """
        cluster = self._connect()
        control_planes = len(cluster.servers)
        reason = unmet_requirements(
            spec, self.base, control_planes, len(cluster.nodes) - control_planes
        )
        if reason is not None:
            raise UnsuitableCluster(reason)
        return cluster

    def _connect(self) -> K3sCluster:
        if self._error is not None:
            raise self._error
        if self._cluster is None:
            from pytest_k3s.cluster import K3sCluster

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


def open_cluster(cls: type[K3sCluster], path: Path, context: str | None) -> K3sCluster:
    """A handle on the cluster of ``path``'s ``context`` (see K3sCluster.existing)."""
    from pytest_k3s import kube
    from pytest_k3s.nodes import Node

    config, name = read_context(path, context)
    server = str(config["clusters"][0].get("cluster", {}).get("server", "?"))
    directory, copy = private_copy(config, name)
    try:
        api = kube.api_client(config)
        try:
            nodes = kube.list_nodes(api)
        finally:
            api.close()  # type: ignore[no-untyped-call]
    except Exception as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise K3sError(
            f"the existing cluster at {server} (context {name!r} of {path}) "
            f"does not answer: {kube.failure(exc)}"
        ) from exc
    return cls(
        name=name,
        spec=ClusterSpec(),
        runtime=None,
        nodes=[
            Node(node, "server" if control else "agent", "") for node, control in nodes
        ],
        kubeconfig_path=copy,
        owned=False,
        private_dir=directory,
    )


class NoDocker:
    """Stands in for the Docker runtime of an existing cluster: says it has none."""

    def __init__(self, cluster: str) -> None:
        self._cluster = cluster

    def close(self) -> None:
        """Nothing to close."""

    def __getattr__(self, name: str) -> object:
        raise K3sError(
            f"cluster {self._cluster} is an existing cluster (--k3s-kubeconfig / "
            "K3sCluster.existing): it has no Docker containers, so node logs, "
            "load_image and host_port are not available; use kubectl or the API"
        )


def private_copy(config: kubeconfig.Kubeconfig, name: str) -> tuple[Path, Path]:
    """Write ``config`` into a new private directory; return (directory, file)."""
    directory = Path(tempfile.mkdtemp(prefix="pytest-k3s-existing-"))
    try:
        path = kubeconfig.write(config, directory / f"{_safe(name)}.kubeconfig.yaml")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory, path


def _safe(name: str) -> str:
    keep: Callable[[str], bool] = lambda c: c.isalnum() or c in "-_."  # noqa: E731
    return "".join(c if keep(c) else "-" for c in name) or "cluster"
