"""Install a Helm chart with the helm CLI, run its tests, uninstall it.

helm gets the cluster through ``--kubeconfig`` and the ``k3s_kubeconfig``
fixture's path; nothing touches ``~/.kube/config``. The chart is in
``examples/charts/hello``. Without helm on PATH the test is skipped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_k3s import K3sCluster


CHART = Path(__file__).parent / "charts" / "hello"
HELM = shutil.which("helm")

pytestmark = pytest.mark.skipif(HELM is None, reason="helm is not on PATH")


def helm(kubeconfig: Path, *args: str) -> str:
    assert HELM is not None
    result = subprocess.run(
        [HELM, "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_chart_installs_passes_its_tests_and_uninstalls(
    k3s_cluster: K3sCluster, k3s_kubeconfig: Path, k3s_namespace: str
) -> None:
    helm(
        k3s_kubeconfig,
        "install",
        "hello",
        str(CHART),
        "--namespace",
        k3s_namespace,
        "--set",
        "replicas=2",
        "--wait",
        "--timeout",
        "180s",
    )
    deployment = k3s_cluster.wait_for(
        "deploy", "hello", namespace=k3s_namespace, condition="Available"
    )
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2
    helm(k3s_kubeconfig, "test", "hello", "--namespace", k3s_namespace)
    helm(k3s_kubeconfig, "uninstall", "hello", "--namespace", k3s_namespace, "--wait")
    k3s_cluster.wait_for("deploy", "hello", namespace=k3s_namespace, delete=True)
