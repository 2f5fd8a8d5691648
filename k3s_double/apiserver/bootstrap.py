"""The objects a fresh k3s server holds before anyone talks to it.

The four system namespaces, the ``kubernetes`` service, and in kube-system
the packaged components (CoreDNS, local-path-provisioner, metrics-server,
Traefik with its Helm install jobs), each left out when ``--disable`` names
it.  Default ServiceAccounts and ``kube-root-ca.crt`` ConfigMaps are not
here: their controllers create them a moment later, as in k3s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from .kinds import BY_KIND
from .kinds import Obj


if TYPE_CHECKING:
    from .storage import Storage

SYSTEM = "kube-system"
CRITICAL_TOLERATIONS = [
    {"key": "CriticalAddonsOnly", "operator": "Exists"},
    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
     "effect": "NoSchedule"},
    {"key": "node-role.kubernetes.io/master", "operator": "Exists",
     "effect": "NoSchedule"},
]  # fmt: skip


def _meta(name: str, labels: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": SYSTEM}
    if labels:
        meta["labels"] = labels
    return meta


def _deployment(
    name: str,
    labels: dict[str, str],
    image: str,
    account: str,
    ports: list[Obj],
    **pod: Any,
) -> Obj:
    container: Obj = {"name": name, "image": image, "ports": ports}
    if "args" in pod:
        container["args"] = pod.pop("args")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, labels),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": account,
                    "priorityClassName": "system-cluster-critical",
                    "tolerations": CRITICAL_TOLERATIONS,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [container],
                    **pod,
                },
            },
        },
    }


def _service(name: str, selector: dict[str, str], ports: list[Obj], **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, dict(selector)),
        "spec": {"selector": selector, "ports": ports, **spec},
    }


def _account(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name)}


def _config(name: str, data: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(name),
        "data": data,
    }


def _job(name: str, chart: str) -> Obj:
    labels = {"helmcharts.helm.cattle.io/chart": chart}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(name, labels),
        "spec": {
            "backoffLimit": 1000,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": f"helm-{chart}",
                    "restartPolicy": "OnFailure",
                    "containers": [
                        {
                            "name": "helm",
                            "image": "rancher/klipper-helm:v0.9.8-build20250709",
                            "args": ["install"],
                        }
                    ],
                },
            },
        },
    }


COREFILE = """.:53 {
    errors
    health
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
      pods insecure
      fallthrough in-addr.arpa ip6.arpa
    }
    hosts /etc/coredns/NodeHosts {
      ttl 60
      reload 15s
      fallthrough
    }
    prometheus :9153
    forward . /etc/resolv.conf
    cache 30
    loop
    reload
    loadbalance
    import /etc/coredns/custom/*.override
}
import /etc/coredns/custom/*.server
"""


def components(disable: frozenset[str]) -> list[Obj]:
    """Return the kube-system objects of the packaged components not disabled."""
    objects: list[Obj] = []
    if "coredns" not in disable:
        dns = {"k8s-app": "kube-dns"}
        objects += [
            _account("coredns"),
            _config("coredns", {"Corefile": COREFILE, "NodeHosts": ""}),
            _deployment(
                "coredns",
                dns,
                "rancher/mirrored-coredns-coredns:1.12.3",
                "coredns",
                [
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                    {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                ],
                args=["-conf", "/etc/coredns/Corefile"],
                dnsPolicy="Default",
            ),
            _service(
                "kube-dns",
                dns,
                [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {
                        "name": "dns-tcp",
                        "port": 53,
                        "protocol": "TCP",
                        "targetPort": 53,
                    },
                    {
                        "name": "metrics",
                        "port": 9153,
                        "protocol": "TCP",
                        "targetPort": 9153,
                    },
                ],
                clusterIP="10.43.0.10",
            ),
        ]
        objects[-1]["metadata"]["labels"]["kubernetes.io/name"] = "CoreDNS"
    if "local-storage" not in disable:
        app = {"app": "local-path-provisioner"}
        objects += [
            _account("local-path-provisioner-service-account"),
            _config("local-path-config", {"config.json": '{"nodePathMap": []}'}),
            _deployment(
                "local-path-provisioner",
                app,
                "rancher/local-path-provisioner:v0.0.32",
                "local-path-provisioner-service-account",
                [],
            ),
        ]
    if "metrics-server" not in disable:
        app = {"k8s-app": "metrics-server"}
        objects += [
            _account("metrics-server"),
            _deployment(
                "metrics-server",
                app,
                "rancher/mirrored-metrics-server:v0.8.0",
                "metrics-server",
                [{"name": "https", "containerPort": 10250, "protocol": "TCP"}],
            ),
            _service(
                "metrics-server",
                app,
                [{"name": "https", "port": 443, "targetPort": "https"}],
            ),
        ]
    if "traefik" not in disable:
        app = {
            "app.kubernetes.io/instance": "traefik-kube-system",
            "app.kubernetes.io/name": "traefik",
        }
        objects += [
            _account("helm-traefik"),
            _account("helm-traefik-crd"),
            _account("traefik"),
            _job("helm-install-traefik-crd", "traefik-crd"),
            _job("helm-install-traefik", "traefik"),
            _deployment(
                "traefik",
                app,
                "rancher/mirrored-library-traefik:3.5.1",
                "traefik",
                [
                    {"name": "web", "containerPort": 8000, "protocol": "TCP"},
                    {"name": "websecure", "containerPort": 8443, "protocol": "TCP"},
                ],
            ),
            _service(
                "traefik",
                app,
                [
                    {"name": "web", "port": 80, "targetPort": "web"},
                    {"name": "websecure", "port": 443, "targetPort": "websecure"},
                ],
                type="LoadBalancer",
            ),
        ]
    return objects


def bootstrap(api: Storage) -> None:
    """Create the objects of a freshly started k3s server."""
    for name in ("default", "kube-system", "kube-public", "kube-node-lease"):
        api.create(BY_KIND["Namespace"], "", {"metadata": {"name": name}})
    kubernetes = {
        "metadata": {
            "name": "kubernetes",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "clusterIP": "10.43.0.1",
            "ports": [
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}
            ],
        },
    }
    api.create(BY_KIND["Service"], "default", kubernetes)
    for obj in components(api.disable):
        api.create(BY_KIND[obj["kind"]], SYSTEM, obj)
