"""What an HA server's listener asks: its own replica, and the leader for writes.

:class:`ReplicatedAPI` answers every request from the server's own replica
but for writes, following kube-apiserver over etcd:

- discovery, ``/version``, health checks, watches and access reviews are
  local; so are reads with a ``resourceVersion`` (the watch cache serves
  those, even without quorum);
- a get or list with no ``resourceVersion`` is a quorum read: the member
  does a ReadIndex first, and without quorum the request fails after
  :data:`REQUEST_TIMEOUT` with etcd's ``etcdserver: request timed out``;
- a write on the leader commits there; on a follower it goes to the
  leader's API server (as the supervisor, impersonating the caller), and
  the follower answers only once it has applied what the leader committed,
  so a client reads its own writes from any server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from collections.abc import Mapping
from urllib.parse import parse_qs
from urllib.parse import urlsplit

from k3s_double.apiserver.authorization import GROUP as AUTHORIZATION
from k3s_double.apiserver.errors import storage_error
from k3s_double.apiserver.httpd import UNREACHABLE
from k3s_double.apiserver.httpd import Forwarder
from k3s_double.apiserver.response import Response
from k3s_double.apiserver.response import json_response
from k3s_double.apiserver.server import KubeAPI
from k3s_double.constants import GO_TRUE

from .raft import LEADER_CHANGED
from .raft import TIMED_OUT
from .raft import EtcdError
from .raft import Member


#: How long a request waits for quorum before it fails, in seconds. etcd's
#: own limit is 5 s plus two election timeouts; the double gives up sooner.
REQUEST_TIMEOUT = 3.0
#: Marks a write one server relays to the leader, so it is relayed once only.
FORWARDED = "x-k3s-double-forwarded"


def _resource(path: str) -> bool:
    segments = path.strip("/").split("/")
    if segments[:2] == ["api", "v1"]:
        return len(segments) > 2
    return len(segments) > 3 and segments[0] == "apis"


def _review(path: str) -> bool:
    """Whether a path is an access or rules review (never stored, never relayed)."""
    return path.strip("/").split("/")[:2] == ["apis", AUTHORIZATION]


def _failure(error: EtcdError) -> Response:
    return json_response(500, storage_error(str(error)).status())


class ReplicatedAPI:
    """A :class:`~k3s_double.apiserver.httpd.Backend` over a replicated store.

    :param api: the server's own API over its replica
    :param member: the server's etcd member
    :param forwarder: a :class:`Forwarder` to the API server on a leader's
        peer host (called with the host)
    """

    def __init__(
        self,
        api: KubeAPI,
        member: Member,
        forwarder: Callable[[str], Forwarder],
        *,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.api = api
        self.member = member
        self.forwarder = forwarder
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        self._forwarders: dict[str, Forwarder] = {}

    def handle(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        user: str,
        groups: tuple[str, ...] = (),
    ) -> Response:
        """Answer one request with the quorum rules of kube-apiserver on etcd."""
        split = urlsplit(target)
        if _review(split.path):
            # The authorizer answers reviews; etcd has no part in them.
            return self.api.handle(
                method, target, headers, body, user=user, groups=groups
            )
        if not _resource(split.path) or not self.api.storage.ready.is_set():
            return self.api.handle(method, target, headers, body, user=user)
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        method = method.upper()
        if method in ("GET", "HEAD"):
            watch = query.get("watch") in GO_TRUE or "/watch/" in split.path
            if not watch and not query.get("resourceVersion"):
                try:
                    self.member.linearize(self.request_timeout)
                except EtcdError as error:
                    return _failure(error)
            return self.api.handle(method, target, headers, body, user=user)
        try:
            self.member.wait_quorum(self.request_timeout)
        except EtcdError as error:
            return _failure(error)
        if self.member.is_leader:
            return self.api.handle(method, target, headers, body, user=user)
        if headers.get(FORWARDED):
            return _failure(EtcdError(LEADER_CHANGED))
        reply = self._relay(method, target, headers, body, user)
        if reply is None:
            return _failure(EtcdError(TIMED_OUT))
        if reply.status < 500:
            try:
                self.member.linearize(self.request_timeout)
            except EtcdError as error:
                return _failure(error)
        return reply

    def _relay(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        user: str,
    ) -> Response | None:
        """Send a write to the leader; look for the leader again while it fails."""
        deadline = time.monotonic() + self.request_timeout
        while True:
            if self.member.is_leader:
                # This member won the election while the write waited.
                return self.api.handle(method, target, headers, body, user=user)
            url = self.member.leader_url()
            if url is not None:
                host = urlsplit(url).hostname or ""
                with self._lock:
                    forwarder = self._forwarders.get(host)
                    if forwarder is None:
                        forwarder = self._forwarders[host] = self.forwarder(host)
                sent = {**headers, FORWARDED: "1"}
                reply = self._ask(forwarder, url, method, target, sent, body, user)
                if reply is not None and UNREACHABLE.encode() not in reply.body:
                    return reply
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def _ask(
        self,
        forwarder: Forwarder,
        url: str,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        user: str,
    ) -> Response | None:
        """One relayed request; None when the leader is lost before it answers."""
        answers: list[Response] = []
        done = threading.Event()

        def call() -> None:
            answers.append(forwarder.handle(method, target, headers, body, user=user))
            done.set()

        threading.Thread(target=call, daemon=True).start()
        # A leader that died mid-request never answers: stop waiting as soon
        # as this member notices, and look for the new one.
        while not done.wait(0.05) and self.member.leader_url() == url:
            pass
        return answers[0] if answers else None
