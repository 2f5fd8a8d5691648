"""Deployments and ReplicaSets, as kube-controller-manager runs them.

A ReplicaSet keeps ``spec.replicas`` pods from its template (creating at most
``BURST`` per pass, deleting unscheduled and unready pods first). A
Deployment owns one ReplicaSet per pod template (named by the template's
hash, numbered by revision) and rolls between them by ``Recreate`` or
``RollingUpdate`` within ``maxSurge``/``maxUnavailable``, pruning old ones
beyond ``revisionHistoryLimit``; its status and conditions carry the
controller's reasons and messages.
"""

from __future__ import annotations

import math
import time
from typing import Any

from k3s_double.apiserver.kinds import Obj
from k3s_double.apiserver.kinds import condition
from k3s_double.apiserver.kinds import now
from k3s_double.apiserver.kinds import owner_reference
from k3s_double.apiserver.kinds import parse_time
from k3s_double.apiserver.kinds import set_condition
from k3s_double.apiserver.kinds import short_hash

from .base import Reconciler
from .base import is_ready
from .base import name_of
from .base import ns_of
from .base import pod_from_template
from .base import terminating
from .base import uid_of


BURST = 50


def _quantity(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        exact = total * int(text[:-1]) / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(text)


class ReplicaSets(Reconciler):
    """Keep each ReplicaSet's pod count at spec.replicas and report status."""

    def reconcile(self) -> None:
        """One pass over every ReplicaSet."""
        for rs in self.storage.objects("ReplicaSet"):
            if terminating(rs):
                continue
            pods = [p for p in self._owned("Pod", rs) if not terminating(p)]
            wanted = int(rs["spec"].get("replicas", 1))
            if len(pods) < wanted:
                for _ in range(min(BURST, wanted - len(pods))):
                    body = pod_from_template(
                        rs, rs["spec"]["template"], generateName=f"{name_of(rs)}-"
                    )
                    created = self._create("Pod", rs, body, "replicaset-controller")
                    if created is None:
                        break
                    pods.append(created)
                    self.event(
                        rs,
                        "SuccessfulCreate",
                        f"Created pod: {name_of(created)}",
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
                            f"Deleted pod: {name_of(victim)}",
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


class Deployments(Reconciler):
    """Roll each Deployment's ReplicaSets toward its template and report status."""

    def reconcile(self) -> None:
        """One pass over every Deployment."""
        for deploy in self.storage.objects("Deployment"):
            if not terminating(deploy):
                self._reconcile_deployment(deploy)

    def _reconcile_deployment(self, deploy: Obj) -> None:
        spec, name = deploy["spec"], name_of(deploy)
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

            self.storage.mutate("Deployment", ns_of(deploy), name, annotate)
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
                "name": f"{name_of(deploy)}-{template_hash}",
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

        self.storage.mutate("ReplicaSet", ns_of(rs), name_of(rs), scale)
        rs["spec"]["replicas"] = replicas
        way = "up" if replicas > current else "down"
        self.event(
            deploy,
            "ScalingReplicaSet",
            f"Scaled {way} replica set {name_of(rs)} from {current} to {replicas}",
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
        everything = [new] + [rs for rs in sets if uid_of(rs) != uid_of(new)]
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
        rs_name = name_of(new)
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
