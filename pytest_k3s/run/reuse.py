"""Clusters kept between runs (``--k3s-reuse``): recorded, leased, checked, attached.

A reusable cluster carries the label ``io.pytest-k3s.reuse=true`` and its
spec digest, and a run id of its own (so no run's end removes it). Its
kubeconfig, a lease file and a last-used mark live in this user's reuse
directory (``$XDG_CACHE_HOME/pytest-k3s/reuse``, else ``~/.cache/...``), so
only clusters this user started on this machine are reused.

A run leases a cluster with an OS-level lock on its lease file, held by the
process that found it until that process ends (the kernel releases it if the
process dies); the other xdist workers of the run attach through the run's
record without leasing. A cluster that is leased is not offered to another
run, which starts a fresh one instead. Before a leased cluster is handed out
it is checked: every node container running, ``/readyz`` answering, every
node Ready; a cluster that fails is removed and replaced, with a line saying
why. Namespaces left by ``k3s_namespace`` in earlier runs are deleted.

``pytest-k3s up`` (:mod:`pytest_k3s.run.shell`) starts and leases reusable
clusters the same way, outside a test run, and a run attaches to them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_k3s import labels
from pytest_k3s.cluster import K3sCluster
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.engine.protocol import node_containers
from pytest_k3s.engine.protocol import role_container
from pytest_k3s.engine.protocol import via_network
from pytest_k3s.errors import K3sError
from pytest_k3s.kube import client as kube
from pytest_k3s.kube import kubeconfig
from pytest_k3s.lifecycle.removal import remove_clusters
from pytest_k3s.lifecycle.start import StartOptions
from pytest_k3s.owner import Owner
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.userdirs import cache_home
from pytest_k3s.userdirs import private_directory


if TYPE_CHECKING:
    from filelock import BaseFileLock


def reuse_dir() -> Path:
    """This user's directory of reusable clusters (created private on first use)."""
    return private_directory(cache_home() / "reuse")


def kubeconfig_of(name: str) -> Path:
    """Where the reusable cluster ``name`` keeps its kubeconfig."""
    return reuse_dir() / f"{name}.kubeconfig.yaml"


def last_used(name: str) -> float | None:
    """When a reusable cluster was last handed to a run (epoch seconds), if known."""
    try:
        return (reuse_dir() / f"{name}.used").stat().st_mtime
    except OSError:
        return None


def leased(name: str) -> bool:
    """Whether some process holds the cluster's lease right now."""
    lease = try_lease(name)
    if lease is None:
        return True
    lease.release()
    return False


def try_lease(name: str) -> BaseFileLock | None:
    """Take the cluster's lease without waiting; None if another process has it."""
    from filelock import FileLock
    from filelock import Timeout

    lock = FileLock(str(reuse_dir() / f"{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def forget(name: str) -> None:
    """Remove what the reuse directory holds about a removed cluster."""
    folder = reuse_dir()
    kubeconfig.internal_path(kubeconfig_of(name)).unlink(missing_ok=True)
    for suffix in (".kubeconfig.yaml", ".used", ".lock"):
        (folder / f"{name}{suffix}").unlink(missing_ok=True)


def start_options(
    directory: Path,
    *,
    name: str | None = None,
    owner: Owner | None = None,
    progress: Callable[[str], None] | None = None,
) -> StartOptions:
    """How a reusable cluster starts: labelled reusable, with a run id of its own.

    No run's end removes it then, and its kubeconfig goes to ``directory``
    (the reuse directory :func:`acquire` hands ``start``).
    """
    return StartOptions(
        name=name,
        kubeconfig_dir=directory,
        run_id=f"reuse-{os.urandom(4).hex()}",
        owner=owner,
        reusable=True,
        progress=progress,
    )


@dataclass
class Reused:
    """A reusable cluster handed to this run, with the lease that holds it."""

    cluster: K3sCluster
    lease: BaseFileLock
    attached: bool
    seconds: float


def acquire(
    engine: Engine,
    spec: ClusterSpec,
    start: Callable[[Path], K3sCluster],
    progress: Callable[[str], None],
    *,
    only: str | None = None,
) -> Reused:
    """Attach to a free, healthy reusable cluster of ``spec``, or start one.

    :param start: starts a new reusable cluster with its kubeconfig in the
        given directory
    :param only: attach to the cluster of this name only (``start`` then
        starts one under it)
    """
    began = time.monotonic()
    digest = spec.digest()
    for name in reusable_clusters(engine, digest):
        if only is not None and name != only:
            continue
        lease = try_lease(name)
        if lease is None:
            continue  # another run has it
        try:
            if via_network(engine, spec.api_host):
                # Join before asking (as the start and attach do), or a
                # healthy cluster looks dead and is removed.
                engine.join_network(name)
            reason = _unhealthy(engine, name)
            if reason is not None:
                progress(f"removing reusable k3s cluster {name}: {reason}")
                remove_clusters(engine, [name], save_images=False)
                forget(name)
                continue
            cluster = K3sCluster.attach(
                name=name, spec=spec, kubeconfig_path=kubeconfig_of(name), engine=engine
            )
            _clean_slate(cluster)
        except BaseException:
            lease.release()
            raise
        _mark_used(name)
        return Reused(cluster, lease, True, time.monotonic() - began)
    return start_reusable(start)


def start_reusable(start: Callable[[Path], K3sCluster]) -> Reused:
    """Start a reusable cluster with ``start`` and lease it.

    :param start: starts a new reusable cluster with its kubeconfig in the
        given directory (the reuse directory)
    """
    cluster = start(reuse_dir())
    lease = try_lease(cluster.name)
    if lease is None:  # nobody else knows its name yet
        raise K3sError(f"could not lease the new reusable cluster {cluster.name}")
    _mark_used(cluster.name)
    return Reused(cluster, lease, False, cluster.timings.total)


def reusable_clusters(engine: Engine, digest: str | None = None) -> list[str]:
    """Reusable clusters on the engine that this user's reuse directory knows.

    With ``digest``, only those of that spec, least recently used first.
    """
    found = engine.labelled()
    names = [
        name
        for name, tags in found.items()
        if tags.get(labels.REUSE) == "true"
        and (digest is None or tags.get(labels.SPEC) == digest)
        and kubeconfig_of(name).exists()
    ]
    return sorted(names, key=lambda name: last_used(name) or 0.0)


def _unhealthy(engine: Engine, name: str) -> str | None:
    """Why the reusable cluster ``name`` cannot be handed out; None if it can."""
    containers = node_containers(engine, name)
    servers = [c for c in containers if c.labels.get(labels.ROLE) == "server"]
    if not servers:
        return "its server containers are gone"
    for container in containers:
        status = engine.state(container.id).get("Status")
        if status != "running":
            return f"node container {container.name} is {status}"
    registry = role_container(engine, name, labels.REGISTRY_ROLE)
    if registry is not None:  # its pods' images are there
        status = engine.state(registry.id).get("Status")
        if status != "running":
            return f"its registry {registry.name} is {status}"
    config = kubeconfig.parse(kubeconfig_of(name).read_bytes())
    api = kube.api_client(config)
    try:
        reason = kube.readyz(api)
        if reason is None:
            reason, _ = kube.nodes_ready(api, {c.name for c in containers})
    finally:
        api.close()  # type: ignore[no-untyped-call]
    return reason


def _clean_slate(cluster: K3sCluster) -> None:
    """Delete the namespaces ``k3s_namespace`` left in earlier runs."""
    kube.delete_namespaces(cluster.api_client, kube.MANAGED_BY)


def _mark_used(name: str) -> None:
    (reuse_dir() / f"{name}.used").touch()  # an existing file's mtime moves too


def expired(name: str, unused_for: float, *, now: float | None = None) -> bool:
    """Whether the reusable cluster ``name`` was last used over ``unused_for`` ago."""
    used = last_used(name)
    cutoff = (time.time() if now is None else now) - unused_for
    return used is not None and used < cutoff
