"""What nodes start with: the image archives copied into them before they start.

k3s imports every archive it finds in
:data:`~pytest_k3s.engine.node_container.AIRGAP_DIR` when it starts, instead
of pulling those images. A start packs the air-gap archives the spec names,
or else the system images cached by earlier clusters
(:mod:`pytest_k3s.lifecycle.image_cache`), into one tar that the engine
unpacks into every node (an agent added later gets the same).

With them goes an empty ``.cache.json`` (:data:`IMPORT_CACHE`): without it,
k3s imports every archive again at every start and holds the agent until
done (``pkg/agent/containerd/watcher.go``), so every restart of a node, and
every crash-loop restart of a joining server, paid the import again. With
it (k3s v1.33.1, v1.32.5, v1.31.9, v1.30.13 and later; k3s#12237), k3s
records each archive's size and mtime as it imports it and skips archives
it recorded unchanged. Empty is how k3s documents turning it on; older
releases ignore the file (they read only archive and ``.txt`` names).
"""

from __future__ import annotations

import io
import logging
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pytest_k3s.engine.node_container import AIRGAP_DIR
from pytest_k3s.lifecycle import image_cache
from pytest_k3s.spec import ClusterSpec


log = logging.getLogger(__name__)

#: The file that makes k3s import an archive once, not at every start.
IMPORT_CACHE = ".cache.json"


def seed_archive(
    spec: ClusterSpec,
    cache: Path | None,
    progress: Callable[[str], None] | None = None,
) -> Path | None:
    """One tar of the image archives a node of ``spec`` starts with (None if none).

    Those are the air-gap archives, or the cached system images
    (:mod:`~pytest_k3s.lifecycle.image_cache`), at their place in a node. Built once per
    start and unpacked into every node before it starts; k3s imports what it
    finds there instead of pulling. A cache that cannot be packed is left
    out (the nodes pull, as without it); an air-gap archive that cannot be
    is an error. The caller removes the tar (:func:`forget_seed`).
    """
    airgap = [Path(p) for p in spec.airgap_images]
    cached = list(image_cache.archives(cache).values())
    if not (airgap or cached):
        return None
    if cached and progress is not None:
        progress(f"  seeding {len(cached)} cached system image(s) from {cache}")
    directory = Path(tempfile.mkdtemp(prefix="pytest-k3s-seed-"))
    seed = directory / "seed.tar"
    try:
        with tarfile.open(seed, "w") as tar:
            for archive in airgap + cached:
                tar.add(archive, arcname=f"{AIRGAP_DIR.lstrip('/')}/{archive.name}")
            marker = tarfile.TarInfo(f"{AIRGAP_DIR.lstrip('/')}/{IMPORT_CACHE}")
            marker.mtime, marker.mode = int(time.time()), 0o644
            tar.addfile(marker, io.BytesIO(b""))
    except BaseException as exc:
        shutil.rmtree(directory, ignore_errors=True)
        if airgap or not isinstance(exc, OSError):
            raise
        log.warning("seeding the cached system images failed: %s", exc)
        return None
    return seed


def forget_seed(seed: Path | None) -> None:
    """Remove a tar :func:`seed_archive` built (the nodes have it by now)."""
    if seed is not None:
        shutil.rmtree(seed.parent, ignore_errors=True)
