"""The k3s node double's container contract, through the real Docker engine.

These tests drive the double's image with the docker SDK and the kubernetes
client directly (no plugin), the way k3d and a pytest plugin use rancher/k3s:
flags and env, published API port, kubeconfig read with ``get_archive``, TLS
SANs, token join, role labels, HA servers, ``ctr`` image import.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ipaddress
import socket
import ssl
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from cryptography import x509
from docker.models.containers import Container
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from pytest_k3s.engine.host_policy import fallback_entrypoint
from pytest_k3s.labels import OWNER
from pytest_k3s.labels import OWNER_NS
from pytest_k3s.owner import Owner


pytestmark = pytest.mark.docker

LABEL = "io.pytest-k3s.cluster"


def ours(cluster: str) -> dict[str, str]:
    """Labels for a test cluster: its name, and this process as its owner.

    The owner tells the leak checks of test sessions sharing the engine
    (other xdist workers) that these objects are not theirs.
    """
    owner = Owner.current()
    return {LABEL: cluster, OWNER: str(owner), OWNER_NS: owner.namespace}


# What k3d gets from privileged=True, which fails to start on some hosts.
CAP_ADD = ["ALL"]
CAP_DROP = ["SYS_RESOURCE"]
SECURITY_OPT = ["seccomp=unconfined", "apparmor=unconfined"]
TOKEN = "node-contract-token"


def _name() -> str:
    return f"nc-{uuid.uuid4().hex[:8]}"


def _logs(container: Container) -> str:
    return str(container.logs(stdout=True, stderr=True).decode(errors="replace"))


def wait_for_log(container: Container, text: str, timeout: float = 60) -> str:
    """Poll the container's log until ``text`` appears; fail if it exits."""
    deadline = time.monotonic() + timeout
    while True:
        logs = _logs(container)
        if text.lower() in logs.lower():
            return logs
        container.reload()
        if container.status in ("exited", "dead"):
            pytest.fail(f"{container.name} exited before {text!r}:\n{logs[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{container.name}: no {text!r} in {timeout}s:\n{logs[-3000:]}")
        time.sleep(0.25)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``check`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (k8s.ApiException, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last result: {last!r}")


def wait_for_exit(container: Container, timeout: float = 30) -> int:
    """The exit status of a container that is expected to stop by itself."""
    result = container.wait(timeout=timeout)
    return int(result["StatusCode"])


def read_file(container: Container, path: str) -> bytes:
    """One file from the container, through the archive API."""
    stream, _ = container.get_archive(path)
    data = b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.next()
        assert member is not None
        extracted = archive.extractfile(member)
        assert extracted is not None
        return extracted.read()


def file_mode(container: Container, path: str) -> int:
    stream, _ = container.get_archive(path)
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
        member = archive.next()
        assert member is not None
        return member.mode & 0o7777


def host_port(container: Container) -> int:
    container.reload()
    return int(container.attrs["NetworkSettings"]["Ports"]["6443/tcp"][0]["HostPort"])


def kubeconfig_for(
    container: Container, path: str = "/etc/rancher/k3s/k3s.yaml"
) -> dict[str, Any]:
    """The server's kubeconfig, pointed at its published port on 127.0.0.1."""
    config: dict[str, Any] = yaml.safe_load(read_file(container, path))
    config["clusters"][0]["cluster"]["server"] = (
        f"https://127.0.0.1:{host_port(container)}"
    )
    return config


def api_client(config: dict[str, Any]) -> k8s.ApiClient:
    """A client for this kubeconfig only (never the global kubernetes config)."""
    client: k8s.ApiClient = k8s_config.new_client_from_config_dict(config)
    return client


@dataclass
class Cluster:
    """Containers of one test cluster and a client for its API."""

    name: str
    docker: docker.DockerClient
    image: str
    network: Any = None
    servers: list[Container] = field(default_factory=list)
    agents: list[Container] = field(default_factory=list)
    api: k8s.ApiClient | None = None

    @property
    def client(self) -> k8s.ApiClient:
        """The API client of a started cluster."""
        assert self.api is not None
        return self.api

    def run(
        self,
        role: str,
        command: list[str],
        env: dict[str, str],
        *,
        publish: bool = False,
        privileged: bool = True,
        suffix: str = "",
        files: dict[str, str] | None = None,
    ) -> Container:
        """Start one node container on the cluster network, labelled.

        ``files`` (absolute path to text) are in place before k3s starts.
        """
        index = len(self.servers) if role == "server" else len(self.agents)
        name = f"{self.name}-{role}-{suffix or index}"
        ports: Any = {"6443/tcp": ("127.0.0.1", None)} if publish else None
        container: Container = self.docker.containers.create(
            self.image,
            command,
            name=name,
            hostname=name,
            environment=env,
            labels=ours(self.name),
            network=self.network.name if self.network is not None else None,
            ports=ports,
            tmpfs={"/run": "", "/var/run": ""},
            cap_add=CAP_ADD if privileged else None,
            cap_drop=CAP_DROP if privileged else None,
            security_opt=SECURITY_OPT if privileged else None,
            # The plugin's fallback makes /sys and the cgroups writable first.
            entrypoint=fallback_entrypoint() if privileged else None,
        )
        if files:
            buffer = io.BytesIO()
            with tarfile.open(fileobj=buffer, mode="w") as archive:
                for path, text in files.items():
                    data = text.encode()
                    info = tarfile.TarInfo(path.lstrip("/"))
                    info.size, info.mode = len(data), 0o600
                    archive.addfile(info, io.BytesIO(data))
            container.put_archive("/", buffer.getvalue())
        container.start()
        if not suffix:
            (self.servers if role == "server" else self.agents).append(container)
        return container

    def remove(self) -> None:
        """Remove every labelled container (with volumes), then the network."""
        for container in self.docker.containers.list(
            all=True, filters={"label": f"{LABEL}={self.name}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        if self.network is not None:
            with contextlib.suppress(docker.errors.NotFound):
                self.network.remove()
        if self.api is not None:
            self.api.close()


@contextlib.contextmanager
def new_cluster(client: docker.DockerClient, image: str) -> Iterator[Cluster]:
    cluster = Cluster(_name(), client, image)
    try:
        cluster.network = client.networks.create(
            cluster.name, driver="bridge", labels=ours(cluster.name)
        )
        yield cluster
    finally:
        cluster.remove()


def nodes_by_name(api: k8s.ApiClient) -> dict[str, Any]:
    return {str(n.metadata.name): n for n in k8s.CoreV1Api(api).list_node().items}


def is_ready(node: Any) -> bool:
    return any(
        c.type == "Ready" and c.status == "True" for c in node.status.conditions or []
    )


@pytest.fixture(scope="module")
def cluster(docker_client: docker.DockerClient, double_image: str) -> Iterator[Cluster]:
    """One server (published on 127.0.0.1) and two agents, all Ready."""
    with new_cluster(docker_client, double_image) as c:
        env = {
            "K3S_TOKEN": TOKEN,
            "K3S_KUBECONFIG_OUTPUT": "/output/kubeconfig.yaml",
            "K3S_KUBECONFIG_MODE": "644",
        }
        server = c.run(
            "server", ["server", "--tls-san", "127.0.0.1"], env, publish=True
        )
        url = f"https://{server.name}:6443"
        for _ in range(2):
            c.run("agent", ["agent"], {"K3S_TOKEN": TOKEN, "K3S_URL": url})
        wait_for_log(server, "k3s is up and running")
        for agent in c.agents:
            wait_for_log(agent, "Successfully registered node")
        c.api = api_client(kubeconfig_for(server, "/output/kubeconfig.yaml"))
        yield c


# ---------------------------------------------------------------------------
# single server and agents


def test_server_answers_on_published_port_with_its_kubeconfig(cluster: Cluster) -> None:
    server = cluster.servers[0]
    raw = yaml.safe_load(read_file(server, "/output/kubeconfig.yaml"))
    # Newer k3s names the entries after the node, not "default".
    name = server.name
    assert raw["clusters"][0]["name"] == name
    assert raw["contexts"][0] == {
        "name": name,
        "context": {"cluster": name, "user": name},
    }
    assert raw["users"][0]["name"] == name
    assert raw["current-context"] == name
    assert raw["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert "client-certificate-data" in raw["users"][0]["user"]
    assert read_file(server, "/etc/rancher/k3s/k3s.yaml") == read_file(
        server, "/output/kubeconfig.yaml"
    )
    assert file_mode(server, "/output/kubeconfig.yaml") == 0o644

    info = k8s.VersionApi(cluster.client).get_code()
    assert info.git_version.startswith("v1.")
    assert "+k3s" in info.git_version

    port = host_port(server)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw_sock,
        context.wrap_socket(raw_sock) as tls,
    ):
        tls.sendall(
            b"GET /api/v1/nodes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401")
    assert b'"reason": "Unauthorized"' in answer or b'"reason":"Unauthorized"' in answer


def test_server_log_lines_come_in_k3s_order(cluster: Cluster) -> None:
    logs = _logs(cluster.servers[0])
    order = [
        "Starting k3s v",
        "Running kube-apiserver",
        "Wrote kubeconfig /output/kubeconfig.yaml",
        "containerd is now running",
        "k3s is up and running",
        "Successfully registered node",
        "Node controller sync successful",
    ]
    positions = [logs.index(line) for line in order]
    assert positions == sorted(positions)
    assert 'level=info msg="Starting k3s v' in logs


def test_two_agents_join_and_three_nodes_are_ready(cluster: Cluster) -> None:
    expected = {c.name for c in cluster.servers + cluster.agents}

    def all_ready() -> dict[str, Any] | None:
        nodes = nodes_by_name(cluster.client)
        ok = set(nodes) == expected and all(is_ready(n) for n in nodes.values())
        return nodes if ok else None

    nodes = wait_until(all_ready, 30, "three Ready nodes")
    server = nodes[cluster.servers[0].name].metadata.labels
    assert server["node-role.kubernetes.io/control-plane"] == "true"
    assert server["node-role.kubernetes.io/master"] == "true"
    assert "node-role.kubernetes.io/etcd" not in server
    for agent in cluster.agents:
        agent.reload()
        labels = nodes[agent.name].metadata.labels
        assert not [k for k in labels if k.startswith("node-role.kubernetes.io/")]
        assert labels["kubernetes.io/hostname"] == agent.name
        assert labels["k3s.io/hostname"] == agent.name
        assert labels["node.kubernetes.io/instance-type"] == "k3s"
        assert labels["kubernetes.io/os"] == "linux"
        assert labels["beta.kubernetes.io/os"] == "linux"
        ip = agent.attrs["NetworkSettings"]["Networks"][cluster.name]["IPAddress"]
        assert labels["k3s.io/internal-ip"] == ip


def test_serving_certificate_sans_and_hostname_verification(cluster: Cluster) -> None:
    server = cluster.servers[0]
    server.reload()
    ip = server.attrs["NetworkSettings"]["Networks"][cluster.name]["IPAddress"]
    port = host_port(server)
    config = kubeconfig_for(server)
    import base64

    ca = base64.b64decode(
        config["clusters"][0]["cluster"]["certificate-authority-data"]
    )
    cert = x509.load_pem_x509_certificate(
        ssl.get_server_certificate(("127.0.0.1", port)).encode()
    )
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        server.name,
    }
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("10.43.0.1", "127.0.0.1", "::1", ip)
    }

    context = ssl.create_default_context(cadata=ca.decode())
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(sock, server_hostname="not-a-san.example.com")


def test_token_file_pins_the_server_ca(cluster: Cluster) -> None:
    server = cluster.servers[0]
    token = read_file(server, "/var/lib/rancher/k3s/server/token").decode().strip()
    ca = read_file(server, "/var/lib/rancher/k3s/server/tls/server-ca.crt")
    assert token == f"K10{hashlib.sha256(ca).hexdigest()}::server:{TOKEN}"


def test_wrong_token_never_joins_and_keeps_retrying(cluster: Cluster) -> None:
    url = f"https://{cluster.servers[0].name}:6443"
    server_ca = read_file(
        cluster.servers[0], "/var/lib/rancher/k3s/server/tls/server-ca.crt"
    )
    wrong_hash = "0" * 64
    bad = [
        cluster.run(
            "agent", ["agent"], {"K3S_TOKEN": "wrong", "K3S_URL": url}, suffix="bad"
        ),
        cluster.run(
            "agent",
            ["agent"],
            {"K3S_TOKEN": f"K10{wrong_hash}::server:{TOKEN}", "K3S_URL": url},
            suffix="badca",
        ),
    ]
    assert hashlib.sha256(server_ca).hexdigest() != wrong_hash
    try:
        wait_until(lambda: _logs(bad[0]).count("401 Unauthorized") >= 2, 20, "retries")
        wait_until(
            lambda: _logs(bad[1]).count("token CA hash does not match") >= 2,
            20,
            "retries",
        )
        for container in bad:
            container.reload()
            assert container.status == "running"
            assert "Successfully registered node" not in _logs(container)
            assert "containerd is now running" not in _logs(container)
        assert not {c.name for c in bad} & set(nodes_by_name(cluster.client))
    finally:
        for container in bad:
            container.remove(force=True, v=True)


def test_deployment_with_two_replicas_becomes_ready(cluster: Cluster) -> None:
    apps = k8s.AppsV1Api(cluster.client)
    core = k8s.CoreV1Api(cluster.client)
    labels = {"app": "contract-web"}
    deployment = k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="contract-web", labels=labels),
        spec=k8s.V1DeploymentSpec(
            replicas=2,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(
                    containers=[k8s.V1Container(name="web", image="nginx:1.27")]
                ),
            ),
        ),
    )
    apps.create_namespaced_deployment("default", deployment)
    try:
        wait_until(
            lambda: (
                apps.read_namespaced_deployment(
                    "contract-web", "default"
                ).status.ready_replicas
                == 2
            ),
            60,
            "two ready replicas",
        )
        pods = core.list_namespaced_pod(
            "default", label_selector="app=contract-web"
        ).items
        assert len(pods) == 2
        assert {p.status.phase for p in pods} == {"Running"}
        nodes = set(nodes_by_name(cluster.client))
        assert {p.spec.node_name for p in pods} <= nodes
    finally:
        apps.delete_namespaced_deployment("contract-web", "default")


def test_label_selectors_filter(cluster: Cluster) -> None:
    core = k8s.CoreV1Api(cluster.client)
    for name, tier in (("sel-a", "front"), ("sel-b", "back"), ("sel-c", "front")):
        core.create_namespaced_config_map(
            "default",
            k8s.V1ConfigMap(
                metadata=k8s.V1ObjectMeta(
                    name=name, labels={"suite": "sel", "tier": tier}
                )
            ),
        )
    try:
        front = core.list_namespaced_config_map(
            "default", label_selector="suite=sel,tier=front"
        )
        assert sorted(str(c.metadata.name) for c in front.items) == ["sel-a", "sel-c"]
        back = core.list_namespaced_config_map(
            "default", label_selector="tier!=front,suite"
        )
        assert [c.metadata.name for c in back.items] == ["sel-b"]
        servers = core.list_node(
            label_selector="node-role.kubernetes.io/control-plane=true"
        )
        assert [n.metadata.name for n in servers.items] == [cluster.servers[0].name]
        agents = core.list_node(label_selector="!node-role.kubernetes.io/control-plane")
        assert sorted(str(n.metadata.name) for n in agents.items) == sorted(
            str(a.name) for a in cluster.agents
        )
    finally:
        core.delete_collection_namespaced_config_map(
            "default", label_selector="suite=sel"
        )


def test_kubectl_get_nodes_and_apply(cluster: Cluster, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(yaml.safe_dump(kubeconfig_for(cluster.servers[0])))

    def kubectl(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    names = kubectl("get", "nodes", "-o", "name").split()
    assert sorted(names) == sorted(
        f"node/{c.name}" for c in cluster.servers + cluster.agents
    )
    assert " Ready " in kubectl("get", "nodes")
    manifest = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: applied
  namespace: default
data:
  key: value
"""
    assert "configmap/applied created" in kubectl("apply", "-f", "-", stdin=manifest)
    assert "configmap/applied unchanged" in kubectl("apply", "-f", "-", stdin=manifest)
    cm = k8s.CoreV1Api(cluster.client).read_namespaced_config_map("applied", "default")
    assert cm.data == {"key": "value"}
    kubectl("delete", "configmap", "applied")


def _exec_with_stdin(
    client: docker.DockerClient,
    container: Container,
    cmd: list[str],
    data: Iterator[bytes],
) -> tuple[int, bytes]:
    exec_id = client.api.exec_create(
        container.id, cmd, stdin=True, stdout=True, stderr=True
    )["Id"]
    sock: Any = client.api.exec_start(exec_id, socket=True)
    raw = sock._sock
    for chunk in data:
        raw.sendall(chunk)
    raw.shutdown(socket.SHUT_WR)
    output = b""
    while chunk := raw.recv(65536):
        output += chunk
    sock.close()
    code = int(client.api.exec_inspect(exec_id)["ExitCode"])
    return code, output


def test_ctr_imports_a_docker_save_stream(
    cluster: Cluster, docker_client: docker.DockerClient, double_image: str
) -> None:
    agent = cluster.agents[0]
    code, output = _exec_with_stdin(
        docker_client,
        agent,
        ["ctr", "-n", "k8s.io", "images", "import", "--all-platforms", "-"],
        docker_client.api.get_image(double_image),
    )
    assert code == 0, output
    expected = f"docker.io/library/{double_image}"
    assert expected.encode() in output
    listed = agent.exec_run(["ctr", "-n", "k8s.io", "images", "ls", "-q"])
    assert listed.exit_code == 0
    assert expected in listed.output.decode().split()
    other = agent.exec_run(["ctr", "-n", "other", "images", "ls", "-q"])
    assert other.output.decode().split() == []

    code, output = _exec_with_stdin(
        docker_client,
        agent,
        ["ctr", "images", "import", "-"],
        iter([b"not a tar" * 100]),
    )
    assert code == 1
    assert b"ctr: " in output


# ---------------------------------------------------------------------------
# strictness and faults (own short-lived containers)


@pytest.fixture
def scratch(docker_client: docker.DockerClient, double_image: str) -> Iterator[Cluster]:
    with new_cluster(docker_client, double_image) as c:
        yield c


def test_unknown_flag_exits_1_with_an_error(scratch: Cluster) -> None:
    container = scratch.run("server", ["server", "--no-such-flag", "x"], {})
    assert wait_for_exit(container) == 1
    logs = _logs(container)
    assert "flag provided but not defined: -no-such-flag" in logs
    assert "level=fatal" in logs


def test_missing_capabilities_is_fatal(scratch: Cluster) -> None:
    container = scratch.run("server", ["server"], {}, privileged=False)
    assert wait_for_exit(container) != 0
    logs = _logs(container)
    assert "level=fatal" in logs
    assert "CAP_SYS_ADMIN" in logs
    assert "k3s is up and running" not in logs


def test_ctr_fails_when_k3s_is_not_running(scratch: Cluster, double_image: str) -> None:
    output = scratch.docker.containers.run(
        double_image,
        ["images", "ls"],
        entrypoint="/bin/ctr",
        labels=ours(scratch.name),
        remove=False,
        detach=True,
    )
    try:
        assert wait_for_exit(output) == 1
        assert "containerd.sock" in _logs(output)
    finally:
        output.remove(force=True, v=True)


def test_faults_crash_never_ready_and_sigterm(scratch: Cluster) -> None:
    crash = scratch.run("server", ["server"], {"K3S_DOUBLE_FAULT": "crash"})
    stuck = scratch.run("server", ["server"], {"K3S_DOUBLE_FAULT": "never-ready"})
    assert wait_for_exit(crash) == 1
    assert "level=fatal" in _logs(crash)
    wait_for_log(stuck, "containerd is now running")
    readyz = stuck.exec_run(
        [
            "python3",
            "-c",
            "import ssl,http.client;d='/var/lib/rancher/k3s/server/tls/';"
            "c=ssl.create_default_context(cafile=d+'server-ca.crt');"
            "c.load_cert_chain(d+'client-admin.crt',d+'client-admin.key');"
            "h=http.client.HTTPSConnection('127.0.0.1',6443,context=c);"
            "h.request('GET','/readyz');print(h.getresponse().status)",
        ]
    )
    assert readyz.output.decode().strip() == "500"
    assert "k3s is up and running" not in _logs(stuck)
    stuck.stop(timeout=10)
    stuck.reload()
    # Exit 0 and k3s' shutdown line: SIGTERM was handled (Docker's SIGKILL
    # after the timeout would leave 137 and no such line).
    assert stuck.attrs["State"]["ExitCode"] == 0
    assert "Received signal, shutting down k3s" in _logs(stuck)


# ---------------------------------------------------------------------------
# HA


def test_three_servers_all_answer_and_see_all_nodes(scratch: Cluster) -> None:
    first = scratch.run(
        "server",
        ["server", "--cluster-init", "--tls-san", "127.0.0.1"],
        {"K3S_TOKEN": TOKEN},
        publish=True,
    )
    wait_for_log(first, "k3s is up and running")
    secure = read_file(first, "/var/lib/rancher/k3s/server/token").decode().strip()
    env = {"K3S_TOKEN": secure, "K3S_URL": f"https://{first.name}:6443"}
    for _ in range(2):
        joiner = scratch.run(
            "server", ["server", "--tls-san", "127.0.0.1"], env, publish=True
        )
        wait_for_log(joiner, "k3s is up and running")
    names = {s.name for s in scratch.servers}
    for server in scratch.servers:
        with api_client(kubeconfig_for(server)) as api:

            def sees_all(api: k8s.ApiClient = api) -> dict[str, Any] | None:
                nodes = nodes_by_name(api)
                return nodes if set(nodes) == names else None

            nodes = wait_until(sees_all, 30, f"all nodes seen from {server.name}")
            for node in nodes.values():
                labels = node.metadata.labels
                assert labels["node-role.kubernetes.io/etcd"] == "true"
                assert labels["node-role.kubernetes.io/control-plane"] == "true"
    ca = [
        read_file(s, "/var/lib/rancher/k3s/server/tls/server-ca.crt")
        for s in scratch.servers
    ]
    assert ca[0] == ca[1] == ca[2]


# ---------------------------------------------------------------------------
# image pulls and export: what a system image cache relies on

CONTAINERD_LOG = "/var/lib/rancher/k3s/agent/containerd/containerd.log"
AIRGAP_DIR = "/var/lib/rancher/k3s/agent/images"
SYSTEM_IMAGES = (
    "docker.io/rancher/mirrored-pause:3.6",
    "docker.io/rancher/mirrored-coredns-coredns:1.12.3",
    "docker.io/rancher/local-path-provisioner:v0.0.32",
)
#: Only CoreDNS and local-path-provisioner: fewer images, a quicker test.
LEAN_SERVER = ["server", "--disable=traefik,metrics-server", "--tls-san=127.0.0.1"]


def _system_pods_running(server: Container) -> list[Any]:
    with api_client(kubeconfig_for(server)) as api:
        core = k8s.CoreV1Api(api)

        def running() -> list[Any] | None:
            pods = core.list_namespaced_pod("kube-system").items
            apps = {p.metadata.labels.get("k8s-app") or p.metadata.labels.get("app")
                    for p in pods if p.status.phase == "Running"}  # fmt: skip
            return pods if {"kube-dns", "local-path-provisioner"} <= apps else None

        wait_until(running, 60, f"CoreDNS and local-path Running on {server.name}")
        return list(core.list_namespaced_event("kube-system").items)


def _pull_lines(container: Container) -> list[str]:
    """containerd's line for each finished pull, the sandbox image's too."""
    log = read_file(container, CONTAINERD_LOG).decode()
    return [line for line in log.splitlines() if "Pulled image" in line]


def test_nodes_pull_system_images_and_a_seeded_node_pulls_none(
    scratch: Cluster, docker_client: docker.DockerClient
) -> None:
    first = scratch.run("server", LEAN_SERVER, {"K3S_TOKEN": TOKEN}, publish=True)
    wait_for_log(first, "k3s is up and running")
    events = _system_pods_running(first)
    pulling = [e.message for e in events if e.reason == "Pulling"]
    assert 'Pulling image "rancher/mirrored-coredns-coredns:1.12.3"' in pulling
    pulled = [e.message for e in events if e.reason == "Pulled"]
    assert any(
        m.startswith('Successfully pulled image "rancher/local-path-provisioner')
        for m in pulled
    )
    lines = _pull_lines(first)
    for image in ("mirrored-pause:3.6", "mirrored-coredns-coredns:1.12.3",
                  "local-path-provisioner:v0.0.32"):  # fmt: skip
        assert any(f'repo tag \\"docker.io/rancher/{image}\\"' in x for x in lines)
    listed = first.exec_run(["ctr", "-n", "k8s.io", "images", "ls", "-q"])
    assert listed.exit_code == 0
    names = listed.output.decode().split()
    for image in SYSTEM_IMAGES:
        assert image in names
        repo = image.rsplit(":", 1)[0]
        assert any(n.startswith(f"{repo}@sha256:") for n in names)
    assert any(n.startswith("sha256:") for n in names)

    arch = first.exec_run(["uname", "-m"]).output.decode().strip()
    platform = "linux/" + {"x86_64": "amd64", "aarch64": "arm64"}.get(arch, arch)
    archives: dict[str, bytes] = {}
    for image in SYSTEM_IMAGES:
        exported = first.exec_run(
            ["ctr", "-n", "k8s.io", "images", "export", "--local", "--platform",
             platform, "-", image],
            stdout=True, stderr=False,
        )  # fmt: skip
        assert exported.exit_code == 0
        assert isinstance(exported.output, bytes)
        with tarfile.open(fileobj=io.BytesIO(exported.output)) as archive:
            assert {"oci-layout", "index.json"} <= set(archive.getnames())
        archives[image] = exported.output
    refused = first.exec_run(
        ["ctr", "-n", "k8s.io", "images", "export", "--all-platforms", "/tmp/x.tar",
         SYSTEM_IMAGES[0]]
    )  # fmt: skip
    assert refused.exit_code == 1
    assert b"content digest sha256:" in refused.output

    # A second server, seeded with those archives before it starts.
    name = f"{scratch.name}-server-seeded"
    published: Any = {"6443/tcp": ("127.0.0.1", None)}
    seeded: Container = docker_client.containers.create(
        scratch.image, LEAN_SERVER, name=name, hostname=name,
        environment={"K3S_TOKEN": TOKEN}, labels=ours(scratch.name),
        network=scratch.network.name, ports=published,
        tmpfs={"/run": "", "/var/run": ""}, cap_add=CAP_ADD, cap_drop=CAP_DROP,
        security_opt=SECURITY_OPT, entrypoint=fallback_entrypoint(),
    )  # fmt: skip
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for image, data in archives.items():
            file_name = hashlib.sha256(image.encode()).hexdigest()[:16] + ".tar"
            info = tarfile.TarInfo(f"{AIRGAP_DIR.lstrip('/')}/{file_name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert seeded.put_archive("/", buffer.getvalue())
    seeded.start()
    logs = wait_for_log(seeded, "k3s is up and running")
    assert logs.count("Importing images from") == len(SYSTEM_IMAGES)
    events = _system_pods_running(seeded)
    assert [e.message for e in events if e.reason == "Pulling"] == []
    pulled = [e.message for e in events if e.reason == "Pulled"]
    assert pulled
    assert all(m.endswith("already present on machine") for m in pulled)
    assert _pull_lines(seeded) == []
    listed = seeded.exec_run(["ctr", "-n", "k8s.io", "images", "ls", "-q"])
    assert sorted(listed.output.decode().split()) == sorted(SYSTEM_IMAGES)
