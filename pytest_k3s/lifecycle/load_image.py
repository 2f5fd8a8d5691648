"""Loading local Docker images into the nodes' containerd (``load_image``).

The image is saved from the engine under the exact reference asked for,
imported into each node for the node's own platform (an engine with the
containerd image store saves only the host platform's blobs, so
``--all-platforms`` would fail on a multi-platform index), and the node's
image list is checked for the name the kubelet will look up: containerd's
normalized form, ``docker.io/library/x:tag``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pytest_k3s.engine.node_container import Node
from pytest_k3s.engine.protocol import Engine
from pytest_k3s.errors import ClusterCommandError
from pytest_k3s.lifecycle.containerd import NAMESPACE
from pytest_k3s.lifecycle.containerd import import_command
from pytest_k3s.lifecycle.containerd import list_command
from pytest_k3s.lifecycle.containerd import normalized_reference


def load_image(
    engine: Engine, image: str, nodes: Sequence[Node], *, node_image: str
) -> None:
    """Import ``image`` into every one of ``nodes`` (see K3sCluster.load_image).

    :param node_image: the nodes' own image, whose platform is imported
    """
    expected = normalized_reference(image)
    platform = engine.image_platform(node_image)
    with tempfile.TemporaryDirectory(prefix="pytest-k3s-image-") as directory:
        archive = Path(directory) / "image.tar"
        with archive.open("wb") as stream:
            engine.save_image(image, stream)

        def load(node: Node) -> None:
            with archive.open("rb") as stream:
                code, output = engine.exec(
                    node.container_id, import_command(platform), stdin=stream
                )
            if code != 0:
                raise ClusterCommandError(
                    f"importing {image} ({platform}) into node {node.name} "
                    f"failed with exit status {code}: {output.strip()}"
                )
            code, listing = engine.exec(node.container_id, list_command())
            if "@" not in image and expected not in listing.split():
                raise ClusterCommandError(
                    f"node {node.name} does not list {expected} after importing "
                    f"{image}: its containerd (namespace {NAMESPACE}) "
                    f"lists {', '.join(listing.split()) or 'nothing'} (ctr exit "
                    f"status {code}); check that the image exists for "
                    f"{platform} ('docker image inspect {image}')"
                )

        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            list(pool.map(load, nodes))
