"""The Node object a k3s kubelet registers, built from the machine it runs on."""

from __future__ import annotations

import os
import platform
import uuid
from collections.abc import Mapping
from collections.abc import Sequence

from k3s_double.apiserver.kinds import Obj
from k3s_double.apiserver.kinds import now
from k3s_double.constants import K3S_VERSION
from k3s_double.constants import go_arch


#: The kubelet's Ready=False message before its first runtime and PLEG checks.
NOT_READY_MESSAGE = (
    "[container runtime status check may not have completed yet, "
    "PLEG is not healthy: pleg has yet to be successful]"
)


def _read(path: str, fallback: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or fallback
    except OSError:
        return fallback


def _memory_kib() -> int:
    for line in _read("/proc/meminfo", "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 8 * 1024 * 1024


def node_object(
    name: str,
    *,
    internal_ip: str,
    labels: Mapping[str, str],
    taints: Sequence[Mapping[str, str]] = (),
    git_version: str = K3S_VERSION,
    ready: bool = False,
) -> dict[str, object]:
    """Build a complete v1 Node as a k3s kubelet registers it.

    A kubelet registers its Node ``Ready=False`` (``KubeletNotReady``: the
    container runtime and PLEG have not been checked yet) and reports
    ``Ready=True`` in a later status update; ``ready=True`` builds the Node
    as it is after that first report.

    It carries the standard node labels, addresses, capacity, a complete
    NodeSystemInfo and the four kubelet conditions, so that it validates
    against the kubernetes client's models.
    """
    stamp = now()
    arch = go_arch()
    capacity = {
        "cpu": str(os.cpu_count() or 1),
        "ephemeral-storage": "61202244Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": f"{_memory_kib()}Ki",
        "pods": "110",
    }
    all_labels = {
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/instance-type": "k3s",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": "k3s",
        **labels,
    }

    def cond(kind: str, status: str, reason: str, message: str) -> Obj:
        return {
            "type": kind,
            "status": status,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
            "reason": reason,
            "message": message,
        }

    spec: Obj = {"providerID": f"k3s://{name}"}
    if taints:
        spec["taints"] = [dict(t) for t in taints]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": {
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                "k3s.io/internal-ip": internal_ip,
                "k3s.io/hostname": name,
            },
        },
        "spec": spec,
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": [
                cond(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                cond(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                cond(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
                if ready
                else cond("Ready", "False", "KubeletNotReady", NOT_READY_MESSAGE),
            ],
            "addresses": [
                {"type": "InternalIP", "address": internal_ip},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "architecture": arch,
                "bootID": _read("/proc/sys/kernel/random/boot_id", str(uuid.uuid4())),
                "containerRuntimeVersion": "containerd://2.0.5-k3s1",
                "kernelVersion": platform.release(),
                "kubeProxyVersion": git_version,
                "kubeletVersion": git_version,
                "machineID": _read("/etc/machine-id", uuid.uuid4().hex),
                "operatingSystem": "linux",
                "osImage": f"K3s {git_version}",
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            },
            "images": [],
        },
    }
