"""The cluster lifecycle against the k3s node double, through the real Docker engine."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from kubernetes.client import CoreV1Api

from conftest import SHARED_CLUSTERS
from k3s_double.tests.conftest import kubectls
from pytest_k3s import ClusterSpec
from pytest_k3s import ClusterStartError
from pytest_k3s import DockerUnavailableError
from pytest_k3s import ImageUnavailableError
from pytest_k3s import K3sCluster
from pytest_k3s import K3sError
from pytest_k3s import NameConflictError
from pytest_k3s import PortMapping
from pytest_k3s import labels
from pytest_k3s.engine.docker_engine import DockerEngine
from pytest_k3s.owner import Owner
from pytest_k3s.run.leftovers import sweep_leftovers


pytestmark = pytest.mark.docker

REGISTRIES = {"mirrors": {"docker.io": {"endpoint": ["http://mirror.invalid:5000"]}}}


def ready_nodes(cluster: K3sCluster) -> dict[str, tuple[str, ...]]:
    """Map each Ready node's name to its roles."""
    from pytest_k3s.kube.client import node_roles

    result: dict[str, tuple[str, ...]] = {}
    items: list[Any] = CoreV1Api(cluster.api_client).list_node().items
    for node in items:
        conditions = {c.type: c.status for c in node.status.conditions}
        if conditions.get("Ready") == "True":
            result[node.metadata.name] = node_roles(node.metadata.labels)
    return result


def cluster_objects(client: docker.DockerClient, name: str) -> list[str]:
    """The cluster's containers and networks, as listed (never inspected).

    The low-level listing: the high-level one inspects each container, and
    fails when one goes meanwhile (a capability probe does, within a second).
    """
    selector: dict[str, Any] = {"label": f"{labels.CLUSTER}={name}"}
    containers = client.api.containers(all=True, filters=selector)
    networks = client.api.networks(filters=selector)
    return [str(c["Names"][0]).lstrip("/") for c in containers] + [
        str(n["Name"]) for n in networks
    ]


@pytest.mark.parametrize(
    ("servers", "agents"), [(1, 0), (1, 2), (3, 1)], ids=["1+0", "1+2", "3+1"]
)
def test_topology_gives_a_working_client_and_leaves_nothing(
    double_image: str,
    balancer_image: str,
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    servers: int,
    agents: int,
    docker_engine: DockerEngine,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = ClusterSpec(
        image=double_image,
        load_balancer_image=balancer_image,
        servers=servers,
        agents=agents,
        timeout=120,
    )
    with K3sCluster.start(spec, engine=docker_engine) as cluster:
        expected = {f"{cluster.name}-server-{i}" for i in range(servers)} | {
            f"{cluster.name}-agent-{i}" for i in range(agents)
        }
        nodes = ready_nodes(cluster)
        assert set(nodes) == expected
        server_roles = (
            ("control-plane", "etcd", "master")
            if servers > 1
            else ("control-plane", "master")
        )
        for name, roles in nodes.items():
            assert roles == (server_roles if "-server-" in name else ())
        assert [n.name for n in cluster.nodes] == sorted(
            expected, key=lambda n: ("-agent-" in n, n)
        )

        path = cluster.kubeconfig_path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert cluster.api_url.startswith("https://127.0.0.1:")
        assert not (tmp_path / ".kube").exists(), "~/.kube/config is never touched"

        network = docker_client.networks.get(cluster.name)
        server0 = docker_client.containers.get(f"{cluster.name}-server-0")
        for obj_labels in (network.attrs["Labels"], server0.labels):
            assert obj_labels[labels.CLUSTER] == cluster.name
            assert obj_labels[labels.SPEC] == spec.digest()
            assert labels.owner_of(obj_labels) == Owner.current()
        assert server0.attrs["Config"]["Hostname"] == server0.name
        # The API is published by the load balancer where there is one.
        endpoint = f"{cluster.name}-server{'lb' if servers > 1 else '-0'}"
        published = docker_client.containers.get(endpoint)
        binding = published.attrs["HostConfig"]["PortBindings"]["6443/tcp"][0]
        assert binding["HostIp"] == "127.0.0.1"
        assert 20000 <= int(binding["HostPort"]) < 30000, "chosen, kept on restarts"
    assert cluster_objects(docker_client, cluster.name) == []
    assert not path.exists()
    cluster.stop()  # idempotent


@pytest.fixture(scope="module")
def shared_cluster(
    double_image: str, docker_engine: DockerEngine
) -> Iterator[K3sCluster]:
    spec = ClusterSpec(
        image=double_image,
        agents=1,
        timeout=90,
        ports=(PortMapping(30080),),
        registries=REGISTRIES,
    )
    with K3sCluster.start(spec, engine=docker_engine) as cluster:
        SHARED_CLUSTERS.add(cluster.name)
        yield cluster


def test_extra_ports_are_published_on_loopback(
    shared_cluster: K3sCluster, docker_client: docker.DockerClient
) -> None:
    port = shared_cluster.host_port(30080)
    server = docker_client.containers.get(shared_cluster.servers[0].container_id)
    binding = server.attrs["HostConfig"]["PortBindings"]["30080/tcp"][0]
    assert binding["HostIp"] == "127.0.0.1"
    published = server.attrs["NetworkSettings"]["Ports"]["30080/tcp"][0]
    assert int(published["HostPort"]) == port > 0


def test_registries_and_kubelet_defaults_reach_every_node(
    shared_cluster: K3sCluster, docker_client: docker.DockerClient
) -> None:
    for node in shared_cluster.nodes:
        container = docker_client.containers.get(node.container_id)
        written = container.exec_run(["cat", "/etc/rancher/k3s/registries.yaml"])
        assert written.exit_code == 0, node.name
        output: bytes = written.output  # type: ignore[assignment]
        assert yaml.safe_load(output) == REGISTRIES
        command = container.attrs["Args"]
        if container.attrs["Config"]["Entrypoint"][0] == "/bin/sh":
            command = command[3:]  # the fallback's wrapper: -c SCRIPT k3s
        assert command[0] == ("server" if node.role == "server" else "agent")
        assert any("eviction-hard=imagefs.available<1%" in arg for arg in command)


def test_helpers_logs_kubectl_and_load_image(
    shared_cluster: K3sCluster, docker_client: docker.DockerClient
) -> None:
    cluster = shared_cluster
    assert "k3s is up and running" in cluster.logs("server-0")
    assert cluster.logs(cluster.agents[0], tail=5).count("\n") <= 5
    assert cluster.agents[0].name in cluster.kubectl("get", "nodes", "-o", "name")

    payload = "pytest-k3s-base:bookworm"
    docker_client.images.get(payload)  # raises if the payload is missing
    cluster.load_image(payload)
    for node in cluster.nodes:
        listing = docker_client.containers.get(node.container_id).exec_run(
            ["ctr", "images", "ls", "-q"]
        )
        assert listing.exit_code == 0
        output: bytes = listing.output  # type: ignore[assignment]
        assert payload in output.decode(), node.name


def _pod(name: str, image: str, policy: str) -> dict[str, Any]:
    container = {"name": "app", "image": image, "imagePullPolicy": policy}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container]},
    }


def test_a_pod_runs_a_locally_built_image_once_it_is_loaded(
    shared_cluster: K3sCluster, docker_client: docker.DockerClient, double_image: str
) -> None:
    """Pull policy Never or IfNotPresent with a tag other than latest: the image
    must be on the node, as load_image puts it (no registry is asked)."""
    local = "pytest-k3s/app:v1"
    docker_client.images.get(double_image).tag("pytest-k3s/app", "v1")
    cluster = shared_cluster
    cluster.apply(_pod("never-early", local, "Never"), namespace="default")
    waiting = cluster.wait_for(
        "pod",
        "never-early",
        jsonpath="{.status.containerStatuses[0].state.waiting.reason}=ErrImageNeverPull",
        timeout=30,
    )
    assert waiting is not None
    assert waiting["status"]["phase"] == "Pending"
    cluster.load_image(local)
    cluster.wait_for(
        "pod", "never-early", jsonpath="{.status.phase}=Running", timeout=30
    )
    cluster.apply(_pod("if-not-present", local, "IfNotPresent"), namespace="default")
    cluster.wait_for(
        "pod", "if-not-present", jsonpath="{.status.phase}=Running", timeout=30
    )


def test_airgap_archives_are_imported_by_every_node_before_it_starts(
    double_image: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    docker_engine: DockerEngine,
) -> None:
    docker_client.images.get(double_image).tag("pytest-k3s/airgap", "v1")
    archive = tmp_path / "airgap.tar"
    with archive.open("wb") as out:
        for chunk in docker_client.api.get_image("pytest-k3s/airgap:v1"):
            out.write(chunk)
    spec = ClusterSpec(
        image=double_image,
        agents=1,
        airgap_images=(str(archive),),
        wait_for_coredns=False,
    )
    with K3sCluster.start(spec, engine=docker_engine) as cluster:
        for node in cluster.nodes:
            assert (
                "Imported images from /var/lib/rancher/k3s/agent/images/airgap.tar"
                in cluster.logs(node)
            ), node.name
            listing = docker_client.containers.get(node.container_id).exec_run(
                ["ctr", "-n", "k8s.io", "images", "ls", "-q"]
            )
            output: bytes = listing.output  # type: ignore[assignment]
            assert "docker.io/pytest-k3s/airgap:v1" in output.decode(), node.name


def test_load_image_of_an_unknown_image_names_it(shared_cluster: K3sCluster) -> None:
    with pytest.raises(ImageUnavailableError, match="no/such-image:1"):
        shared_cluster.load_image("no/such-image:1")


def test_kubectl_failure_carries_stderr(shared_cluster: K3sCluster) -> None:
    with pytest.raises(K3sError, match=r"NotFound|not found"):
        shared_cluster.kubectl("get", "namespace", "does-not-exist")


@pytest.mark.parametrize("kubectl", kubectls())
def test_the_kubectl_method_works_with_each_kubectl(
    shared_cluster: K3sCluster,
    kubectl: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # K3sCluster.kubectl() runs the kubectl on PATH: put this one there. CI
    # names Debian's 1.32 and a current one (protobuf bodies, watch-list).
    (tmp_path / "kubectl").symlink_to(kubectl)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    namespace = f"kubectl-{uuid.uuid4().hex[:8]}"
    shared_cluster.kubectl("create", "namespace", namespace)
    try:
        shared_cluster.kubectl(
            "-n", namespace, "create", "configmap", "settings", "--from-literal=a=1"
        )
        shared_cluster.kubectl("-n", namespace, "apply", "-f", "-", input=DEPLOYMENT)
        shared_cluster.kubectl(
            "-n", namespace, "wait", "--for=condition=Available",
            "deployment/web", "--timeout=90s",
        )  # fmt: skip
        assert "yes" in shared_cluster.kubectl("auth", "can-i", "create", "pods")
        read = shared_cluster.kubectl("-n", namespace, "get", "configmap", "settings")
        assert "settings" in read
    finally:
        shared_cluster.kubectl("delete", "namespace", namespace, "--wait=false")


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx:1.27}]
"""


def test_unknown_node_name_lists_the_nodes(shared_cluster: K3sCluster) -> None:
    with pytest.raises(K3sError, match="has no node 'agent-7'; it has"):
        shared_cluster.node("agent-7")


def test_privileged_fallback_or_privileged_mode(
    shared_cluster: K3sCluster, docker_client: docker.DockerClient
) -> None:
    host = docker_client.containers.get(shared_cluster.servers[0].container_id)
    config = host.attrs["HostConfig"]
    if config["Privileged"]:
        assert not config["CapAdd"]
    else:
        # This host refuses privileged mode: the fallback's capability set.
        assert config["CapAdd"] == ["ALL"]
        assert "SYS_RESOURCE" in config["CapDrop"]
        assert "seccomp=unconfined" in config["SecurityOpt"]
        assert config["MaskedPaths"] == []
        assert config["ReadonlyPaths"] == []
        devices = [d["PathOnHost"] for d in config["Devices"] or []]
        assert ("/dev/kmsg" in devices) == os.path.exists("/dev/kmsg")


def test_api_can_be_published_on_all_interfaces(
    double_image: str, docker_client: docker.DockerClient, docker_engine: DockerEngine
) -> None:
    spec = ClusterSpec(
        image=double_image,
        api_bind="0.0.0.0",
        ports=(PortMapping(30080),),
        wait_for_coredns=False,
    )
    with K3sCluster.start(spec, engine=docker_engine) as cluster:
        server = docker_client.containers.get(cluster.servers[0].container_id)
        bindings = server.attrs["HostConfig"]["PortBindings"]
        assert bindings["6443/tcp"][0]["HostIp"] == "0.0.0.0"
        assert bindings["30080/tcp"][0]["HostIp"] == "127.0.0.1", "NodePorts stay"
        assert cluster.api_url.startswith("https://127.0.0.1:")
        assert cluster.kubectl("get", "nodes", "-o", "name").strip()


def test_forced_privileged_mode_is_not_silently_replaced(
    double_image: str, docker_client: docker.DockerClient, docker_engine: DockerEngine
) -> None:
    spec = ClusterSpec(image=double_image, privileged="privileged", timeout=60)
    refused: K3sError | None = None
    try:
        cluster = K3sCluster.start(spec, engine=docker_engine)
    except K3sError as exc:
        refused = exc
    if refused is not None:
        assert "unable to apply caps" in str(refused)
        assert "-server-0" in str(refused)
        return
    with cluster:
        server = docker_client.containers.get(cluster.servers[0].container_id)
        assert server.attrs["HostConfig"]["Privileged"] is True


def test_crashing_node_raises_with_its_logs(
    double_image: str, docker_engine: DockerEngine
) -> None:
    spec = ClusterSpec(
        image=double_image, agents=1, agent_env=("K3S_DOUBLE_FAULT=crash",), timeout=60
    )
    with pytest.raises(ClusterStartError) as failure:
        K3sCluster.start(spec, engine=docker_engine)
    assert failure.value.node is not None
    assert failure.value.node.endswith("-agent-0")
    assert "exited with status 1" in str(failure.value)
    assert any("level=fatal" in line for line in failure.value.logs)


def test_missing_image_says_how_to_provide_it(
    docker_client: docker.DockerClient,
    docker_engine: DockerEngine,
) -> None:
    with pytest.raises(ImageUnavailableError) as failure:
        K3sCluster.start(
            ClusterSpec(image="pytest-k3s/no-such-image:0"), engine=docker_engine
        )
    message = str(failure.value)
    assert "'pytest-k3s/no-such-image:0'" in message
    assert "docker load" in message
    assert "registry mirror" in message


def test_unreachable_docker_names_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    with pytest.raises(DockerUnavailableError, match=f"tcp://127.0.0.1:{port}"):
        K3sCluster.start(ClusterSpec())


def test_name_clash_is_reported_and_the_other_object_kept(
    double_image: str, docker_client: docker.DockerClient, docker_engine: DockerEngine
) -> None:
    network = docker_client.networks.create(
        "k3s-clash-test", labels={labels.CLUSTER: "someone-else"}
    )
    try:
        with pytest.raises(NameConflictError, match="'k3s-clash-test' already exists"):
            K3sCluster.start(
                ClusterSpec(image=double_image),
                name="k3s-clash-test",
                engine=docker_engine,
            )
        network.reload()  # still there: we only remove what we created
    finally:
        network.remove()


def test_a_failed_start_never_removes_the_cluster_that_has_the_name(
    double_image: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    docker_engine: DockerEngine,
) -> None:
    spec = ClusterSpec(image=double_image, wait_for_coredns=False)
    with K3sCluster.start(
        spec, name="k3s-dev", kubeconfig_dir=tmp_path, engine=docker_engine
    ) as dev:
        with pytest.raises(NameConflictError, match="'k3s-dev' already exists"):
            K3sCluster.start(
                spec, name="k3s-dev", kubeconfig_dir=tmp_path, engine=docker_engine
            )
        assert cluster_objects(docker_client, "k3s-dev"), "the existing one is kept"
        assert dev.kubeconfig_path.exists(), "and so is its kubeconfig"
        assert dev.kubectl("get", "nodes", "-o", "name").strip()
    assert cluster_objects(docker_client, "k3s-dev") == []


def test_agents_not_yet_created_when_a_start_fails_are_not_created(
    double_image: str, docker_client: docker.DockerClient, docker_engine: DockerEngine
) -> None:
    # Someone else's container holds agent-0's name: creating agent-0 fails
    # at once, while most of the other agents are still queued.
    squatter = docker_client.containers.create(
        double_image, name="k3s-cancel-agent-0", command=["agent"]
    )
    try:
        spec = ClusterSpec(image=double_image, agents=16, wait_for_coredns=False)
        lines: list[str] = []
        with pytest.raises(K3sError, match="could not create node k3s-cancel-agent-0"):
            K3sCluster.start(
                spec, name="k3s-cancel", progress=lines.append, engine=docker_engine
            )
        started = [line for line in lines if "started agent" in line]
        assert len(started) <= 8, "the queued agents were cancelled"
        # The start returns only once its agent threads have finished, so no
        # agent can still be on its way: what is there now is all there is.
        assert cluster_objects(docker_client, "k3s-cancel") == []
        squatter.reload()  # not ours: never removed
    finally:
        squatter.remove(force=True, v=True)


def test_keyboard_interrupt_during_start_leaves_nothing(
    double_image: str, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    script = tmp_path / "start.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from pytest_k3s import ClusterSpec
            from pytest_k3s import K3sCluster
            spec = ClusterSpec(image={double_image!r}, agents=1, timeout=120,
                               server_env=("K3S_DOUBLE_FAULT=slow:60",))
            K3sCluster.start(spec, name="k3s-interrupted")
            """
        )
    )
    child = subprocess.Popen(
        [sys.executable, str(script)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while len(cluster_objects(docker_client, "k3s-interrupted")) < 3:
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, "the nodes never appeared"
            time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        _, errors = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert "KeyboardInterrupt" in errors
    assert cluster_objects(docker_client, "k3s-interrupted") == []


def test_sweep_removes_dead_runs_only(
    double_image: str, docker_client: docker.DockerClient, docker_engine: DockerEngine
) -> None:
    dead_child = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_child.wait()
    dead = dataclasses.replace(Owner.current(), pid=dead_child.pid, started="1")
    spec = ClusterSpec(image=double_image, timeout=60, wait_for_coredns=False)
    leftover = K3sCluster.start(spec, owner=dead, engine=docker_engine)
    kept = K3sCluster.start(spec, owner=dead, keep=True, engine=docker_engine)
    live = K3sCluster.start(spec, engine=docker_engine)
    try:
        swept = sweep_leftovers(docker_engine)
        # Other runs on the engine sweep dead runs when they start a cluster
        # (another xdist lane's pytester runs do): one may have taken the
        # leftover first; then it is gone all the same. Theirs may be in
        # ``swept`` too; ours that are not dead never are.
        assert leftover.name in swept or leftover.name not in docker_engine.labelled()
        assert not {kept.name, live.name} & set(swept)
        assert cluster_objects(docker_client, leftover.name) == []
        assert cluster_objects(docker_client, live.name) != []
        assert kept.name in sweep_leftovers(docker_engine, include_kept=True)
        assert cluster_objects(docker_client, kept.name) == []
        assert cluster_objects(docker_client, live.name) != []
    finally:
        for cluster in (leftover, kept, live):
            cluster.stop()


def cli(*args: str) -> str:
    """Run ``python -m pytest_k3s`` and return its output."""
    command = [sys.executable, "-m", "pytest_k3s", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def test_cli_lists_and_sweeps(
    double_image: str, docker_client: docker.DockerClient, docker_engine: DockerEngine
) -> None:
    cluster = K3sCluster.start(
        ClusterSpec(image=double_image, wait_for_coredns=False), engine=docker_engine
    )
    try:
        listing = cli("list")
        assert f"{cluster.name}\tspec {cluster.spec.digest()}\trun " in listing
        assert "run alive" in listing.split(cluster.name, 1)[1].splitlines()[0]
        assert cluster.name not in cli("sweep"), "a live run's cluster is never swept"
    finally:
        cluster.stop()


def test_remote_docker_host_is_used_for_the_api_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://docker.example:2376")
    engine = DockerEngine.__new__(DockerEngine)
    assert engine.api_host() == "docker.example"
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert engine.api_host() is None
    monkeypatch.delenv("DOCKER_HOST")
    assert engine.api_host() is None
