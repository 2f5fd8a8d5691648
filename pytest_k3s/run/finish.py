"""The end of a test run: remove its clusters once, or say how to reach kept ones.

This runs in the process that owns the run (the xdist controller, or pytest
itself without xdist), after every worker has finished, and removes every
cluster labelled with the run's id: a crashed worker or Ctrl-C cannot leak a
cluster or remove one early. Reusable clusters stay for later runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

from pytest_k3s import labels
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.errors import DockerUnavailableError
from pytest_k3s.lifecycle.removal import remove_clusters
from pytest_k3s.run.state import RunInfo
from pytest_k3s.run.state import records


def finish_run(
    run: RunInfo,
    report: Callable[[str], None],
    engine: Callable[[], Engine],
    *,
    failed: bool,
    interrupted: bool = False,
) -> None:
    """End the run: remove its clusters (once), or say how to reach kept ones.

    Unless the run was interrupted, the system images of the clusters it
    removes are saved first (:mod:`pytest_k3s.lifecycle.image_cache`).

    :param engine: the process's engine, connected on first call: asked for
        whenever some process of the run may have started a cluster (the
        state directory exists), even if it died before recording one
    :raises DockerUnavailableError: no engine answers, and the run's
        records say a cluster was started
    """
    if not run.state_dir.exists():
        return
    keep = run.keep_mode == "always" or (run.keep_mode == "on-failure" and failed)
    started = [r for r in records(run.state_dir) if not r.error]
    for record in started:
        if record.reused == "attached":
            how = f"reused (attached in {record.seconds:.1f}s)"
        elif record.reused == "started":
            how = f"started in {record.seconds:.1f}s (kept for reuse)"
        else:
            how = f"was ready in {record.seconds:.1f}s"
        report(f"k3s cluster {record.name} ({record.spec}) {how}")
    started = [r for r in started if not r.reused]  # reusable ones stay
    if keep and started:
        hours = run.keep_for / 3600
        for record in started:
            report(
                f"kept k3s cluster {record.name} for {hours:g}h: kubectl "
                f"--kubeconfig {record.kubeconfig} get nodes"
            )
        names = " ".join(record.name for record in started)
        report(f"remove kept clusters with: python -m pytest_k3s rm {names}")
        return
    try:
        connected = engine()
    except DockerUnavailableError:
        if not started:
            shutil.rmtree(run.state_dir, ignore_errors=True)
            return
        raise
    clusters = run_clusters(connected.labelled(), run.run_id)
    remove_clusters(connected, clusters, save_images=not interrupted, report=report)
    shutil.rmtree(run.state_dir, ignore_errors=True)


def run_clusters(found: labels.Found, run_id: str) -> list[str]:
    """The clusters of test run ``run_id``: what its end removes.

    :param found: each cluster's name, with the labels of one of its objects
    """
    return sorted(
        name for name, tags in found.items() if tags.get(labels.RUN) == run_id
    )
