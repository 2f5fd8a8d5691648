"""One etcd member: membership, heartbeats, elections, replication, quorum.

A small Raft with etcd's rules and timings (heartbeat 100 ms, election
timeout 1 s), deterministic where Raft is random:

- **Writes** go to the leader only. :meth:`Member.propose` appends the entry
  to the leader's log, waits until a majority of members has appended it,
  commits it (persisting it in the leader's :class:`~.store.Store`), tells
  the followers at once, and returns when a majority has applied it. A
  leader that cannot reach a majority within the election timeout steps
  down and the write fails (``etcdserver: request timed out``).
- **Followers** keep appended entries pending and apply them, in order,
  only once the leader says they are committed; a follower that missed
  entries the leader no longer keeps gets a full snapshot.
- **Elections**: a member that has not heard from a leader for an election
  timeout asks every member for its status. If a majority answers and none
  of them still hears from a live leader, the member with the highest
  applied revision (ties: the lowest name) asks for votes in a new term; a
  member votes once per term, only for a candidate at least as up to date
  as itself and only when it has no live leader itself (etcd's check-quorum
  lease), so a returning old member never disrupts a healthy leader.
- **Quorum**: a leader that has not heard from a majority for an election
  timeout steps down (check-quorum). :meth:`Member.linearize` is etcd's
  ReadIndex: the leader confirms it still leads a majority and names its
  commit revision; the member waits until it has applied that far.
- **Membership**: a joining server asks the leader (``join``); it becomes a
  voting member at once and gets the member list and a snapshot. Members
  are known by their peer URL, which never changes (etcd rewrites it only
  on ``--cluster-reset``).
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .peers import Message
from .peers import Peers
from .store import Entry
from .store import Store


HEARTBEAT = 0.1
ELECTION_TIMEOUT = 1.0
#: The longest wait for one peer message (a stopped container's address
#: swallows packets, so connects must time out rather than be refused).
PEER_TIMEOUT = 0.3
#: Committed entries the leader keeps to catch up followers without a snapshot.
LOG_KEEP = 1000
#: etcd's ErrTimeout, what kube-apiserver passes on when there is no quorum.
TIMED_OUT = "etcdserver: request timed out"
LEADER_CHANGED = "etcdserver: leader changed"

Log = Callable[[str, str], None]


class EtcdError(Exception):
    """A request etcd could not serve; the message is etcd's error text."""


class Member:
    """One member of the replicated store.

    :param name: the member name (k3s: ``<node name>-<8 hex digits>``)
    :param peer_url: ``https://<node ip>:2380``, how the others reach it
    :param store: its committed state on disk
    :param peers: the peer client (None for a member that will stay alone)
    :param apply: installs a committed entry written by another member
    :param install: installs a snapshot: revision and entries
    :param log: ``log(level, message)``
    """

    def __init__(
        self,
        name: str,
        peer_url: str,
        store: Store,
        peers: Peers | None,
        *,
        apply: Callable[[Entry], None],
        install: Callable[[int, list[Entry]], None],
        log: Log,
        election_timeout: float = ELECTION_TIMEOUT,
    ) -> None:
        self.name = name
        self.peer_url = peer_url
        self.store = store
        self.peers = peers
        self._apply = apply
        self._install = install
        self._log = log
        self.election_timeout = election_timeout
        self.cond = threading.Condition()
        self._apply_lock = threading.Lock()
        self.members: dict[str, str] = {name: peer_url}
        self.term = 0
        self.voted_for: str | None = None
        self.role = "follower"
        self.leader: str | None = None
        self.pending: list[Entry] = []
        self.log: collections.deque[Entry] = collections.deque(maxlen=LOG_KEEP)
        self.commit_rv = 0
        self.applied = 0
        self.appended: dict[str, int] = {}
        self.applied_by: dict[str, int] = {}
        self.last_ack: dict[str, float] = {}
        self.last_contact = time.monotonic()
        self._senders: set[str] = set()
        self._stopped = threading.Event()
        self._events: queue.SimpleQueue[bool | None] = queue.SimpleQueue()
        self.on_lead: list[Callable[[], None]] = []
        self.on_unlead: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ state

    @property
    def majority(self) -> int:
        """How many members make a quorum."""
        return len(self.members) // 2 + 1

    def record(self) -> dict[str, Any]:
        """What ``member.json`` keeps."""
        return {
            "name": self.name,
            "peerURL": self.peer_url,
            "members": dict(self.members),
            "term": self.term,
            "votedFor": self.voted_for,
        }

    def _persist(self) -> None:
        self.store.write_member(self.record())

    def restore(self, record: dict[str, Any]) -> None:
        """Take the saved member list, term and vote (a restarted member)."""
        with self.cond:
            self.members = dict(record["members"])
            self.term = int(record.get("term", 0))
            self.voted_for = record.get("votedFor")
            self.applied = self.commit_rv = self.store.rv

    def bootstrap(self) -> None:
        """Start a new one-member cluster (``--cluster-init``, or no etcd)."""
        with self.cond:
            self.members = {self.name: self.peer_url}
            self.applied = self.commit_rv = self.store.rv
            self._persist()

    def lease(self) -> bool:
        """Whether this leader heard from a majority within an election timeout."""
        now = time.monotonic()
        fresh = 1 + sum(
            1
            for name in self.members
            if name != self.name
            and now - self.last_ack.get(name, -1e9) < self.election_timeout
        )
        return fresh >= self.majority

    def has_quorum(self) -> bool:
        """Whether this member can serve quorum requests now."""
        with self.cond:
            if self.role == "leader":
                return self.lease()
            recent = time.monotonic() - self.last_contact < self.election_timeout
            return self.leader is not None and recent

    def leader_url(self) -> str | None:
        """The peer URL of the live leader this member follows, if any."""
        with self.cond:
            if self.leader is None or self.role == "leader":
                return None
            if time.monotonic() - self.last_contact >= self.election_timeout:
                return None
            return self.members.get(self.leader)

    @property
    def is_leader(self) -> bool:
        """Whether this member leads now."""
        with self.cond:
            return self.role == "leader"

    def member_list(self) -> list[tuple[str, str]]:
        """``(name, peer URL)`` of every member, sorted by name."""
        with self.cond:
            return sorted(self.members.items())

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Run the ticker (elections, check-quorum) and one sender per peer."""
        threading.Thread(target=self._tick, name="etcd-ticker", daemon=True).start()
        threading.Thread(target=self._notify, name="etcd-leader", daemon=True).start()
        with self.cond:
            self._ensure_senders()
            if list(self.members) == [self.name]:
                # Alone, a member is its own majority: it leads at once.
                self.term += 1
                self.voted_for = self.name
                self._persist()
                self._become_leader(set())

    def stop(self) -> None:
        """Stop every thread; a leader stops leading."""
        self._stopped.set()
        with self.cond:
            if self.role == "leader":
                self._step_down("stopping")
            self.cond.notify_all()
        self._events.put(None)

    def _notify(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            for callback in self.on_lead if event else self.on_unlead:
                try:
                    callback()
                except Exception as exc:  # a callback must not stop the member
                    self._log("error", f"leader callback failed: {exc!r}")

    def _ensure_senders(self) -> None:
        for name in self.members:
            if name != self.name and name not in self._senders:
                self._senders.add(name)
                threading.Thread(
                    target=self._send_loop, args=(name,), daemon=True
                ).start()

    # ------------------------------------------------------------- elections

    def _tick(self) -> None:
        while not self._stopped.wait(HEARTBEAT / 2):
            campaign = False
            with self.cond:
                now = time.monotonic()
                if self.role == "leader":
                    if not self.lease():
                        self._step_down("lost quorum")
                elif now - self.last_contact >= self.election_timeout:
                    campaign = True
            if campaign:
                self._campaign()

    def _campaign(self) -> None:
        with self.cond:
            others = [(n, u) for n, u in self.members.items() if n != self.name]
        answers = self._broadcast(others, {"type": "status"})
        with self.cond:
            if self.role == "leader" or self._stopped.is_set():
                return
            now = time.monotonic()
            if now - self.last_contact < self.election_timeout:
                return
            for answer in answers.values():
                self._see_term(int(answer.get("term", 0)))
            if any(a.get("leaderAlive") for a in answers.values()):
                return
            ranks = [(self.applied, self.name)] + [
                (int(a["applied"]), str(a["name"])) for a in answers.values()
            ]
            if len(ranks) < self.majority:
                return
            best = min(ranks, key=lambda rank: (-rank[0], rank[1]))[1]
            stale = now - self.last_contact >= 3 * self.election_timeout
            if best != self.name and not stale:
                return
            self.term += 1
            self.voted_for = self.name
            self.role = "candidate"
            self._persist()
            term = self.term
            request = {
                "type": "vote",
                "term": term,
                "candidate": self.name,
                "applied": self.applied,
            }
        votes = self._broadcast(others, request)
        with self.cond:
            if self.term != term or self.role != "candidate":
                return
            granted = 1 + sum(1 for v in votes.values() if v.get("granted"))
            for answer in votes.values():
                self._see_term(int(answer.get("term", 0)))
            if self.term == term and granted >= self.majority:
                voters = {n for n, v in votes.items() if v.get("granted")}
                self._become_leader(voters)
            else:
                self.role = "follower"
                self.last_contact = time.monotonic()

    def _broadcast(
        self, targets: list[tuple[str, str]], message: Message
    ) -> dict[str, Message]:
        answers: dict[str, Message] = {}
        lock = threading.Lock()

        def ask(name: str, url: str) -> None:
            if self.peers is None:
                return
            try:
                answer = self.peers.send(url, message, PEER_TIMEOUT)
            except (OSError, ValueError):
                return
            with lock:
                answers[name] = answer

        threads = [
            threading.Thread(target=ask, args=target, daemon=True) for target in targets
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(PEER_TIMEOUT * 3)
        with lock:
            return dict(answers)

    def _see_term(self, term: int) -> None:
        """Adopt a newer term seen anywhere; a leader of an older one steps down."""
        if term <= self.term:
            return
        self.term = term
        self.voted_for = None
        if self.role == "leader":
            self._step_down(f"saw term {term}")
        self.role = "follower"
        self._persist()

    def _become_leader(self, voters: set[str]) -> None:
        self.role = "leader"
        self.leader = self.name
        self.pending.clear()
        self.log.clear()
        self.commit_rv = self.applied
        now = time.monotonic()
        for name in self.members:
            if name != self.name:
                self.appended[name] = -1
                self.applied_by[name] = -1
                # Voters just answered: they count towards the first lease.
                self.last_ack[name] = now if name in voters else -1e9
        self._log(
            "info",
            f"raft.node: {self.name} elected leader {self.name} at term {self.term}",
        )
        self._events.put(True)
        self.cond.notify_all()

    def _step_down(self, why: str) -> None:
        if self.role != "leader":
            return
        self._log("warning", f"{self.name} stepped down to follower since {why}")
        self.role = "follower"
        self.leader = None
        self.log.clear()
        self.last_contact = time.monotonic()
        self._events.put(False)
        self.cond.notify_all()

    # ------------------------------------------------------------ replication

    def propose(self, entry: Entry) -> None:
        """Commit one entry as leader; raise :class:`EtcdError` without quorum."""
        with self.cond:
            if self.role != "leader":
                raise EtcdError(LEADER_CHANGED)
            rv = int(entry["rv"])
            if rv != self.commit_rv + 1:
                raise EtcdError(f"revision {rv} does not follow {self.commit_rv}")
            term = self.term
            self.log.append(entry)
            self.cond.notify_all()
            deadline = time.monotonic() + self.election_timeout
            while self._count(self.appended, rv) < self.majority:
                remaining = deadline - time.monotonic()
                if self.role != "leader" or self.term != term:
                    self._drop(entry)
                    raise EtcdError(LEADER_CHANGED)
                if remaining <= 0:
                    self._drop(entry)
                    self._step_down("a write could not reach a quorum")
                    raise EtcdError(TIMED_OUT)
                self.cond.wait(remaining)
            self.store.append(entry)
            self.commit_rv = self.applied = rv
            self.cond.notify_all()
            while self._count(self.applied_by, rv) < self.majority:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.role != "leader":
                    break
                self.cond.wait(remaining)

    def _drop(self, entry: Entry) -> None:
        if self.log and self.log[-1] is entry:
            self.log.pop()

    def _count(self, progress: dict[str, int], rv: int) -> int:
        own = self.log[-1]["rv"] if progress is self.appended and self.log else 0
        mine = max(self.applied, own)
        return (1 if mine >= rv else 0) + sum(
            1
            for name in self.members
            if name != self.name and progress.get(name, -1) >= rv
        )

    def _send_loop(self, peer: str) -> None:
        while not self._stopped.is_set():
            with self.cond:
                if peer not in self.members:
                    self._senders.discard(peer)
                    return
                if self.role != "leader":
                    self.cond.wait(HEARTBEAT)
                    continue
                url = self.members[peer]
                message = self._message_for(peer)
                term = self.term
            assert self.peers is not None
            timeout = PEER_TIMEOUT if message["type"] == "append" else 10
            try:
                answer = self.peers.send(url, message, timeout)
            except (OSError, ValueError):
                answer = None
            with self.cond:
                if answer is None or self.term != term:
                    if answer is None:
                        self.appended[peer] = -1
                    self.cond.wait(HEARTBEAT)
                    continue
                self._see_term(int(answer.get("term", 0)))
                if self.role != "leader":
                    continue
                self.last_ack[peer] = time.monotonic()
                self.appended[peer] = int(answer.get("appended", -1))
                self.applied_by[peer] = int(answer.get("applied", -1))
                self.cond.notify_all()
                if not self._behind(peer):
                    self.cond.wait(HEARTBEAT)

    def _behind(self, peer: str) -> bool:
        last = self.log[-1]["rv"] if self.log else self.commit_rv
        return (
            self.appended.get(peer, -1) < last
            or self.applied_by.get(peer, -1) < self.commit_rv
        )

    def _message_for(self, peer: str) -> Message:
        known = self.appended.get(peer, -1)
        applied = self.applied_by.get(peer, -1)
        base = {
            "term": self.term,
            "leader": self.name,
            "members": dict(self.members),
            "commit": self.commit_rv,
        }
        if known < 0:
            return {"type": "append", **base, "entries": []}
        oldest = self.log[0]["rv"] if self.log else self.commit_rv + 1
        if applied > self.commit_rv or (known < self.commit_rv and known + 1 < oldest):
            rv, entries = self.store.snapshot()
            return {"type": "snapshot", **base, "rv": rv, "entries": entries}
        entries = [e for e in self.log if e["rv"] > known]
        return {"type": "append", **base, "entries": entries}

    # --------------------------------------------------------------- handlers

    def handle(self, message: Message) -> Message:
        """Answer one peer message (the peer listener's handler)."""
        if self._stopped.is_set():
            # A stopped member answers nothing, not even on open connections.
            raise EtcdError("member stopped")
        kind = message.get("type")
        if kind == "append":
            return self._on_append(message)
        if kind == "snapshot":
            return self._on_snapshot(message)
        if kind == "vote":
            return self._on_vote(message)
        if kind == "status":
            return self._on_status()
        if kind == "readIndex":
            return self._on_read_index()
        if kind == "join":
            return self._on_join(message)
        return {"error": f"unknown message {kind!r}"}

    def _accept_leader(self, message: Message) -> bool:
        term = int(message["term"])
        if term < self.term:
            return False
        self._see_term(term)
        if self.role == "leader":
            return False
        self.role = "follower"
        if self.leader != message["leader"]:
            self.pending.clear()
            self.leader = str(message["leader"])
        self.last_contact = time.monotonic()
        members = message.get("members")
        if members and members != self.members:
            self.members = dict(members)
            self._persist()
            self._ensure_senders()
        return True

    def _on_append(self, message: Message) -> Message:
        with self._apply_lock:
            with self.cond:
                if not self._accept_leader(message):
                    return {"term": self.term, "ok": False}
                base = self.pending[-1]["rv"] if self.pending else self.applied
                for entry in message["entries"]:
                    if entry["rv"] == base + 1:
                        self.pending.append(entry)
                        base += 1
                    elif entry["rv"] > base + 1:
                        break
                commit = int(message["commit"])
                ready = [e for e in self.pending if e["rv"] <= commit]
                self.pending = [e for e in self.pending if e["rv"] > commit]
            for entry in ready:
                self.store.append(entry)
                self._apply(entry)
            with self.cond:
                if ready:
                    self.applied = max(self.applied, ready[-1]["rv"])
                    self.cond.notify_all()
                appended = self.pending[-1]["rv"] if self.pending else self.applied
                return {
                    "term": self.term,
                    "ok": True,
                    "appended": appended,
                    "applied": self.applied,
                }

    def _on_snapshot(self, message: Message) -> Message:
        with self._apply_lock:
            with self.cond:
                if not self._accept_leader(message):
                    return {"term": self.term, "ok": False}
                self.pending.clear()
            rv = int(message["rv"])
            self.store.replace(rv, message["entries"])
            self._install(rv, message["entries"])
            with self.cond:
                self.applied = rv
                self.cond.notify_all()
                return {"term": self.term, "ok": True, "appended": rv, "applied": rv}

    def _live_leader(self) -> bool:
        if self.role == "leader":
            return self.lease()
        fresh = time.monotonic() - self.last_contact < self.election_timeout
        return self.leader is not None and fresh

    def _on_vote(self, message: Message) -> Message:
        with self.cond:
            term = int(message["term"])
            candidate = str(message["candidate"])
            if term < self.term or self._live_leader():
                return {"term": self.term, "granted": False}
            self._see_term(term)
            granted = (
                self.voted_for in (None, candidate)
                and int(message["applied"]) >= self.applied
            )
            if granted:
                self.voted_for = candidate
                self.last_contact = time.monotonic()
                self._persist()
            return {"term": self.term, "granted": granted}

    def _on_status(self) -> Message:
        with self.cond:
            return {
                "name": self.name,
                "term": self.term,
                "applied": self.applied,
                "leader": self.leader,
                "leaderAlive": self._live_leader(),
            }

    def _on_read_index(self) -> Message:
        with self.cond:
            ok = self.role == "leader" and self.lease()
            return {"term": self.term, "ok": ok, "rv": self.commit_rv}

    def _on_join(self, message: Message) -> Message:
        with self.cond:
            if self.role != "leader":
                leader = self.members.get(self.leader or "")
                return {"ok": False, "leader": leader if self._live_leader() else None}
            name, url = str(message["name"]), str(message["peerURL"])
            for other, other_url in self.members.items():
                if other_url == url and other != name:
                    error = "etcdserver: Peer URLs already exists"
                    return {"ok": False, "error": error}
            if self.members.get(name) not in (None, url):
                return {"ok": False, "error": "etcdserver: member name already exists"}
            self._log("info", f"Adding member {name}={url} to etcd cluster")
            self.members[name] = url
            self.appended[name] = -1
            self.applied_by[name] = -1
            self.last_ack[name] = time.monotonic()
            self._persist()
            self._ensure_senders()
            rv, entries = self.store.snapshot()
            return {
                "ok": True,
                "term": self.term,
                "leader": self.name,
                "members": dict(self.members),
                "rv": rv,
                "entries": entries,
            }

    # ------------------------------------------------------ joining and reads

    def join(self, urls: list[str]) -> None:
        """Join the cluster through any member; raise EtcdError when refused."""
        assert self.peers is not None
        message = {"type": "join", "name": self.name, "peerURL": self.peer_url}
        tried: list[str] = []
        queue_ = list(urls)
        while queue_:
            url = queue_.pop(0)
            if url in tried:
                continue
            tried.append(url)
            try:
                answer = self.peers.send(url, message, 10)
            except (OSError, ValueError) as exc:
                self._log("info", f"Waiting to join etcd cluster at {url}: {exc}")
                continue
            if answer.get("ok"):
                with self._apply_lock:
                    rv = int(answer["rv"])
                    self.store.replace(rv, answer["entries"])
                    self._install(rv, answer["entries"])
                    with self.cond:
                        self.members = dict(answer["members"])
                        self.term = int(answer["term"])
                        self.leader = str(answer["leader"])
                        self.applied = self.commit_rv = rv
                        self.last_contact = time.monotonic()
                        self._persist()
                return
            if answer.get("error"):
                raise EtcdError(str(answer["error"]))
            if answer.get("leader"):
                queue_.insert(0, str(answer["leader"]))
        raise EtcdError("no leader among " + ", ".join(urls))

    def linearize(self, timeout: float) -> None:
        """Do etcd's ReadIndex: return once this member has what a quorum has."""
        deadline = time.monotonic() + timeout
        rv: int | None = None
        while rv is None:
            with self.cond:
                if self.role == "leader" and self.lease():
                    return
            url = self.leader_url()
            if url is not None and self.peers is not None:
                try:
                    answer = self.peers.send(url, {"type": "readIndex"}, PEER_TIMEOUT)
                except (OSError, ValueError):
                    answer = {}
                if answer.get("ok"):
                    rv = int(answer["rv"])
                    break
            if time.monotonic() >= deadline:
                raise EtcdError(TIMED_OUT)
            time.sleep(HEARTBEAT / 2)
        self.wait_applied(rv, max(0.0, deadline - time.monotonic()))

    def wait_applied(self, rv: int, timeout: float) -> None:
        """Wait until this member has applied ``rv``; EtcdError after ``timeout``."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.applied >= rv, timeout):
                raise EtcdError(TIMED_OUT)

    def wait_quorum(self, timeout: float) -> None:
        """Wait until this member leads or follows a live leader."""
        deadline = time.monotonic() + timeout
        while not self.has_quorum():
            if time.monotonic() >= deadline:
                raise EtcdError(TIMED_OUT)
            time.sleep(HEARTBEAT / 2)
