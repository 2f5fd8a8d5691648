"""Which containers the double's kubelets really run, decided alike everywhere.

A container runs as a process inside its node container when its ``command``
(followed by its ``args``) names an executable of the node's own filesystem,
resolved through ``PATH`` as the container runtime resolves it. The image's
entrypoint is unknown to the double, so a container with ``args`` and no
``command`` runs nothing. Every node, the server whose controllers decide
and the agents whose kubelets run, holds the same filesystem (the double's
image), so the controllers and the kubelets agree on the same answer.

A node whose kubelet runs processes says so with :data:`RUNS_PROCESSES` on
its Node: nodes registered any other way (the in-process tests' nodes) keep
the simulated containers of before.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


#: The Node annotation of a kubelet that runs the containers it can.
RUNS_PROCESSES = "k3s-double.pytest-k3s.io/runs-processes"
#: The ``PATH`` containerd gives a container whose image sets none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def container_path(container: Mapping[str, Any]) -> str:
    """The ``PATH`` the container's process gets: its own, else the default."""
    for entry in container.get("env") or []:
        if entry.get("name") == "PATH" and "value" in entry:
            return str(entry["value"])
    return DEFAULT_PATH


def resolve(name: str, path: str = DEFAULT_PATH) -> str | None:
    """The executable ``name`` stands for, as ``execvp`` finds it; None if none."""
    if not name:
        return None
    if "/" in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def argv(container: Mapping[str, Any]) -> list[str] | None:
    """``command`` + ``args`` when the node can run them, else None."""
    command = [str(part) for part in container.get("command") or []]
    if not command:
        return None
    if resolve(command[0], container_path(container)) is None:
        return None
    return command + [str(part) for part in container.get("args") or []]


def runs_processes(node: Mapping[str, Any]) -> bool:
    """Whether ``node``'s kubelet runs the containers it can."""
    annotations = (node.get("metadata") or {}).get("annotations") or {}
    return annotations.get(RUNS_PROCESSES) == "true"


def run_by_kubelet(pod: Mapping[str, Any], node: Mapping[str, Any] | None) -> bool:
    """Whether ``pod``'s kubelet runs it: a runner node and a runnable container."""
    if node is None or not runs_processes(node):
        return False
    spec = pod.get("spec") or {}
    containers = list(spec.get("initContainers") or []) + list(
        spec.get("containers") or []
    )
    return any(argv(c) is not None for c in containers)
