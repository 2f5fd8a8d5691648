"""What nodes start with: the image archives copied into them before they start.

k3s imports every archive it finds in
:data:`~pytest_k3s.engine.node_container.AIRGAP_DIR` when it starts, instead
of pulling those images. A start packs the air-gap archives the spec names,
or else the system images cached by earlier clusters
(:mod:`pytest_k3s.lifecycle.image_cache`), into one tar that the engine
unpacks into every node (an agent added later gets the same).
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from pytest_k3s.engine.node_container import AIRGAP_DIR
from pytest_k3s.lifecycle import image_cache
from pytest_k3s.spec import ClusterSpec


log = logging.getLogger(__name__)


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
