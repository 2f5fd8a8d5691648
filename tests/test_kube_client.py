from __future__ import annotations

import email.utils
import http.server
import json
import re
import threading
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from pytest_k3s.kube.client import failure
from pytest_k3s.kube.client import namespace_name
from pytest_k3s.kube.client import node_roles
from pytest_k3s.kube.client import readyz


DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("test_create", "test-create-abc123"),
        ("test_x[A very [long] Name/]", "test-x-a-very-long-name-abc123"),
        ("___", "test-abc123"),
        ("t" * 100, "t" * 56 + "-abc123"),
        ("test_" + "a" * 52 + "_b", "test-" + "a" * 51 + "-abc123"),
    ],
)
def test_namespace_names_are_valid_labels(text: str, expected: str) -> None:
    name = namespace_name(text, suffix="abc123")
    assert name == expected
    assert len(name) <= 63
    assert DNS1123_LABEL.match(name)


def test_node_roles_come_from_role_labels() -> None:
    labels = {
        "node-role.kubernetes.io/control-plane": "true",
        "node-role.kubernetes.io/master": "true",
        "kubernetes.io/hostname": "n",
    }
    assert node_roles(labels) == ("control-plane", "master")
    assert node_roles(None) == ()


class Answers:
    """A REST client that answers ``/readyz`` with a status, or fails."""

    def __init__(self, status: int | None) -> None:
        self.status = status

    def request(self, method: str, url: str, **options: object) -> object:
        if self.status is None:
            raise ConnectionRefusedError("connection refused")
        return type("Response", (), {"status": self.status})()


class Api:
    def __init__(self, status: int | None) -> None:
        self.configuration = type("Configuration", (), {"host": "https://x:1"})()
        self.rest_client = Answers(status)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (200, None),
        (500, "/readyz answered HTTP 500"),
        (None, "ConnectionRefusedError: connection refused"),
    ],
)
def test_readyz_says_why_the_api_server_is_not_ready(
    status: int | None, reason: str | None
) -> None:
    api: Any = Api(status)
    assert readyz(api) == reason


def test_failures_read_as_the_api_says_them() -> None:
    assert failure(ApiException(status=404, reason="Not Found")) == "HTTP 404 Not Found"
    assert failure(TimeoutError("timed out")) == "TimeoutError: timed out"


class _Server(http.server.ThreadingHTTPServer):
    """A plain-HTTP API server stand-in that answers from a script."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.answers = answers
        self.seen: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def client(self) -> Any:
        from pytest_k3s.kube.client import api_client

        config = {
            "clusters": [{"name": "c", "cluster": {"server": self.url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        }
        return api_client(config)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append(f"{self.command} {self.path}")
        status, headers, body = self.server.answers.pop(0)
        headers = dict(headers)
        self.date = headers.pop("Date", None)
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer
    date: str | None = None

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The scripted Date (a server clock of its own), else the real one."""
        return self.date or super().date_time_string(timestamp)

    def log_message(self, *args: object) -> None:
        pass


INITIALIZING = (
    429,
    {"Retry-After": "0"},
    json.dumps(
        {
            "kind": "Status",
            "status": "Failure",
            "message": "storage is (re)initializing",
            "reason": "TooManyRequests",
            "code": 429,
        }
    ).encode(),
)


def test_a_429_after_a_restart_is_retried_for_every_verb() -> None:
    from kubernetes.client import CoreV1Api
    from kubernetes.client import V1ConfigMap
    from kubernetes.client import V1ObjectMeta

    created = json.dumps(
        {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "x"}}
    ).encode()
    server = _Server([INITIALIZING, INITIALIZING, (201, {}, created)])
    try:
        core = CoreV1Api(server.client())
        found = core.create_namespaced_config_map(
            "default", V1ConfigMap(metadata=V1ObjectMeta(name="x"))
        )
    finally:
        server.shutdown()
    assert found.metadata.name == "x"
    assert server.seen == ["POST /api/v1/namespaces/default/configmaps"] * 3


def test_a_429_that_lasts_is_the_callers_answer() -> None:
    from kubernetes.client import CoreV1Api

    server = _Server([INITIALIZING] * 20)
    try:
        with pytest.raises(ApiException) as caught:
            CoreV1Api(server.client()).list_node()
    finally:
        server.shutdown()
    assert caught.value.status == 429
    assert len(server.seen) == 11, "the first try and client-go's ten retries"


def test_only_a_429_is_sent_again_not_a_503_that_says_when() -> None:
    from kubernetes.client import CoreV1Api
    from kubernetes.client import V1ConfigMap
    from kubernetes.client import V1ObjectMeta

    unavailable = (503, {"Retry-After": "0"}, b'{"kind": "Status", "code": 503}')
    server = _Server([unavailable, unavailable])
    try:
        with pytest.raises(ApiException) as caught:
            CoreV1Api(server.client()).create_namespaced_config_map(
                "default", V1ConfigMap(metadata=V1ObjectMeta(name="x"))
            )
    finally:
        server.shutdown()
    assert caught.value.status == 503
    assert len(server.seen) == 1, "a POST the server may have processed"


def test_heartbeats_are_compared_in_the_engine_hosts_time() -> None:
    from pytest_k3s.kube.client import nodes_ready

    behind = time.time() - 600  # a remote engine whose clock is 10 min behind
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(behind))
    node = {
        "metadata": {"name": "n"},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True", "lastHeartbeatTime": stamp}
            ]
        },
    }
    body = json.dumps({"kind": "NodeList", "items": [node]}).encode()
    date = email.utils.formatdate(behind, usegmt=True)
    server = _Server([(200, {"Date": date}, body), (200, {}, body)])
    try:
        api = server.client()
        # Started 5 s ago by our clock: a fresh heartbeat in the host's time.
        assert nodes_ready(api, {"n"}, heartbeat_after=time.time() - 5) == (None, None)
        # With the real Date (no skew) the heartbeat is ten minutes old.
        reason, _ = nodes_ready(api, {"n"}, heartbeat_after=time.time() - 5)
    finally:
        server.shutdown()
    assert reason == "node n is not Ready"


def test_a_skew_under_the_dates_resolution_is_none() -> None:
    from pytest_k3s.kube.client import server_skew

    now = 1_800_000_000.0
    assert server_skew({"Date": email.utils.formatdate(now + 1, usegmt=True)}, now) == 0
    behind = {"Date": email.utils.formatdate(now - 90, usegmt=True)}
    assert server_skew(behind, now) == -89.5, "Date cuts half a second on average"
    assert server_skew({}, now) == 0
    assert server_skew({"Date": "yesterday"}, now) == 0


def test_a_heartbeat_in_the_second_the_start_began_may_be_the_old_runs() -> None:
    # Seen in CI: an agent restarted within a second still showed the old
    # run's heartbeat, stamped the second the start began; it counted, and
    # restart_node returned before the node had started at all.
    from pytest_k3s.kube.client import nodes_ready

    began = float(int(time.time())) + 0.4

    def listing(heartbeat: float) -> bytes:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(heartbeat))
        condition = {"type": "Ready", "status": "True", "lastHeartbeatTime": stamp}
        node = {"metadata": {"name": "n"}, "status": {"conditions": [condition]}}
        return json.dumps({"kind": "NodeList", "items": [node]}).encode()

    server = _Server([(200, {}, listing(began - 0.3)), (200, {}, listing(began + 1))])
    try:
        api = server.client()
        assert (
            nodes_ready(api, {"n"}, heartbeat_after=began)[0] == "node n is not Ready"
        )
        assert nodes_ready(api, {"n"}, heartbeat_after=began) == (None, None)
    finally:
        server.shutdown()
