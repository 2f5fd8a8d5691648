"""Removing leftovers: what a sweep does with the clusters labels.py chose.

A sweep removes clusters of dead runs (and, when asked, kept ones, old
ones, and reusable ones nobody leases), and with each the kubeconfig it left
in its run's state directory. Which clusters qualify is decided by
:func:`pytest_k3s.labels.sweepable_clusters` and, for reusable clusters, by
:mod:`pytest_k3s.reuse`; this module only carries it out.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_k3s import labels
from pytest_k3s.sharing import STATE_PREFIX
from pytest_k3s.spec import DEFAULT_REUSE_FOR


if TYPE_CHECKING:
    from pytest_k3s.docker_runtime import DockerRuntime


def sweep_leftovers(
    runtime: DockerRuntime,
    *,
    include_kept: bool = False,
    older: float | None = None,
    reusable: bool = False,
    reuse_for: float = DEFAULT_REUSE_FOR,
) -> list[str]:
    """Remove leftover clusters and their kubeconfigs; return the cluster names.

    Which clusters count as leftovers is :func:`labels.sweepable_clusters`'s
    rule: dead runs' by default, kept ones only when ``include_kept`` is set
    or their time to be kept ran out, or anything older than ``older``.
    Reusable clusters that no run leases go too when ``reusable`` is set, or
    when unused for longer than ``reuse_for``.
    """
    from pytest_k3s import reuse

    found = runtime.labelled()
    names = labels.sweepable_clusters(found, include_kept=include_kept, older=older)
    for name in names:
        runtime.remove_cluster(name)
        _remove_state(found[name].get(labels.STATE_DIR), name)
    for name in reuse.reusable_clusters(runtime):
        if not (reusable or reuse.expired(name, reuse_for)):
            continue
        lease = reuse.try_lease(name)
        if lease is None:
            continue  # a run uses it now
        try:
            runtime.remove_cluster(name)
            reuse.forget(name)
        finally:
            lease.release()
        names.append(name)
    return names


def _remove_state(state_dir: str | None, name: str) -> None:
    """Remove a swept cluster's kubeconfig, and its run's state dir once empty.

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
    (path / f"{name}.kubeconfig.yaml").unlink(missing_ok=True)
    if not any(path.glob("*.kubeconfig.yaml")):
        shutil.rmtree(path, ignore_errors=True)
