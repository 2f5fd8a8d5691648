"""The scheduler: pods go to a Ready node that fits, or say why none does.

A node fits when it matches the pod's ``nodeName``, ``nodeSelector`` and
required node affinity, the pod tolerates its NoSchedule/NoExecute taints,
including the ones the node lifecycle implies (not-ready, unreachable,
unschedulable), and placing the pod there keeps each of its
``topologySpreadConstraints`` with ``whenUnsatisfiable: DoNotSchedule``
within ``maxSkew`` (the matching pods of its namespace counted per value
of ``topologyKey`` over the nodes its selector and affinity allow, as
kube-scheduler's PodTopologySpread filter does). Among fitting nodes the
least loaded wins; the ``FailedScheduling`` message has the scheduler's
wording.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from k3s_double.apiserver.kinds import Obj
from k3s_double.apiserver.kinds import condition
from k3s_double.apiserver.kinds import set_condition
from k3s_double.apiserver.selectors import from_label_selector
from k3s_double.apiserver.selectors import match_labels

from .base import Reconciler
from .base import name_of
from .base import ns_of
from .base import terminating
from .base import uid_of
from .nodes import NOT_READY
from .nodes import UNREACHABLE
from .nodes import UNSCHEDULABLE


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
                e, name_of(node) if e.get("key") == "metadata.name" else None
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
    if spec.get("nodeName") and spec["nodeName"] != name_of(node):
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


#: The filter's reason, as kube-scheduler words it.
SPREAD_MISFIT = "node(s) didn't match pod topology spread constraints"


def spread_misfit(
    pod: Obj, node: Obj, nodes: list[Obj], pods: list[Obj], placed: dict[str, str]
) -> bool:
    """Whether ``pod`` on ``node`` would break a DoNotSchedule spread constraint.

    ``placed`` maps the uids of pods this pass bound to their nodes.
    """
    spec = pod["spec"]
    for constraint in spec.get("topologySpreadConstraints") or []:
        if constraint.get("whenUnsatisfiable", "DoNotSchedule") != "DoNotSchedule":
            continue
        key = str(constraint.get("topologyKey", ""))
        selector = from_label_selector(constraint.get("labelSelector"))
        where = {
            name_of(n): (n["metadata"].get("labels") or {}).get(key) for n in nodes
        }
        eligible = {
            name_of(n): where[name_of(n)]
            for n in nodes
            if where[name_of(n)] is not None
            and not spec.get("nodeSelector", {}).items()
            - (n["metadata"].get("labels") or {}).items()
            and _affinity_fits(spec, n)
        }
        if where.get(name_of(node)) is None:
            return True  # a node without the key is no domain
        counts = collections.Counter(dict.fromkeys(eligible.values(), 0))
        for other in pods:
            bound = other["spec"].get("nodeName") or placed.get(uid_of(other))
            if (
                bound in eligible
                and ns_of(other) == ns_of(pod)
                and not terminating(other)
                and match_labels(selector, other["metadata"].get("labels"))
            ):
                counts[eligible[bound]] += 1
        here = counts[where[name_of(node)]] + 1
        lowest = min(counts.values(), default=0)
        if len(counts) < int(constraint.get("minDomains") or 1):
            lowest = 0  # fewer domains than asked for: the global minimum is 0
        if here - lowest > int(constraint.get("maxSkew", 1)):
            return True
    return False


class Scheduler(Reconciler):
    """The default scheduler, for pods whose ``schedulerName`` asks for it."""

    def reconcile(self) -> None:
        """Bind pending pods to a node that fits, or report why none does."""
        nodes = self.storage.objects("Node")
        pods = self.storage.objects("Pod")
        load = collections.Counter(p["spec"].get("nodeName") for p in pods)
        placed: dict[str, str] = {}
        for pod in pods:
            spec = pod["spec"]
            if spec.get("nodeName") or terminating(pod):
                continue
            if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
                continue
            reasons: collections.Counter[str] = collections.Counter()
            fits = []
            for node in nodes:
                why = misfit(spec, node)
                if why is None and spread_misfit(pod, node, nodes, pods, placed):
                    why = SPREAD_MISFIT
                if why is None:
                    fits.append(node)
                else:
                    reasons[why] += 1
            if fits:
                chosen = min(fits, key=lambda n: (load[name_of(n)], name_of(n)))
                load[name_of(chosen)] += 1
                self._bind(pod, name_of(chosen))
                placed[uid_of(pod)] = name_of(chosen)
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

        if self.storage.mutate("Pod", ns_of(pod), name_of(pod), bind) is not None:
            self.event(
                pod,
                "Scheduled",
                f"Successfully assigned {ns_of(pod)}/{name_of(pod)} to {node}",
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

        self.storage.mutate("Pod", ns_of(pod), name_of(pod), mark)
        if self._once(f"{uid_of(pod)}/unschedulable", message):
            self.event(
                pod, "FailedScheduling", message, "default-scheduler", warning=True
            )
