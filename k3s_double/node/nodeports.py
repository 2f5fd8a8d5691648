"""kube-proxy's NodePorts, as a stand-in: every node answers on every NodePort.

Real k3s programs each node (iptables) so that a Service's ``nodePort``
reaches one of its ready endpoints from any node. The double's pods run
nothing, so each node listens on the TCP NodePorts of the Services of type
NodePort and LoadBalancer itself, and answers an HTTP request with one line,
``<namespace>/<service> via <node>``: enough for a client outside the
cluster (a published port, a load balancer in front of the nodes) to see
that the port answers, and which node answered. Ports come and go with the
Services (polled every half second). UDP NodePorts are not served.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any

from k3s_double.apiserver.httpd import Upstream

from .runtime import Runtime


POLL_SECONDS = 0.5


class NodePorts:
    """The listeners of one node, one per TCP NodePort in use."""

    def __init__(self, rt: Runtime, node_name: str, api: Upstream) -> None:
        self.rt = rt
        self.node_name = node_name
        self.api = api
        self.listeners: dict[int, socket.socket] = {}

    def start(self) -> None:
        """Follow the Services in a daemon thread."""
        threading.Thread(target=self.rt.guard(self._run), daemon=True).start()

    def _run(self) -> None:
        while True:
            wanted = self._wanted()
            if wanted is not None:
                self._sync(wanted)
            self.rt.sleep(POLL_SECONDS)

    def _wanted(self) -> dict[int, str] | None:
        try:
            status, data = self.api.call(
                "GET", "/api/v1/services", b"", {"Accept": "application/json"}
            )
        except OSError:
            return None
        if status != 200:
            return None
        wanted: dict[int, str] = {}
        try:
            items: list[dict[str, Any]] = json.loads(data).get("items") or []
        except ValueError:
            return None
        for service in items:
            spec = service.get("spec") or {}
            if spec.get("type") not in ("NodePort", "LoadBalancer"):
                continue
            meta = service.get("metadata") or {}
            for port in spec.get("ports") or ():
                if port.get("nodePort") and port.get("protocol", "TCP") == "TCP":
                    wanted[int(port["nodePort"])] = (
                        f"{meta['namespace']}/{meta['name']}"
                    )
        return wanted

    def _sync(self, wanted: dict[int, str]) -> None:
        for port in set(self.listeners) - set(wanted):
            listener = self.listeners.pop(port)
            # close() alone leaves a thread blocked in accept() listening.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for port, service in wanted.items():
            if port in self.listeners:
                continue
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind(("0.0.0.0", port))
                listener.listen(64)
            except OSError as exc:
                listener.close()
                self.rt.log.error(f"cannot serve NodePort {port}: {exc}")
                continue
            self.listeners[port] = listener
            reply = f"{service} via {self.node_name}\n".encode()
            threading.Thread(
                target=self._serve, args=(listener, reply), daemon=True
            ).start()

    @staticmethod
    def _serve(listener: socket.socket, reply: bytes) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the Service is gone
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                        + f"Content-Length: {len(reply)}\r\n".encode()
                        + b"Connection: close\r\n\r\n"
                        + reply
                    )
                except OSError:
                    pass
