"""A server's datastore: kine or an etcd member, its files, its controllers.

Every server keeps the cluster's objects on disk under its data dir, as k3s
does (sqlite under ``server/db``, or etcd under ``server/db/etcd``): a
stopped and started container comes back with every object and the same
resourceVersion counter. Without ``--cluster-init`` or ``--server`` the
server is a one-member store that never talks to peers (kine). With them it
is an etcd member (:mod:`k3s_double.etcd`): ``--cluster-init`` starts a
one-member cluster, ``--server`` joins one (``/db/info`` for the members,
then a ``join`` to the leader on 2380), and a restarted member takes its
saved member list and catches up from the leader.

A restarted member whose node IP changed stays out, as k3s' etcd does: its
peers know it by the old peer URL, so k3s' datastore test fails every five
seconds with ``this server is a not a member of the etcd cluster`` and the
server never becomes ready.

The controllers (kube-controller-manager, leader-elected) run only while
this server's member leads.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from dataclasses import dataclass

from k3s_double.apiserver.httpd import Backend
from k3s_double.apiserver.httpd import Forwarder
from k3s_double.apiserver.httpd import Upstream
from k3s_double.apiserver.httpd import client_context
from k3s_double.apiserver.server import KubeAPI
from k3s_double.constants import K3S_VERSION
from k3s_double.controllers import Controllers
from k3s_double.controllers.base import Settings
from k3s_double.etcd.backend import REQUEST_TIMEOUT
from k3s_double.etcd.backend import ReplicatedAPI
from k3s_double.etcd.peers import PEER_PORT
from k3s_double.etcd.peers import Peers
from k3s_double.etcd.peers import PeerServer
from k3s_double.etcd.peers import peer_contexts
from k3s_double.etcd.raft import EtcdError
from k3s_double.etcd.raft import Member
from k3s_double.etcd.replica import Replica
from k3s_double.etcd.store import Store

from . import flags
from .identity import Node
from .join import JoinError
from .join import member_urls
from .pki import KeyPair
from .pki import Token
from .pki import peer_cert
from .runtime import RETRY_SECONDS
from .runtime import Runtime


#: Seconds between two of k3s' datastore tests (``testClusterDB``).
TEST_INTERVAL = 5.0


@dataclass(frozen=True)
class Datastore:
    """A server's store: its API, its member, what its listener asks."""

    api: KubeAPI
    member: Member
    backend: Backend
    #: Set when the member can never serve (its address changed).
    failed: threading.Event

    def db_info(self) -> bytes:
        """``/db/info``: the member list, as etcd's MemberList names members."""
        members = [
            {"name": name, "peerURLs": [url]} for name, url in self.member.member_list()
        ]
        return json.dumps({"members": members}).encode()


def not_a_member(name: str, peer_url: str, members: dict[str, str]) -> str:
    """k3s' ``membershipError`` text (``pkg/etcd/etcd.go``), word for word."""
    found = " ".join(f"{n}={u}" for n, u in sorted(members.items()))
    return (
        "this server is a not a member of the etcd cluster. "
        f"Found [{found}], expect: {name}={peer_url}"
    )


def start_datastore(
    rt: Runtime,
    opts: flags.Options,
    node: Node,
    server_ca: KeyPair,
    supervisor_files: tuple[str, str],
    token: Token,
    settings: Settings,
    storage_start: float,
) -> Datastore:
    """Create the store and start it in the background (join, load, serve)."""
    data_dir = opts.text("data-dir")
    join_url = opts.text("server")
    etcd = opts.flag("cluster-init") or bool(join_url)
    api = KubeAPI(
        git_version=K3S_VERSION,
        disable=frozenset(set(opts.split("disable")) | set(opts.split("no-deploy"))),
        ca_pem=server_ca.cert.decode(),
        storage_start=None,
        populate=False,
    )
    store = Store(os.path.join(data_dir, "server/db", "etcd" if etcd else "kine"))
    store.load()
    record = store.read_member()
    peer_url = f"https://{node.ip}:{PEER_PORT}"
    name = str(record["name"]) if record else node.name
    if record is None and etcd:
        name = f"{node.name}-{uuid.uuid4().hex[:8]}"
    peers = server_context = None
    if etcd:
        pair = peer_cert(server_ca, [node.ip, "127.0.0.1", "localhost", node.name])
        tls_dir = os.path.join(data_dir, "server/tls/etcd")
        files = pair.save(tls_dir, "peer-server-client")
        server_context, client_side = peer_contexts(server_ca.cert, *files)
        peers = Peers(client_side)
    replica = Replica(api)
    member = Member(
        name,
        peer_url,
        store,
        peers,
        apply=replica.apply,
        install=replica.install,
        log=rt.log,
    )
    replica.member = member
    api.storage.datastore_ok = member.has_quorum
    _leader_elected_controllers(api, member, settings)
    host_context = client_context(server_ca.cert, *supervisor_files)
    port = opts.number("https-listen-port")

    def forwarder(host: str) -> Forwarder:
        # A write waits at most the leader's own quorum wait plus a margin.
        upstream = Upstream(host, port, host_context, timeout=2)
        return Forwarder(upstream, timeout=REQUEST_TIMEOUT + 2)

    backend: Backend = ReplicatedAPI(api, member, forwarder) if etcd else api
    failed = threading.Event()

    def start() -> None:
        if record is not None and etcd and record.get("peerURL") != peer_url:
            failed.set()
            message = not_a_member(name, peer_url, dict(record["members"]))
            while True:
                rt.log.info(f"Failed to test data store connection: {message}")
                rt.sleep(TEST_INTERVAL)
        if server_context is not None:
            listener = PeerServer(("", PEER_PORT), server_context, member.handle)
            listener.start()
            api.on_stop(listener.close)
        if record is not None:
            if etcd:
                rt.log.info("Starting etcd for existing cluster member")
            member.restore(record)
            replica.load()
        elif join_url:
            _join(rt, member, join_url, token)
        else:
            member.bootstrap()
        api.store.journal = replica
        member.start()
        if record is None and not join_url:
            api.populate()
        if etcd:
            rt.log.info("etcd data store connection OK")
        rt.sleep(storage_start)
        api.storage.ready.set()

    threading.Thread(target=rt.guard(start), name="datastore", daemon=True).start()
    api.on_stop(member.stop)
    return Datastore(api, member, backend, failed)


def _join(rt: Runtime, member: Member, join_url: str, token: Token) -> None:
    """Join through ``--server``'s member list; retry as k3s retries a join."""
    while True:
        try:
            members = member_urls(join_url, token)
            cluster = " ".join(f"{name}={url}" for name, url in members)
            rt.log.info(
                f"Adding member {member.name}={member.peer_url} to etcd cluster "
                f"[{cluster}]"
            )
            member.join([url for _, url in members])
            return
        except (JoinError, EtcdError) as exc:
            rt.log.info(
                f"Waiting for other members to finish joining etcd cluster: {exc}"
            )
        rt.sleep(RETRY_SECONDS)


def _leader_elected_controllers(
    api: KubeAPI, member: Member, settings: Settings
) -> None:
    """Run the controllers only while ``member`` leads."""
    running: list[Controllers] = []
    lock = threading.Lock()

    def lead() -> None:
        with lock:
            if not running:
                controllers = Controllers(api.storage, settings)
                controllers.start()
                running.append(controllers)

    def unlead() -> None:
        with lock:
            while running:
                running.pop().stop()

    member.on_lead.append(lead)
    member.on_unlead.append(unlead)
    api.on_stop(unlead)
