"""kubectl and helm (client-go: protobuf bodies) against a cluster of the double.

One server of the built image, through the real Docker engine. Every
kubectl found (``PYTEST_K3S_TEST_KUBECTLS``, colon-separated; else
``kubectl`` on ``PATH`` and ``/tmp/tools/kubectl`` if it is there) creates
a namespace, a Secret, a ConfigMap, a Deployment, a Service, a Job and a
ServiceAccount with ``kubectl create``, which client-go sends as protobuf;
each object, read back with the Python client, must hold everything the
same kubectl writes with ``--dry-run=client -o json`` (its JSON form of the
same Go object). helm (``helm`` on ``PATH``, else ``/tmp/tools/helm``)
installs and uninstalls ``examples/charts/hello``: its release Secret is
created, updated and deleted in protobuf. The codec itself is tested
without Docker in ``test_protobuf_codec.py``.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from kubernetes import client as k8s

from .conftest import KUBECTLS_ENV
from .conftest import TOOLS
from .conftest import helm_binary
from .conftest import kubectls
from .test_node_contract import TOKEN
from .test_node_contract import Cluster
from .test_node_contract import api_client
from .test_node_contract import kubeconfig_for
from .test_node_contract import new_cluster
from .test_node_contract import wait_for_log
from .test_node_contract import wait_until


pytestmark = pytest.mark.docker

CHART = Path(__file__).resolve().parents[2] / "examples" / "charts" / "hello"
SENT_AS_PROTOBUF = re.compile(r"Content-Type:\s*application/vnd\.kubernetes\.protobuf")


KUBECTLS = kubectls()


@pytest.fixture(scope="module")
def cluster(docker_client: docker.DockerClient, double_image: str) -> Iterator[Cluster]:
    """One server, its API published on 127.0.0.1."""
    with new_cluster(docker_client, double_image) as c:
        server = c.run(
            "server", ["server", "--tls-san", "127.0.0.1"], {"K3S_TOKEN": TOKEN},
            publish=True,
        )  # fmt: skip
        wait_for_log(server, "k3s is up and running")
        c.api = api_client(kubeconfig_for(server))
        yield c


@pytest.fixture(scope="module")
def kubeconfig(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("protobuf") / "kubeconfig.yaml"
    path.write_text(yaml.safe_dump(kubeconfig_for(cluster.servers[0])))
    return path


def run(tool: str, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run kubectl or helm against the cluster; fail on a non-zero exit."""
    done = subprocess.run(
        [tool, "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{tool} {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


def missing(stored: Any, sent: Any, path: str = "") -> list[str]:
    """What of ``sent`` ``stored`` lacks or holds otherwise (empty: nothing).

    ``null`` in what a client sends (``creationTimestamp`` of kubectl 1.32)
    means "unset", and the server fills it in.
    """
    if sent is None:
        return []
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [f"{path}: {stored!r} is no object"]
        return [
            problem
            for key, value in sent.items()
            for problem in missing(stored.get(key), value, f"{path}.{key}")
        ]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [f"{path}: {stored!r} != {sent!r}"]
        return [
            problem
            for index, (mine, theirs) in enumerate(zip(stored, sent, strict=True))
            for problem in missing(mine, theirs, f"{path}[{index}]")
        ]
    return [] if stored == sent else [f"{path}: {stored!r} != {sent!r}"]


def _namespace_for(kubectl: str) -> str:
    return "pb-" + re.sub(r"[^a-z0-9]+", "-", kubectl.lower()).strip("-")[-40:]


@pytest.mark.parametrize("kubectl", KUBECTLS or [None], ids=str)
def test_kubectl_create_sends_protobuf_the_double_stores(
    kubectl: str | None, cluster: Cluster, kubeconfig: Path
) -> None:
    if kubectl is None:
        pytest.skip(f"no kubectl: none on PATH, none in {TOOLS}, {KUBECTLS_ENV} unset")
    api = cluster.client
    core, apps, batch = k8s.CoreV1Api(api), k8s.AppsV1Api(api), k8s.BatchV1Api(api)
    ns = _namespace_for(kubectl)

    created = run(kubectl, kubeconfig, "create", "namespace", ns, "-v=8")
    assert SENT_AS_PROTOBUF.search(created.stderr), "kubectl sent no protobuf"
    namespace = core.read_namespace(ns)
    assert namespace.status.phase == "Active"
    assert namespace.metadata.labels == {"kubernetes.io/metadata.name": ns}

    commands: list[tuple[list[str], Any]] = [
        (
            ["secret", "generic", "creds", "--from-literal=user=admin",
             "--from-literal=password=s3=cr:et"],
            lambda: core.read_namespaced_secret("creds", ns),
        ),
        (
            ["configmap", "settings", "--from-literal=mode=fast",
             "--from-literal=level=3"],
            lambda: core.read_namespaced_config_map("settings", ns),
        ),
        (
            ["deployment", "web", "--image=nginx:1.27", "--replicas=2", "--port=80"],
            lambda: apps.read_namespaced_deployment("web", ns),
        ),
        (
            ["service", "clusterip", "web", "--tcp=80:8080"],
            lambda: core.read_namespaced_service("web", ns),
        ),
        (
            ["job", "once", "--image=busybox", "--", "sh", "-c", "true"],
            lambda: batch.read_namespaced_job("once", ns),
        ),
        (
            ["serviceaccount", "robot"],
            lambda: core.read_namespaced_service_account("robot", ns),
        ),
    ]  # fmt: skip
    for args, read in commands:
        rest = args[args.index("--") :] if "--" in args else []
        head = args[: len(args) - len(rest)]
        as_json = run(
            kubectl, kubeconfig, "-n", ns, "create", *head, "--dry-run=client",
            "-o", "json", *rest,
        )  # fmt: skip
        sent = json.loads(as_json.stdout)
        run(kubectl, kubeconfig, "-n", ns, "create", *args)
        stored = api.sanitize_for_serialization(read())
        assert missing(stored, sent) == [], (args, stored)

    secret = core.read_namespaced_secret("creds", ns)
    assert secret.type == "Opaque"
    assert {k: base64.b64decode(v).decode() for k, v in secret.data.items()} == {
        "user": "admin",
        "password": "s3=cr:et",
    }
    assert core.read_namespaced_config_map("settings", ns).data == {
        "mode": "fast",
        "level": "3",
    }
    deployment = apps.read_namespaced_deployment("web", ns)
    assert deployment.spec.replicas == 2
    assert deployment.spec.selector.match_labels == {"app": "web"}
    (container,) = deployment.spec.template.spec.containers
    assert (container.name, container.image) == ("nginx", "nginx:1.27")
    assert [(p.container_port, p.protocol) for p in container.ports] == [(80, "TCP")]
    service = core.read_namespaced_service("web", ns)
    assert [(p.port, p.target_port) for p in service.spec.ports] == [(80, 8080)]
    assert service.spec.cluster_ip
    job = batch.read_namespaced_job("once", ns)
    assert job.spec.template.spec.containers[0].command == ["sh", "-c", "true"]
    assert job.spec.template.spec.restart_policy == "Never"

    run(kubectl, kubeconfig, "delete", "namespace", ns, "--wait=false")


def test_helm_install_and_uninstall(cluster: Cluster, kubeconfig: Path) -> None:
    helm = helm_binary()
    if helm is None:
        pytest.skip(f"no helm: none on PATH, none in {TOOLS}")
    core, apps = k8s.CoreV1Api(cluster.client), k8s.AppsV1Api(cluster.client)
    run(helm, kubeconfig, "install", "hello", str(CHART), "--namespace", "default")
    (release,) = core.list_namespaced_secret(
        "default", label_selector="owner=helm,name=hello"
    ).items
    assert release.type == "helm.sh/release.v1"
    assert (release.metadata.labels or {}).get("status") == "deployed"
    assert set(release.data or {}) == {"release"}
    assert apps.read_namespaced_deployment("hello", "default").spec.replicas == 1
    listed = run(helm, kubeconfig, "list", "--namespace", "default", "-o", "json")
    assert [(r["name"], r["status"]) for r in json.loads(listed.stdout)] == [
        ("hello", "deployed")
    ]
    run(helm, kubeconfig, "uninstall", "hello", "--namespace", "default")
    wait_until(
        lambda: (
            not core.list_namespaced_secret(
                "default", label_selector="owner=helm,name=hello"
            ).items
        ),
        30,
        "the release Secret to go",
    )
    assert not apps.list_namespaced_deployment("default").items
