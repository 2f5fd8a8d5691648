"""Loading local Docker images into the nodes' containerd (``load_image``).

The image is saved from the Docker engine under the exact reference asked
for, imported into each node for the node's own platform (an engine with the
containerd image store saves only the host platform's blobs, so
``--all-platforms`` would fail on a multi-platform index), and the node's
image list is checked for the name the kubelet will look up: containerd's
normalized form, ``docker.io/library/x:tag``.
"""

from __future__ import annotations


#: The containerd namespace the kubelet's images live in.
NAMESPACE = "k8s.io"


def normalized_reference(ref: str) -> str:
    """Expand a Docker short name the way containerd's reference parser does.

    ``nginx`` is ``docker.io/library/nginx:latest``, ``team/app:1`` is
    ``docker.io/team/app:1``; a first part with a dot or port, or
    ``localhost``, is a registry and stays as it is.
    """
    name, _, digest = ref.partition("@")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name if slash else f"library/{name}"
    if ":" not in path.rsplit("/", 1)[-1] and not digest:
        path += ":latest"
    full = f"{domain}/{path}"
    return f"{full}@{digest}" if digest else full


def import_command(platform: str) -> list[str]:
    """``ctr images import`` of a stream, for the node's ``platform`` only."""
    return ["ctr", "-n", NAMESPACE, "images", "import", "--platform", platform, "-"]


def list_command() -> list[str]:
    """``ctr images ls -q``: the node's image references, one a line."""
    return ["ctr", "-n", NAMESPACE, "images", "ls", "-q"]
