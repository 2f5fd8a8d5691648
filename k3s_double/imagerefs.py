"""Image references as containerd and the kubelet compare them.

Shared by the node (``node.ctr``, ``node.pulls``) and the controllers (the
pod lifecycle checks a node's ``status.images``); it imports nothing of the
double.
"""

from __future__ import annotations


def normalize(ref: str) -> str:
    """Expand a Docker short name the way containerd's reference parser does."""
    name, _, digest = ref.partition("@")
    first, sep, rest = name.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = "docker.io", name
        if "/" not in path:
            path = f"library/{path}"
    else:
        domain, path = first, rest
    last = path.rsplit("/", 1)[-1]
    if ":" not in last and not digest:
        path += ":latest"
    full = f"{domain}/{path}"
    return f"{full}@{digest}" if digest else full


def repository(name: str) -> str:
    """The repository of a full image name: without its tag or digest."""
    if "@" in name:
        return name.partition("@")[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.partition(':')[0]}" if head else last.partition(":")[0]
