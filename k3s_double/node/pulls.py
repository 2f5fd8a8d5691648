"""The node's image pulls: what its kubelet asks containerd's CRI to pull.

Each node's kubelet (:class:`ImagePuller`, run by ``node.kubelet.Kubelet`` about every
:data:`POLL_SECONDS`) looks at the pods bound to its node that are not being
deleted and not finished, and, as the kubelet and CRI do:

- before a pod's containers, makes sure the sandbox image (k3s'
  ``--pause-image``, ``rancher/mirrored-pause:3.6`` by default) is there,
  pulling it if absent;
- pulls each init and app container image by its ``imagePullPolicy``:
  ``IfNotPresent`` (the default for a tag other than ``latest``) when the
  node's containerd lacks it, ``Always`` once per pod, ``Never`` never.

A pull is :meth:`ctr.Containerd.pull`. After one, and whenever containerd's
images change otherwise (``ctr images import``), the puller reports the
node's ``status.images`` at once, so the control plane's kubelet controller
(``controllers/nodes.py``) can start pods without waiting for a heartbeat.
:func:`node_images` is that list, one entry per image, as the kubelet
reports it: digests and tags as ``names``, and ``sizeBytes``.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from k3s_double.apiserver.kinds import Obj
from k3s_double.apiserver.kinds import _image_pull_policy
from k3s_double.imagerefs import normalize
from k3s_double.imagerefs import repository

from .ctr import NAMESPACE
from .ctr import Containerd


#: k3s' default ``--pause-image`` (pkg/cli/cmds/agent.go, DefaultPauseImage).
PAUSE_IMAGE = "rancher/mirrored-pause:3.6"
POLL_SECONDS = 0.5
FINISHED = ("Succeeded", "Failed")


def node_images(containerd: Containerd | None) -> list[dict[str, Any]]:
    """The node's ``status.images``: one entry per image containerd holds.

    Names that point at the same image (a pull records the tag,
    ``repo@sha256:...`` and ``sha256:<id>``) make one entry; the bare image
    ID is not a name, as in the kubelet's report.
    """
    if containerd is None:
        return []
    groups: dict[str, dict[str, Any]] = {}
    for name, entry in sorted(containerd.store.list(NAMESPACE).items()):
        key = str(entry.get("image_id") or entry["digest"])
        group = groups.setdefault(key, {"names": [], "sizeBytes": entry["size"]})
        if name.startswith("sha256:"):
            continue
        names: list[str] = group["names"]
        digested = name if "@" in name else f"{repository(name)}@{entry['digest']}"
        for each in (digested, name):
            if each not in names:
                names.append(each)
    entries = [g for g in groups.values() if g["names"]]
    for entry in entries:
        entry["names"].sort(key=lambda n: ("@" not in n, n))
    return sorted(entries, key=lambda e: str(e["names"][0]))


def pull_policy(container: Obj) -> str:
    """The container's ``imagePullPolicy``, defaulted as the API server does."""
    return str(
        container.get("imagePullPolicy")
        or _image_pull_policy(str(container.get("image", "")))
    )


def with_default_tag(image: str) -> str:
    """The reference the kubelet hands to CRI: ``:latest`` added if untagged."""
    last = image.rsplit("/", 1)[-1]
    return image if "@" in image or ":" in last else f"{image}:latest"


class ImagePuller:
    """One node kubelet's image pulls.

    :param pods: the pods bound to the node (None when the API cannot say)
    :param report: send the node's ``status.images``; True once sent
    """

    def __init__(
        self,
        containerd: Containerd,
        pods: Callable[[], list[Obj] | None],
        report: Callable[[list[dict[str, Any]]], bool],
        pause_image: str = PAUSE_IMAGE,
    ) -> None:
        self.containerd = containerd
        self.pods = pods
        self.report = report
        self.pause_image = pause_image or PAUSE_IMAGE
        #: (pod uid, image) pairs pulled for an ``Always`` policy.
        self._always: set[tuple[str, str]] = set()
        self._sandboxes: set[str] = set()
        self._reported: list[dict[str, Any]] | None = None

    def sync(self) -> None:
        """One pass: pull what the node's pods need, report what changed."""
        self._report()
        pods = self.pods()
        if pods is None:
            return
        live = set()
        for pod in pods:
            meta, status = pod.get("metadata") or {}, pod.get("status") or {}
            if meta.get("deletionTimestamp") or status.get("phase") in FINISHED:
                continue
            uid = str(meta.get("uid", ""))
            live.add(uid)
            if uid not in self._sandboxes:
                self._ensure(self.pause_image, sandbox=True)
                self._sandboxes.add(uid)
            spec = pod.get("spec") or {}
            for container in _containers(spec):
                image = str(container.get("image", ""))
                policy = pull_policy(container)
                if not image or policy == "Never":
                    continue
                if policy == "Always":
                    if (uid, image) not in self._always:
                        self._pull(image)
                        self._always.add((uid, image))
                else:
                    self._ensure(image)
        self._sandboxes &= live
        self._always = {pair for pair in self._always if pair[0] in live}

    def _ensure(self, image: str, *, sandbox: bool = False) -> None:
        if not self.containerd.has(image):
            self._pull(image, sandbox=sandbox)

    def _pull(self, image: str, *, sandbox: bool = False) -> None:
        self.containerd.pull(with_default_tag(image), sandbox=sandbox)
        self._report()

    def _report(self) -> None:
        images = node_images(self.containerd)
        if images != self._reported and self.report(images):
            self._reported = images


def _containers(spec: Obj) -> Iterable[Obj]:
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def present_names(images: Iterable[dict[str, Any]]) -> set[str]:
    """Every name in a node's ``status.images``, normalized."""
    return {normalize(str(n)) for entry in images for n in entry.get("names") or []}
