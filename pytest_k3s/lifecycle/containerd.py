"""What we ask of containerd in the nodes: its image names and ``ctr`` commands.

k3s ships ``ctr`` defaulting to its own containerd socket; the kubelet's
images live in the ``k8s.io`` namespace, under containerd's normalized names
(``docker.io/library/nginx:1.27``). Pure functions, no engine: the modules
that run these commands (:mod:`~pytest_k3s.lifecycle.load_image`,
:mod:`~pytest_k3s.lifecycle.image_cache`) do so through the engine.
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


def export_command(platform: str, ref: str) -> list[str]:
    """``ctr images export --local`` of one image, for ``platform``, to stdout.

    ``ref`` is the name exactly as :func:`list_command` prints it: containerd
    does not normalize it here. ``--local`` (in ``ctr`` 1.7, where it is the
    default, and 2.x) exports in ``ctr`` itself: containerd 2's default goes
    through the transfer service, whose copy to the output nothing waits
    for, so ``ctr`` can exit 0 before the archive's end is written
    (``core/transfer/archive/exporter.go``, ``core/transfer/proxy/transfer.go``).
    """
    command = ["ctr", "-n", NAMESPACE, "images", "export", "--local"]
    return [*command, "--platform", platform, "-", ref]
