"""HA, persistence, quorum and 429 of the double's image, through Docker.

Servers run on a user-defined network with fixed addresses, as the plugin
runs them: stopping server-0 of three leaves two that serve, one of three
refuses writes, a server that comes back with another address stays out,
a stopped and started server keeps its objects, and resource requests
answer 429 while the storage initialises.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ipaddress
import json
import random
import ssl
import tempfile
import time
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
from docker.models.networks import Network

from pytest_k3s.engine.host_policy import fallback_entrypoint

from .test_node_contract import CAP_ADD
from .test_node_contract import CAP_DROP
from .test_node_contract import LABEL
from .test_node_contract import SECURITY_OPT
from .test_node_contract import TOKEN
from .test_node_contract import host_port
from .test_node_contract import ours
from .test_node_contract import read_file
from .test_node_contract import wait_for_log


pytestmark = pytest.mark.docker

LB_NAME = "lb.k3s-double.test"
KUBECONFIG = "/etc/rancher/k3s/k3s.yaml"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


@dataclass
class Reply:
    """One HTTP answer: status, headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Endpoint:
    """A server's API on its published port, as system:admin."""

    container: Container
    directory: Path

    def _context(self) -> ssl.SSLContext:
        config = yaml.safe_load(read_file(self.container, KUBECONFIG))
        user = config["users"][0]["user"]
        cluster = config["clusters"][0]["cluster"]
        cert = self.directory / f"{self.container.name}.crt"
        key = self.directory / f"{self.container.name}.key"
        cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        context.load_cert_chain(str(cert), str(key))
        return context

    def request(
        self, method: str, path: str, obj: Any = None, timeout: float = 15
    ) -> Reply:
        connection = http.client.HTTPSConnection(
            "127.0.0.1",
            host_port(self.container),
            context=self._context(),
            timeout=timeout,
        )
        try:
            body = json.dumps(obj).encode() if obj is not None else None
            headers = {"Content-Type": "application/json"} if body else {}
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return Reply(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def create(self, name: str) -> Reply:
        return self.request("POST", CONFIGMAPS, {"metadata": {"name": name}})

    def names(self, query: str = "") -> set[str]:
        reply = self.request("GET", CONFIGMAPS + query)
        assert reply.status == 200, reply.body
        return {i["metadata"]["name"] for i in reply.json()["items"]}

    def ready(self) -> bool:
        try:
            return self.request("GET", "/readyz", timeout=5).status == 200
        except (OSError, KeyError, TypeError):
            return False


def eventually(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, AssertionError, KeyError, TypeError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}; last result: {last!r}")


def _free_subnet(client: docker.DockerClient) -> ipaddress.IPv4Network:
    taken = [
        ipaddress.ip_network(config["Subnet"])
        for network in client.networks.list()
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []
        if "Subnet" in config
    ]
    for _ in range(100):
        candidate = ipaddress.ip_network(f"10.213.{random.randrange(256)}.0/24")
        if not any(candidate.overlaps(t) for t in taken if t.version == 4):
            return candidate  # type: ignore[return-value]
    pytest.skip("no free /24 under 10.213.0.0/16 on this engine")


@dataclass
class HA:
    """Server containers with fixed addresses on one labelled network."""

    name: str
    docker: docker.DockerClient
    image: str
    subnet: ipaddress.IPv4Network
    network: Network
    directory: Path
    servers: list[Container] = field(default_factory=list)

    def ip(self, index: int) -> str:
        return str(self.subnet.network_address + 10 + index)

    @property
    def balancer_ip(self) -> str:
        return str(self.subnet.network_address + 250)

    def run(self, index: int, command: list[str], env: dict[str, str]) -> Container:
        name = f"{self.name}-server-{index}"
        network = str(self.network.name)
        endpoint = self.docker.api.create_endpoint_config(ipv4_address=self.ip(index))
        ports: Any = {"6443/tcp": ("127.0.0.1", None)}
        container: Container = self.docker.containers.run(
            self.image,
            command,
            name=name,
            hostname=name,
            environment=env,
            labels=ours(self.name),
            network=network,
            networking_config={network: endpoint},
            ports=ports,
            tmpfs={"/run": "", "/var/run": ""},
            detach=True,
            cap_add=CAP_ADD,
            cap_drop=CAP_DROP,
            security_opt=SECURITY_OPT,
            entrypoint=fallback_entrypoint(),
        )
        self.servers.append(container)
        return container

    def start_cluster(self, count: int) -> None:
        sans = ["--tls-san", LB_NAME, "--tls-san", self.balancer_ip]
        first = self.run(0, ["server", "--cluster-init", *sans], {"K3S_TOKEN": TOKEN})
        wait_for_log(first, "k3s is up and running")
        env = {"K3S_TOKEN": TOKEN, "K3S_URL": f"https://{self.ip(0)}:6443"}
        for index in range(1, count):
            joiner = self.run(index, ["server", *sans], env)
            wait_for_log(joiner, "k3s is up and running")

    def api(self, index: int) -> Endpoint:
        return Endpoint(self.servers[index], self.directory)

    def stop(self, *indexes: int) -> None:
        for index in indexes:
            self.servers[index].stop(timeout=10)

    def start(self, *indexes: int) -> None:
        for index in indexes:
            self.servers[index].start()

    def remove(self) -> None:
        for container in self.docker.containers.list(
            all=True, filters={"label": f"{LABEL}={self.name}"}
        ):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True, v=True)
        with contextlib.suppress(docker.errors.NotFound):
            self.network.remove()


@pytest.fixture
def ha(docker_client: docker.DockerClient, double_image: str) -> Iterator[HA]:
    name = f"ha-{random.randrange(16**8):08x}"
    subnet = _free_subnet(docker_client)
    ipam = docker.types.IPAMConfig(
        pool_configs=[docker.types.IPAMPool(subnet=str(subnet))]
    )
    network = docker_client.networks.create(
        name, driver="bridge", ipam=ipam, labels=ours(name)
    )
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        cluster = HA(name, docker_client, double_image, subnet, network, scratch)
        try:
            yield cluster
        finally:
            cluster.remove()


def test_every_server_serves_the_balancers_name_and_address(ha: HA) -> None:
    """--tls-san names and addresses are in every server's serving certificate."""
    ha.start_cluster(3)
    for server in ha.servers:
        pem = ssl.get_server_certificate(("127.0.0.1", host_port(server)))
        cert = x509.load_pem_x509_certificate(pem.encode())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        assert LB_NAME in sans.value.get_values_for_type(x509.DNSName)
        assert ipaddress.ip_address(ha.balancer_ip) in sans.value.get_values_for_type(
            x509.IPAddress
        )


def test_stopping_server_0_leaves_two_that_list_create_and_watch(ha: HA) -> None:
    """The other two of three serve within a few seconds of server-0 stopping."""
    ha.start_cluster(3)
    assert ha.api(1).create("before").status == 201
    ha.stop(0)
    stopped = time.monotonic()
    eventually(lambda: ha.api(1).create("after").status == 201, 10, "a write")
    failover = time.monotonic() - stopped
    print(f"failover: a write succeeded {failover:.2f}s after server-0 stopped")
    assert failover < 3, failover
    watch = ha.api(2)
    connection = http.client.HTTPSConnection(
        "127.0.0.1", host_port(watch.container), context=watch._context(), timeout=10
    )
    connection.request(
        "GET", CONFIGMAPS + "?watch=1&fieldSelector=metadata.name%3Dwatched"
    )
    stream = connection.getresponse()
    assert stream.status == 200
    assert ha.api(1).create("watched").status == 201
    line = stream.readline()
    while not line.strip():
        line = stream.readline()
    connection.close()
    assert b'"ADDED"' in line
    assert b'"watched"' in line
    for index in (1, 2):
        assert {"before", "after", "watched"} <= ha.api(index).names()


def test_one_of_three_refuses_writes_until_the_others_return(ha: HA) -> None:
    """A minority answers 500 etcdserver: request timed out; /readyz fails."""
    ha.start_cluster(3)
    assert ha.api(2).create("kept").status == 201
    ha.stop(0, 1)
    last = ha.api(2)
    eventually(lambda: not last.ready(), 5, "/readyz failing")
    readyz = last.request("GET", "/readyz")
    assert readyz.status == 500
    assert "[-]etcd failed: reason withheld" in readyz.body.decode()
    started = time.monotonic()
    refused = last.create("refused")
    assert time.monotonic() - started < 6
    assert refused.status == 500
    assert refused.json()["message"] == "etcdserver: request timed out"
    assert last.request("GET", CONFIGMAPS).status == 500
    assert "kept" in last.names("?resourceVersion=0")
    ha.start(0, 1)
    for index in range(3):
        eventually(ha.api(index).ready, 30, f"server-{index} ready again")
    for index in range(3):
        names = eventually(ha.api(index).names, 10, "a quorum list")
        assert "kept" in names
        assert "refused" not in names
    assert ha.api(0).create("again").status == 201


def test_a_server_back_with_another_address_does_not_rejoin(ha: HA) -> None:
    """Its peers know the old peer URL: k3s' datastore test fails, never ready."""
    ha.start_cluster(3)
    moved = ha.servers[2]
    ha.stop(2)
    ha.network.disconnect(moved)
    new_ip = str(ha.subnet.network_address + 99)
    ha.network.connect(moved, ipv4_address=new_ip)
    ha.start(2)
    logs = wait_for_log(moved, f"expect: {ha.name}-server-2-", 30)
    line = next(
        line for line in logs.splitlines() if "Failed to test data store" in line
    )
    assert "this server is a not a member of the etcd cluster. Found [" in line
    assert f"https://{ha.ip(2)}:2380" in line
    assert f"=https://{new_ip}:2380" in line
    time.sleep(6)
    assert not ha.api(2).ready()
    assert logs.count("k3s is up and running") == 1
    assert ha.api(0).create("others-serve").status == 201


def test_a_single_server_keeps_its_objects_across_stop_and_start(ha: HA) -> None:
    """Without etcd (kine), the objects and resourceVersions survive a restart."""
    server = ha.run(0, ["server"], {"K3S_TOKEN": TOKEN})
    wait_for_log(server, "k3s is up and running")
    created = ha.api(0).create("persisted")
    assert created.status == 201
    rv = int(created.json()["metadata"]["resourceVersion"])
    ha.stop(0)
    ha.start(0)
    eventually(ha.api(0).ready, 30, "the restarted server ready")
    assert "persisted" in ha.api(0).names()
    later = ha.api(0).create("later")
    assert int(later.json()["metadata"]["resourceVersion"]) > rv


def _statuses_until_ok(endpoint: Endpoint, timeout: float) -> list[Reply]:
    replies: list[Reply] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            reply = endpoint.request("GET", "/api/v1/namespaces", timeout=5)
        except (OSError, KeyError, TypeError, docker.errors.NotFound):
            time.sleep(0.02)
            continue
        replies.append(reply)
        if reply.status == 200:
            return replies
        time.sleep(0.02)
    pytest.fail(f"no 200 within {timeout}s: {[r.status for r in replies]}")


def test_resource_requests_answer_429_while_storage_initialises(ha: HA) -> None:
    """Right after a start, and a restart: 429 storage is (re)initializing."""
    server = ha.run(0, ["server"], {"K3S_TOKEN": TOKEN})
    for attempt in ("start", "restart"):
        replies = _statuses_until_ok(ha.api(0), 60)
        early = [r for r in replies if r.status == 429]
        assert early, f"no 429 after the {attempt}: {[r.status for r in replies]}"
        assert early[0].headers["retry-after"] == "1"
        assert early[0].json() == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "storage is (re)initializing",
            "reason": "TooManyRequests",
            "details": {"retryAfterSeconds": 1},
            "code": 429,
        }
        assert {r.status for r in replies} <= {429, 200, 500, 503}
        if attempt == "start":
            wait_for_log(server, "k3s is up and running")
            ha.stop(0)
            ha.start(0)
