"""Image content the containerd double makes up, and ``ctr images export``.

A simulated pull (a public registry's default endpoint) and an import keep
no image content, only names and digests; what they store and what an
export of them writes is synthesized here, deterministically from the image
name: for each platform a one-file layer (a plain tar), an OCI
config and an OCI manifest, and over them an OCI index. A pulled image is
that index; its digest and image ID (the config digest of the node's
platform) are the same on every node and in every run, so an export
re-imported elsewhere names the same content. A real pull's content is in
the node's content store (:mod:`.fetch`), and its export copies those bytes.

:func:`export_archive` writes what containerd's ``ctr images export`` writes:
an OCI image layout (``oci-layout``, ``index.json`` whose entries carry
``io.containerd.image.name`` and ``org.opencontainers.image.ref.name``, the
blobs under ``blobs/sha256/``) plus Docker's ``manifest.json`` unless asked
not to. It refuses what containerd refuses: an image without a manifest for
a platform asked for, and content that was never fetched (a pulled image has
its node's platform only), naming the missing digest.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from k3s_double.constants import go_arch


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
#: Media types of a list of per-platform manifests (OCI and Docker's own).
INDEX_TYPES = (OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
#: The platforms a synthesized index lists (besides the node's own).
LISTED_PLATFORMS = ("linux/amd64", "linux/arm64")
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"


class ExportError(Exception):
    """What ``ctr images export`` reports as ``ctr: <message>``, exit 1."""


def node_platform() -> str:
    """This node's platform, ``linux/<GOARCH>`` (containerd's DefaultStrict)."""
    return f"linux/{go_arch()}"


def listed_platforms() -> list[str]:
    """The platforms a pulled image's index lists: the usual ones and ours."""
    return sorted({*LISTED_PLATFORMS, node_platform()})


def digest_of(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _layer(name: str, platform: str) -> bytes:
    """A tiny, byte-for-byte reproducible layer tar with one file."""
    data = f"{name} {platform}\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("etc/k3s-double-image")
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uname = info.gname = "root"
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass(frozen=True)
class Manifest:
    """One platform's manifest with its config and layer."""

    platform: str
    manifest: bytes
    config: bytes
    layer: bytes

    @property
    def digest(self) -> str:
        """The manifest's digest."""
        return digest_of(self.manifest)

    @property
    def config_digest(self) -> str:
        """The config's digest: the image ID CRI reports for this platform."""
        return digest_of(self.config)

    @property
    def size(self) -> int:
        """Bytes of manifest, config and layer: what CRI reports as its size."""
        return len(self.manifest) + len(self.config) + len(self.layer)

    def blobs(self) -> dict[str, bytes]:
        """Digest to content of the manifest, config and layer."""
        return {
            digest_of(part): part for part in (self.manifest, self.config, self.layer)
        }


def manifest_for(name: str, platform: str) -> Manifest:
    """The synthesized single-platform image ``name`` has for ``platform``."""
    os_name, _, arch = platform.partition("/")
    layer = _layer(name, platform)
    config = _json(
        {
            "architecture": arch,
            "os": os_name,
            "config": {"Labels": {"io.k3s-double.image": name}},
            "rootfs": {"type": "layers", "diff_ids": [digest_of(layer)]},
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [
                {"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}
            ],
        }
    )
    return Manifest(platform, manifest, config, layer)


@dataclass(frozen=True)
class Synthesized:
    """An image's index over its per-platform manifests."""

    name: str
    index: bytes
    manifests: dict[str, Manifest] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """The index digest: what the image name points at."""
        return digest_of(self.index)


def synthesize(name: str, platforms: Sequence[str] | None = None) -> Synthesized:
    """The multi-platform image ``name`` (an index over ``platforms``)."""
    chosen = sorted(platforms) if platforms else listed_platforms()
    manifests = {p: manifest_for(name, p) for p in chosen}
    entries = []
    for platform, found in manifests.items():
        os_name, _, arch = platform.partition("/")
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": found.digest,
                "size": len(found.manifest),
                "platform": {"architecture": arch, "os": os_name},
            }
        )
    index = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return Synthesized(name, index, manifests)


def _tag(name: str) -> str | None:
    """The tag of a full image name, None for a digest or ID reference."""
    if "@" in name or name.startswith("sha256:"):
        return None
    last = name.rsplit("/", 1)[-1]
    return last.partition(":")[2] or None


def familiar(name: str) -> str:
    """``docker.io/library/x:1`` as Docker shows it: ``x:1``."""
    short = name.removeprefix("docker.io/")
    return short.removeprefix("library/") if short.count("/") == 1 else short


@dataclass(frozen=True)
class Platform:
    """One platform's manifest of an image, with its content if the node has it."""

    digest: str
    size: int
    #: Digest to bytes of the manifest, config and layers; empty without content.
    blobs: dict[str, bytes] = field(default_factory=dict)
    config: str = ""
    layers: tuple[str, ...] = ()


#: The blob ``digest`` of the node's content store, None when absent.
BlobReader = Callable[[str], "bytes | None"]


def _synthesized(
    name: str, listed: Sequence[str], have: Sequence[str]
) -> tuple[bytes, dict[str, Platform]]:
    image = synthesize(name, listed)
    found = {}
    for platform, part in image.manifests.items():
        content = part.blobs() if platform in have else {}
        found[platform] = Platform(
            part.digest,
            len(part.manifest),
            content,
            part.config_digest,
            (digest_of(part.layer),),
        )
    return image.index, found


def _stored_platform(digest: str, size: int, read: BlobReader) -> Platform:
    manifest = read(digest)
    if manifest is None:
        return Platform(digest, size)
    document = json.loads(manifest)
    config = str((document.get("config") or {}).get("digest", ""))
    layers = tuple(str(layer["digest"]) for layer in document.get("layers") or [])
    blobs = {digest: manifest}
    for part in (config, *layers):
        data = read(part)
        if data is None:
            return Platform(digest, size)
        blobs[part] = data
    return Platform(digest, size, blobs, config, layers)


def _stored(
    entry: Mapping[str, Any], read: BlobReader
) -> tuple[bytes | None, dict[str, Platform]]:
    """The index (None for a lone manifest) and platforms of pulled content."""
    digest = str(entry["digest"])
    top = read(digest)
    if top is None:
        raise ExportError(f"content digest {digest}: not found")
    if entry.get("media_type") not in INDEX_TYPES:
        own = (list(entry.get("platforms") or []) or [node_platform()])[0]
        return None, {own: _stored_platform(digest, len(top), read)}
    found = {}
    for child in json.loads(top).get("manifests") or []:
        spec = child.get("platform") or {}
        platform = f"{spec.get('os', '')}/{spec.get('architecture', '')}"
        if platform not in found:
            found[platform] = _stored_platform(
                str(child["digest"]), int(child.get("size", 0)), read
            )
    return top, found


def export_archive(
    images: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    platforms: Sequence[str] = (),
    all_platforms: bool = False,
    skip_manifest_json: bool = False,
    read: BlobReader | None = None,
) -> bytes:
    """The OCI layout tar of ``images``: (stored name, store entry) pairs.

    A store entry says which platforms its index lists (``listed``) and which
    it has content for (``platforms``); entries from before either existed
    have the node's platform alone. An entry whose content was really
    fetched (``content``) is exported byte for byte from the node's content
    store through ``read``; any other is synthesized. Raises
    :class:`ExportError` for a platform asked for that the image does not
    list, or lists without content, before anything is written.
    """
    wanted = list(platforms) or [node_platform()]
    blobs: dict[str, bytes] = {}
    index_entries: list[dict[str, Any]] = []
    docker_entries: list[dict[str, Any]] = []
    for name, entry in images:
        have = list(entry.get("platforms") or [node_platform()])
        listed = list(entry.get("listed") or have)
        chosen = listed if all_platforms else [p for p in listed if p in wanted]
        if not chosen:
            raise ExportError(
                f'image "{name}": no match for platform in manifest: not found'
            )
        index: bytes | None
        if entry.get("content") and read is not None:
            index, parts = _stored(entry, read)
        else:
            index, parts = _synthesized(name, listed, have)
            if len(listed) == 1 and entry.get("media_type") != OCI_INDEX:
                index = None  # a single-manifest image is exported as that manifest
        for platform in chosen:
            part = parts.get(platform)
            if part is None or not part.blobs:
                digest = part.digest if part is not None else entry["digest"]
                raise ExportError(f"content digest {digest}: not found")
            blobs.update(part.blobs)
        annotations = {NAME_ANNOTATION: name}
        tag = _tag(name)
        if tag is not None:
            annotations[REF_ANNOTATION] = tag
        if index is None:
            only = parts[chosen[0]]
            descriptor = {
                "mediaType": str(entry.get("media_type") or OCI_MANIFEST)
                if entry.get("content")
                else OCI_MANIFEST,
                "digest": only.digest,
                "size": only.size,
            }
        else:
            blobs[digest_of(index)] = index
            descriptor = {
                "mediaType": str(entry.get("media_type") or OCI_INDEX)
                if entry.get("content")
                else OCI_INDEX,
                "digest": digest_of(index),
                "size": len(index),
            }
        index_entries.append({**descriptor, "annotations": annotations})
        first = parts[chosen[0]]
        if tag is not None:
            docker_entries.append(
                {
                    "Config": f"blobs/sha256/{first.config[7:]}",
                    "RepoTags": [familiar(name)],
                    "Layers": [f"blobs/sha256/{layer[7:]}" for layer in first.layers],
                }
            )
    files: list[tuple[str, bytes | None]] = [("blobs/", None), ("blobs/sha256/", None)]
    files += [(f"blobs/sha256/{d[7:]}", data) for d, data in sorted(blobs.items())]
    files.append(("oci-layout", _json({"imageLayoutVersion": "1.0.0"})))
    files.append(
        ("index.json", _json({"schemaVersion": 2, "manifests": index_entries}))
    )
    if not skip_manifest_json:
        files.append(("manifest.json", json.dumps(docker_entries).encode()))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.mtime = 0
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o444
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
