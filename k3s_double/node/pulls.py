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

A pull is :meth:`ctr.Containerd.pull`, one at a time (the kubelet's
``serializeImagePulls`` defaults to true). After one, and whenever
containerd's images change otherwise (``ctr images import``), the puller
reports the node's ``status.images`` at once, so the control plane's kubelet
controller (``controllers/nodes.py``) can start pods without waiting for a
heartbeat. :func:`node_images` is that list, one entry per image, as the
kubelet reports it: digests and tags as ``names``, and ``sizeBytes``.

A pull that fails is the kubelet's ``ErrImagePull``: the container waits
with that reason and CRI's error as its message (``rpc error: code =
Unknown desc = failed to pull and unpack image ...``), with a ``Failed``
event carrying the same text and another saying ``Error: ErrImagePull``.
The image then backs off, per pod and image, as the kubelet's image
manager does: 10 s after the first failure, doubling after each, at most
300 s (``MaxContainerBackOff``), forgotten after twice that without a
failure. While it backs off the container waits in ``ImagePullBackOff``
(``Back-off pulling image "<image>"``, a ``BackOff`` event and ``Failed``
``Error: ImagePullBackOff``, once per back-off); once it is over the image
is pulled again, with a new ``Pulling`` event. A sandbox image that cannot
be pulled fails the pod's sandbox (``FailedCreatePodSandBox``) and backs
off the same way. :class:`Reports` is how these reach the API.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from typing import Protocol

from k3s_double.apiserver.kinds import Obj
from k3s_double.apiserver.kinds import _image_pull_policy
from k3s_double.imagerefs import normalize
from k3s_double.imagerefs import repository

from .ctr import NAMESPACE
from .ctr import Containerd
from .ctr import PullError


#: k3s' default ``--pause-image`` (pkg/cli/cmds/agent.go, DefaultPauseImage).
PAUSE_IMAGE = "rancher/mirrored-pause:3.6"
POLL_SECONDS = 0.5
FINISHED = ("Succeeded", "Failed")
#: The kubelet's image pull back-off (``backOffPeriod``, ``MaxContainerBackOff``).
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0


class Reports(Protocol):
    """How the puller's failures reach the API, as the kubelet reports them."""

    def event(
        self, pod: Obj, reason: str, message: str, *, warning: bool = False
    ) -> None:
        """Record an Event about ``pod``."""
        ...

    def waiting(self, pod: Obj, container: str, reason: str, message: str) -> None:
        """Show ``container`` of ``pod`` waiting for ``reason``."""
        ...


@dataclass
class BackOff:
    """One (pod, image)'s back-off, as ``flowcontrol.Backoff`` keeps it."""

    delay: float
    since: float
    #: Whether this back-off's ``ImagePullBackOff`` has been reported.
    shown: bool = False

    def active(self, now: float) -> bool:
        """``IsInBackOffSinceUpdate``: within ``delay`` of the last failure."""
        return now - self.since < self.delay

    def next(self, now: float) -> BackOff:
        """The back-off after another failure at ``now`` (``Next``)."""
        if now - self.since > 2 * BACKOFF_MAX:
            return BackOff(BACKOFF_INITIAL, now)
        return BackOff(min(self.delay * 2, BACKOFF_MAX), now)


def grpc_error(error: PullError) -> str:
    """CRI's error as the kubelet receives it over gRPC."""
    code = "NotFound" if error.not_found else "Unknown"
    return f"rpc error: code = {code} desc = {error}"


def waiting_status(pod: Obj, container: str, reason: str, message: str) -> Obj:
    """The pod ``status`` patch that shows ``container`` waiting for ``reason``.

    The kubelet sends whole lists: the other containers keep the status they
    have (or wait in ``ContainerCreating``, ``PodInitializing`` behind init
    containers).
    """
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    init = list(spec.get("initContainers") or [])
    patch: Obj = {}
    for key, group, default in (
        ("initContainerStatuses", init, "PodInitializing"),
        (
            "containerStatuses",
            list(spec.get("containers") or []),
            "PodInitializing" if init else "ContainerCreating",
        ),
    ):
        if not group:
            continue
        known = {str(s.get("name")): s for s in status.get(key) or []}
        entries = []
        for each in group:
            name = str(each.get("name", ""))
            state: Obj = {"reason": default}
            if name == container:
                state = {"reason": reason, "message": message}
            elif name in known:
                entries.append(known[name])
                continue
            entries.append(
                {
                    "name": name,
                    "image": each.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {"waiting": state},
                }
            )
        patch[key] = entries
    return patch


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
    :param reports: where failed pulls are shown (None: only logged)
    :param clock: monotonic seconds, for the back-off
    """

    def __init__(
        self,
        containerd: Containerd,
        pods: Callable[[], list[Obj] | None],
        report: Callable[[list[dict[str, Any]]], bool],
        pause_image: str = PAUSE_IMAGE,
        reports: Reports | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.containerd = containerd
        self.pods = pods
        self.report = report
        self.pause_image = pause_image or PAUSE_IMAGE
        self.reports = reports
        self.clock = clock
        #: (pod uid, image) pairs pulled for an ``Always`` policy.
        self._always: set[tuple[str, str]] = set()
        self._sandboxes: set[str] = set()
        self._reported: list[dict[str, Any]] | None = None
        #: Back-offs by (pod uid, image), as the kubelet keys them.
        self.backoff: dict[tuple[str, str], BackOff] = {}

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
                if not self._sandbox(pod, uid):
                    continue
                self._sandboxes.add(uid)
            spec = pod.get("spec") or {}
            for container in _containers(spec):
                image = str(container.get("image", ""))
                policy = pull_policy(container)
                if not image or policy == "Never":
                    continue
                if policy == "Always":
                    if (uid, image) in self._always:
                        continue
                elif self.containerd.has(image):
                    continue
                if self._pull_for(pod, container, image) and policy == "Always":
                    self._always.add((uid, image))
        self._sandboxes &= live
        self._always = {pair for pair in self._always if pair[0] in live}
        self.backoff = {k: v for k, v in self.backoff.items() if k[0] in live}

    def _sandbox(self, pod: Obj, uid: str) -> bool:
        """Make sure the sandbox image is there; False if it cannot be pulled."""
        image = self.pause_image
        if self.containerd.has(image):
            return True
        key = (uid, image)
        now = self.clock()
        known = self.backoff.get(key)
        if known is not None and known.active(now):
            return False
        try:
            self._pull(image, sandbox=True)
        except PullError as exc:
            self._failed(key, known)
            if self.reports is not None:
                self.reports.event(
                    pod,
                    "FailedCreatePodSandBox",
                    "Failed to create pod sandbox: rpc error: code = Unknown desc = "
                    f'failed to get sandbox image "{image}": failed to pull image '
                    f'"{image}": {exc}',
                    warning=True,
                )
            return False
        self.backoff.pop(key, None)
        return True

    def _pull_for(self, pod: Obj, container: Obj, image: str) -> bool:
        """Pull a container's image unless it backs off; True once pulled."""
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        name = str(container.get("name", ""))
        key = (uid, image)
        known = self.backoff.get(key)
        reports = self.reports
        if known is not None and known.active(self.clock()):
            if not known.shown and reports is not None:
                message = f'Back-off pulling image "{image}"'
                reports.event(pod, "BackOff", message)
                reports.event(pod, "Failed", "Error: ImagePullBackOff", warning=True)
                reports.waiting(pod, name, "ImagePullBackOff", message)
            known.shown = True
            return False
        if known is not None and reports is not None:
            # The first attempt's Pulling is the controller's; a retry's is ours.
            reports.event(pod, "Pulling", f'Pulling image "{image}"')
        try:
            self._pull(image)
        except PullError as exc:
            self._failed(key, known)
            if reports is not None:
                error = grpc_error(exc)
                reports.event(
                    pod, "Failed", f'Failed to pull image "{image}": {error}',
                    warning=True,
                )  # fmt: skip
                reports.event(pod, "Failed", "Error: ErrImagePull", warning=True)
                reports.waiting(pod, name, "ErrImagePull", error)
            return False
        self.backoff.pop(key, None)
        return True

    def _failed(self, key: tuple[str, str], known: BackOff | None) -> None:
        now = self.clock()
        self.backoff[key] = (
            known.next(now) if known is not None else BackOff(BACKOFF_INITIAL, now)
        )

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
