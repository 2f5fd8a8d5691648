"""kubectl's watches, ``auth can-i``, ``explain`` and field validation, per kubectl.

Every kubectl of :func:`~k3s_double.tests.conftest.kubectls` (the machine's
1.32 and a current 1.35 at least) against the in-process KubeAPI over HTTP,
as ``test_kubectl.py`` drives one. kubectl 1.35's ``wait``, ``rollout
status`` and ``delete --wait`` watch with ``sendInitialEvents`` (a watch-list)
and wait for its end-of-initial-events bookmark; older ones list, then watch.
Objects are written with ``kubectl apply -f`` (JSON bodies).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from k3s_double.apiserver.server import KubeAPI
from k3s_double.tests.conftest import kubectls
from k3s_double.tests.conftest import wait_for


KUBECTLS = kubectls()

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
        ports: [{containerPort: 80, name: http}]
        readinessProbe:
          tcpSocket: {port: 80}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
"""


@pytest.fixture(params=KUBECTLS or [""], ids=lambda path: path or "none")
def kubectl(request: pytest.FixtureRequest) -> str:
    """One kubectl binary to test with."""
    if not request.param:
        pytest.skip("needs kubectl")
    path: str = request.param
    return path


def run(
    binary: str, kubeconfig: Path, *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [binary, "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    if ok:
        assert done.returncode == 0, f"{' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


def minor(binary: str) -> int:
    """The minor version of a kubectl."""
    done = subprocess.run(
        [binary, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return int(json.loads(done.stdout)["clientVersion"]["minor"].rstrip("+"))


def test_wait_rollout_status_and_delete_wait(
    kubectl: str, kubeconfig: Path, node: str, tmp_path: Path, api: KubeAPI
) -> None:
    manifest = tmp_path / "web.yaml"
    manifest.write_text(MANIFEST)
    run(kubectl, kubeconfig, "apply", "-f", str(manifest))
    started = time.monotonic()
    waited = run(
        kubectl, kubeconfig, "wait", "--for=condition=Available",
        "deployment/web", "--timeout=30s", "-v=6",
    )  # fmt: skip
    assert "deployment.apps/web condition met" in waited.stdout
    if minor(kubectl) >= 35:
        # The watch-list kubectl 1.35 waits with, answered to the end.
        assert "sendInitialEvents=true" in waited.stderr
        assert "hasn't received required bookmark" not in waited.stderr
    rolled = run(
        kubectl, kubeconfig, "rollout", "status", "deployment/web", "--timeout=30s"
    )
    assert 'deployment "web" successfully rolled out' in rolled.stdout
    deleted = run(
        kubectl, kubeconfig, "delete", "-f", str(manifest), "--wait", "--timeout=30s"
    )
    assert 'deployment.apps "web" deleted' in deleted.stdout
    assert api.find("Deployment", "default", "web") is None
    assert api.find("Service", "default", "web") is None
    # Each returned as soon as its condition held, not at its timeout.
    assert time.monotonic() - started < 30
    wait_for(lambda: not api.objects("Pod", "default"), 10)


def test_wait_for_a_deletion(
    kubectl: str, kubeconfig: Path, node: str, tmp_path: Path, api: KubeAPI
) -> None:
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    )
    run(kubectl, kubeconfig, "apply", "-f", str(manifest))
    run(kubectl, kubeconfig, "delete", "configmap", "c", "--wait=false")
    run(kubectl, kubeconfig, "wait", "--for=delete", "configmap/c", "--timeout=20s")
    assert api.find("ConfigMap", "default", "c") is None


def test_auth_can_i(kubectl: str, kubeconfig: Path) -> None:
    assert run(
        kubectl, kubeconfig, "auth", "can-i", "create", "deployments"
    ).stdout == ("yes\n")
    allowed = run(
        kubectl, kubeconfig, "auth", "can-i", "delete", "nodes", "--all-namespaces"
    )
    assert allowed.stdout == "yes\n"
    listed = run(kubectl, kubeconfig, "auth", "can-i", "--list").stdout.splitlines()
    assert listed[0].split() == ["Resources", "Non-Resource", "URLs", "Resource",
                                 "Names", "Verbs"]  # fmt: skip
    rows = [line.split() for line in listed[1:]]
    assert ["*.*", "[]", "[]", "[*]"] in rows
    assert [
        "selfsubjectaccessreviews.authorization.k8s.io",
        "[]",
        "[]",
        "[create]",
    ] in (rows)


def test_explain(kubectl: str, kubeconfig: Path) -> None:
    replicas = run(kubectl, kubeconfig, "explain", "deployment.spec.replicas").stdout
    assert replicas.splitlines()[:4] == [
        "GROUP:      apps",
        "KIND:       Deployment",
        "VERSION:    v1",
        "",
    ]
    assert "FIELD: replicas <integer>" in replicas
    assert "Number of desired pods." in replicas
    ports = run(kubectl, kubeconfig, "explain", "service.spec.ports").stdout
    assert "FIELD: ports <[]ServicePort>" in ports
    assert "targetPort\t<IntOrString>" in ports
    assert "port\t<integer> -required-" in ports
    pod = run(kubectl, kubeconfig, "explain", "pods.spec.containers.image").stdout
    assert "FIELD: image <string>" in pod


def test_apply_validates_fields(
    kubectl: str, kubeconfig: Path, tmp_path: Path, api: KubeAPI
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MANIFEST)
    applied = run(kubectl, kubeconfig, "apply", "-f", str(good))
    assert applied.stdout.splitlines() == [
        "deployment.apps/web created",
        "service/web created",
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        MANIFEST.replace("name: web", "name: typo")
        .replace("replicas: 2", "replica: 2")
        .replace("  ports:\n", "  prots: []\n  ports:\n")
    )
    refused = run(kubectl, kubeconfig, "apply", "-f", str(bad), ok=False)
    assert refused.returncode != 0
    assert 'strict decoding error: unknown field "spec.replica"' in refused.stderr
    assert 'strict decoding error: unknown field "spec.prots"' in refused.stderr
    assert api.find("Deployment", "default", "typo") is None
    # Changing an applied object is validated too (a strategic merge patch).
    good.write_text(MANIFEST.replace("replicas: 2", "replicas: 3\n  pause: true"))
    patched = run(kubectl, kubeconfig, "apply", "-f", str(good), ok=False)
    assert 'strict decoding error: unknown field "spec.pause"' in patched.stderr
    unchecked = run(kubectl, kubeconfig, "apply", "--validate=false", "-f", str(bad))
    assert "deployment.apps/typo created" in unchecked.stdout
