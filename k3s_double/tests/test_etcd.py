"""The double's etcd in process: persistence, replication, failover, quorum.

Several members run in this process, each with its own API, store
directory and peer listener on a localhost port, talking mutual TLS as
servers do on 2380; no Docker. Stopping a member closes its listener and
threads, as a stopped container would.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from k3s_double.apiserver.httpd import Forwarder
from k3s_double.apiserver.response import Response
from k3s_double.apiserver.server import KubeAPI
from k3s_double.etcd import raft
from k3s_double.etcd.backend import ReplicatedAPI
from k3s_double.etcd.peers import Peers
from k3s_double.etcd.peers import PeerServer
from k3s_double.etcd.peers import peer_contexts
from k3s_double.etcd.raft import EtcdError
from k3s_double.etcd.raft import Member
from k3s_double.etcd.replica import Replica
from k3s_double.etcd.store import Store
from k3s_double.node.pki import KeyPair
from k3s_double.node.pki import client_cert
from k3s_double.node.pki import new_ca
from k3s_double.node.pki import peer_cert


ADMIN = "system:admin"


def wait_for(check: Callable[[], Any], timeout: float, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except (AssertionError, EtcdError):
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return new_ca("k3s-server-ca")


class _Direct(Forwarder):
    """Relays a follower's write to the leader's API in process (no HTTPS).

    Every in-process member's host is 127.0.0.1, so it finds the leader by
    asking the members rather than by the host.
    """

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes = nodes

    def handle(
        self,
        method: str,
        target: str,
        headers: Any,
        body: bytes,
        *,
        user: str,
    ) -> Response:
        for node in list(self.nodes.values()):
            if node.running and node.member.is_leader:
                return node.backend.handle(method, target, headers, body, user=user)
        return Response(503, b"unreachable")


@dataclass
class Node:
    """One server: its API, member and peer listener."""

    name: str
    directory: Path
    port: int
    api: KubeAPI
    member: Member
    backend: ReplicatedAPI
    listener: PeerServer | None = None
    running: bool = False

    def request(self, method: str, path: str, obj: Any = None) -> Response:
        body = json.dumps(obj).encode() if obj is not None else b""
        headers = {"content-type": "application/json"}
        return self.backend.handle(method, path, headers, body, user=ADMIN)

    def create_cm(self, name: str) -> Response:
        return self.request(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            {"metadata": {"name": name}, "data": {"k": name}},
        )

    def names(self, query: str = "") -> list[str]:
        answer = self.request("GET", f"/api/v1/namespaces/default/configmaps{query}")
        assert answer.status == 200, answer.body
        return [i["metadata"]["name"] for i in json.loads(answer.body)["items"]]


class Cluster:
    """In-process members of one etcd cluster; stop and start them by name."""

    def __init__(self, tmp: Path, ca: KeyPair) -> None:
        self.tmp = tmp
        self.ca = ca
        self.nodes: dict[str, Node] = {}
        self.ports: dict[str, int] = {}
        self.logs: list[str] = []
        pair = peer_cert(ca, ["127.0.0.1"])
        self.files = pair.save(str(tmp / "tls"), "peer")

    def _log(self, level: str, message: str) -> None:
        self.logs.append(f"{level}: {message}")

    def start(self, name: str, *, join: str | None = None) -> Node:
        """Start (or restart) member ``name``; the first starts the cluster."""
        port = self.ports.setdefault(name, free_port())
        directory = self.tmp / name
        api = KubeAPI(storage_start=None, populate=False)
        store = Store(str(directory))
        store.load()
        record = store.read_member()
        server_side, client_side = peer_contexts(self.ca.cert, *self.files)
        replica = Replica(api)
        member = Member(
            name,
            f"https://127.0.0.1:{port}",
            store,
            Peers(client_side),
            apply=replica.apply,
            install=replica.install,
            log=self._log,
        )
        replica.member = member
        api.storage.datastore_ok = member.has_quorum
        backend = ReplicatedAPI(api, member, lambda host: _Direct(self.nodes))
        node = Node(name, directory, port, api, member, backend)
        node.listener = PeerServer(("127.0.0.1", port), server_side, member.handle)
        node.listener.start()
        if record is not None:
            member.restore(record)
            replica.load()
        elif join is not None:
            member.join([self.nodes[join].member.peer_url])
        else:
            member.bootstrap()
        api.store.journal = replica
        member.start()
        if record is None and join is None:
            api.populate()
        api.storage.ready.set()
        node.running = True
        self.nodes[name] = node
        return node

    def stop(self, name: str) -> None:
        node = self.nodes[name]
        node.running = False
        node.member.stop()
        if node.listener is not None:
            node.listener.close()
        node.api.stop()
        node.member.store.close()

    def leader(self) -> Node:
        def find() -> Node | None:
            running = [n for n in self.nodes.values() if n.running]
            leaders = [n for n in running if n.member.is_leader]
            return leaders[0] if len(leaders) == 1 else None

        found: Node = wait_for(find, 10, "a single leader")
        return found

    def close(self) -> None:
        for name, node in self.nodes.items():
            if node.running:
                self.stop(name)


@pytest.fixture
def cluster(tmp_path: Path, ca: KeyPair) -> Iterator[Cluster]:
    made = Cluster(tmp_path, ca)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def three(cluster: Cluster) -> Cluster:
    cluster.start("s0")
    cluster.start("s1", join="s0")
    cluster.start("s2", join="s0")
    return cluster


def test_a_single_member_persists_objects_and_the_revision(cluster: Cluster) -> None:
    """Stopped and started on the same directory, a server keeps everything."""
    node = cluster.start("s0")
    assert node.create_cm("kept").status == 201
    before = int(node.api.store.resource_version)
    cluster.stop("s0")
    again = cluster.start("s0")
    assert "kept" in again.names()
    assert int(again.api.store.resource_version) == before
    created = again.create_cm("after")
    assert int(json.loads(created.body)["metadata"]["resourceVersion"]) > before
    assert again.api.find("Namespace", "", "kube-system") is not None


def test_the_log_compacts_into_a_snapshot_and_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every COMPACT_EVERY entries the state is snapshotted and the log restarts."""
    from k3s_double.etcd import store as store_module

    monkeypatch.setattr(store_module, "COMPACT_EVERY", 5)
    store = Store(str(tmp_path))
    store.load()
    for rv in range(1, 13):
        obj = {"metadata": {"name": f"o{rv % 4}", "namespace": "ns"}}
        store.append({"rv": rv, "op": "put", "kind": "/configmaps", "obj": obj})
    store.append(
        {
            "rv": 13,
            "op": "delete",
            "kind": "/configmaps",
            "obj": {"metadata": {"name": "o0", "namespace": "ns"}},
        }
    )
    assert (tmp_path / "snapshot.json").exists()
    assert len((tmp_path / "wal.log").read_text().splitlines()) < 5
    with open(tmp_path / "wal.log", "a") as log:
        log.write('{"rv": 14, "op": "put", "kind"')  # a torn last record
    store.close()
    again = Store(str(tmp_path))
    again.load()
    rv, entries = again.snapshot()
    assert rv == 13
    assert sorted(e["obj"]["metadata"]["name"] for e in entries) == ["o1", "o2", "o3"]


def test_joined_members_serve_reads_and_watches_from_their_own_replica(
    three: Cluster,
) -> None:
    """A write on any server is on every server, in order, with the same rv."""
    leader = three.leader()
    follower = next(n for n in three.nodes.values() if n is not leader)
    watch = follower.request(
        "GET", "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=5"
    )
    assert watch.stream is not None
    created = follower.create_cm("from-follower")
    assert created.status == 201, created.body
    rv = json.loads(created.body)["metadata"]["resourceVersion"]
    # Read-your-writes on the server that relayed the write, at once.
    local = follower.request(
        "GET", "/api/v1/namespaces/default/configmaps/from-follower?resourceVersion=0"
    )
    assert json.loads(local.body)["metadata"]["resourceVersion"] == rv
    for node in three.nodes.values():
        wait_for(lambda: "from-follower" in node.names(), 3, node.name)  # noqa: B023
    line = json.loads(next(iter(watch.stream)))
    assert line["type"] == "ADDED"
    assert line["object"]["metadata"]["name"] == "from-follower"


def test_controllers_follow_leadership(three: Cluster) -> None:
    """Only the leader hears on_lead; a new leader does after failover."""
    events: list[tuple[str, bool]] = []

    def recorder(name: str, leads: bool) -> Callable[[], None]:
        return lambda: events.append((name, leads))

    for node in three.nodes.values():
        node.member.on_lead.append(recorder(node.name, True))
        node.member.on_unlead.append(recorder(node.name, False))
    old = three.leader()
    three.stop(old.name)
    new = three.leader()
    assert new.name != old.name
    wait_for(lambda: (new.name, True) in events, 3, "on_lead of the new leader")
    assert (old.name, False) in events


def test_failover_elects_a_new_leader_within_two_seconds(three: Cluster) -> None:
    """Two of three keep serving writes, quorum reads and watches."""
    old = three.leader()
    old.create_cm("before")
    started = time.monotonic()
    three.stop(old.name)
    survivors = [n for n in three.nodes.values() if n.running]

    def write() -> bool:
        return survivors[0].create_cm("after").status == 201

    wait_for(write, 5, "a write after failover")
    assert time.monotonic() - started < 3.5
    for node in survivors:
        wait_for(lambda: {"before", "after"} <= set(node.names()), 3)  # noqa: B023


def test_a_minority_refuses_writes_and_quorum_reads_but_serves_rv0(
    three: Cluster,
) -> None:
    """With one of three left: 500 etcdserver: request timed out; readyz fails."""
    three.nodes["s0"].create_cm("seen")
    wait_for(lambda: "seen" in three.nodes["s2"].names(), 3)
    three.stop("s0")
    three.stop("s1")
    last = three.nodes["s2"]
    wait_for(lambda: not last.member.has_quorum(), 3, "quorum lost")
    started = time.monotonic()
    refused = last.create_cm("lost")
    waited = time.monotonic() - started
    assert refused.status == 500
    assert json.loads(refused.body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "etcdserver: request timed out",
        "code": 500,
    }
    assert 2.5 < waited < 5
    quorum = last.request("GET", "/api/v1/namespaces/default/configmaps")
    assert quorum.status == 500
    assert last.names("?resourceVersion=0") == ["seen"]
    readyz = last.request("GET", "/readyz")
    assert readyz.status == 500
    assert "[-]etcd failed: reason withheld" in readyz.body.decode()


def test_restarted_members_rejoin_and_catch_up(three: Cluster) -> None:
    """A member stopped while others write gets what it missed when it returns."""
    three.stop("s2")
    writer = three.leader()
    for i in range(5):
        assert writer.create_cm(f"missed-{i}").status == 201
    back = three.start("s2")
    wait_for(lambda: {f"missed-{i}" for i in range(5)} <= set(back.names()), 5)
    assert back.api.store.resource_version == writer.api.store.resource_version


def test_the_whole_cluster_stopped_and_started_keeps_its_objects(
    three: Cluster,
) -> None:
    """All three stop; started again they elect a leader and lose nothing."""
    three.leader().create_cm("durable")
    wait_for(lambda: all("durable" in n.names() for n in three.nodes.values()), 3)
    rv = int(three.nodes["s0"].api.store.resource_version)
    for name in ("s0", "s1", "s2"):
        three.stop(name)
    for name in ("s2", "s0", "s1"):
        three.start(name)
    leader = three.leader()
    assert "durable" in leader.names()
    created = leader.create_cm("later")
    assert int(json.loads(created.body)["metadata"]["resourceVersion"]) > rv


def test_a_returning_old_leader_follows_the_new_one(three: Cluster) -> None:
    """The old leader comes back as a follower and never takes over again."""
    old = three.leader()
    three.stop(old.name)
    new = three.leader()
    new.create_cm("while-away")
    back = three.start(old.name)
    wait_for(lambda: "while-away" in back.names(), 5)
    time.sleep(1.5)
    assert three.leader().name == new.name


def test_an_unauthenticated_peer_gets_no_message_in(three: Cluster) -> None:
    """A peer without a certificate from the server CA fails the handshake."""
    other = new_ca("another-ca")
    pair = client_cert(other, "intruder")
    files = pair.save(str(three.tmp / "intruder"), "peer")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(*files)
    url = three.nodes["s0"].member.peer_url
    with pytest.raises(OSError):
        Peers(context).send(url, {"type": "join", "name": "x", "peerURL": "y"}, 2)
    plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    plain.check_hostname = False
    plain.verify_mode = ssl.CERT_NONE
    with pytest.raises(OSError):
        Peers(plain).send(url, {"type": "status"}, 2)
    assert "x" not in dict(three.leader().member.member_list())


def test_resource_requests_answer_429_until_the_storage_is_ready() -> None:
    """The watch cache's answer before it is ready: 429 storage is (re)initializing."""
    kube = KubeAPI(storage_start=0.5)
    try:
        early = kube.handle("GET", "/api/v1/namespaces", {}, b"", user=ADMIN)
        assert early.status == 429
        assert early.headers == {"Retry-After": "1"}
        assert json.loads(early.body) == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "storage is (re)initializing",
            "reason": "TooManyRequests",
            "details": {"retryAfterSeconds": 1},
            "code": 429,
        }
        assert kube.handle("GET", "/version", {}, b"", user=ADMIN).status == 200
        assert kube.handle("GET", "/api/v1", {}, b"", user=ADMIN).status == 200
        wait_for(
            lambda: (
                kube.handle("GET", "/api/v1/namespaces", {}, b"", user=ADMIN).status
                == 200
            ),
            3,
        )
    finally:
        kube.stop()


def test_timings_are_etcds() -> None:
    """Heartbeat 100 ms and election timeout 1 s, as etcd's defaults."""
    assert raft.HEARTBEAT == 0.1
    assert raft.ELECTION_TIMEOUT == 1.0
    assert threading.active_count() >= 1
