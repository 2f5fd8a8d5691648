"""Namespaces and what comes with them.

A new namespace gets the ``kube-root-ca.crt`` ConfigMap at once (as the
root-ca-cert-publisher does) and its ``default`` ServiceAccount a moment
later (as the serviceaccount controller does); a Terminating namespace is
emptied and then removed.
"""

from __future__ import annotations

from k3s_double.apiserver.kinds import BY_KIND
from k3s_double.apiserver.kinds import Obj

from .base import Reconciler
from .base import name_of
from .base import ns_of
from .base import terminating
from .base import uid_of


SA_DELAY = 0.3
CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when "
    "using internal endpoints such as the internal service IP or "
    "kubernetes.default.svc. No other usage is guaranteed across distributions "
    "of Kubernetes clusters."
)


class Namespaces(Reconciler):
    """Give namespaces their default objects; empty and remove Terminating ones."""

    def reconcile(self) -> None:
        """One pass over every Namespace."""
        for ns in self.storage.objects("Namespace"):
            name = name_of(ns)
            if terminating(ns):
                self._finish_namespace(ns)
                continue
            if self.storage.find("ConfigMap", name, "kube-root-ca.crt") is None:
                body = {
                    "metadata": {
                        "name": "kube-root-ca.crt",
                        "annotations": {"kubernetes.io/description": CA_DESCRIPTION},
                    },
                    "data": {"ca.crt": self.storage.ca_pem},
                }
                self._create("ConfigMap", ns, body, "root-ca-cert-publisher")
            old_enough = self._since(f"{uid_of(ns)}/sa") >= SA_DELAY
            if old_enough and not self.storage.find("ServiceAccount", name, "default"):
                self._create(
                    "ServiceAccount", ns, {"metadata": {"name": "default"}}, ""
                )

    def _finish_namespace(self, ns: Obj) -> None:
        name, remaining = name_of(ns), 0
        for kind, obj in self.storage.store.all_objects():
            if kind.namespaced and ns_of(obj) == name:
                remaining += 1
                if not terminating(obj):
                    self._delete(kind, obj, propagationPolicy="Background")
        if remaining == 0:
            self.storage.store.remove(BY_KIND["Namespace"], "", name)
