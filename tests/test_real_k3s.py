"""The lifecycle against the real rancher/k3s image, where that image can be had.

Deselected (see the collection header) on machines without it, such as ours;
run in the GitHub Actions workflow with the image pulled.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes.client import CoreV1Api

from pytest_k3s import ClusterSpec
from pytest_k3s import K3sCluster
from pytest_k3s.kube.client import node_roles


pytestmark = [pytest.mark.docker, pytest.mark.real_k3s]

POD: Any = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "hello"},
    "spec": {
        "restartPolicy": "Never",
        "containers": [
            {"name": "hello", "image": "busybox:1.36", "command": ["echo", "hello"]}
        ],
    },
}


@pytest.mark.parametrize(("servers", "agents"), [(1, 1), (3, 1)], ids=["1+1", "3+1"])
def test_real_cluster_runs_a_pod(servers: int, agents: int) -> None:
    spec = ClusterSpec(servers=servers, agents=agents, timeout=360)
    with K3sCluster.start(spec) as cluster:
        core = CoreV1Api(cluster.api_client)
        nodes = core.list_node().items
        assert len(nodes) == servers + agents
        servers_seen = [
            n for n in nodes if "control-plane" in node_roles(n.metadata.labels)
        ]
        assert len(servers_seen) == servers

        core.create_namespaced_pod("default", POD)
        deadline = time.monotonic() + 180
        phase = None
        while time.monotonic() < deadline:
            phase = core.read_namespaced_pod("hello", "default").status.phase
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(1)
        assert phase == "Succeeded"
        assert core.read_namespaced_pod_log("hello", "default").strip() == "hello"


@pytest.fixture(scope="module")
def real_cluster() -> Any:
    with K3sCluster.start(ClusterSpec(agents=1, timeout=360)) as cluster:
        yield cluster


def test_load_image_of_an_image_with_two_tags_runs_a_pod_that_never_pulls(
    real_cluster: K3sCluster,
) -> None:
    import docker

    client = docker.from_env()
    try:
        image = client.images.get("busybox:1.36")
        image.tag("pytest-k3s/first", "v1")
        image.tag("pytest-k3s/second", "v2")
    finally:
        client.close()
    real_cluster.load_image("pytest-k3s/second:v2")
    pod = {
        **POD,
        "metadata": {"name": "local"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "local",
                    "image": "pytest-k3s/second:v2",
                    "imagePullPolicy": "Never",
                    "command": ["echo", "local"],
                }
            ],
        },
    }
    real_cluster.apply(pod, namespace="default")
    done = real_cluster.wait_for(
        "pod", "local", jsonpath="{.status.phase}=Succeeded", timeout=120
    )
    assert done is not None


def test_the_kubelet_runs_with_our_eviction_thresholds(
    real_cluster: K3sCluster,
) -> None:
    logs = real_cluster.logs(real_cluster.agents[0])
    assert "imagefs.available<1%" in logs
    assert "nodefs.available<1%" in logs


def test_a_node_stopped_and_started_is_ready_again(real_cluster: K3sCluster) -> None:
    agent = real_cluster.agents[0].name
    real_cluster.stop_node(agent)
    real_cluster.start_node(agent, timeout=180)
    real_cluster.wait_for("node", agent, condition="Ready")


#: The real matrix: a release line the channel server resolves, and the
#: pinned default.
REAL_VERSIONS = ("v1.34", "v1.35.5+k3s1")


def test_a_matrix_over_two_real_versions(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_versions="""
        from kubernetes.client import CoreV1Api, VersionApi

        def test_version(request, k3s_cluster):
            wanted = request.node.callspec.id.removeprefix("k3s-")
            assert VersionApi(k3s_cluster.api_client).get_code().git_version == wanted
            nodes = CoreV1Api(k3s_cluster.api_client).list_node().items
            assert {n.status.node_info.kubelet_version for n in nodes} == {wanted}
        """
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "no:randomly",
        "-n",
        "2",
        "-v",
        f"--k3s-versions={','.join(REAL_VERSIONS)}",
        "--k3s-image=rancher/k3s:v1.35.5-k3s1",
        "--k3s-timeout=360",
        timeout=900,
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["k3s versions (2, *): v1.34 → v1.34.* (k3s channel*"])
