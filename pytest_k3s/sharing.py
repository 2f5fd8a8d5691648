"""One cluster per spec for a whole test run, shared by all xdist workers.

The first process that needs a spec starts its cluster while holding a file
lock for that spec and leaves a record (name, kubeconfig, or the start error)
in the run's state directory; every other process waits on the same lock and
attaches to the recorded cluster, or fails at once with the recorded error.
Workers never remove shared clusters, and the handles they hand out cannot:
the process that owns the run (the xdist controller, or pytest itself without
xdist) removes everything labelled with the run id once, when the session
ends, so a crashed worker or Ctrl-C cannot leak a cluster or remove one early.
This is the only module that imports ``filelock`` (lazily, like the rest).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_k3s import labels
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import DockerUnavailableError
from pytest_k3s.errors import K3sError
from pytest_k3s.settings import KeepMode
from pytest_k3s.spec import DEFAULT_REUSE_FOR
from pytest_k3s.spec import ClusterSpec


if TYPE_CHECKING:
    from filelock import BaseFileLock

    from pytest_k3s.cluster import K3sCluster


log = logging.getLogger("pytest_k3s")

#: State directories are ``<tmp>/pytest-k3s-run-<run id>``.
STATE_PREFIX = "pytest-k3s-run-"
#: What ends a process rather than a start: never recorded as a start failure.
_NOT_FAILURES = (KeyboardInterrupt, SystemExit, GeneratorExit)


@dataclass(frozen=True)
class RunInfo:
    """What identifies a test run to every process taking part in it."""

    run_id: str
    owner: labels.Owner
    state_dir: Path
    keep: KeepMode
    keep_for: float
    #: Keep clusters between runs and attach to them (--k3s-reuse), and how
    #: long an unused one is kept.
    reuse: bool = False
    reuse_for: float = DEFAULT_REUSE_FOR

    @property
    def may_keep(self) -> bool:
        """Whether clusters may outlive the run (so the sweep must spare them)."""
        return self.keep != "never"

    @classmethod
    def new(
        cls,
        *,
        keep: KeepMode,
        keep_for: float,
        reuse: bool = False,
        reuse_for: float = DEFAULT_REUSE_FOR,
    ) -> RunInfo:
        """A fresh run owned by this process (its state directory is made later)."""
        run_id = os.urandom(6).hex()  # not secrets: it imports OpenSSL (slow)
        state_dir = Path(tempfile.gettempdir()) / f"{STATE_PREFIX}{run_id}"
        owner = labels.Owner.current()
        return cls(run_id, owner, state_dir, keep, keep_for, reuse, reuse_for)

    def to_json(self) -> str:
        """Serialise the run for another process (an xdist worker)."""
        return json.dumps(
            {
                "run_id": self.run_id,
                "owner": str(self.owner),
                "owner_ns": self.owner.namespace,
                "state_dir": str(self.state_dir),
                "keep": self.keep,
                "keep_for": self.keep_for,
                "reuse": self.reuse,
                "reuse_for": self.reuse_for,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunInfo:
        """Read back what :meth:`to_json` wrote."""
        shared = json.loads(text)
        owner = labels.Owner.parse(shared["owner"], shared["owner_ns"])
        if owner is None:
            raise K3sError(f"malformed run owner {shared['owner']!r} from xdist")
        return cls(
            shared["run_id"],
            owner,
            Path(shared["state_dir"]),
            shared["keep"],
            shared["keep_for"],
            shared["reuse"],
            shared["reuse_for"],
        )


def cache_home() -> Path:
    """This user's pytest-k3s cache: ``$XDG_CACHE_HOME/pytest-k3s`` (or ~/.cache)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "pytest-k3s"


def private_directory(path: Path) -> Path:
    """Create ``path`` (mode 0700), or check an existing one is ours alone.

    It will hold admin kubeconfigs, so a symlink, a file, or a directory of
    another user or open to others is refused.
    """
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700, parents=True)
    found = path.lstat()
    if (
        not stat.S_ISDIR(found.st_mode)
        or found.st_uid != os.getuid()
        or found.st_mode & 0o077
    ):
        raise K3sError(
            f"{path} exists but is not a private directory of this user (a "
            "symlink, another user's, or open to others); remove it and run again"
        )
    return path


@dataclass(frozen=True)
class Record:
    """What the process that started (or failed to start) a cluster left behind."""

    name: str
    kubeconfig: str
    spec: str
    seconds: float
    error: str = ""
    pid: int = 0
    #: For reusable clusters: "attached" to a kept one, or "started" one.
    reused: str = ""

    @classmethod
    def read(cls, path: Path) -> Record:
        """Read a record file."""
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def write(self, path: Path) -> None:
        """Write the record atomically (readers never see half a file)."""
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self)), encoding="utf-8")
        temporary.replace(path)


def records(state_dir: Path) -> list[Record]:
    """Every record of the run, oldest first."""
    paths = sorted(state_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
    return [Record.read(path) for path in paths]


class ClusterPool:
    """The clusters of one process in a run, keyed by what shapes them.

    :param run: the run this process takes part in
    :param progress: where to report start-up steps
    """

    def __init__(self, run: RunInfo, progress: Callable[[str], None]) -> None:
        self.run = run
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
        """
        return self._start(spec, None)

    def close(self) -> None:
        """Let go of this process's connections (the run's owner removes clusters)."""
        for cluster in self._clusters.values():
            cluster.detach()
        self._clusters.clear()
        for lease in self._leases:
            lease.release()
        self._leases.clear()

    def _reuse(self, spec: ClusterSpec, record_path: Path) -> K3sCluster:
        """Lease a kept cluster of ``spec`` (or start one to keep) and record it."""
        from pytest_k3s import reuse
        from pytest_k3s.docker_runtime import DockerRuntime
        from pytest_k3s.startup import start_cluster

        def start(directory: Path) -> K3sCluster:
            self._sweep_once()
            return start_cluster(
                spec,
                kubeconfig_dir=directory,
                run_id=f"reuse-{os.urandom(4).hex()}",  # no run's end removes it
                owner=self.run.owner,
                reusable=True,
                progress=self.progress,
            )

        began = time.monotonic()
        runtime = DockerRuntime.connect()
        try:
            found = reuse.acquire(runtime, spec, start, self.progress)
        except _NOT_FAILURES:
            raise
        except BaseException as exc:
            message = str(exc) if isinstance(exc, K3sError) else repr(exc)
            elapsed = time.monotonic() - began
            Record("", "", spec.describe(), elapsed, message, os.getpid()).write(
                record_path
            )
            raise
        finally:
            runtime.close()
        self._leases.append(found.lease)
        cluster = found.cluster
        how = "attached" if found.attached else "started"
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
            reused=how,
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
        from pytest_k3s.cluster import K3sCluster

        log.info("attaching to k3s cluster %s", record.name)
        return K3sCluster.attach(
            name=record.name, spec=spec, kubeconfig_path=Path(record.kubeconfig)
        )

    def _start(self, spec: ClusterSpec, record_path: Path | None) -> K3sCluster:
        """Start a cluster of the run and record it (a private one by its name)."""
        from pytest_k3s.startup import start_cluster

        self._sweep_once()
        began = time.monotonic()
        try:
            cluster = start_cluster(
                spec,
                kubeconfig_dir=self.run.state_dir,
                state_dir=True,
                run_id=self.run.run_id,
                owner=self.run.owner,
                keep=self.run.may_keep,
                keep_for=self.run.keep_for,
                progress=self.progress,
            )
        except _NOT_FAILURES:
            raise
        except BaseException as exc:  # pytest-timeout's Failed is no Exception
            if record_path is not None:
                # Other workers would fail the same way after the same wait.
                message = str(exc) if isinstance(exc, K3sError) else repr(exc)
                elapsed = time.monotonic() - began
                Record("", "", spec.describe(), elapsed, message, os.getpid()).write(
                    record_path
                )
            raise
        record = Record(
            cluster.name,
            str(cluster.kubeconfig_path),
            spec.describe(),
            cluster.timings.total,
            pid=os.getpid(),
        )
        record.write(record_path or self.run.state_dir / f"private-{cluster.name}.json")
        return cluster

    def _sweep_once(self) -> None:
        """Remove dead runs' leftovers before the first start in this process.

        Best effort: a sweep that fails (say, racing another run's sweep) is
        logged and never fails the start.
        """
        if self._swept:
            return
        self._swept = True
        from pytest_k3s.docker_runtime import DockerRuntime

        runtime = DockerRuntime.connect()
        try:
            from pytest_k3s.sweep import sweep_leftovers

            for name in sweep_leftovers(runtime, reuse_for=self.run.reuse_for):
                self.progress(f"removed k3s cluster {name}, left over by a dead run")
        except Exception as exc:
            log.warning("sweeping dead runs' k3s clusters failed: %s", exc)
        finally:
            runtime.close()


def finish_run(
    run: RunInfo,
    report: Callable[[str], None],
    *,
    failed: bool,
    interrupted: bool = False,
) -> None:
    """End the run: remove its clusters (once), or say how to reach kept ones.

    Runs in the process that owns the run, after every worker has finished.
    Unless the run was interrupted, the system images of the clusters it
    removes are saved first (:mod:`pytest_k3s.imagecache`).
    Docker is contacted whenever some process of the run may have started a
    cluster (the state directory exists), even if it died before recording
    one. Without an engine and with nothing started, there is nothing to do.
    """
    if not run.state_dir.exists():
        return
    keep = run.keep == "always" or (run.keep == "on-failure" and failed)
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
    from pytest_k3s import imagecache
    from pytest_k3s.docker_runtime import DockerRuntime

    try:
        runtime = DockerRuntime.connect()
    except DockerUnavailableError:
        if not started:
            shutil.rmtree(run.state_dir, ignore_errors=True)
            return
        raise
    try:
        clusters = labels.run_clusters(runtime.labelled(), run.run_id)
        try:
            for name in [] if interrupted else clusters:
                saved = imagecache.save(runtime, name)
                if saved:
                    report(
                        f"k3s cluster {name}: saved {len(saved)} system image(s) "
                        "for later clusters (--k3s-image-cache)"
                    )
        finally:  # a second Ctrl-C while saving still removes them
            for name in clusters:
                runtime.remove_cluster(name)
    finally:
        runtime.close()
    shutil.rmtree(run.state_dir, ignore_errors=True)
