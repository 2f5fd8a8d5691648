"""Image archives for the ``load_image`` tests, made by hand (no registry).

:func:`multi_platform_archive` is what ``docker save`` writes on an engine
with the containerd image store for an image of two platforms: an OCI
``index.json`` naming a multi-platform index, with the blobs of the host's
platform only.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def multi_platform_archive(name: str, present: str, missing: str) -> bytes:
    """An OCI archive of ``name`` for two platforms, with ``present``'s blobs only.

    :param name: the image's full name (``docker.io/library/x:tag``)
    :param present: the platform whose blobs are in the archive (``linux/amd64``)
    :param missing: the other platform the index lists
    """
    blobs: dict[str, bytes] = {}

    def add(data: bytes) -> dict[str, object]:
        digest = _digest(data)
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    os_name, _, arch = present.partition("/")
    config = json.dumps({"architecture": arch, "os": os_name, "rootfs": {}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **add(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    **add(layer.getvalue()),
                }
            ],
        }
    ).encode()
    present_entry = {"mediaType": OCI_MANIFEST, **add(manifest)}
    other = json.dumps({"schemaVersion": 2, "note": missing}).encode()
    entries = []
    for platform, entry in (
        (present, present_entry),
        (missing, {"mediaType": OCI_MANIFEST, "digest": _digest(other), "size": 9}),
    ):
        os_name, _, arch = platform.partition("/")
        entries.append({**entry, "platform": {"os": os_name, "architecture": arch}})
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    ).encode()
    top = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_INDEX,
                **add(index),
                "annotations": {"io.containerd.image.name": name},
            }
        ],
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        files = {
            "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
            "index.json": json.dumps(top).encode(),
            **{f"blobs/sha256/{d.split(':')[1]}": b for d, b in blobs.items()},
        }
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
