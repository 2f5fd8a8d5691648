"""Reaching workloads: targets, ports and exit codes resolved as kubectl does.

The API is a scripted local HTTP server (``tests.test_kube_client``); the
streams themselves run against the double in ``tests/test_workloads.py``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import pytest

from pytest_k3s.errors import StreamError
from pytest_k3s.kube import streams
from tests.test_kube_client import _Server


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("web", ("pod", "web")),
        ("pod/web", ("pod", "web")),
        ("svc/web", ("service", "web")),
        ("service/web", ("service", "web")),
        ("deploy/web", ("deployment", "web")),
        ("deployment/web", ("deployment", "web")),
    ],
)
def test_targets_are_named_as_kubectl_names_them(
    target: str, expected: tuple[str, str]
) -> None:
    assert streams.parse_target(target) == expected


def test_an_unknown_kind_of_target_says_what_is_accepted() -> None:
    with pytest.raises(StreamError, match="is not pod/NAME, svc/NAME"):
        streams.parse_target("job/web")


def test_the_exit_code_comes_from_the_error_channels_status() -> None:
    failure = {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }
    assert streams._exit_code(json.dumps({"status": "Success"}), ["x"], "p") == 0
    assert streams._exit_code(json.dumps(failure), ["x"], "p") == 3
    not_started = {
        "status": "Failure",
        "message": 'exec: "nope": executable file not found in $PATH',
    }
    with pytest.raises(StreamError, match=r"could not run: exec: .nope."):
        streams._exit_code(json.dumps(not_started), ["nope"], "default/p")
    with pytest.raises(StreamError, match="without an exit status"):
        streams._exit_code("", ["x"], "default/p")


def _pod(name: str, *, ready: bool, created: str, phase: str = "Running") -> Any:
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"app": "web"},
            "creationTimestamp": created,
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "python:3.12-slim",
                    "ports": [{"name": "http", "containerPort": 8080}],
                }
            ]
        },
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


SERVICE = {
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "selector": {"app": "web"},
        "ports": [{"name": "front", "port": 80, "targetPort": "http"}],
    },
}


def _answers(*bodies: Any) -> list[tuple[int, dict[str, str], bytes]]:
    return [(200, {}, json.dumps(body).encode()) for body in bodies]


def test_a_service_port_goes_to_its_named_target_port_on_the_newest_ready_pod() -> None:
    pods = {
        "kind": "PodList",
        "items": [
            _pod("web-old", ready=True, created="2026-01-01T00:00:00Z"),
            _pod("web-new", ready=True, created="2026-01-02T00:00:00Z"),
            _pod("web-starting", ready=False, created="2026-01-03T00:00:00Z"),
        ],
    }
    server = _Server(_answers(SERVICE, pods, SERVICE, pods))
    try:
        api = server.client()
        by_number = streams.resolve(api, "service", "web", 80, "default")
        by_name = streams.resolve(api, "service", "web", "front", "default")
    finally:
        server.shutdown()
    assert by_number == by_name == ("web-new", 8080)
    assert server.seen[1].startswith("GET /api/v1/namespaces/default/pods?")
    assert "labelSelector=app%3Dweb" in server.seen[1]


def test_a_service_without_a_ready_pod_or_the_port_says_so() -> None:
    pods = {
        "kind": "PodList",
        "items": [_pod("web-1", ready=False, created="2026-01-01T00:00:00Z")],
    }
    server = _Server(_answers(SERVICE, pods, SERVICE))
    try:
        api = server.client()
        with pytest.raises(StreamError, match="no running, ready pod"):
            streams.resolve(api, "service", "web", 80, "default")
        with pytest.raises(StreamError, match="has no port 81; it has front:80"):
            streams.resolve(api, "service", "web", 81, "default")
    finally:
        server.shutdown()


def test_a_pods_named_port_is_its_container_port() -> None:
    pod = _pod("web-1", ready=True, created="2026-01-01T00:00:00Z")
    server = _Server(_answers(pod, pod))
    try:
        api = server.client()
        assert streams.resolve(api, "pod", "web-1", "http", "default") == (
            "web-1",
            8080,
        )
        with pytest.raises(StreamError, match="no container port named 'x'"):
            streams.resolve(api, "pod", "web-1", "x", "default")
    finally:
        server.shutdown()


def test_a_missing_target_is_named() -> None:
    status = b'{"kind": "Status", "code": 404, "reason": "NotFound"}'
    missing: tuple[int, dict[str, str], bytes] = (404, {}, status)
    server = _Server([missing])
    try:
        with pytest.raises(StreamError, match="deployment default/web not found"):
            streams.resolve(server.client(), "deployment", "web", 80, "default")
    finally:
        server.shutdown()


class _Forward:
    """What the client library's ``portforward`` returns, over a socketpair.

    The far end echoes what it is sent, as a pod's server would answer.
    """

    def __init__(self) -> None:
        self.near, far = socket.socketpair()
        self.closed = False

        def echo() -> None:
            with far:
                while data := far.recv(65536):
                    far.sendall(data)

        threading.Thread(target=echo, daemon=True).start()

    def socket(self, port: int) -> socket.socket:
        return self.near

    def error(self, port: int) -> None:
        return None

    def close(self) -> None:
        self.closed = True
        self.near.close()


@pytest.fixture
def forwarding(monkeypatch: pytest.MonkeyPatch) -> list[_Forward]:
    from kubernetes import client as k8s
    from kubernetes import stream

    opened: list[_Forward] = []

    def portforward(*args: object, **kwargs: object) -> _Forward:
        opened.append(_Forward())
        return opened[-1]

    monkeypatch.setattr(stream, "portforward", portforward)
    monkeypatch.setattr(streams, "resolve", lambda *args: ("web-1", 8080))
    monkeypatch.setattr(streams, "REQUEST_TIMEOUT", 0.5)
    monkeypatch.setattr(k8s.CoreV1Api, "connect_get_namespaced_pod_portforward", None)
    return opened


def _client() -> Any:
    from kubernetes import client as k8s

    return k8s.ApiClient(k8s.Configuration())


def test_a_forward_relays_each_connection_and_closes_it_with_the_block(
    forwarding: list[_Forward],
) -> None:
    with streams.forward(_client, "pod/web-1", 8080, namespace="default") as where:
        with socket.create_connection((where.host, where.port), timeout=5) as one:
            one.sendall(b"ping")
            assert one.recv(4) == b"ping"
            left_open = socket.create_connection((where.host, where.port), timeout=5)
            left_open.sendall(b"x")
            assert left_open.recv(1) == b"x"
        began = time.monotonic()
    assert time.monotonic() - began < 2, "close() waits for its connections"
    assert left_open.recv(1) == b"", "an open connection is ended by close()"
    left_open.close()
    assert all(f.closed for f in forwarding)
    with pytest.raises(OSError):
        socket.create_connection((where.host, where.port), timeout=2)


def test_a_connection_that_cannot_be_forwarded_is_closed_and_logged(
    forwarding: list[_Forward],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from kubernetes import stream

    stuck = threading.Event()

    def hangs(*args: object, **kwargs: object) -> _Forward:
        stuck.wait(30)  # a handshake the API server never answers
        return _Forward()

    monkeypatch.setattr(stream, "portforward", hangs)
    with (
        streams.forward(_client, "svc/web", 80, namespace="default") as where,
        socket.create_connection((where.host, where.port), timeout=5) as client,
    ):
        began = time.monotonic()
        assert client.recv(1) == b"", "the client sees a closed connection"
        assert time.monotonic() - began < 3, "never a hang"
    stuck.set()
    assert "did not open it within" in caplog.text


def test_a_taken_local_port_is_a_clear_error(forwarding: list[_Forward]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(StreamError, match=f"cannot listen on .*:{port}"):
            streams.PortForward(
                _client, "pod/web-1", 8080, namespace="default", local_port=port
            )


def test_an_exec_that_keeps_running_is_stopped_at_its_deadline() -> None:
    quiet, _other = socket.socketpair()
    ws: Any = type("WS", (), {})()
    ws.sock = type("Sock", (), {"sock": quiet})()
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        streams._read_frames(ws, time.monotonic() + 0.3)
    assert time.monotonic() - began < 2
    quiet.close()
    _other.close()


def test_a_deployments_whole_selector_picks_its_pods() -> None:
    from kubernetes.client import V1LabelSelector
    from kubernetes.client import V1LabelSelectorRequirement

    selector = V1LabelSelector(
        match_labels={"app": "web"},
        match_expressions=[
            V1LabelSelectorRequirement(key="tier", operator="In", values=["a", "b"]),
            V1LabelSelectorRequirement(key="canary", operator="DoesNotExist"),
        ],
    )
    assert streams._selector(selector) == "app=web,tier in (a,b),!canary"
    only_expressions = V1LabelSelector(
        match_expressions=[V1LabelSelectorRequirement(key="app", operator="Exists")]
    )
    assert streams._selector(only_expressions) == "app", "never every pod"
