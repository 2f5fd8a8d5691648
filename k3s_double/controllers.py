"""Controllers that make the stored objects come alive, in the spirit of KWOK.

One daemon thread runs every reconciler a few times a second.  They read
the store, and write through the API's own create/update/delete paths (so
defaulting, admission and events apply as for any client):

- node lifecycle: a node whose kubelet stops heartbeating for
  ``NODE_GRACE`` seconds turns Ready=Unknown and gets the unreachable taints;
- namespaces: a ``default`` ServiceAccount and the ``kube-root-ca.crt``
  ConfigMap appear shortly after creation; a Terminating namespace is
  emptied and then removed;
- scheduler and kubelet: pods go to a Ready node that fits (nodeName,
  nodeSelector, required node affinity, NoSchedule/NoExecute taints) and
  become Running and Ready; pods of Jobs then Succeed;
- workloads: Deployments (through ReplicaSets, with rolling updates) and
  Jobs keep their pods and report status;
- servicelb gives LoadBalancer services the nodes' IPs; the garbage
  collector deletes dependents of deleted owners.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import math
import sys
import threading
import time
import traceback
from collections.abc import Callable
from collections.abc import Iterable
from typing import TYPE_CHECKING
from typing import Any

from .errors import ApiError
from .resources import BY_KIND
from .resources import Obj
from .resources import condition
from .resources import controller_of
from .resources import now
from .resources import owner_reference
from .resources import parse_time
from .resources import set_condition
from .resources import short_hash


if TYPE_CHECKING:
    from .api import KubeAPI

TICK = 0.1
SA_DELAY = 0.3
START_DELAY = 0.4
TERMINATE_DELAY = 0.3
JOB_RUN_TIME = 1.0
BURST = 50
NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when "
    "using internal endpoints such as the internal service IP or "
    "kubernetes.default.svc. No other usage is guaranteed across distributions "
    "of Kubernetes clusters."
)
KUBELET_CONDITIONS = {
    "MemoryPressure": (
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    "DiskPressure": ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    "PIDPressure": ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
}


def is_ready(obj: Obj) -> bool:
    """Tell whether a node or pod has the condition Ready=True."""
    found = condition(obj, "Ready")
    return found is not None and found.get("status") == "True"


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def _ns(obj: Obj) -> str:
    return str(obj["metadata"].get("namespace", ""))


def _uid(obj: Obj) -> str:
    return str(obj["metadata"]["uid"])


def _terminating(obj: Obj) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def _node_ip(node: Obj) -> str:
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP":
            return str(address.get("address"))
    return ""


def _tolerates(tolerations: Iterable[Obj], taint: Obj) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if not tol.get("key"):
            if tol.get("operator") == "Exists":
                return True
            continue
        if tol.get("key") != taint.get("key"):
            continue
        if tol.get("operator") == "Exists" or tol.get("value", "") == taint.get(
            "value", ""
        ):
            return True
    return False


def _match_expression(expr: Obj, value: str | None) -> bool:
    op, values = expr.get("operator"), [str(v) for v in expr.get("values") or []]
    if op == "In":
        return value in values
    if op == "NotIn":
        return value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if value is None or not values:
        return False
    try:
        number, bound = int(value), int(values[0])
    except ValueError:
        return False
    return number > bound if op == "Gt" else number < bound


def _affinity_fits(spec: Obj, node: Obj) -> bool:
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    labels = node["metadata"].get("labels") or {}
    for term in terms:
        by_label = all(
            _match_expression(e, labels.get(e.get("key")))
            for e in term.get("matchExpressions") or []
        )
        by_field = all(
            _match_expression(
                e, _name(node) if e.get("key") == "metadata.name" else None
            )
            for e in term.get("matchFields") or []
        )
        if by_label and by_field:
            return True
    return False


def effective_taints(node: Obj) -> list[Obj]:
    """Return the node's taints plus those the node lifecycle implies."""
    taints = [dict(t) for t in (node.get("spec") or {}).get("taints") or []]
    keys = {(t.get("key"), t.get("effect")) for t in taints}
    ready = condition(node, "Ready")
    implied = []
    if ready is None or ready.get("status") == "False":
        implied.append({"key": NOT_READY, "effect": "NoSchedule"})
    elif ready.get("status") != "True":
        implied.append({"key": UNREACHABLE, "effect": "NoSchedule"})
    if (node.get("spec") or {}).get("unschedulable"):
        implied.append({"key": UNSCHEDULABLE, "effect": "NoSchedule"})
    taints += [t for t in implied if (t["key"], t["effect"]) not in keys]
    return taints


def misfit(spec: Obj, node: Obj) -> str | None:
    """Return why a pod spec cannot run on a node, or None when it fits."""
    if spec.get("nodeName") and spec["nodeName"] != _name(node):
        return "node(s) didn't match the requested node name"
    labels = node["metadata"].get("labels") or {}
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()) or not _affinity_fits(
        spec, node
    ):
        return "node(s) didn't match Pod's node affinity/selector"
    for taint in effective_taints(node):
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not _tolerates(spec.get("tolerations") or [], taint):
            if taint.get("key") == UNSCHEDULABLE:
                return "node(s) were unschedulable"
            return (
                f"node(s) had untolerated taint {{{taint.get('key')}: "
                f"{taint.get('value', '')}}}"
            )
    return None


def _quantity(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        exact = total * int(text[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


def _pod_from_template(owner: Obj, template: Obj, **meta: Any) -> Obj:
    tmeta = template.get("metadata") or {}
    metadata: Obj = {
        "labels": dict(tmeta.get("labels") or {}),
        "ownerReferences": [owner_reference(owner)],
    }
    if tmeta.get("annotations"):
        metadata["annotations"] = dict(tmeta["annotations"])
    labels = meta.pop("labels", {})
    metadata["labels"].update(labels)
    metadata.update(meta)
    spec = dict(template.get("spec") or {})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


class Controllers:
    """The background reconcile loop over all controllers."""

    NODE_GRACE = 40.0

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clock: dict[str, float] = {}
        self._heartbeats: dict[str, tuple[Any, float]] = {}
        self._said: dict[str, str] = {}
        self._next_ip: dict[str, int] = collections.defaultdict(lambda: 2)

    def start(self) -> None:
        """Start the loop thread."""
        self._thread = threading.Thread(
            target=self._run, name="k3s-controllers", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop thread and wait briefly for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _run(self) -> None:
        steps: list[Callable[[], None]] = [
            self.node_lifecycle,
            self.namespaces,
            self.garbage_collector,
            self.replicasets,
            self.deployments,
            self.jobs,
            self.scheduler,
            self.kubelet,
            self.servicelb,
        ]
        while not self._stop.wait(TICK):
            for step in steps:
                try:
                    step()
                except Exception:  # one failing reconciler must not stop the others
                    traceback.print_exc(file=sys.stderr)

    # -- helpers --------------------------------------------------------------

    def _since(self, key: str) -> float:
        """Seconds since ``key`` was first seen by the controllers."""
        return time.monotonic() - self._clock.setdefault(key, time.monotonic())

    def event(
        self,
        obj: Obj,
        reason: str,
        message: str,
        component: str,
        *,
        warning: bool = False,
        host: str | None = None,
    ) -> None:
        """Record an Event about ``obj``, as the named component does."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        stamp = now()
        source: Obj = {"component": component}
        if host:
            source["host"] = host
        body: Obj = {
            "metadata": {
                "name": f"{meta['name']}.{time.time_ns():x}",
                "namespace": namespace,
            },
            "involvedObject": {
                "kind": obj["kind"],
                "namespace": meta.get("namespace", ""),
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": obj["apiVersion"],
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "source": source,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": "Warning" if warning else "Normal",
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": host or "",
        }
        if not meta.get("namespace"):
            del body["involvedObject"]["namespace"]
        # Events into a terminating namespace are dropped, as in Kubernetes.
        with contextlib.suppress(ApiError):
            self.api.create(BY_KIND["Event"], namespace, body)

    def _once(self, key: str, message: str) -> bool:
        """Tell whether ``message`` is new for ``key`` (to avoid repeated events)."""
        if self._said.get(key) == message:
            return False
        self._said[key] = message
        return True

    def _create(self, kind: str, owner: Obj, body: Obj, component: str) -> Obj | None:
        """Create an object next to its owner (in it, for a Namespace owner)."""
        namespace = _name(owner) if owner["kind"] == "Namespace" else _ns(owner)
        try:
            created = self.api.create(BY_KIND[kind], namespace, body)
        except ApiError as error:
            if self._once(f"{_uid(owner)}/create", error.message):
                self.event(
                    owner,
                    "FailedCreate",
                    f"Error creating: {error.message}",
                    component,
                    warning=True,
                )  # fmt: skip
            return None
        self._said.pop(f"{_uid(owner)}/create", None)
        return created

    def _delete(self, kind: str, obj: Obj, **options: Any) -> bool:
        try:
            self.api.delete(BY_KIND[kind], _ns(obj), _name(obj), options)
        except ApiError:
            return False
        return True

    def _set_status(self, kind: str, obj: Obj, status: Obj) -> None:
        def change(current: Obj) -> None:
            current["status"] = status

        if obj.get("status") != status:
            self.api.mutate(kind, _ns(obj), _name(obj), change)

    def _owned(self, kind: str, owner: Obj) -> list[Obj]:
        uid = _uid(owner)
        return [
            o for o in self.api.objects(kind, _ns(owner)) if controller_of(o) == uid
        ]

    # -- nodes ----------------------------------------------------------------

    def node_lifecycle(self) -> None:
        """Keep node Ready state and taints in line with kubelet heartbeats."""
        for node in self.api.objects("Node"):
            name, ready = _name(node), condition(node, "Ready")
            if self._once(f"{_uid(node)}/registered", "yes"):
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
            stale = time.monotonic() - last[1] > self.NODE_GRACE
            if ready is not None and ready.get("status") == "True" and stale:
                self.api.mutate("Node", "", name, self._mark_unknown)
            elif ready is not None and ready.get("status") == "True":
                self.api.mutate("Node", "", name, self._mark_reachable)

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

    # -- namespaces -----------------------------------------------------------

    def namespaces(self) -> None:
        """Give namespaces their default objects; empty and remove Terminating ones."""
        for ns in self.api.objects("Namespace"):
            name = _name(ns)
            if _terminating(ns):
                self._finish_namespace(ns)
                continue
            if self.api.find("ConfigMap", name, "kube-root-ca.crt") is None:
                body = {
                    "metadata": {
                        "name": "kube-root-ca.crt",
                        "annotations": {"kubernetes.io/description": CA_DESCRIPTION},
                    },
                    "data": {"ca.crt": self.api.ca_pem},
                }
                self._create("ConfigMap", ns, body, "root-ca-cert-publisher")
            old_enough = self._since(f"{_uid(ns)}/sa") >= SA_DELAY
            if old_enough and not self.api.find("ServiceAccount", name, "default"):
                self._create(
                    "ServiceAccount", ns, {"metadata": {"name": "default"}}, ""
                )

    def _finish_namespace(self, ns: Obj) -> None:
        name, remaining = _name(ns), 0
        for kind, obj in self.api.store.all_objects():
            if kind.namespaced and _ns(obj) == name:
                remaining += 1
                if not _terminating(obj):
                    self._delete(kind.kind, obj, propagationPolicy="Background")
        if remaining == 0:
            self.api.store.remove(BY_KIND["Namespace"], "", name)

    # -- garbage collector ----------------------------------------------------

    def garbage_collector(self) -> None:
        """Delete dependents whose owners are gone; finish foreground deletions."""
        objects = list(self.api.store.all_objects())
        uids = {_uid(obj) for _, obj in objects}
        dependents: dict[str, list[tuple[str, Obj]]] = collections.defaultdict(list)
        for kind, obj in objects:
            refs = obj["metadata"].get("ownerReferences") or []
            for ref in refs:
                dependents[str(ref.get("uid"))].append((kind.kind, obj))
            if (
                refs
                and not any(ref.get("uid") in uids for ref in refs)
                and not _terminating(obj)
            ):
                self._delete(kind.kind, obj, propagationPolicy="Background")
        for kind, obj in objects:
            finalizers = obj["metadata"].get("finalizers") or []
            if not _terminating(obj) or "foregroundDeletion" not in finalizers:
                continue
            waiting = dependents.get(_uid(obj), [])
            for dep_kind, dep in waiting:
                if not _terminating(dep):
                    self._delete(dep_kind, dep, propagationPolicy="Foreground")
            if not waiting:

                def release(current: Obj) -> None:
                    kept = [
                        f
                        for f in current["metadata"].get("finalizers") or []
                        if f != "foregroundDeletion"
                    ]
                    current["metadata"]["finalizers"] = kept

                self.api.mutate(kind.kind, _ns(obj), _name(obj), release)

    # -- scheduler and kubelet ------------------------------------------------

    def scheduler(self) -> None:
        """Bind pending pods to a node that fits, or report why none does."""
        nodes = self.api.objects("Node")
        pods = self.api.objects("Pod")
        load = collections.Counter(p["spec"].get("nodeName") for p in pods)
        for pod in pods:
            spec = pod["spec"]
            if spec.get("nodeName") or _terminating(pod):
                continue
            if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
                continue
            reasons: collections.Counter[str] = collections.Counter()
            fits = []
            for node in nodes:
                why = misfit(spec, node)
                if why is None:
                    fits.append(node)
                else:
                    reasons[why] += 1
            if fits:
                chosen = min(fits, key=lambda n: (load[_name(n)], _name(n)))
                load[_name(chosen)] += 1
                self._bind(pod, _name(chosen))
                continue
            if nodes:
                listed = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
                message = (
                    f"0/{len(nodes)} nodes are available: {listed}. preemption: 0/"
                    f"{len(nodes)} nodes are available: {len(nodes)} Preemption is "
                    "not helpful for scheduling."
                )
            else:
                message = "no nodes available to schedule pods"
            self._unschedulable(pod, message)

    def _bind(self, pod: Obj, node: str) -> None:
        def bind(current: Obj) -> None:
            current["spec"]["nodeName"] = node
            set_condition(
                current.setdefault("status", {}),
                {"type": "PodScheduled", "status": "True"},
                probe=True,
            )

        if self.api.mutate("Pod", _ns(pod), _name(pod), bind) is not None:
            self.event(
                pod,
                "Scheduled",
                f"Successfully assigned {_ns(pod)}/{_name(pod)} to {node}",
                "default-scheduler",
            )

    def _unschedulable(self, pod: Obj, message: str) -> None:
        def mark(current: Obj) -> None:
            set_condition(
                current.setdefault("status", {}),
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                },
                probe=True,
            )

        self.api.mutate("Pod", _ns(pod), _name(pod), mark)
        if self._once(f"{_uid(pod)}/unschedulable", message):
            self.event(
                pod, "FailedScheduling", message, "default-scheduler", warning=True
            )

    def kubelet(self) -> None:
        """Start bound pods, finish job pods, and remove terminated pods."""
        nodes = {_name(n): n for n in self.api.objects("Node")}
        for pod in self.api.objects("Pod"):
            node = nodes.get(pod["spec"].get("nodeName") or "")
            if not pod["spec"].get("nodeName"):
                continue
            uid, phase = _uid(pod), (pod.get("status") or {}).get("phase", "Pending")
            if _terminating(pod):
                if node is None or self._since(f"{uid}/terminating") >= TERMINATE_DELAY:
                    self.api.store.remove(BY_KIND["Pod"], _ns(pod), _name(pod))
                elif self._once(f"{uid}/killing", "yes"):
                    for container in pod["spec"].get("containers") or []:
                        self.event(
                            pod, "Killing", f"Stopping container {container['name']}",
                            "kubelet", host=_name(node),
                        )  # fmt: skip
                continue
            if node is None:
                continue
            if not is_ready(node):
                if is_ready(pod):
                    self.api.mutate("Pod", _ns(pod), _name(pod), _mark_pod_unready)
                continue
            if phase == "Pending" and self._since(f"{uid}/bound") >= START_DELAY:
                self._start(pod, node)
            elif phase == "Running" and not is_ready(pod):
                self.api.mutate("Pod", _ns(pod), _name(pod), _mark_pod_ready)
            elif phase == "Running" and self._is_job_pod(pod):  # noqa: SIM102
                if self._since(f"{uid}/running") >= JOB_RUN_TIME:
                    self.api.mutate("Pod", _ns(pod), _name(pod), _complete_pod)

    @staticmethod
    def _is_job_pod(pod: Obj) -> bool:
        return any(
            ref.get("kind") == "Job" and ref.get("controller")
            for ref in pod["metadata"].get("ownerReferences") or []
        )

    def _start(self, pod: Obj, node: Obj) -> None:
        spec, node_name = pod["spec"], _name(node)
        host_ip = _node_ip(node)
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
                    _container_status(c, started, terminated=True)
                    for c in spec["initContainers"]
                ]
            status["containerStatuses"] = [
                _container_status(c, started) for c in spec.get("containers") or []
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

        if self.api.mutate("Pod", _ns(pod), _name(pod), start) is None:
            return
        self._clock[f"{_uid(pod)}/running"] = time.monotonic()
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            image, name = container["image"], container["name"]
            if container.get("imagePullPolicy") == "Always":
                pulled = (
                    f'Successfully pulled image "{image}" in 812ms (812ms including '
                    "waiting)"
                )
            else:
                pulled = f'Container image "{image}" already present on machine'
            for reason, message in (
                ("Pulled", pulled),
                ("Created", f"Created container: {name}"),
                ("Started", f"Started container {name}"),
            ):
                self.event(pod, reason, message, "kubelet", host=node_name)

    # -- workloads ------------------------------------------------------------

    def replicasets(self) -> None:
        """Keep each ReplicaSet's pod count at spec.replicas and report status."""
        for rs in self.api.objects("ReplicaSet"):
            if _terminating(rs):
                continue
            pods = [p for p in self._owned("Pod", rs) if not _terminating(p)]
            wanted = int(rs["spec"].get("replicas", 1))
            if len(pods) < wanted:
                for _ in range(min(BURST, wanted - len(pods))):
                    body = _pod_from_template(
                        rs, rs["spec"]["template"], generateName=f"{_name(rs)}-"
                    )
                    created = self._create("Pod", rs, body, "replicaset-controller")
                    if created is None:
                        break
                    pods.append(created)
                    self.event(
                        rs,
                        "SuccessfulCreate",
                        f"Created pod: {_name(created)}",
                        "replicaset-controller",
                    )
            elif len(pods) > wanted:
                ranked = sorted(
                    pods,
                    key=lambda p: (
                        bool(p["spec"].get("nodeName")),
                        is_ready(p),
                        -_created(p),
                    ),
                )
                for victim in ranked[: len(pods) - wanted]:
                    if self._delete("Pod", victim):
                        pods.remove(victim)
                        self.event(
                            rs,
                            "SuccessfulDelete",
                            f"Deleted pod: {_name(victim)}",
                            "replicaset-controller",
                        )
            ready = sum(1 for p in pods if is_ready(p))
            status: Obj = {"replicas": len(pods)}
            if pods:
                status["fullyLabeledReplicas"] = len(pods)
            if ready:
                status["readyReplicas"] = status["availableReplicas"] = ready
            status["observedGeneration"] = rs["metadata"].get("generation", 1)
            self._set_status("ReplicaSet", rs, status)

    def deployments(self) -> None:
        """Roll each Deployment's ReplicaSets toward its template and report status."""
        for deploy in self.api.objects("Deployment"):
            if not _terminating(deploy):
                self._reconcile_deployment(deploy)

    def _reconcile_deployment(self, deploy: Obj) -> None:
        spec, name = deploy["spec"], _name(deploy)
        template_hash = short_hash(spec["template"])
        sets = sorted(self._owned("ReplicaSet", deploy), key=_revision)
        new = next(
            (
                rs
                for rs in sets
                if rs["metadata"].get("labels", {}).get("pod-template-hash")
                == template_hash
            ),
            None,
        )
        olds = [rs for rs in sets if rs is not new]
        desired = int(spec.get("replicas", 1))
        created_new = False
        if new is None:
            next_revision = max((_revision(rs) for rs in sets), default=0) + 1
            new = self._new_replicaset(deploy, template_hash, next_revision)
            if new is None:
                return
            created_new = True
        revision = str(_revision(new))
        if (
            deploy["metadata"]
            .get("annotations", {})
            .get("deployment.kubernetes.io/revision")
            != revision
        ):

            def annotate(current: Obj) -> None:
                annotations = current["metadata"].setdefault("annotations", {})
                annotations["deployment.kubernetes.io/revision"] = revision

            self.api.mutate("Deployment", _ns(deploy), name, annotate)
        live_olds = [rs for rs in olds if rs["spec"].get("replicas", 0) > 0]
        strategy = spec.get("strategy") or {}
        if not spec.get("paused"):
            if not live_olds:
                self._scale(deploy, new, desired)
            elif strategy.get("type") == "Recreate":
                for rs in live_olds:
                    self._scale(deploy, rs, 0)
                if not any((rs.get("status") or {}).get("replicas") for rs in olds):
                    self._scale(deploy, new, desired)
            else:
                self._roll(
                    deploy, new, live_olds, desired, strategy.get("rollingUpdate") or {}
                )
        limit = int(spec.get("revisionHistoryLimit", 10))
        idle = [
            rs
            for rs in olds
            if not rs["spec"].get("replicas")
            and not rs.get("status", {}).get("replicas")
        ]
        for rs in idle[: max(0, len(idle) - limit)]:
            self._delete("ReplicaSet", rs)
        self._deployment_status(deploy, new, sets, desired, created_new)

    def _new_replicaset(
        self, deploy: Obj, template_hash: str, revision: int
    ) -> Obj | None:
        spec = deploy["spec"]
        template = {
            "metadata": dict(spec["template"].get("metadata") or {}),
            "spec": spec["template"].get("spec") or {},
        }
        labels = {
            **(template["metadata"].get("labels") or {}),
            "pod-template-hash": template_hash,
        }
        template["metadata"]["labels"] = labels
        selector = dict(spec["selector"])
        selector["matchLabels"] = {
            **(selector.get("matchLabels") or {}),
            "pod-template-hash": template_hash,
        }
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{_name(deploy)}-{template_hash}",
                "labels": labels,
                "annotations": {
                    "deployment.kubernetes.io/desired-replicas": str(
                        spec.get("replicas", 1)
                    ),
                    "deployment.kubernetes.io/max-replicas": str(
                        spec.get("replicas", 1)
                    ),
                    "deployment.kubernetes.io/revision": str(revision),
                },
                "ownerReferences": [owner_reference(deploy)],
            },
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        return self._create("ReplicaSet", deploy, body, "deployment-controller")

    def _scale(self, deploy: Obj, rs: Obj, replicas: int) -> None:
        current = int(rs["spec"].get("replicas", 0))
        if current == replicas:
            return

        def scale(obj: Obj) -> None:
            obj["spec"]["replicas"] = replicas
            annotations = obj["metadata"].setdefault("annotations", {})
            annotations["deployment.kubernetes.io/desired-replicas"] = str(
                deploy["spec"].get("replicas", 1)
            )

        self.api.mutate("ReplicaSet", _ns(rs), _name(rs), scale)
        rs["spec"]["replicas"] = replicas
        way = "up" if replicas > current else "down"
        self.event(
            deploy,
            "ScalingReplicaSet",
            f"Scaled {way} replica set {_name(rs)} from {current} to {replicas}",
            "deployment-controller",
        )

    def _roll(
        self, deploy: Obj, new: Obj, olds: list[Obj], desired: int, rolling: Obj
    ) -> None:
        surge = _quantity(rolling.get("maxSurge", "25%"), desired, round_up=True)
        unavailable = _quantity(
            rolling.get("maxUnavailable", "25%"), desired, round_up=False
        )
        if surge == 0 and unavailable == 0:
            unavailable = 1
        total = int(new["spec"].get("replicas", 0)) + sum(
            int(rs["spec"]["replicas"]) for rs in olds
        )
        room = desired + surge - total
        if room > 0:
            self._scale(
                deploy, new, min(desired, int(new["spec"].get("replicas", 0)) + room)
            )
        available = sum(_available(rs) for rs in [new, *olds])
        removable = available - (desired - unavailable)
        for rs in sorted(olds, key=_revision):
            spare = int(rs["spec"]["replicas"]) - _available(rs)
            cut = min(int(rs["spec"]["replicas"]), max(0, removable) + spare)
            if cut > 0:
                self._scale(deploy, rs, int(rs["spec"]["replicas"]) - cut)
                removable -= max(0, cut - spare)

    def _deployment_status(
        self, deploy: Obj, new: Obj, sets: list[Obj], desired: int, created: bool
    ) -> None:
        spec = deploy["spec"]
        everything = [new] + [rs for rs in sets if _uid(rs) != _uid(new)]
        replicas = sum(
            int((rs.get("status") or {}).get("replicas", 0)) for rs in everything
        )
        ready = sum(
            int((rs.get("status") or {}).get("readyReplicas", 0)) for rs in everything
        )
        available = sum(_available(rs) for rs in everything)
        updated = int((new.get("status") or {}).get("replicas", 0))
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = 0
        if (spec.get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
            max_unavailable = _quantity(
                rolling.get("maxUnavailable", "25%"), desired, round_up=False
            )
        status: Obj = {"observedGeneration": deploy["metadata"].get("generation", 1)}
        for key, value in (
            ("replicas", replicas),
            ("updatedReplicas", updated),
            ("readyReplicas", ready),
            ("availableReplicas", available),
            ("unavailableReplicas", max(0, desired - available)),
        ):
            if value:
                status[key] = value
        status["conditions"] = [
            dict(c) for c in (deploy.get("status") or {}).get("conditions") or []
        ]
        if available >= desired - max_unavailable:
            avail = (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            avail = (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        complete = updated == desired and replicas == desired and available == desired
        rs_name = _name(new)
        if complete:
            progress = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        elif created:
            progress = (
                "True",
                "NewReplicaSetCreated",
                f'Created new replica set "{rs_name}"',
            )
        else:
            progress = (
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{rs_name}" is progressing.',
            )
            old = condition(deploy, "Progressing")
            deadline = int(spec.get("progressDeadlineSeconds", 600))
            updated_at = old.get("lastUpdateTime") if old else None
            if updated_at and time.time() - parse_time(updated_at) > deadline:
                progress = (
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{rs_name}" has timed out progressing.',
                )
        stamp = now()
        for kind, (state, reason, message) in (
            ("Available", avail),
            ("Progressing", progress),
        ):
            old = condition(deploy, kind)
            same = (
                old is not None
                and old.get("status") == state
                and old.get("reason") == reason
            )
            set_condition(
                status,
                {
                    "type": kind,
                    "status": state,
                    "lastUpdateTime": old.get("lastUpdateTime", stamp)
                    if same and old
                    else stamp,
                    "reason": reason,
                    "message": message,
                },
            )
        self._set_status("Deployment", deploy, status)

    def jobs(self) -> None:
        """Run each Job's pods to completion and mark the Job Complete."""
        for job in self.api.objects("Job"):
            if _terminating(job) or condition(job, "Complete") is not None:
                continue
            spec = job["spec"]
            pods = self._owned("Pod", job)
            succeeded = sum(
                1 for p in pods if p.get("status", {}).get("phase") == "Succeeded"
            )
            failed = sum(
                1 for p in pods if p.get("status", {}).get("phase") == "Failed"
            )
            active = [
                p
                for p in pods
                if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
                and not _terminating(p)
            ]
            completions = int(spec.get("completions", 1))
            status: Obj = dict(job.get("status") or {})
            status.setdefault("startTime", now())
            if succeeded >= completions:
                stamp = now()
                for kind in ("SuccessCriteriaMet", "Complete"):
                    set_condition(
                        status,
                        {
                            "type": kind,
                            "status": "True",
                            "reason": "CompletionsReached",
                            "message": "Reached expected number of succeeded pods",
                            "lastProbeTime": stamp,
                        },
                    )
                status["completionTime"] = stamp
                status.pop("active", None)
                self.event(job, "Completed", "Job completed", "job-controller")
            elif not spec.get("suspend"):
                want = min(int(spec.get("parallelism", 1)), completions - succeeded)
                for _ in range(want - len(active)):
                    body = _pod_from_template(
                        job, spec["template"], generateName=f"{_name(job)}-"
                    )
                    created = self._create("Pod", job, body, "job-controller")
                    if created is None:
                        break
                    active.append(created)
                    self.event(
                        job,
                        "SuccessfulCreate",
                        f"Created pod: {_name(created)}",
                        "job-controller",
                    )
            if active:
                status["active"] = len(active)
            else:
                status.pop("active", None)
            status["ready"] = sum(1 for p in active if is_ready(p))
            status["terminating"] = 0
            status["uncountedTerminatedPods"] = {}
            if succeeded:
                status["succeeded"] = succeeded
            if failed:
                status["failed"] = failed
            self._set_status("Job", job, status)

    def servicelb(self) -> None:
        """Give LoadBalancer services the IPs of the Ready nodes (k3s servicelb)."""
        if "servicelb" in self.api.disable:
            return
        ips = sorted(_node_ip(n) for n in self.api.objects("Node") if is_ready(n))
        if not ips:
            return
        for svc in self.api.objects("Service"):
            if svc["spec"].get("type") != "LoadBalancer":
                continue
            status = {
                "loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ips]}
            }
            self._set_status("Service", svc, status)


def _created(obj: Obj) -> float:
    stamp = obj["metadata"].get("creationTimestamp")
    return parse_time(stamp) if stamp else 0.0


def _revision(rs: Obj) -> int:
    value = (
        rs["metadata"]
        .get("annotations", {})
        .get("deployment.kubernetes.io/revision", "0")
    )
    return int(value) if str(value).isdigit() else 0


def _available(rs: Obj) -> int:
    return int((rs.get("status") or {}).get("availableReplicas", 0))


def _image_id(image: str) -> str:
    name = image if "/" in image.split(":")[0] else f"library/{image}"
    if "." not in name.split("/")[0]:
        name = f"docker.io/{name}"
    digest = hashlib.sha256(image.encode()).hexdigest()
    return f"{name.split(':')[0]}@sha256:{digest}"


def _container_status(container: Obj, started: str, *, terminated: bool = False) -> Obj:
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
        "imageID": _image_id(image),
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
