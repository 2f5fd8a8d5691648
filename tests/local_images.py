"""Small images built on the engine for registry tests, unique to each build."""

from __future__ import annotations

import io
import secrets
import tarfile

import docker


def build_one_file_image(client: docker.DockerClient, tag: str) -> None:
    """Build ``tag``: a config and one layer (a file of 256 KiB of random bytes).

    Random content gives its blobs digests no other image has, so a
    registry's access log tells this image's fetches apart.
    """
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as archive:
        for name, data in (
            ("Dockerfile", b"FROM scratch\nCOPY payload /payload\n"),
            ("payload", secrets.token_bytes(256 * 1024)),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
