"""The kubelet's HTTPS server on 10250: container logs, exec, port-forward.

The API server reaches it for ``pods/log``, ``pods/exec`` and
``pods/portforward`` of a pod the node runs, as kube-apiserver reaches a
kubelet: HTTPS to the Node's InternalIP and ``daemonEndpoints`` port, with
its ``client-kube-apiserver`` certificate; the kubelet accepts only
certificates of the cluster's client CA (``--anonymous-auth=false``,
``--client-ca-file``). Paths are the kubelet's own:

- ``GET /containerLogs/<ns>/<pod>/<container>`` with ``follow``,
  ``tailLines``, ``previous``, ``timestamps``, ``sinceSeconds``,
  ``limitBytes`` (:mod:`.crilog`);
- ``GET /exec/<ns>/<pod>/<container>?command=...&stdin=&stdout=&stderr=``,
  a websocket (:mod:`.websocket`): the command runs as a process of the node
  with the container's environment and working directory;
- ``GET /portForward/<ns>/<pod>?ports=...``, a websocket: each port is a TCP
  connection to ``127.0.0.1:<port>`` in the node (pods share its network).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

from k3s_double import runnable
from k3s_double.apiserver.httpd import TLSServer
from k3s_double.apiserver.httpd import send_chunked

from . import children
from . import crilog
from . import spdy
from . import websocket
from .containers import Container
from .containers import ContainerRuntime
from .containers import Environment
from .containers import exit_code


#: The kubelet's port (``--port``), as ``daemonEndpoints`` names it.
KUBELET_PORT = 10250
GO_TRUE = ("1", "t", "T", "true", "TRUE", "True")


class KubeletError(Exception):
    """An answer other than 200: the API server relays it as it is."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def body(self) -> bytes:
        """The ``metav1.Status`` of this error."""
        return json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": self.message,
                "reason": self.reason,
                "code": self.code,
            }
        ).encode()


def bad_request(message: str) -> KubeletError:
    """A 400 ``BadRequest``."""
    return KubeletError(400, "BadRequest", message)


def _int(query: dict[str, str], key: str) -> int | None:
    value = query.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"invalid {key} {value!r}") from None


def log_stream(
    runtime: ContainerRuntime, ns: str, pod: str, name: str, query: dict[str, str]
) -> Iterator[bytes]:
    """The container's log as the kubelet serves it (raises :class:`KubeletError`)."""
    container = _container(runtime, ns, pod, name)
    status = container.status
    previous = query.get("previous") in GO_TRUE
    last = (status.get("lastState") or {}).get("terminated")
    state = status.get("state") or {}
    if previous:
        if not last:
            raise bad_request(
                f'previous terminated container "{name}" in pod "{pod}" not found'
            )
        attempt = container.restarts - (0 if "waiting" in state else 1)
    elif "waiting" in state and not last:
        reason = state["waiting"].get("reason", "ContainerCreating")
        raise bad_request(
            f'container "{name}" in pod "{pod}" is waiting to start: {reason}'
        )
    elif "waiting" in state:
        attempt = container.restarts
    else:
        attempt = container.restarts
    since = _int(query, "sinceSeconds")
    options = crilog.LogOptions(
        tail=_int(query, "tailLines"),
        since=time.time() - since if since is not None else None,
        timestamps=query.get("timestamps") in GO_TRUE,
        limit_bytes=_int(query, "limitBytes"),
        follow=query.get("follow") in GO_TRUE and not previous,
    )
    current = attempt == container.restarts

    def running() -> bool:
        return current and container.running() and attempt == container.restarts

    return crilog.read_log(container.log_path(attempt), options, running)


def _container(runtime: ContainerRuntime, ns: str, pod: str, name: str) -> Container:
    sandbox = runtime.find(ns, pod)
    if sandbox is None:
        raise KubeletError(
            404, "NotFound", f'pod "{pod}" in namespace "{ns}" is not run by this node'
        )
    container = sandbox.container(name)
    if container is None:
        raise bad_request(f"container {name} is not valid for pod {pod}")
    return container


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kubelet"
    sys_version = ""
    server: KubeletServer

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log("debug", "kubelet: " + format % args)

    def do_GET(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(split.query).items()}
        parts = [urllib.parse.unquote(p) for p in split.path.split("/") if p]
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            if not self.connection.getpeercert():
                raise KubeletError(401, "Unauthorized", "Unauthorized")
            if len(parts) == 4 and parts[0] == "containerLogs":
                self._logs(parts[1], parts[2], parts[3], query)
            elif len(parts) == 4 and parts[0] == "exec":
                commands = urllib.parse.parse_qs(split.query).get("command") or []
                self._exec(parts[1], parts[2], parts[3], commands, query, headers)
            elif len(parts) == 3 and parts[0] == "portForward":
                ports = [
                    p
                    for value in urllib.parse.parse_qs(split.query).get("ports") or []
                    for p in value.split(",")
                ]
                self._portforward(parts[1], parts[2], ports, headers)
            else:
                raise KubeletError(404, "NotFound", "404 page not found")
        except KubeletError as error:
            self._reply(error.code, error.body(), "application/json")
        except websocket.ProtocolError as error:
            self._reply(400, str(error).encode(), "text/plain")

    do_POST = do_GET

    def _reply(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _logs(self, ns: str, pod: str, name: str, query: dict[str, str]) -> None:
        stream = log_stream(self.server.runtime, ns, pod, name, query)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        send_chunked(self, stream)

    def _upgrade(
        self, headers: dict[str, str], protocols: tuple[str, ...]
    ) -> websocket.Connection:
        if not websocket.is_upgrade(headers):
            raise bad_request(
                "the k3s double's kubelet speaks websockets only (no SPDY upgrade)"
            )
        protocol = websocket.choose(headers, protocols)
        self.wfile.write(websocket.handshake(headers, protocol))
        self.wfile.flush()
        self.close_connection = True
        return websocket.Connection(self.rfile, self.wfile, protocol)  # type: ignore[arg-type]

    def _exec(
        self,
        ns: str,
        pod: str,
        name: str,
        command: list[str],
        query: dict[str, str],
        headers: dict[str, str],
    ) -> None:
        container = _container(self.server.runtime, ns, pod, name)
        if not command:
            raise bad_request("you must specify at least 1 command")
        if query.get("tty") in GO_TRUE:
            raise bad_request("tty is not supported by the k3s double's kubelet")
        ws = self._upgrade(headers, websocket.EXEC_PROTOCOLS)
        run_exec(ws, container, command, query, self.server.runtime)

    def _portforward(
        self, ns: str, pod: str, ports: list[str], headers: dict[str, str]
    ) -> None:
        if self.server.runtime.find(ns, pod) is None:
            raise KubeletError(
                404,
                "NotFound",
                f'pod "{pod}" in namespace "{ns}" is not run by this node',
            )
        numbers: list[int] = []
        for port in ports:
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise bad_request(f"invalid port {port!r}")
            numbers.append(int(port))
        if headers.get("upgrade", "").lower().startswith("spdy/3.1"):
            self.wfile.write(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                b"Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: "
                + spdy.PORTFORWARD.encode()
                + b"\r\n\r\n"
            )
            self.wfile.flush()
            self.close_connection = True
            spdy.PortForwardSession(_SocketTransport(self), pod).serve()
            return
        tunnel = spdy.TUNNEL_PROTOCOL in headers.get("sec-websocket-protocol", "")
        if not numbers and not tunnel:
            raise bad_request('query parameter "port" is required')
        ws = self._upgrade(headers, websocket.PORTFORWARD_PROTOCOLS)
        if ws.protocol == spdy.TUNNEL_PROTOCOL:
            spdy.PortForwardSession(_TunnelTransport(ws), pod).serve()
            return
        run_portforward(ws, pod, numbers)


class _SocketTransport:
    """The upgraded HTTP connection itself (SPDY/3.1)."""

    def __init__(self, handler: _Handler) -> None:
        self.handler = handler

    def read(self) -> bytes:
        data: bytes = self.handler.rfile.read1(65536)
        return data

    def write(self, data: bytes) -> None:
        self.handler.wfile.write(data)
        self.handler.wfile.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.handler.connection.shutdown(socket.SHUT_RDWR)


class _TunnelTransport:
    """SPDY bytes in a websocket's binary messages."""

    def __init__(self, ws: websocket.Connection) -> None:
        self.ws = ws

    def read(self) -> bytes:
        while True:
            message = self.ws.receive()
            if message is None:
                return b""
            if message:  # gorilla's writer may send empty messages
                return message

    def write(self, data: bytes) -> None:
        self.ws.send_raw(data)

    def close(self) -> None:
        self.ws.close()


def _status(code: int, command: list[str]) -> bytes:
    if code == 0:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    return json.dumps(
        {
            "metadata": {},
            "status": "Failure",
            "message": (
                "command terminated with non-zero exit code: error executing "
                f"command {_go_list(command)}, exit code {code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
        }
    ).encode()


def _go_list(items: list[str]) -> str:
    return "[" + " ".join(items) + "]"


def run_exec(
    ws: websocket.Connection,
    container: Container,
    command: list[str],
    query: dict[str, str],
    runtime: ContainerRuntime,
) -> None:
    """Run ``command`` in ``container``'s environment, relaying its streams."""
    sandbox = container.sandbox
    env = container.env
    if not env:
        try:
            env = Environment(runtime.api, sandbox.pod, lambda _: None).build(
                container.spec, sandbox.node_ip
            )
        except Exception:
            env = {"PATH": runnable.DEFAULT_PATH}
    want_stdin = query.get("stdin") in GO_TRUE
    executable = runnable.resolve(command[0], env.get("PATH", runnable.DEFAULT_PATH))
    if executable is None:
        message = (
            "failed to exec in container: failed to start exec: OCI runtime exec "
            "failed: exec failed: unable to start container process: exec: "
            f'"{command[0]}": executable file not found in $PATH: unknown'
        )
        failure = {"metadata": {}, "status": "Failure", "message": message}
        with contextlib.suppress(OSError):
            ws.send(websocket.ERROR, json.dumps(failure).encode())
        ws.close()
        return
    cwd = str(container.spec.get("workingDir") or "/")
    try:
        process = children.popen(
            sandbox.in_pod([executable, *command[1:]]),
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if want_stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as error:
        failure = {"metadata": {}, "status": "Failure", "message": str(error)}
        with contextlib.suppress(OSError):
            ws.send(websocket.ERROR, json.dumps(failure).encode())
        ws.close()
        return

    def pump(channel: int, source: Any) -> None:
        while True:
            data = source.read1(65536)
            if not data:
                return
            try:
                ws.send(channel, data)
            except OSError:
                return

    def feed() -> None:
        while True:
            message = ws.receive()
            if message is None:
                if process.poll() is None:
                    with contextlib.suppress(OSError):
                        process.kill()
                return
            channel, data = message[0], message[1:]
            if channel == websocket.STDIN and process.stdin is not None:
                try:
                    process.stdin.write(data)
                    process.stdin.flush()
                except OSError:
                    pass
            elif (
                channel == websocket.CLOSE
                and data[:1] == bytes([websocket.STDIN])
                and process.stdin is not None
            ):
                with contextlib.suppress(OSError):
                    process.stdin.close()

    pumps = [
        threading.Thread(target=pump, args=(websocket.STDOUT, process.stdout)),
        threading.Thread(target=pump, args=(websocket.STDERR, process.stderr)),
    ]
    for thread in pumps:
        thread.start()
    threading.Thread(target=feed, daemon=True).start()
    code = exit_code(children.wait(process))
    for thread in pumps:
        thread.join()
    with contextlib.suppress(OSError):
        ws.send(websocket.ERROR, _status(code, command))
    ws.close()


def run_portforward(ws: websocket.Connection, pod: str, ports: list[int]) -> None:
    """Relay each port's data channel to a TCP connection in the node."""
    sockets: dict[int, socket.socket] = {}
    for index, port in enumerate(ports):
        header = port.to_bytes(2, "little")
        ws.send(2 * index, header)
        ws.send(2 * index + 1, header)
    for index, port in enumerate(ports):
        try:
            sockets[index] = socket.create_connection(("127.0.0.1", port), timeout=5)
            sockets[index].settimeout(None)
        except OSError as error:
            message = (
                f"error forwarding port {port} to pod {pod}: failed to connect to "
                f"localhost:{port} inside the node: dial tcp4 127.0.0.1:{port}: "
                f"connect: {error.strerror or error}"
            )
            with contextlib.suppress(OSError):
                ws.send(2 * index + 1, message.encode())
    if not sockets:
        ws.close()
        return
    done = threading.Event()

    def upstream(index: int, sock: socket.socket) -> None:
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                ws.send(2 * index, data)
        except OSError:
            pass
        finally:
            done.set()

    readers = [
        threading.Thread(target=upstream, args=(i, s), daemon=True)
        for i, s in sockets.items()
    ]
    for thread in readers:
        thread.start()

    def downstream() -> None:
        while True:
            message = ws.receive()
            if message is None:
                break
            channel, data = message[0], message[1:]
            sock = sockets.get(channel // 2)
            if channel % 2 == 0 and sock is not None and data:
                try:
                    sock.sendall(data)
                except OSError:
                    break
        done.set()

    threading.Thread(target=downstream, daemon=True).start()
    done.wait()
    for sock in sockets.values():
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    ws.close()


class KubeletServer(TLSServer):
    """HTTPS on the kubelet port, client certificates of the client CA only."""

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        runtime: ContainerRuntime,
        log: Callable[[str, str], None],
        host: str = "",
    ) -> None:
        self.context = context
        self.runtime = runtime
        self.log = log
        super().__init__((host, port), _Handler)


def kubelet_context(cert_file: str, key_file: str, client_ca: bytes) -> ssl.SSLContext:
    """TLS of the kubelet port: its serving pair, callers of the client CA only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    context.load_verify_locations(cadata=client_ca.decode())
    context.verify_mode = ssl.CERT_REQUIRED
    return context
