"""Readiness probes of the containers the kubelet runs: tcpSocket, httpGet, exec.

A container with a ``readinessProbe`` is not ready when its process starts
but once the probe succeeds (``successThreshold`` times in a row), and not
ready again after ``failureThreshold`` failures, as the kubelet's prober
does; the first probe runs after ``initialDelaySeconds``, then every
``periodSeconds`` (the kubelet's defaults: 0, 10, 1 and 3; a probe times
out after ``timeoutSeconds``, default 1). The pod shares the node's network
in the double, so sockets are probed on 127.0.0.1. A container without a
probe is ready when it starts. Liveness and startup probes are not run.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import threading
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any

from . import children


Obj = dict[str, Any]


def _port(value: object, container: Obj) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    for port in container.get("ports") or ():
        if port.get("name") == text:
            return int(port["containerPort"])
    raise ValueError(f"port {text!r} is not a port of container {container['name']}")


def probe_once(probe: Obj, container: Obj, env: Mapping[str, str]) -> bool:
    """Run one probe; whether it succeeded."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "tcpSocket" in probe:
            port = _port(probe["tcpSocket"].get("port"), container)
            with socket.create_connection(("127.0.0.1", port), timeout=timeout):
                return True
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = _port(get.get("port"), container)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            try:
                connection.request("GET", get.get("path") or "/")
                return 200 <= connection.getresponse().status < 400
            finally:
                connection.close()
        if "exec" in probe:
            argv = list(probe["exec"].get("command") or ())
            process = children.popen(
                argv,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                children.wait(process)
                return False
            return children.wait(process) == 0
    except (OSError, ValueError, http.client.HTTPException):
        return False
    return False


def follow(
    probe: Obj,
    container: Obj,
    env: Mapping[str, str],
    running: Callable[[], bool],
    stop: threading.Event,
    report: Callable[[bool], None],
) -> None:
    """Probe while ``running()``; call ``report`` when readiness changes."""
    period = float(probe.get("periodSeconds") or 10)
    successes_needed = int(probe.get("successThreshold") or 1)
    failures_allowed = int(probe.get("failureThreshold") or 3)
    ready, successes, failures = False, 0, 0
    if stop.wait(float(probe.get("initialDelaySeconds") or 0)):
        return
    while running() and not stop.is_set():
        if probe_once(probe, container, env):
            successes, failures = successes + 1, 0
            if not ready and successes >= successes_needed:
                ready = True
                report(True)
        else:
            successes, failures = 0, failures + 1
            if ready and failures >= failures_allowed:
                ready = False
                report(False)
        if stop.wait(period):
            return
