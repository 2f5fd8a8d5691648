"""Clusters for the shell: what ``pytest-k3s up``, ``kubeconfig`` and ``down`` do.

A cluster made by ``up`` is a reusable cluster (:mod:`pytest_k3s.run.reuse`):
labelled reusable, with a run id of its own, its kubeconfig and records in
this user's reuse directory. So it stays until ``down`` (or ``rm``, or the
sweep once it went unused for 7 days), no sweep of dead runs' leftovers
touches it, and ``pytest --k3s-reuse`` attaches to it when the spec matches.
``up`` leases it as a run does, and the lease goes when the process ends:
the cluster is then free for the next run, or the next ``up --reuse``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Mapping
from pathlib import Path

from pytest_k3s import labels
from pytest_k3s.cluster import K3sCluster
from pytest_k3s.engine.node_container import API_PORT
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.engine.protocol import balancer_container
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import NameConflictError
from pytest_k3s.kube import kubeconfig
from pytest_k3s.lifecycle.load_balancer import api_endpoint
from pytest_k3s.lifecycle.start import check_cluster_name
from pytest_k3s.run import reuse
from pytest_k3s.run.leftovers import remove_named
from pytest_k3s.run.leftovers import sweep_leftovers
from pytest_k3s.spec import ClusterSpec


log = logging.getLogger("pytest_k3s")


def up(
    engine: Engine,
    spec: ClusterSpec,
    *,
    name: str | None = None,
    reuse_free: bool = False,
    progress: Callable[[str], None],
) -> reuse.Reused:
    """Start a reusable cluster of ``spec`` and lease it; return it with the lease.

    With ``reuse_free``, attach to a free, healthy reusable cluster of
    ``spec`` instead where there is one (as ``pytest --k3s-reuse`` does).
    Before a start, dead runs' leftovers are swept, as a run's first start
    does. The caller releases the lease (ending the process does too).

    :param name: the cluster's name (default: a fresh one); with
        ``reuse_free``, the one cluster to attach to, started under this
        name if it does not exist
    :raises SpecError: ``name`` cannot name a cluster
    :raises NameConflictError: a cluster of that name exists (with
        ``reuse_free``: and is not a reusable cluster of ``spec``)
    :raises K3sError: with ``reuse_free``, the cluster of that name is in use
    """
    if name is not None:
        check_cluster_name(name)
        _check_name(engine, spec, name, reuse_free=reuse_free)

    def start(directory: Path) -> K3sCluster:
        try:
            for swept in sweep_leftovers(engine):
                progress(f"removed k3s cluster {swept}, left over by a dead run")
        except Exception as exc:  # best effort, as a run's sweep: never fails up
            log.warning("sweeping dead runs' k3s clusters failed: %s", exc)
        options = reuse.start_options(directory, name=name, progress=progress)
        return K3sCluster.start_with(spec, options, engine=engine)

    if reuse_free:
        return reuse.acquire(engine, spec, start, progress, only=name)
    return reuse.start_reusable(start)


def _check_name(
    engine: Engine, spec: ClusterSpec, name: str, *, reuse_free: bool
) -> None:
    """Refuse a name that a cluster has, unless ``up --reuse`` may attach to it."""
    tags = engine.labelled().get(name)
    if tags is None:
        return
    if not reuse_free:
        raise NameConflictError(
            f"a k3s cluster named {name} exists already on the Docker engine at "
            f"{engine.address}; use it (pytest-k3s kubeconfig {name}, or "
            f"pytest-k3s up --reuse --name {name} for one that up made), remove "
            f"it (pytest-k3s down {name}), or choose another name"
        )
    if tags.get(labels.REUSE) != "true" or not reuse.kubeconfig_of(name).is_file():
        raise NameConflictError(
            f"the k3s cluster {name} is not a reusable cluster of this user (made "
            "by pytest-k3s up or pytest --k3s-reuse), so up --reuse does not "
            f"attach to it; remove it (pytest-k3s down {name}) or choose another "
            "name"
        )
    if tags.get(labels.SPEC) != spec.digest():
        raise NameConflictError(
            f"the k3s cluster {name} was made from another spec (spec hash "
            f"{tags.get(labels.SPEC, '?')}; asked for {spec.digest()}: "
            f"{spec.describe()}); give the options it was made with, remove it "
            f"(pytest-k3s down {name}), or choose another name"
        )
    if reuse.leased(name):
        raise K3sError(
            f"the k3s cluster {name} is in use (leased by a pytest --k3s-reuse run "
            "or an up that still runs); try again once that has ended, or choose "
            "another name"
        )


def kubeconfig_path(engine: Engine, name: str, *, internal: bool = False) -> Path:
    """The kubeconfig of our cluster ``name`` (with ``internal``, for its network).

    The internal one (:meth:`pytest_k3s.K3sCluster.internal_kubeconfig`) is
    written next to the cluster's own on first use, and removed with it.

    :raises K3sError: there is no such cluster, or its kubeconfig is not
        where pytest-k3s keeps it (the message says why and what to do)
    """
    tags = engine.labelled().get(name)
    if tags is None:
        raise K3sError(_unknown(engine, name))
    path = kubeconfig_file(name, tags)
    if path is None:
        raise K3sError(
            f"the kubeconfig of k3s cluster {name} is in a private temporary "
            "directory of the process that started it (K3sCluster.start without "
            "kubeconfig_dir), which the command line cannot know; use that "
            "handle's kubeconfig_path"
        )
    if not path.is_file():
        raise K3sError(
            f"the kubeconfig of k3s cluster {name} is not at {path} (another "
            "user's or machine's cluster, or the file was removed); remove the "
            f"cluster with pytest-k3s down {name} and start another"
        )
    if not internal:
        return path
    balanced = balancer_container(engine, name) is not None
    server = kubeconfig.server_url(api_endpoint(name, balanced=balanced), API_PORT)
    return kubeconfig.write_internal(path, server=server, name=name)


def kubeconfig_file(name: str, tags: Mapping[str, str]) -> Path | None:
    """Where pytest-k3s keeps the kubeconfig of cluster ``name``, given its labels.

    A reusable cluster's is in the reuse directory, a test run's in the
    run's state directory (its label says which); None for a cluster whose
    kubeconfig went where its starter chose.
    """
    if tags.get(labels.REUSE) == "true":
        return reuse.kubeconfig_of(name)
    state = tags.get(labels.STATE_DIR)
    if state:
        return Path(state) / f"{name}.kubeconfig.yaml"
    return None


def down(engine: Engine, name: str) -> None:
    """Remove our cluster ``name`` with its kubeconfigs and records, as ``rm`` does.

    :raises K3sError: there is no such cluster, or it is a reusable cluster
        that a run (or an ``up``) leases right now
    """
    outcome = remove_named(engine, [name])[name]
    if outcome == "unknown":
        raise K3sError(_unknown(engine, name))
    if outcome == "in use":
        raise K3sError(
            f"the k3s cluster {name} is in use (leased by a pytest --k3s-reuse run "
            "or an up that still runs); run down again once that has ended"
        )


def _unknown(engine: Engine, name: str) -> str:
    return (
        f"no k3s cluster named {name} on the Docker engine at {engine.address}; "
        "pytest-k3s list shows the clusters there"
    )
