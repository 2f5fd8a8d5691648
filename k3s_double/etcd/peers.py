"""Peer traffic on 2380: mutual TLS, one JSON message per request.

Members talk as etcd's rafthttp does, only simpler: every message is a
``POST /raft`` with a JSON body and a JSON answer. Both ends authenticate
with certificates the cluster's server CA issued for client and server use
(``server/tls/etcd/peer-server-client.crt``): a connection without one, or
with one another CA signed, fails the TLS handshake, so an unauthenticated
peer never gets a message in. Only servers hold the CA's key (a joining
server gets it with the server token), so only servers can be peers.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from k3s_double.apiserver.httpd import Upstream


Message = dict[str, Any]
Handler = Callable[[Message], Message]
PEER_PORT = 2380


def peer_contexts(
    ca_pem: bytes, cert_file: str, key_file: str
) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """TLS for the peer listener and for peer requests, both requiring the CA."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    server.load_verify_locations(cadata=ca_pem.decode())
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_cert_chain(cert_file, key_file)
    client.load_verify_locations(cadata=ca_pem.decode())
    # Peers are dialled by IP and known by their member entry, as in etcd
    # without --peer-cert-allowed-hostname; the CA check authenticates them.
    client.check_hostname = False
    return server, client


class _PeerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: PeerServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            message = json.loads(self.rfile.read(length) or b"{}")
            reply = self.server.handler(message)
            status = 200
        except Exception as exc:  # a bad message must not kill the listener
            reply, status = {"error": repr(exc)}, 500
        body = json.dumps(reply, separators=(",", ":")).encode()
        self.send_response(status)
        if status != 200:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class PeerServer(ThreadingHTTPServer):
    """The peer listener: TLS with client certificates, messages to ``handler``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], context: ssl.SSLContext, handler: Handler
    ) -> None:
        self.context = context
        self.handler = handler
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        super().__init__(address, _PeerHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake in the connection's own thread; refuse peers without a cert."""
        request.settimeout(5)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        tls.settimeout(None)
        with self._lock:
            self._open.add(tls)
        try:
            super().finish_request(tls, client_address)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(tls)
            with contextlib.suppress(OSError):
                tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay silent: stderr carries only k3s-style log lines."""
        return

    def close(self) -> None:
        """Stop listening and drop every open connection, as a dead process does."""
        self.shutdown()
        self.server_close()
        with self._lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(2)

    def start(self) -> None:
        """Serve in a daemon thread."""
        threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        ).start()


class Peers:
    """Requests to other members by peer URL, over pooled connections."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, float], Upstream] = {}

    def send(self, url: str, message: Message, timeout: float) -> Message:
        """Send one message and return the answer; OSError when unreachable."""
        with self._lock:
            upstream = self._pools.get((url, timeout))
            if upstream is None:
                parts = urlsplit(url)
                upstream = Upstream(
                    parts.hostname or "", parts.port or PEER_PORT, self.context, timeout
                )
                self._pools[(url, timeout)] = upstream
        body = json.dumps(message, separators=(",", ":")).encode()
        try:
            status, data = upstream.call(
                "POST", "/raft", body, {"Content-Type": "application/json"}
            )
        except ssl.SSLError as exc:
            raise OSError(str(exc)) from exc
        if status != 200:
            raise OSError(f"peer {url} answered {status}: {data[:200]!r}")
        answer: Message = json.loads(data)
        return answer
