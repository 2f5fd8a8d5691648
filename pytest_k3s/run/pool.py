"""Where fixtures get clusters: the :class:`Pool` Protocol, and one cluster per spec.

:class:`DockerPool` gives a whole test run one cluster per spec, shared by
all xdist workers. The first process that needs a spec starts its cluster
while holding a file lock for that spec and leaves a record (name,
kubeconfig, or the start error) in the run's state directory
(:mod:`pytest_k3s.run.state`); every other process waits on the same lock
and attaches to the recorded cluster, or fails at once with the recorded
error. Workers never remove shared clusters, and the handles they hand out
cannot: the process that owns the run removes everything labelled with the
run id once, when the session ends (:mod:`pytest_k3s.run.finish`).

:class:`~pytest_k3s.run.existing.ExistingPool` is the other Pool: the run's
one existing cluster (``--k3s-kubeconfig``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Protocol

from pytest_k3s.cluster import K3sCluster
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import K3sError
from pytest_k3s.lifecycle.start import StartOptions
from pytest_k3s.run import reuse
from pytest_k3s.run.leftovers import sweep_leftovers
from pytest_k3s.run.state import Record
from pytest_k3s.run.state import RunInfo
from pytest_k3s.spec import ClusterSpec


if TYPE_CHECKING:
    from filelock import BaseFileLock


log = logging.getLogger("pytest_k3s")

#: What ends a process rather than a start: never recorded as a start failure.
_NOT_FAILURES = (KeyboardInterrupt, SystemExit, GeneratorExit)


class Pool(Protocol):
    """Where the fixtures of one process get their clusters."""

    def acquire(self, spec: ClusterSpec) -> K3sCluster:
        """The run's cluster for ``spec``, shared by every test that asks for it.

        :raises UnsuitableClusterError: this pool cannot give one (the
            fixture skips the test, saying why)
        """

    def start_private(self, spec: ClusterSpec) -> K3sCluster:
        """A cluster of ``spec`` for the caller alone (a module's own).

        :raises UnsuitableClusterError: this pool cannot give one
        """

    def release_private(self, cluster: K3sCluster, *, keep: bool) -> None:
        """Remove a cluster :meth:`start_private` gave, or with ``keep`` leave it.

        A kept one is left to the run's end, which reports or removes it.
        """

    def close(self) -> None:
        """Let go of this process's handles (the run's end removes clusters)."""


class DockerPool:
    """The clusters of one process in a run, keyed by what shapes them.

    :param run: the run this process takes part in
    :param engine: this process's engine, which the pool does not close
    :param progress: where to report start-up steps
    """

    def __init__(
        self, run: RunInfo, engine: Engine, progress: Callable[[str], None]
    ) -> None:
        self.run = run
        self.engine = engine
        self.progress = progress
        self._clusters: dict[str, K3sCluster] = {}
        self._leases: list[BaseFileLock] = []
        self._swept = False

    def acquire(self, spec: ClusterSpec) -> K3sCluster:
        """Return the run's cluster for ``spec``, starting it if nobody has.

        The handle is shared: its :meth:`~pytest_k3s.K3sCluster.stop` leaves
        the cluster alone, which the run's owner removes at the end.
        """
        key = spec.digest()
        cluster = self._clusters.get(key)
        if cluster is not None:
            return cluster
        from filelock import FileLock

        record_path = self.run.state_dir / f"{key}.json"
        with FileLock(str(self.run.state_dir / f"{key}.lock")):
            if record_path.exists():
                cluster = self._attach(Record.read(record_path), spec)
            elif self.run.reuse:
                cluster = self._reuse(spec, record_path)
            else:
                cluster = self._start(spec, record_path)
        cluster.share()
        self._clusters[key] = cluster
        return cluster

    def start_private(self, spec: ClusterSpec) -> K3sCluster:
        """Start a cluster for this process alone (e.g. one module's).

        It carries the run's labels, so the end of the run removes it even if
        this process dies first, and it is recorded so ``--k3s-keep`` lists it.
        Its handle is the caller's: its ``stop()`` removes it.
        """
        return self._start(spec, None)

    def release_private(self, cluster: K3sCluster, *, keep: bool) -> None:
        """Remove a private cluster now, or with ``keep`` leave it to the run's end.

        A removed one's record goes too, so the run's end does not list it
        among the kept.
        """
        if keep:
            cluster.detach()
            return
        try:
            cluster.stop()
        finally:
            _private_record(self.run, cluster.name).unlink(missing_ok=True)

    def close(self) -> None:
        """Let go of this process's connections (the run's owner removes clusters)."""
        for cluster in self._clusters.values():
            cluster.detach()
        self._clusters.clear()
        for lease in self._leases:
            lease.release()
        self._leases.clear()

    def _options(self) -> StartOptions:
        """The run's start options: its labels, kubeconfigs in its state directory."""
        keep_until = time.time() + self.run.keep_for if self.run.may_keep else None
        return StartOptions(
            state_dir=self.run.state_dir,
            run_id=self.run.run_id,
            owner=self.run.owner,
            keep_until=keep_until,
            progress=self.progress,
        )

    def _reuse(self, spec: ClusterSpec, record_path: Path) -> K3sCluster:
        """Lease a kept cluster of ``spec`` (or start one to keep) and record it."""

        def start(directory: Path) -> K3sCluster:
            self._sweep_once()
            options = reuse.start_options(
                directory, owner=self.run.owner, progress=self.progress
            )
            return K3sCluster.start_with(spec, options, engine=self.engine)

        began = time.monotonic()
        try:
            found = reuse.acquire(self.engine, spec, start, self.progress)
        except _NOT_FAILURES:
            raise
        except BaseException as exc:
            _record_failure(record_path, spec, exc, time.monotonic() - began)
            raise
        self._leases.append(found.lease)
        cluster = found.cluster
        if found.attached:
            self.progress(
                f"reusing k3s cluster {cluster.name} (attached in {found.seconds:.1f}s)"
            )
        Record(
            cluster.name,
            str(cluster.kubeconfig_path),
            spec.describe(),
            found.seconds,
            pid=os.getpid(),
            reused="attached" if found.attached else "started",
        ).write(record_path)
        return cluster

    def _attach(self, record: Record, spec: ClusterSpec) -> K3sCluster:
        if record.error:
            where = (
                "earlier in this process"
                if record.pid == os.getpid()
                else "in another worker of this run"
            )
            raise ClusterStartError(
                f"the k3s cluster for {spec.describe()} failed to start {where}:\n"
                f"{record.error}"
            )
        log.info("attaching to k3s cluster %s", record.name)
        return K3sCluster.attach(
            name=record.name,
            spec=spec,
            kubeconfig_path=Path(record.kubeconfig),
            engine=self.engine,
        )

    def _start(self, spec: ClusterSpec, record_path: Path | None) -> K3sCluster:
        """Start a cluster of the run and record it (a private one by its name)."""
        self._sweep_once()
        began = time.monotonic()
        try:
            cluster = K3sCluster.start_with(spec, self._options(), engine=self.engine)
        except _NOT_FAILURES:
            raise
        except BaseException as exc:  # pytest-timeout's Failed is no Exception
            if record_path is not None:
                # Other workers would fail the same way after the same wait.
                _record_failure(record_path, spec, exc, time.monotonic() - began)
            raise
        record = Record(
            cluster.name,
            str(cluster.kubeconfig_path),
            spec.describe(),
            cluster.timings.total,
            pid=os.getpid(),
        )
        record.write(record_path or _private_record(self.run, cluster.name))
        return cluster

    def _sweep_once(self) -> None:
        """Remove dead runs' leftovers before the first start in this process.

        Best effort: a sweep that fails (say, racing another run's sweep) is
        logged and never fails the start.
        """
        if self._swept:
            return
        self._swept = True
        try:
            for name in sweep_leftovers(self.engine, reuse_for=self.run.reuse_for):
                self.progress(f"removed k3s cluster {name}, left over by a dead run")
        except Exception as exc:
            log.warning("sweeping dead runs' k3s clusters failed: %s", exc)


def _private_record(run: RunInfo, name: str) -> Path:
    return run.state_dir / f"private-{name}.json"


def _record_failure(
    path: Path, spec: ClusterSpec, exc: BaseException, seconds: float
) -> None:
    """Record a failed start, so the run's other processes fail at once with it."""
    message = str(exc) if isinstance(exc, K3sError) else repr(exc)
    Record("", "", spec.describe(), seconds, message, os.getpid()).write(path)
