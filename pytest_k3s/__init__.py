"""pytest-k3s: throw-away k3s-in-Docker Kubernetes clusters for tests.

The library API works without pytest::

    from pytest_k3s import ClusterSpec, K3sCluster

    with K3sCluster.start(ClusterSpec(agents=2)) as cluster:
        print(cluster.kubeconfig_path)

The pytest fixtures live in :mod:`pytest_k3s.plugin`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_k3s.errors import ClusterCommandError
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import ClusterTimeoutError
from pytest_k3s.errors import DockerUnavailableError
from pytest_k3s.errors import ImageUnavailableError
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import NameConflictError
from pytest_k3s.errors import NoEngineError
from pytest_k3s.errors import RegistryMirrorWarning
from pytest_k3s.errors import SpecError
from pytest_k3s.errors import StreamError
from pytest_k3s.errors import UnsuitableClusterError
from pytest_k3s.errors import WaitTimeoutError
from pytest_k3s.spec import DEFAULT_IMAGE
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import PortMapping
from pytest_k3s.spec import RegistryMirror


if TYPE_CHECKING:
    from pytest_k3s.cluster import K3sCluster
    from pytest_k3s.engine.node_container import Node
    from pytest_k3s.kube.streams import Forwarded
    from pytest_k3s.lifecycle.registry import ClusterRegistry

__version__ = "0.2.0"

__all__ = [
    "DEFAULT_IMAGE",
    "ClusterCommandError",
    "ClusterRegistry",
    "ClusterSpec",
    "ClusterStartError",
    "ClusterTimeoutError",
    "DockerUnavailableError",
    "Forwarded",
    "ImageUnavailableError",
    "K3sCluster",
    "K3sError",
    "NameConflictError",
    "NoEngineError",
    "Node",
    "PortMapping",
    "RegistryMirror",
    "RegistryMirrorWarning",
    "SpecError",
    "StreamError",
    "UnsuitableClusterError",
    "WaitTimeoutError",
    "__version__",
]

#: Names imported on first use: the cluster machinery pulls in the Docker and
#: Kubernetes layers' dependencies, which a pytest run that uses no k3s
#: fixture (the plugin loads with every run) should not pay for.
_LAZY = {
    "K3sCluster": "pytest_k3s.cluster",
    "ClusterRegistry": "pytest_k3s.lifecycle.registry",
    "Node": "pytest_k3s.engine.node_container",
    "Forwarded": "pytest_k3s.kube.streams",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_k3s' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
