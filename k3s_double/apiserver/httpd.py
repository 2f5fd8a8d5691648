"""The HTTPS listener on 6443 and the small HTTPS client nodes use.

One port serves two things, as k3s' supervisor does: the k3s join endpoints
(``/cacerts``, ``/ping`` and ``/v1-k3s/...``, authenticated by the join token,
handled by a :class:`Supervisor`) and the Kubernetes API (authenticated by a
client certificate signed by the cluster's client CA, handled by a
:class:`Backend`). A request for the API without a valid client certificate
gets a 401 ``Status``. Connections are HTTP/1.1 keep-alive; a response with a
``stream`` is sent with chunked transfer encoding.

A client certificate in the ``system:masters`` group may send
``Impersonate-User`` (as with the real API): joining servers use that to
forward requests on behalf of their own clients. The backend learns the
user and its groups: the certificate's CN and O, or the impersonated user
with its ``Impersonate-Group`` headers.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import queue
import socket
import ssl
import threading
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any
from typing import Protocol

from .response import Response


class Backend(Protocol):
    """Anything that answers Kubernetes API requests like ``KubeAPI.handle``."""

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
        """Answer one request made as ``user``, a member of ``groups``."""
        ...


class Supervisor(Protocol):
    """Answers the k3s join endpoints; gets the Basic-auth credentials."""

    def supervise(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        credentials: tuple[str, str] | None,
    ) -> Response:
        """Answer one join request; ``credentials`` come from Basic auth."""
        ...


def status_reply(code: int, reason: str, message: str) -> Response:
    """A ``metav1.Status`` failure, as the API server sends it."""
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return Response(code, json.dumps(status).encode())


#: How a :class:`Forwarder` says the server it relays to did not answer.
UNREACHABLE = "error trying to reach the server"
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "te",
    "trailer",
    "upgrade",
}


def _subject(cert: Mapping[str, Any]) -> tuple[str, list[str]]:
    cn = ""
    orgs: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    return cn, orgs


def send_response(handler: BaseHTTPRequestHandler, reply: Response) -> None:
    """Write ``reply`` as the API server would: whole, or chunked for a watch."""
    if reply.takeover is not None:
        handler.close_connection = True
        handler.wfile.flush()
        reply.takeover(handler.connection, handler.rfile)  # type: ignore[arg-type]
        return
    stream = reply.stream
    handler.send_response(reply.status)
    handler.send_header("Content-Type", reply.content_type)
    handler.send_header("Audit-Id", "00000000-0000-0000-0000-000000000000")
    handler.send_header("Cache-Control", "no-cache, private")
    for name, value in reply.headers.items():
        handler.send_header(name, value)
    if stream is None:
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(reply.body)
        handler.wfile.flush()
        return
    send_chunked(handler, stream)


def send_chunked(handler: BaseHTTPRequestHandler, stream: Iterable[bytes]) -> None:
    """End the headers and write ``stream`` chunk by chunk as it comes.

    A client that goes away ends the connection; the stream is closed
    either way (a watch then unsubscribes).
    """
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    handler.wfile.flush()
    try:
        for chunk in stream:
            if chunk:
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                handler.wfile.flush()
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()
    except OSError:
        handler.close_connection = True
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "k3s"
    sys_version = ""
    server: APIServer

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log_request_line(format % args)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        body = self._read_body()
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = self.path.split("?", 1)[0]
        try:
            reply = self.server.route(
                self.command, self.path, path, headers, body, self
            )
        except Exception as exc:  # a bug in a handler must not kill the listener
            self.server.log_error(f"handler failed for {self.command} {path}: {exc!r}")
            reply = status_reply(500, "InternalError", f"internal error: {exc}")
        send_response(self, reply)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class TLSServer(ThreadingHTTPServer):
    """A threading HTTPS listener: the API server's, and a node's kubelet's.

    Subclasses set ``context`` (the server's TLS context) before binding.
    """

    daemon_threads = True
    allow_reuse_address = True
    context: ssl.SSLContext

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Do the TLS handshake in the connection's thread, then serve it."""
        # The TLS handshake happens here, in the connection's own thread, so a
        # slow or broken client never blocks the accept loop.
        request.settimeout(30)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        tls.settimeout(None)
        try:
            super().finish_request(tls, client_address)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay silent: stderr carries only k3s-style log lines."""
        return

    def start(self) -> threading.Thread:
        """Run the accept loop in a daemon thread."""
        thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        thread.start()
        return thread


class APIServer(TLSServer):
    """HTTPS on one port: the supervisor endpoints and the Kubernetes API."""

    request_queue_size = 128

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        backend: Backend,
        supervisor: Supervisor,
        *,
        log: Callable[[str, str], None],
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.context = context
        self.backend = backend
        self.supervisor = supervisor
        self._log = log
        self.ready = ready
        super().__init__(("", port), _Handler)

    def server_bind(self) -> None:
        """Bind dual-stack where the kernel offers it, else IPv4 only."""
        if socket.has_ipv6:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", self.server_address[1]))
            except OSError:
                sock.close()
            else:
                self.socket.close()
                self.socket = sock
                self.address_family = socket.AF_INET6
                self.server_address = sock.getsockname()[:2]
                self.server_name = "k3s"
                self.server_port = int(self.server_address[1])
                return
        super().server_bind()

    def log_request_line(self, text: str) -> None:
        """Log a request line at debug level."""
        self._log("debug", text)

    def log_error(self, text: str) -> None:
        """Log a server error at error level."""
        self._log("error", text)

    def route(
        self,
        method: str,
        target: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        handler: _Handler,
    ) -> Any:
        """Pick the supervisor or the API, authenticating for each."""
        if path in ("/cacerts", "/ping", "/db/info") or path.startswith("/v1-k3s/"):
            return self.supervisor.supervise(
                method, path, headers, body, _basic_auth(headers)
            )
        peer = handler.connection.getpeercert()
        if not peer:
            return status_reply(401, "Unauthorized", "Unauthorized")
        user, groups = _subject(peer)
        impersonate = headers.get("impersonate-user")
        if impersonate and "system:masters" in groups:
            # The impersonated user has the groups asked for with it, only.
            user = impersonate
            groups = handler.headers.get_all("Impersonate-Group") or []
        if not self.ready():
            if path in ("/readyz", "/livez", "/healthz"):
                return Response(
                    500,
                    b"[-]etcd failed: reason withheld\nreadyz check failed\n",
                    "text/plain; charset=utf-8",
                )
            return status_reply(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            )
        return self.backend.handle(
            method, target, headers, body, user=user, groups=tuple(groups)
        )


def _basic_auth(headers: Mapping[str, str]) -> tuple[str, str] | None:
    auth = headers.get("authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(auth[6:].strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def server_context(
    cert_file: str, key_file: str, client_ca_pem: bytes
) -> ssl.SSLContext:
    """TLS for the listener: client certificates optional, checked against the CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cadata=client_ca_pem.decode())
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(["http/1.1"])
    return context


def client_context(
    ca_pem: bytes | None, cert_file: str = "", key_file: str = ""
) -> ssl.SSLContext:
    """TLS for a node's requests; without a CA it trusts anything (for /cacerts)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_pem is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cadata=ca_pem.decode())
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


class Upstream:
    """A small pooled HTTPS client for one ``https://host:port`` endpoint."""

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext, timeout: float = 30
    ) -> None:
        self.host = host
        self.port = port
        self.context = context
        self.timeout = timeout
        self._idle: queue.SimpleQueue[http.client.HTTPSConnection] = queue.SimpleQueue()

    def _connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=self.timeout
        )

    def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> tuple[http.client.HTTPResponse, http.client.HTTPSConnection]:
        """Send a request; the caller reads the response, then :meth:`release`."""
        send_headers = dict(headers or {})
        for attempt in range(2):
            try:
                conn = self._idle.get_nowait() if attempt == 0 else self._connect()
            except queue.Empty:
                conn = self._connect()
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(timeout or self.timeout)
                else:
                    conn.timeout = timeout or self.timeout
                conn.request(method, target, body=body or None, headers=send_headers)
                return conn.getresponse(), conn
            except (
                http.client.RemoteDisconnected,
                BrokenPipeError,
                ConnectionResetError,
            ):
                conn.close()
                if attempt:
                    raise
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def release(
        self, response: http.client.HTTPResponse, conn: http.client.HTTPSConnection
    ) -> None:
        """Return a connection whose response was read completely to the pool."""
        if response.isclosed() and not response.will_close:
            self._idle.put(conn)
        else:
            conn.close()

    def call(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send a request and read the whole answer: ``(status, body)``.

        A broken answer (a bad status line, a body cut short) is an
        ``OSError`` like a refused connection: callers retry both, and a
        node's background loop must not die of either.
        """
        try:
            response, conn = self.request(method, target, body, headers)
        except http.client.HTTPException as exc:
            raise ConnectionError(f"{method} {target}: {exc!r}") from exc
        try:
            data = response.read()
        except http.client.HTTPException as exc:
            conn.close()
            raise ConnectionError(f"{method} {target}: {exc!r}") from exc
        except BaseException:
            conn.close()
            raise
        self.release(response, conn)
        return response.status, data


class Forwarder:
    """A :class:`Backend` that relays API requests to another server.

    Joining servers use it: they hold no state of their own, so every server
    of an HA cluster shows the same objects. The caller's identity travels as
    ``Impersonate-User``; watch streams are relayed chunk by chunk.
    """

    def __init__(self, upstream: Upstream, *, timeout: float = 3600) -> None:
        self.upstream = upstream
        #: Seconds to wait for an answer (a watch may stream for an hour).
        self.timeout = timeout

    def handle(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        user: str,
    ) -> Response:
        """Relay the request upstream, impersonating ``user``."""
        send = {
            k: v
            for k, v in headers.items()
            if k not in _HOP_BY_HOP and not k.startswith("impersonate-")
        }
        send["Impersonate-User"] = user
        if body:
            send["Content-Length"] = str(len(body))
        try:
            response, conn = self.upstream.request(
                method, target, body, send, timeout=self.timeout
            )
        except OSError as exc:
            return status_reply(503, "ServiceUnavailable", f"{UNREACHABLE}: {exc}")
        content_type = response.getheader("Content-Type", "application/json")
        if not response.chunked:
            data = response.read()
            self.upstream.release(response, conn)
            return Response(response.status, data, content_type)

        def relay() -> Iterator[bytes]:
            try:
                while True:
                    chunk = response.read1(65536)
                    if not chunk:
                        break
                    yield chunk
            except OSError:
                return
            finally:
                conn.close()

        return Response(response.status, b"", content_type, relay())


def serve_in_thread(server: APIServer) -> threading.Thread:
    """Run the listener's accept loop in a daemon thread."""
    return server.start()
