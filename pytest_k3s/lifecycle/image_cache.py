"""The system image cache: what k3s pulled once, seeded into later clusters.

Every k3s node pulls the images of k3s' own components from Docker Hub when
it first needs them: the pause image for every pod sandbox, CoreDNS, the
local-path provisioner, klipper-lb for LoadBalancer services, klipper-helm
for bundled charts. That takes seconds per node, and anonymous Docker Hub
pulls are rate-limited per IP. k3s imports every archive it finds in
``/var/lib/rancher/k3s/agent/images/`` at start instead of pulling.

So before a cluster is removed, :func:`save` lists each node's containerd
images and exports those the cache lacks into the cluster's cache directory,
one archive per image, for the node's platform. A system image is one of the
names k3s publishes in its ``k3s-images.txt``: a tagged ``rancher/mirrored-*``,
``rancher/klipper-*`` or ``rancher/local-path-provisioner`` image, on any
registry (so ``--system-default-registry`` works). Images a test loads or
pulls are not cached (unless they have such a name). :func:`archives` gives
a later cluster of the same k3s image and platform those archives, which the
start copies into every node before it starts
(:mod:`~pytest_k3s.lifecycle.seeding`).

The directory of a cluster is ``<root>/<k3s image>/<platform>`` (both
percent-encoded), and it travels with the cluster as the label
:data:`pytest_k3s.labels.IMAGE_CACHE` on its nodes: whoever removes the
cluster (the run's owner, a module's worker, a library user's ``stop()``)
saves into it without being told. Archives are written under a temporary
name and renamed, so a reader never sees half of one; a lock keeps two
processes from exporting into one directory at once (the second skips).

An archive holds the node's platform only, and k3s imports such an archive
only since k3s#10132 (v1.30.2, v1.29.6, v1.28.11, v1.27.15): older releases
import with every platform, fail with ``content digest ...: not found`` on
every node, and pull anyway. :func:`directory_for` turns the cache off for
them, with one log line; it learns the release from the image's tag
(``rancher/k3s:v1.29.4-k3s1``) or, when the tag names none, from its
``org.opencontainers.image.version`` label, which costs no container.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote
from urllib.parse import unquote

from pytest_k3s import labels
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.engine.protocol import node_containers
from pytest_k3s.lifecycle.containerd import export_command
from pytest_k3s.lifecycle.containerd import list_command
from pytest_k3s.lifecycle.containerd import normalized_reference
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.userdirs import cache_home


log = logging.getLogger(__name__)

#: The repository paths of k3s' system images (its ``k3s-images.txt``).
SYSTEM_PATH = re.compile(r"rancher/(mirrored-|klipper-|local-path-provisioner:)")
_SUFFIX = ".tar"
#: A partial export older than this was left by a process that died.
_STALE = 3600.0
#: The image label that names a release when its tag does not.
VERSION_LABEL = "org.opencontainers.image.version"
_RELEASE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
#: The first release of each minor line that imports archives lacking other
#: platforms (k3s#10132; backports k3s#10148, #10149, #10150, validated on
#: June 12, 2024 against v1.29.5, v1.28.10 and v1.27.14, which still fail).
_FIRST_SINGLE_PLATFORM_IMPORT = {27: 15, 28: 11, 29: 6, 30: 2}
#: From this minor line on, every release has it.
_SINGLE_PLATFORM_IMPORT_MINOR = 31
#: Images whose cache was turned off and said so (one line per process).
_told_off: set[str] = set()


def default_root() -> Path:
    """This user's cache root: ``$XDG_CACHE_HOME/pytest-k3s/images`` (or ~/.cache)."""
    return cache_home() / "images"


def directory(spec: ClusterSpec, platform: str) -> Path | None:
    """Where clusters of ``spec`` on ``platform`` keep their system images.

    None when the cache is off: ``image_cache=False``, or air-gap archives
    given (they hold the system images already; caching them again would
    only import them twice).
    """
    if spec.image_cache is False or spec.airgap_images:
        return None
    root = default_root() if spec.image_cache is True else Path(spec.image_cache)
    image = quote(normalized_reference(spec.image), safe="")
    return root / image / quote(platform, safe="")


def k3s_release(image: str, image_labels: Mapping[str, str]) -> tuple[int, ...] | None:
    """The k3s release ``(1, minor, patch)`` an image runs, if it says.

    From the tag (``rancher/k3s:v1.29.4-k3s1``), else from the image's
    :data:`VERSION_LABEL` (the node double's image carries one); None when
    neither names a release.
    """
    name = image.partition("@")[0]
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    for text in (tag, image_labels.get(VERSION_LABEL, "")):
        found = _RELEASE.match(text.strip())
        if found is not None:
            return tuple(int(part) for part in found.groups())
    return None


def imports_single_platform_archives(release: tuple[int, ...] | None) -> bool:
    """Whether k3s ``release`` imports an archive holding one platform's content.

    An unknown release (None) is taken to be a recent one: the default image
    and every supported k3s line import them.
    """
    if release is None:
        return True
    major, minor, patch = release[:3]
    if major != 1 or minor >= _SINGLE_PLATFORM_IMPORT_MINOR:
        return major >= 1
    first = _FIRST_SINGLE_PLATFORM_IMPORT.get(minor)
    return first is not None and patch >= first


def directory_for(engine: Engine, spec: ClusterSpec) -> Path | None:
    """:func:`directory` for ``spec`` on ``engine``, None where k3s cannot use it.

    The engine has the image by now; its platform chooses the directory,
    and its release whether its nodes can import the archives.
    """
    cache = directory(spec, engine.image_platform(spec.image))
    if cache is None:
        return None
    release = k3s_release(spec.image, engine.image_labels(spec.image))
    if imports_single_platform_archives(release):
        return cache
    if spec.image not in _told_off:
        _told_off.add(spec.image)
        version = ".".join(str(part) for part in release or ())
        log.info(
            "image cache off for %s: k3s %s imports no single-platform archive "
            "(k3s#10132, fixed in v1.30.2, v1.29.6, v1.28.11, v1.27.15); "
            "its nodes pull the system images",
            spec.image,
            version,
        )
    return None


def is_system_image(ref: str) -> bool:
    """Whether ``ref`` (as ``ctr images ls -q`` prints it) is a k3s system image.

    Only tagged names count: containerd also lists each pulled image by
    ``name@sha256:...`` and by its bare ``sha256:...`` id.
    """
    if "@" in ref or ref.startswith("sha256:"):
        return False
    _, _, path = normalized_reference(ref).partition("/")
    return SYSTEM_PATH.match(path) is not None


def archive_name(ref: str) -> str:
    """The file name of ``ref``'s archive in a cache directory."""
    return quote(ref, safe="") + _SUFFIX


def archives(cache: Path | None) -> dict[str, Path]:
    """The archives in ``cache``, by image reference.

    Empty when ``cache`` is None, or cannot be read (it is only a cache: the
    nodes then pull, and the failure is logged).
    """
    if cache is None:
        return {}
    try:
        names = sorted(os.listdir(cache))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("cannot read the image cache %s: %s", cache, exc)
        return {}
    return {
        unquote(name.removesuffix(_SUFFIX)): cache / name
        for name in names
        if name.endswith(_SUFFIX) and not name.startswith(".")
    }


def save(engine: Engine, cluster: str) -> list[str]:
    """Export the system images ``cluster``'s nodes have and its cache lacks.

    Returns the references saved; nothing when the cluster has no cache
    directory, its nodes are not running, or another process is saving into
    the same directory. It never raises: whatever fails is logged and left
    out, and the next cluster pulls that image again.
    """
    try:
        return _save(engine, cluster)
    except Exception as exc:  # a cache must never fail a run
        log.warning("saving the system images of %s failed: %s", cluster, exc)
        return []


def _save(engine: Engine, cluster: str) -> list[str]:
    nodes = [
        node
        for node in node_containers(engine, cluster)
        if labels.IMAGE_CACHE in node.labels
    ]
    if not nodes:
        return []
    cache = Path(nodes[0].labels[labels.IMAGE_CACHE])
    from filelock import FileLock
    from filelock import Timeout

    cache.mkdir(parents=True, exist_ok=True)  # images only: nothing secret
    try:
        lock = FileLock(str(cache / ".lock"), timeout=0)
        lock.acquire()
    except Timeout:
        log.info("another process is saving system images into %s", cache)
        return []
    try:
        _forget_partials(cache)
        have = archives(cache)

        def listing(node_id: str) -> list[str]:
            try:
                code, output = engine.exec(node_id, list_command())
            except Exception:  # a stopped or vanished node has nothing to give
                return []
            return output.split() if code == 0 else []

        with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as pool:
            listed = list(pool.map(listing, [node.id for node in nodes]))
        wanted: dict[str, str] = {}
        for node, refs in zip(nodes, listed, strict=True):
            for ref in refs:
                if is_system_image(ref) and ref not in have:
                    wanted.setdefault(ref, node.id)
        platform = unquote(cache.name)
        saved = [
            ref
            for ref, node_id in sorted(wanted.items())
            if _export(engine, node_id, ref, platform, cache)
        ]
        if saved:
            log.info("saved %s of %s into %s", ", ".join(saved), cluster, cache)
        return saved
    finally:
        lock.release()


def _forget_partials(cache: Path) -> None:
    """Remove partial exports that processes which died left behind."""
    for partial in cache.glob(".*.partial"):
        try:
            if time.time() - partial.stat().st_mtime > _STALE:
                partial.unlink()
        except OSError:
            pass  # gone meanwhile, or not ours to remove


def _export(engine: Engine, node_id: str, ref: str, platform: str, cache: Path) -> bool:
    """Export one image of a node into ``cache``; whether that worked."""
    final = cache / archive_name(ref)
    partial = cache / f".{final.name}.{os.getpid()}.partial"
    try:
        with partial.open("wb") as stream:
            code, errors = engine.exec(
                node_id, export_command(platform, ref), stdout=stream
            )
        if code != 0:
            log.warning("exporting %s failed (exit %s): %s", ref, code, errors.strip())
            return False
        with tarfile.open(partial) as archive:
            archive.getmember("index.json")  # an OCI archive (ctr exited 0)
        os.replace(partial, final)
        return True
    except Exception as exc:  # the engine's or the file's: the image is skipped
        log.warning("exporting %s into %s failed: %s", ref, cache, exc)
        return False
    finally:
        partial.unlink(missing_ok=True)
