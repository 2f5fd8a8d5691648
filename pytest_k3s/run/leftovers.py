"""Leftovers: which clusters a sweep removes, and the sweep that removes them.

A sweep removes clusters of dead runs (and, when asked, kept ones, old
ones, and reusable ones nobody leases), and with each the kubeconfig it left
in its run's state directory. The rules are pure functions of labels,
unit-tested without an engine: a cluster goes only when the process that
owns it is known to be dead (:func:`pytest_k3s.owner.owner_alive`), unless
``older`` says every cluster older than that goes, whatever its owner.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

from pytest_k3s import labels
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.kube import kubeconfig
from pytest_k3s.lifecycle.removal import remove_clusters
from pytest_k3s.owner import owner_alive
from pytest_k3s.run import reuse
from pytest_k3s.run.state import STATE_PREFIX
from pytest_k3s.spec import DEFAULT_REUSE_FOR


def kept(tags: Mapping[str, str], *, now: float | None = None) -> bool:
    """Whether a cluster is kept and its time to be kept has not run out."""
    if tags.get(labels.KEEP) != "true":
        return False
    until = tags.get(labels.KEEP_UNTIL, "")
    if not until.isdigit():
        return True  # kept without an expiry (0.1.0): until swept by hand
    return int(until) > (time.time() if now is None else now)


def sweepable(
    tags: Mapping[str, str],
    *,
    include_kept: bool = False,
    host: str | None = None,
    now: float | None = None,
) -> bool:
    """Decide whether a sweep may remove an object with these labels.

    Only our objects (those with a cluster label) whose owning process is known
    to be dead qualify; kept clusters only once their time to be kept has run
    out, or when ``include_kept`` is set.
    """
    if labels.CLUSTER not in tags or tags.get(labels.REUSE) == "true":
        return False
    if kept(tags, now=now) and not include_kept:
        return False
    owner = labels.owner_of(tags)
    if owner is None:
        return False
    return owner_alive(owner, host=host) is False


def older_than(
    tags: Mapping[str, str], seconds: float, *, now: float | None = None
) -> bool:
    """Whether our object was created more than ``seconds`` ago."""
    created = tags.get(labels.CREATED, "")
    if labels.CLUSTER not in tags or not created.isdigit():
        return False
    return int(created) < (time.time() if now is None else now) - seconds


def clusters_matching(
    found: labels.Found, predicate: Callable[[Mapping[str, str]], bool]
) -> list[str]:
    """Return the names of the clusters whose labels satisfy ``predicate``.

    :param found: each cluster's name, with the labels of one of its objects
    """
    return sorted(
        name for name, found_labels in found.items() if predicate(found_labels)
    )


def sweepable_clusters(
    found: labels.Found, *, include_kept: bool = False, older: float | None = None
) -> list[str]:
    """The clusters a sweep removes.

    Without ``older``: those of dead runs (see :func:`sweepable`). With it:
    every cluster created more than ``older`` seconds ago, whatever its
    owner's state (for leftovers no sweep can check: other hosts, other
    containers), kept ones only with ``include_kept``. Reusable clusters are
    never among them (:func:`sweep_leftovers` decides).
    """
    if older is None:
        return clusters_matching(
            found, lambda tags: sweepable(tags, include_kept=include_kept)
        )
    return clusters_matching(
        found,
        lambda tags: (
            older_than(tags, older)
            and (include_kept or not kept(tags))
            and tags.get(labels.REUSE) != "true"
        ),
    )


def sweep_leftovers(
    engine: Engine,
    *,
    include_kept: bool = False,
    older: float | None = None,
    reusable: bool = False,
    reuse_for: float = DEFAULT_REUSE_FOR,
) -> list[str]:
    """Remove leftover clusters and their kubeconfigs; return the cluster names.

    Which clusters count as leftovers is :func:`sweepable_clusters`'s rule:
    dead runs' by default, kept ones only when ``include_kept`` is set or
    their time to be kept ran out, or anything older than ``older``.
    Reusable clusters that no run leases go too when ``reusable`` is set, or
    when unused for longer than ``reuse_for``.
    """
    found = engine.labelled()
    names = sweepable_clusters(found, include_kept=include_kept, older=older)
    for name in names:
        remove_clusters(engine, [name], save_images=False)
        remove_state(found[name].get(labels.STATE_DIR), name)
    for name in reuse.reusable_clusters(engine):
        if not (reusable or reuse.expired(name, reuse_for)):
            continue
        lease = reuse.try_lease(name)
        if lease is None:
            continue  # a run uses it now
        try:
            remove_clusters(engine, [name], save_images=False)
            reuse.forget(name)
        finally:
            lease.release()
        names.append(name)
    return names


def remove_named(engine: Engine, names: Sequence[str]) -> dict[str, str]:
    """Remove the named clusters, as ``python -m pytest_k3s rm`` does.

    Each goes with its kubeconfig (and its run's state directory once
    empty) or, for a reusable cluster, what the reuse directory holds about
    it. A reusable cluster that a run leases right now is left alone.

    :returns: for each name, what happened: ``removed``, ``unknown`` (no
        such cluster here) or ``in use`` (a run leases it)
    """
    found = engine.labelled()
    outcome: dict[str, str] = {}
    for name in names:
        tags = found.get(name)
        if tags is None:
            outcome[name] = "unknown"
        elif tags.get(labels.REUSE) == "true":
            lease = reuse.try_lease(name)
            if lease is None:
                outcome[name] = "in use"
                continue
            try:
                remove_clusters(engine, [name], save_images=False)
                reuse.forget(name)
            finally:
                lease.release()
            outcome[name] = "removed"
        else:
            remove_clusters(engine, [name], save_images=False)
            remove_state(tags.get(labels.STATE_DIR), name)
            outcome[name] = "removed"
    return outcome


def remove_state(state_dir: str | None, name: str) -> None:
    """Remove a swept cluster's kubeconfigs, and its run's state dir once empty.

    Only a directory that is ours is touched: named like a state directory,
    a real directory (no symlink), owned by this user.
    """
    if not state_dir:
        return
    path = Path(state_dir)
    try:
        found = path.lstat()
    except OSError:
        return
    if (
        not path.name.startswith(STATE_PREFIX)
        or not stat.S_ISDIR(found.st_mode)
        or found.st_uid != os.getuid()
    ):
        return
    own = path / f"{name}.kubeconfig.yaml"
    own.unlink(missing_ok=True)
    kubeconfig.internal_path(own).unlink(missing_ok=True)
    if not any(path.glob("*.kubeconfig.yaml")):
        shutil.rmtree(path, ignore_errors=True)
