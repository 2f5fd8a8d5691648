"""The node half of the control loop: node lifecycle and pod lifecycle.

- :class:`NodeLifecycle` is kube-controller-manager's node controller: a node
  whose kubelet stops heartbeating for ``Settings.node_grace`` seconds
  (``--node-monitor-grace-period``) turns Ready=Unknown and gets the
  unreachable taints, and loses them when the heartbeats come back.
- :class:`PodLifecycle` plays the pod half of every node's kubelet: bound
  pods start (with container statuses, IPs and the kubelet's events) and
  become Ready, pods of Jobs then Succeed, and deleted pods go once their
  grace is over. A pod starts only once its node's ``status.images`` holds
  every image it does not pull ``Never`` (the node's own kubelet pulls
  them: :mod:`k3s_double.node.pulls`); until then it waits in
  ``ContainerCreating``. A pod the node's kubelet runs as processes
  (:func:`k3s_double.runnable.run_by_kubelet`) is started, reported and
  stopped by that kubelet (:mod:`k3s_double.node.containers`); this
  controller only removes it once its containers have stopped.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import time
from typing import TYPE_CHECKING
from typing import Any

from k3s_double.apiserver.kinds import BY_KIND
from k3s_double.apiserver.kinds import Obj
from k3s_double.apiserver.kinds import condition
from k3s_double.apiserver.kinds import now
from k3s_double.apiserver.kinds import set_condition
from k3s_double.imagerefs import normalize
from k3s_double.imagerefs import repository
from k3s_double.runnable import run_by_kubelet

from .base import Reconciler
from .base import Settings
from .base import is_ready
from .base import name_of
from .base import node_ip
from .base import ns_of
from .base import terminating
from .base import uid_of


if TYPE_CHECKING:
    from k3s_double.apiserver.storage import Storage

START_DELAY = 0.4
TERMINATE_DELAY = 0.3
JOB_RUN_TIME = 1.0
#: Seconds past a pod's grace period after which a pod whose kubelet never
#: reported its processes stopped is removed anyway.
KUBELET_GONE = 10.0
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
KUBELET_CONDITIONS = {
    "MemoryPressure": (
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
}


class NodeLifecycle(Reconciler):
    """Keep node Ready state and taints in line with kubelet heartbeats."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        super().__init__(storage, settings)
        self._heartbeats: dict[str, tuple[Any, float]] = {}

    def reconcile(self) -> None:
        """One pass over every Node."""
        for node in self.storage.objects("Node"):
            name, ready = name_of(node), condition(node, "Ready")
            if self._once(f"{uid_of(node)}/registered", "yes"):
                self.event(
                    node,
                    "RegisteredNode",
                    f"Node {name} event: Registered Node {name} in Controller",
                    "node-controller",
                )
            beat = ready.get("lastHeartbeatTime") if ready else None
            last = self._heartbeats.get(name)
            if last is None or last[0] != beat:
                self._heartbeats[name] = last = (beat, time.monotonic())
            stale = time.monotonic() - last[1] > self.settings.node_grace
            if ready is not None and ready.get("status") == "True" and stale:
                self.storage.mutate("Node", "", name, self._mark_unknown)
            elif ready is not None and ready.get("status") == "True":
                self.storage.mutate("Node", "", name, self._mark_reachable)
        self._evict()

    def _evict(self) -> None:
        """Delete pods that do not tolerate their node's NoExecute taints.

        As the controller manager's taint manager does: at once without a
        matching toleration, else once the shortest matching
        ``tolerationSeconds`` has passed since the taint's ``timeAdded``
        (forever without one). The API server gives every pod 300 s for the
        not-ready and unreachable taints unless it says otherwise.
        """
        tainted = {
            name_of(node): [
                t
                for t in node["spec"].get("taints") or []
                if t.get("effect") == "NoExecute"
            ]
            for node in self.storage.objects("Node")
        }
        for pod in self.storage.objects("Pod"):
            taints = tainted.get(pod["spec"].get("nodeName") or "")
            if not taints or terminating(pod):
                continue
            if any(
                _due(taint, pod["spec"].get("tolerations") or []) for taint in taints
            ):
                self.event(
                    pod,
                    "TaintManagerEviction",
                    f"Marking for deletion Pod {ns_of(pod)}/{name_of(pod)}",
                    "taint-eviction-controller",
                )
                self._delete("Pod", pod)

    @staticmethod
    def _mark_unknown(node: Obj) -> None:
        for cond in node["status"].get("conditions") or []:
            cond.update(
                status="Unknown",
                reason="NodeStatusUnknown",
                message="Kubelet stopped posting node status.",
                lastTransitionTime=now(),
            )
        taints = node["spec"].setdefault("taints", [])
        for effect in ("NoSchedule", "NoExecute"):
            if not any(
                t.get("key") == UNREACHABLE and t.get("effect") == effect
                for t in taints
            ):
                taint = {"key": UNREACHABLE, "effect": effect}
                if effect == "NoExecute":
                    taint["timeAdded"] = now()
                taints.append(taint)

    @staticmethod
    def _mark_reachable(node: Obj) -> None:
        taints = [
            t for t in node["spec"].get("taints") or [] if t.get("key") != UNREACHABLE
        ]
        if taints:
            node["spec"]["taints"] = taints
        else:
            node["spec"].pop("taints", None)
        for cond in node["status"].get("conditions") or []:
            if (
                cond.get("status") == "Unknown"
                and cond.get("type") in KUBELET_CONDITIONS
            ):
                reason, message = KUBELET_CONDITIONS[cond["type"]]
                cond.update(
                    status="False",
                    reason=reason,
                    message=message,
                    lastTransitionTime=now(),
                )


def _node_images(node: Obj) -> dict[str, Obj]:
    """The node's ``status.images`` entries by each of their names, normalized.

    That list is what the node's kubelet reports of its containerd: it says
    which images the node has. Names compare normalized (``nginx:1`` is
    ``docker.io/library/nginx:1``).
    """
    return {
        normalize(str(name)): entry
        for entry in (node.get("status") or {}).get("images") or []
        for name in entry.get("names") or []
    }


def _containers(pod: Obj) -> list[Obj]:
    spec = pod["spec"]
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def _pulled_images(pod: Obj) -> set[str]:
    """The normalized images of ``pod`` its node's kubelet pulls (not Never)."""
    return {
        normalize(c["image"])
        for c in _containers(pod)
        if c.get("imagePullPolicy") != "Never"
    }


def go_duration_ms(seconds: float) -> str:
    """A duration truncated to milliseconds, as Go's ``time.Duration`` prints."""
    ms = int(seconds * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    minutes, rest = divmod(ms, 60_000)
    secs = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".") + "s"
    return f"{minutes}m{secs}" if minutes else secs


def _never_pulled(pod: Obj, node: Obj) -> str | None:
    """The first image of ``pod`` with pull policy Never the node lacks, if any.

    The node's ``status.images`` say what it has (see :func:`_node_images`).
    """
    present = _node_images(node)
    for group in ("initContainers", "containers"):
        for container in pod["spec"].get(group) or []:
            if container.get("imagePullPolicy") != "Never":
                continue
            if normalize(container["image"]) not in present:
                return str(container["image"])
    return None


def _due(taint: Obj, tolerations: list[Obj]) -> bool:
    """Whether a pod with ``tolerations`` is due for eviction by ``taint``."""
    matching = [
        t
        for t in tolerations
        if t.get("effect") in (None, "", "NoExecute")
        and (
            (t.get("operator") == "Exists" and t.get("key") in (None, "", taint["key"]))
            or (
                t.get("key") == taint["key"]
                and t.get("value", "") == taint.get("value", "")
            )
        )
    ]
    if not matching:
        return True
    seconds = [t["tolerationSeconds"] for t in matching if "tolerationSeconds" in t]
    if len(seconds) < len(matching):
        return False  # one tolerates it for ever
    added = taint.get("timeAdded")
    if not added:
        return False
    since = datetime.datetime.fromisoformat(str(added).replace("Z", "+00:00"))
    age = (datetime.datetime.now(datetime.timezone.utc) - since).total_seconds()
    return bool(age >= min(float(s) for s in seconds))


class PodLifecycle(Reconciler):
    """Start bound pods, finish job pods, and remove terminated pods."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        super().__init__(storage, settings)
        self._next_ip: dict[str, int] = collections.defaultdict(lambda: 2)
        #: Per pod uid, the images its node lacked when the pod was first seen
        #: bound to it: the kubelet pulls those (and Always ones).
        self._absent: dict[str, set[str]] = {}

    def reconcile(self) -> None:
        """One pass over every Pod bound to a node."""
        nodes = {name_of(n): n for n in self.storage.objects("Node")}
        for pod in self.storage.objects("Pod"):
            node = nodes.get(pod["spec"].get("nodeName") or "")
            if not pod["spec"].get("nodeName"):
                continue
            uid, phase = uid_of(pod), (pod.get("status") or {}).get("phase", "Pending")
            owned = run_by_kubelet(pod, node)
            if owned and terminating(pod) and node is not None and is_ready(node):
                # Its kubelet stops the processes; the pod goes once they have.
                grace = float(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
                waited = self._since(f"{uid}/terminating")
                if waited >= TERMINATE_DELAY and (
                    _stopped(pod) or waited > grace + KUBELET_GONE
                ):
                    self.storage.store.remove(BY_KIND["Pod"], ns_of(pod), name_of(pod))
                continue
            if terminating(pod):
                # A pod on an unreachable node stays Terminating until its
                # kubelet is back (or the Node goes, and pod GC removes it).
                if node is None or (
                    is_ready(node)
                    and self._since(f"{uid}/terminating") >= TERMINATE_DELAY
                ):
                    self.storage.store.remove(BY_KIND["Pod"], ns_of(pod), name_of(pod))
                elif is_ready(node) and self._once(f"{uid}/killing", "yes"):
                    for container in pod["spec"].get("containers") or []:
                        self.event(
                            pod, "Killing", f"Stopping container {container['name']}",
                            "kubelet", host=name_of(node),
                        )  # fmt: skip
                continue
            if node is None:
                continue
            if not is_ready(node):
                if is_ready(pod):
                    self.storage.mutate(
                        "Pod", ns_of(pod), name_of(pod), _mark_pod_unready
                    )
                continue
            if phase == "Pending" and uid not in self._absent:
                self._absent[uid] = _pulled_images(pod) - set(_node_images(node))
            if phase == "Pending" and self._since(f"{uid}/bound") >= START_DELAY:
                missing = _never_pulled(pod, node)
                if missing is not None:
                    if self._once(f"{uid}/never-pull", missing):
                        self._wait_for_image(pod, node, missing)
                    continue
                self._pulling(pod, node)
                if _pulled_images(pod) <= set(_node_images(node)):
                    if not owned:  # else its kubelet starts it
                        self._start(pod, node)
                elif self._once(f"{uid}/creating", "yes"):
                    self.storage.mutate("Pod", ns_of(pod), name_of(pod), _creating)
            elif owned:
                continue  # its kubelet reports its containers
            elif phase == "Running" and not is_ready(pod):
                self.storage.mutate("Pod", ns_of(pod), name_of(pod), _mark_pod_ready)
            elif phase == "Running" and self._is_job_pod(pod):  # noqa: SIM102
                if self._since(f"{uid}/running") >= JOB_RUN_TIME:
                    done = self.storage.mutate(
                        "Pod", ns_of(pod), name_of(pod), _complete_pod
                    )
                    if done is not None:
                        self.simulated(
                            done,
                            "exit simulated: the k3s double reports exit code 0 "
                            "for every container of a Job pod without running it",
                            name_of(node),
                        )

    @staticmethod
    def _is_job_pod(pod: Obj) -> bool:
        return any(
            ref.get("kind") == "Job" and ref.get("controller")
            for ref in pod["metadata"].get("ownerReferences") or []
        )

    def _pulls(self, pod: Obj) -> list[Obj]:
        """The containers whose image the kubelet pulls for ``pod``."""
        absent = self._absent.get(uid_of(pod), set())
        return [
            c
            for c in _containers(pod)
            if c.get("imagePullPolicy") == "Always"
            or (c.get("imagePullPolicy") != "Never" and normalize(c["image"]) in absent)
        ]

    def _pulling(self, pod: Obj, node: Obj) -> None:
        """Record the kubelet's ``Pulling`` events, once per container."""
        uid = uid_of(pod)
        for container in self._pulls(pod):
            if self._once(f"{uid}/pulling/{container['name']}", "yes"):
                self._clock.setdefault(f"{uid}/pulling", time.monotonic())
                self.event(
                    pod, "Pulling", f'Pulling image "{container["image"]}"',
                    "kubelet", host=name_of(node),
                )  # fmt: skip

    def _wait_for_image(self, pod: Obj, node: Obj, image: str) -> None:
        """Hold the pod as the kubelet does: its Never-pull image is absent."""
        message = f'Container image "{image}" is not present with pull policy of Never'

        def waiting(current: Obj) -> None:
            status = current.setdefault("status", {})
            status["containerStatuses"] = [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {
                        "waiting": {"reason": "ErrImageNeverPull", "message": message}
                    },
                }
                for c in current["spec"].get("containers") or []
            ]

        self.storage.mutate("Pod", ns_of(pod), name_of(pod), waiting)
        self.event(
            pod, "ErrImageNeverPull", message, "kubelet", host=name_of(node),
            warning=True,
        )  # fmt: skip

    def _start(self, pod: Obj, node: Obj) -> None:

        spec, node_name = pod["spec"], name_of(node)
        images = _node_images(node)
        pulled = {c["name"] for c in self._pulls(pod)}
        took = go_duration_ms(self._since(f"{uid_of(pod)}/pulling"))
        host_ip = node_ip(node)
        if spec.get("hostNetwork"):
            pod_ip = host_ip
        else:
            cidr = (node.get("spec") or {}).get("podCIDR") or "10.42.0.0/24"
            octet = self._next_ip[node_name]
            self._next_ip[node_name] = 2 + (octet - 1) % 253
            pod_ip = cidr.rsplit(".", 1)[0] + f".{octet}"
        started = now()

        def start(current: Obj) -> None:
            status = current.setdefault("status", {})
            status.update(
                phase="Running",
                hostIP=host_ip,
                hostIPs=[{"ip": host_ip}],
                podIP=pod_ip,
                podIPs=[{"ip": pod_ip}],
                startTime=started,
            )
            if spec.get("initContainers"):
                status["initContainerStatuses"] = [
                    _container_status(c, started, images, terminated=True)
                    for c in spec["initContainers"]
                ]
            status["containerStatuses"] = [
                _container_status(c, started, images)
                for c in spec.get("containers") or []
            ]
            for kind in (
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
            ):
                set_condition(status, {"type": kind, "status": "True"}, probe=True)
            set_condition(
                status, {"type": "PodScheduled", "status": "True"}, probe=True
            )
            order = [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            ]
            status["conditions"].sort(
                key=lambda c: order.index(c["type"]) if c["type"] in order else 9
            )

        # The kubelet records the container events before it reports Running.
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            image, name = container["image"], container["name"]
            if name in pulled:
                size = (images.get(normalize(image)) or {}).get("sizeBytes", 0)
                done = (
                    f'Successfully pulled image "{image}" in {took} ({took} including '
                    f"waiting). Image size: {size} bytes."
                )
            else:
                done = f'Container image "{image}" already present on machine'
            for reason, message in (
                ("Pulled", done),
                ("Created", f"Created container: {name}"),
                ("Started", f"Started container {name}"),
            ):
                self.event(pod, reason, message, "kubelet", host=node_name)
            if name in pulled:
                self.simulated(
                    pod,
                    f'pull simulated: image "{image}" was not fetched from a '
                    "registry; the k3s double synthesized its content",
                    node_name,
                )
            self.simulated(
                pod,
                f"container not run: the k3s double simulates a running container "
                f"{name}; its command and probes are ignored and it turns Ready "
                f"{START_DELAY}s after binding",
                node_name,
            )
        if self.storage.mutate("Pod", ns_of(pod), name_of(pod), start) is None:
            return
        self._clock[f"{uid_of(pod)}/running"] = time.monotonic()


def _image_id(image: str, images: dict[str, Obj]) -> str:
    """``repo@sha256:...`` of the node's copy of ``image``, as CRI reports it."""
    full = normalize(image)
    for name in (images.get(full) or {}).get("names") or []:
        if "@" in str(name):
            return str(name)
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"{repository(full)}@sha256:{digest}"


def _stopped(pod: Obj) -> bool:
    """Whether none of the pod's containers runs any more, as its kubelet says."""
    status = pod.get("status") or {}
    return not any(
        "running" in (c.get("state") or {})
        for c in (status.get("containerStatuses") or [])
        + (status.get("initContainerStatuses") or [])
    )


def _creating(pod: Obj) -> None:
    """Pending while the kubelet pulls: containers wait in ContainerCreating.

    A container whose status the node's kubelet has already reported (a
    failed pull's ``ErrImagePull``) keeps it.
    """
    if (pod.get("status") or {}).get("phase", "Pending") != "Pending":
        return

    def waiting(container: Obj, reason: str) -> Obj:
        return {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "ready": False,
            "restartCount": 0,
            "started": False,
            "state": {"waiting": {"reason": reason}},
        }

    spec, status = pod["spec"], pod.setdefault("status", {})
    # A container the node's kubelet already shows (ErrImagePull) keeps that.
    known = {
        s.get("name"): s
        for s in (status.get("initContainerStatuses") or [])
        + (status.get("containerStatuses") or [])
    }
    init = spec.get("initContainers") or []
    if init:
        status["initContainerStatuses"] = [
            known.get(c["name"]) or waiting(c, "PodInitializing") for c in init
        ]
    reason = "PodInitializing" if init else "ContainerCreating"
    status["containerStatuses"] = [
        known.get(c["name"]) or waiting(c, reason) for c in spec.get("containers") or []
    ]


def _container_status(
    container: Obj, started: str, images: dict[str, Obj], *, terminated: bool = False
) -> Obj:
    image = container["image"]
    container_id = (
        "containerd://"
        + hashlib.sha256(
            f"{container['name']}{started}{time.time_ns()}".encode()
        ).hexdigest()
    )
    status: Obj = {
        "name": container["name"],
        "image": image
        if ("/" in image.split(":")[0])
        else f"docker.io/library/{image}",
        "imageID": _image_id(image, images),
        "containerID": container_id,
        "ready": not terminated,
        "restartCount": 0,
        "started": not terminated,
        "lastState": {},
    }
    if terminated:
        status["state"] = {
            "terminated": {
                "exitCode": 0,
                "reason": "Completed",
                "startedAt": started,
                "finishedAt": started,
                "containerID": container_id,
            }
        }
    else:
        status["state"] = {"running": {"startedAt": started}}
    return status


def _mark_pod_ready(pod: Obj) -> None:
    status = pod["status"]
    for kind in ("Ready", "ContainersReady"):
        set_condition(status, {"type": kind, "status": "True"}, probe=True)
    for container in status.get("containerStatuses") or []:
        container["ready"] = True


def _mark_pod_unready(pod: Obj) -> None:
    status = pod["status"]
    set_condition(status, {"type": "Ready", "status": "False"}, probe=True)
    for container in status.get("containerStatuses") or []:
        container["ready"] = False


def _complete_pod(pod: Obj) -> None:
    status, finished = pod["status"], now()
    status["phase"] = "Succeeded"
    for container in status.get("containerStatuses") or []:
        started = (
            (container.get("state") or {}).get("running", {}).get("startedAt", finished)
        )
        container.update(
            ready=False,
            started=False,
            state={
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": started,
                    "finishedAt": finished,
                    "containerID": container.get("containerID", ""),
                }
            },
        )
    for kind in ("Ready", "ContainersReady"):
        set_condition(
            status,
            {"type": kind, "status": "False", "reason": "PodCompleted"},
            probe=True,
        )
    set_condition(
        status, {"type": "PodReadyToStartContainers", "status": "False"}, probe=True
    )
