"""k3s' servicelb (klipper-lb): LoadBalancer services get the nodes' IPs.

Real servicelb runs a DaemonSet of proxies; the double only publishes the
Ready nodes' InternalIPs as the services' ingress, unless ``--disable
servicelb`` turned it off.
"""

from __future__ import annotations

from .base import Reconciler
from .base import is_ready
from .base import node_ip


class ServiceLB(Reconciler):
    """Give LoadBalancer services the IPs of the Ready nodes (k3s servicelb)."""

    def reconcile(self) -> None:
        """One pass over every LoadBalancer Service."""
        if "servicelb" in self.storage.disable:
            return
        ips = sorted(node_ip(n) for n in self.storage.objects("Node") if is_ready(n))
        if not ips:
            return
        for svc in self.storage.objects("Service"):
            if svc["spec"].get("type") != "LoadBalancer":
                continue
            status = {
                "loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ips]}
            }
            self._set_status("Service", svc, status)
