"""Readiness probes of the double's running containers, in process."""

from __future__ import annotations

import http.server
import socket
import threading
from typing import Any

from k3s_double.node import probes


CONTAINER = {"name": "web", "ports": [{"name": "http", "containerPort": 0}]}


def _serving() -> tuple[http.server.HTTPServer, dict[str, Any]]:
    server = http.server.HTTPServer(
        ("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    container = {"name": "web", "ports": [{"name": "http", "containerPort": port}]}
    return server, container


def test_socket_and_http_probes_succeed_only_where_something_listens() -> None:
    server, container = _serving()
    try:
        assert probes.probe_once({"tcpSocket": {"port": "http"}}, container, {})
        assert probes.probe_once(
            {"httpGet": {"port": "http", "path": "/"}}, container, {}
        )
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert not probes.probe_once({"tcpSocket": {"port": port}}, CONTAINER, {})
    assert not probes.probe_once({"tcpSocket": {"port": "nope"}}, CONTAINER, {})


def test_an_exec_probe_is_its_exit_code() -> None:
    assert probes.probe_once({"exec": {"command": ["true"]}}, CONTAINER, {})
    assert not probes.probe_once({"exec": {"command": ["false"]}}, CONTAINER, {})
    slow = {"exec": {"command": ["sleep", "5"]}, "timeoutSeconds": 0.2}
    assert not probes.probe_once(slow, CONTAINER, {})


def test_readiness_follows_the_probe_with_its_thresholds() -> None:
    server, container = _serving()
    seen: list[bool] = []
    stop = threading.Event()
    probe = {
        "tcpSocket": {"port": "http"},
        "periodSeconds": 0.05,
        "failureThreshold": 2,
    }
    changed = threading.Event()

    def report(ready: bool) -> None:
        seen.append(ready)
        changed.set()

    thread = threading.Thread(
        target=probes.follow,
        args=(probe, container, {}, lambda: True, stop, report),
        daemon=True,
    )
    thread.start()
    assert changed.wait(5)
    changed.clear()
    server.shutdown()
    server.server_close()
    assert changed.wait(5)
    stop.set()
    thread.join(5)
    assert seen == [True, False]
