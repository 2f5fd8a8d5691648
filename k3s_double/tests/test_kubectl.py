"""kubectl v1.32 against the KubeAPI: get, apply, wait, delete, selectors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from k3s_double.apiserver.server import KubeAPI
from k3s_double.tests.conftest import wait_for


pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        env: [{name: MODE, value: MODE_VALUE}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  labels: {app: web}
data:
  mode: MODE_VALUE
"""


def kubectl(kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_get_nodes_shows_ready(kubeconfig: Path, node: str) -> None:
    out = kubectl(kubeconfig, "get", "nodes")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert row.split()[:3] == [node, "Ready", "control-plane"]
    assert row.split()[-1] == "v1.35.5+k3s1"
    names = kubectl(kubeconfig, "get", "nodes", "-o", "name")
    assert names.split() == [f"node/{node}"]


def test_apply_wait_update_and_delete(
    kubeconfig: Path, node: str, tmp_path: Path, api: KubeAPI
) -> None:
    manifest = tmp_path / "app.yaml"
    manifest.write_text(MANIFEST.replace("MODE_VALUE", "one"))
    out = kubectl(kubeconfig, "apply", "-f", str(manifest))
    assert out.split("\n")[:2] == [
        "deployment.apps/web created",
        "configmap/web-config created",
    ]
    kubectl(
        kubeconfig,
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=30s",
    )
    pods = kubectl(kubeconfig, "get", "pods", "-l", "app=web", "--no-headers")
    assert [line.split()[1:3] for line in pods.splitlines()] == [
        ["1/1", "Running"],
        ["1/1", "Running"],
    ]
    assert kubectl(kubeconfig, "get", "pods", "-l", "app!=web", "-o", "name") == ""
    manifest.write_text(MANIFEST.replace("MODE_VALUE", "two"))
    out = kubectl(kubeconfig, "apply", "-f", str(manifest))
    assert "deployment.apps/web configured" in out
    assert "configmap/web-config configured" in out
    data = kubectl(
        kubeconfig, "get", "configmap", "web-config", "-o", "jsonpath={.data.mode}"
    )
    assert data == "two"
    kubectl(kubeconfig, "rollout", "status", "deployment/web", "--timeout=30s")
    assert "unchanged" in kubectl(kubeconfig, "apply", "-f", str(manifest))
    out = kubectl(kubeconfig, "delete", "-f", str(manifest))
    assert 'deployment.apps "web" deleted' in out
    wait_for(lambda: not api.objects("Pod", "default"), 10)
    assert kubectl(kubeconfig, "get", "all", "-l", "app=web", "-o", "name") == ""


def test_get_all_namespaces_lists_kube_system(kubeconfig: Path, node: str) -> None:
    kubectl(
        kubeconfig,
        "wait",
        "-n",
        "kube-system",
        "--for=condition=Available",
        "deployment/coredns",
        "--timeout=30s",
    )
    out = kubectl(kubeconfig, "get", "pods", "-A", "-l", "k8s-app=kube-dns")
    rows = out.splitlines()[1:]
    assert len(rows) == 1
    assert rows[0].split()[0] == "kube-system"
    assert rows[0].split()[3] == "Running"
