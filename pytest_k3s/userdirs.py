"""This user's directories: the pytest-k3s cache, and private directories.

The cache (``$XDG_CACHE_HOME/pytest-k3s``, else ``~/.cache/pytest-k3s``)
holds the system image cache (:mod:`pytest_k3s.lifecycle.image_cache`) and
reusable clusters' kubeconfigs (:mod:`pytest_k3s.run.reuse`). Directories
that hold admin kubeconfigs are made private, and refused when they are not.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from pytest_k3s.errors import K3sError


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


@contextlib.contextmanager
def engine_lock(address: str, purpose: str, *, timeout: float = -1) -> Iterator[None]:
    """Hold this user's file lock for ``purpose`` on the engine at ``address``.

    Processes of this user that share the cache (concurrent runs, xdist
    workers) take turns; ``timeout`` (seconds; -1 waits for ever) raises
    ``filelock.Timeout`` when it runs out.
    """
    import hashlib

    from filelock import FileLock

    key = hashlib.sha256(address.encode()).hexdigest()[:16]
    directory = private_directory(cache_home() / "engines")
    with FileLock(str(directory / f"{key}.{purpose}.lock"), timeout=timeout):
        yield
