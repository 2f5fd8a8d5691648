"""What the processes of one test run share: its identity, and its records.

The process that owns a run (the xdist controller, or pytest itself without
xdist) makes a :class:`RunInfo` and hands it to every worker; a run's state
directory (``<tmp>/pytest-k3s-run-<run id>``, private) holds each shared
cluster's kubeconfig and a :class:`Record` of its start (or of the error
that ended it), which the other processes read instead of starting it again.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pytest_k3s.errors import K3sError
from pytest_k3s.owner import Owner
from pytest_k3s.spec import DEFAULT_REUSE_FOR


#: When clusters outlive the session: never, always, or when it fails.
KeepMode = Literal["never", "always", "on-failure"]
#: State directories are ``<tmp>/pytest-k3s-run-<run id>``.
STATE_PREFIX = "pytest-k3s-run-"


@dataclass(frozen=True)
class RunInfo:
    """What identifies a test run to every process taking part in it."""

    run_id: str
    owner: Owner
    state_dir: Path
    keep_mode: KeepMode
    keep_for: float
    #: Keep clusters between runs and attach to them (--k3s-reuse), and how
    #: long an unused one is kept.
    reuse: bool = False
    reuse_for: float = DEFAULT_REUSE_FOR

    @property
    def may_keep(self) -> bool:
        """Whether clusters may outlive the run (so the sweep must spare them)."""
        return self.keep_mode != "never"

    @classmethod
    def new(
        cls,
        *,
        keep_mode: KeepMode,
        keep_for: float,
        reuse: bool = False,
        reuse_for: float = DEFAULT_REUSE_FOR,
    ) -> RunInfo:
        """A fresh run owned by this process (its state directory is made later)."""
        run_id = os.urandom(6).hex()  # not secrets: it imports OpenSSL (slow)
        state_dir = Path(tempfile.gettempdir()) / f"{STATE_PREFIX}{run_id}"
        owner = Owner.current()
        return cls(run_id, owner, state_dir, keep_mode, keep_for, reuse, reuse_for)

    def to_json(self) -> str:
        """Serialise the run for another process (an xdist worker)."""
        return json.dumps(
            {
                "run_id": self.run_id,
                "owner": str(self.owner),
                "owner_ns": self.owner.namespace,
                "state_dir": str(self.state_dir),
                "keep_mode": self.keep_mode,
                "keep_for": self.keep_for,
                "reuse": self.reuse,
                "reuse_for": self.reuse_for,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunInfo:
        """Read back what :meth:`to_json` wrote."""
        shared = json.loads(text)
        owner = Owner.parse(shared["owner"], shared["owner_ns"])
        if owner is None:
            raise K3sError(f"malformed run owner {shared['owner']!r} from xdist")
        return cls(
            shared["run_id"],
            owner,
            Path(shared["state_dir"]),
            shared["keep_mode"],
            shared["keep_for"],
            shared["reuse"],
            shared["reuse_for"],
        )


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
