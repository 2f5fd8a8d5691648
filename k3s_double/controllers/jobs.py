"""Jobs: their pods run to completion, then the Job is Complete.

Pods are created up to ``parallelism`` until ``completions`` have
succeeded (the kubelet makes each Job pod succeed after a moment). The Helm
install Jobs that a fresh server holds (see ``k3s_double.bootstrap``) complete the
same way.
"""

from __future__ import annotations

from k3s_double.apiserver.kinds import Obj
from k3s_double.apiserver.kinds import condition
from k3s_double.apiserver.kinds import now
from k3s_double.apiserver.kinds import set_condition

from .base import Reconciler
from .base import is_ready
from .base import name_of
from .base import pod_from_template
from .base import terminating


class Jobs(Reconciler):
    """Run each Job's pods to completion and mark the Job Complete."""

    def reconcile(self) -> None:
        """One pass over every Job."""
        for job in self.storage.objects("Job"):
            if terminating(job) or condition(job, "Complete") is not None:
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
                and not terminating(p)
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
                    body = pod_from_template(
                        job, spec["template"], generateName=f"{name_of(job)}-"
                    )
                    created = self._create("Pod", job, body, "job-controller")
                    if created is None:
                        break
                    active.append(created)
                    self.event(
                        job,
                        "SuccessfulCreate",
                        f"Created pod: {name_of(created)}",
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
