"""One cluster per spec for a whole test run, shared by all xdist workers.

The first process that needs a spec starts its cluster while holding a file
lock for that spec and leaves a record (name, kubeconfig, or the start error)
in the run's state directory; every other process waits on the same lock and
attaches to the recorded cluster. Workers never remove shared clusters: the
process that owns the run (the xdist controller, or pytest itself without
xdist) removes everything labelled with the run id once, when the session
ends, so a crashed worker or Ctrl-C cannot leak a cluster or remove one early.
This is the only module that imports ``filelock`` (lazily, like the rest).
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_k3s import labels
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import K3sError
from pytest_k3s.settings import KeepMode
from pytest_k3s.spec import ClusterSpec


if TYPE_CHECKING:
    from pytest_k3s.cluster import K3sCluster


log = logging.getLogger("pytest_k3s")


@dataclass(frozen=True)
class RunInfo:
    """What identifies a test run to every process taking part in it."""

    run_id: str
    owner: labels.Owner
    state_dir: Path
    keep: KeepMode

    @property
    def may_keep(self) -> bool:
        """Whether clusters may outlive the run (so the sweep must spare them)."""
        return self.keep != "never"

    @classmethod
    def new(cls, *, keep: KeepMode) -> RunInfo:
        """A fresh run owned by this process, with a private state directory."""
        run_id = secrets.token_hex(6)
        state_dir = Path(tempfile.gettempdir()) / f"pytest-k3s-run-{run_id}"
        return cls(run_id, labels.Owner.current(), state_dir, keep)

    def to_json(self) -> str:
        """Serialise the run for another process (an xdist worker)."""
        return json.dumps(
            {
                "run_id": self.run_id,
                "owner": str(self.owner),
                "state_dir": str(self.state_dir),
                "keep": self.keep,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunInfo:
        """Read back what :meth:`to_json` wrote."""
        shared = json.loads(text)
        owner = labels.Owner.parse(shared["owner"])
        if owner is None:
            raise K3sError(f"malformed run owner {shared['owner']!r} from xdist")
        return cls(shared["run_id"], owner, Path(shared["state_dir"]), shared["keep"])


@dataclass(frozen=True)
class Record:
    """What the process that started (or failed to start) a cluster left behind."""

    name: str
    kubeconfig: str
    spec: str
    seconds: float
    error: str = ""

    @classmethod
    def read(cls, path: Path) -> Record:
        """Read a record file."""
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def write(self, path: Path) -> None:
        """Write the record atomically (readers never see half a file)."""
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.__dict__), encoding="utf-8")
        temporary.replace(path)


def records(state_dir: Path) -> list[Record]:
    """Every record of the run, oldest first."""
    paths = sorted(state_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
    return [Record.read(path) for path in paths]


class ClusterPool:
    """The clusters of one process in a run, keyed by spec.

    :param run: the run this process takes part in
    :param progress: where to report start-up steps
    """

    def __init__(self, run: RunInfo, progress: Callable[[str], None]) -> None:
        self.run = run
        self.progress = progress
        self._clusters: dict[ClusterSpec, K3sCluster] = {}
        self._swept = False

    def acquire(self, spec: ClusterSpec) -> K3sCluster:
        """Return the run's cluster for ``spec``, starting it if nobody has."""
        cluster = self._clusters.get(spec)
        if cluster is not None:
            return cluster
        from filelock import FileLock

        key = spec.digest()
        record_path = self.run.state_dir / f"{key}.json"
        with FileLock(str(self.run.state_dir / f"{key}.lock")):
            if record_path.exists():
                cluster = self._attach(Record.read(record_path), spec)
            else:
                cluster = self._start(spec, record_path)
        self._clusters[spec] = cluster
        return cluster

    def start_private(self, spec: ClusterSpec) -> K3sCluster:
        """Start a cluster for this process alone (e.g. one module's).

        It carries the run's labels, so the end of the run removes it even if
        this process dies first, and it is recorded so ``--k3s-keep`` lists it.
        """
        return self._start(spec, None)

    def close(self) -> None:
        """Let go of this process's connections (the run's owner removes clusters)."""
        for cluster in self._clusters.values():
            cluster.detach()
        self._clusters.clear()

    def _attach(self, record: Record, spec: ClusterSpec) -> K3sCluster:
        if record.error:
            raise ClusterStartError(
                f"the k3s cluster for {spec.describe()} failed to start in another "
                f"worker of this run:\n{record.error}"
            )
        from pytest_k3s.cluster import K3sCluster

        log.info("attaching to k3s cluster %s", record.name)
        return K3sCluster.attach(
            name=record.name, spec=spec, kubeconfig_path=Path(record.kubeconfig)
        )

    def _start(self, spec: ClusterSpec, record_path: Path | None) -> K3sCluster:
        """Start a cluster of the run and record it (a private one by its name)."""
        from pytest_k3s.cluster import K3sCluster

        self._sweep_once()
        began = time.monotonic()
        try:
            cluster = K3sCluster.start(
                spec,
                kubeconfig_dir=self.run.state_dir,
                run_id=self.run.run_id,
                owner=self.run.owner,
                keep=self.run.may_keep,
                progress=self.progress,
            )
        except K3sError as exc:
            if record_path is not None:
                # Other workers would fail the same way after the same wait.
                failed = Record(
                    "", "", spec.describe(), time.monotonic() - began, str(exc)
                )
                failed.write(record_path)
            raise
        record = Record(
            cluster.name,
            str(cluster.kubeconfig_path),
            spec.describe(),
            cluster.timings.total,
        )
        record.write(record_path or self.run.state_dir / f"private-{cluster.name}.json")
        return cluster

    def _sweep_once(self) -> None:
        """Remove dead runs' leftovers before the first start in this process."""
        if self._swept:
            return
        self._swept = True
        from pytest_k3s.docker_runtime import DockerRuntime

        runtime = DockerRuntime.connect()
        try:
            for name in runtime.sweep():
                self.progress(f"removed k3s cluster {name}, left over by a dead run")
        finally:
            runtime.close()


def finish_run(run: RunInfo, report: Callable[[str], None], *, failed: bool) -> None:
    """End the run: remove its clusters (once), or say how to reach kept ones.

    Runs in the process that owns the run, after every worker has finished.
    Docker is only contacted when some process recorded a cluster.
    """
    keep = run.keep == "always" or (run.keep == "on-failure" and failed)
    found = records(run.state_dir) if run.state_dir.exists() else []
    started = [r for r in found if not r.error]
    for record in started:
        report(
            f"k3s cluster {record.name} ({record.spec}) was ready in "
            f"{record.seconds:.1f}s"
        )
    if keep and started:
        for record in started:
            report(
                f"kept k3s cluster {record.name}: kubectl --kubeconfig "
                f"{record.kubeconfig} get nodes"
            )
        report(
            "remove kept clusters with 'python -m pytest_k3s sweep --include-kept' "
            f"or: docker rm -f -v $(docker ps -aq --filter label={labels.RUN}="
            f"{run.run_id})"
        )
        return
    if found or any(run.state_dir.glob("*.lock")):
        from pytest_k3s.docker_runtime import DockerRuntime

        runtime = DockerRuntime.connect()
        try:
            runtime.remove_run(run.run_id)
        finally:
            runtime.close()
    shutil.rmtree(run.state_dir, ignore_errors=True)
