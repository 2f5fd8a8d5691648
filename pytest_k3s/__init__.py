"""pytest-k3s: throw-away k3s-in-Docker Kubernetes clusters for tests.

The library API works without pytest::

    from pytest_k3s import ClusterSpec, K3sCluster

    with K3sCluster.start(ClusterSpec(agents=2)) as cluster:
        print(cluster.kubeconfig_path)

The pytest fixtures live in :mod:`pytest_k3s.plugin`.
"""

from __future__ import annotations

from pytest_k3s.cluster import K3sCluster
from pytest_k3s.errors import ClusterCommandError
from pytest_k3s.errors import ClusterStartError
from pytest_k3s.errors import ClusterTimeoutError
from pytest_k3s.errors import DockerUnavailableError
from pytest_k3s.errors import ImageUnavailableError
from pytest_k3s.errors import K3sError
from pytest_k3s.errors import NameConflictError
from pytest_k3s.errors import SpecError
from pytest_k3s.nodes import Node
from pytest_k3s.spec import DEFAULT_IMAGE
from pytest_k3s.spec import ClusterSpec
from pytest_k3s.spec import PortMapping


__version__ = "0.1.0"

__all__ = [
    "DEFAULT_IMAGE",
    "ClusterCommandError",
    "ClusterSpec",
    "ClusterStartError",
    "ClusterTimeoutError",
    "DockerUnavailableError",
    "ImageUnavailableError",
    "K3sCluster",
    "K3sError",
    "NameConflictError",
    "Node",
    "PortMapping",
    "SpecError",
    "__version__",
]
