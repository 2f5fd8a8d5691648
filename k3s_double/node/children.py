"""The node's own child processes, kept apart from the orphans PID 1 reaps.

The node process is PID 1 of its container, so it reaps the orphans
``docker exec`` sessions leave behind. A blind ``waitpid(-1)`` would also
reap the pods' and execs' processes before their ``Popen.wait()`` sees them,
and Python then reports exit status 0 whatever the process returned. So
children are started through :func:`popen`, which records them, and
:func:`reap_orphans` reaps only zombies it did not start.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from typing import Any


_lock = threading.Lock()
_own: set[int] = set()


def popen(args: list[str], **options: Any) -> subprocess.Popen[bytes]:
    """Start a child the node waits for itself (:meth:`Popen.wait`)."""
    with _lock:
        process: subprocess.Popen[bytes] = subprocess.Popen(args, **options)
        _own.add(process.pid)
    return process


def wait(process: subprocess.Popen[bytes]) -> int:
    """Wait for a child started by :func:`popen`; its return code."""
    code = process.wait()
    with _lock:
        _own.discard(process.pid)
    return code


def reap_orphans() -> None:
    """Reap zombie children that :func:`popen` did not start."""
    me = os.getpid()
    with _lock:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in _own:
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == me:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(int(entry), os.WNOHANG)
