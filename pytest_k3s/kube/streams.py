"""Reaching a workload: run a command in a pod, forward a local port to it.

Both go through the API server's streaming subresources (``pods/exec`` and
``pods/portforward``) with the official client's websocket support, in this
process: no kubectl, and nothing listening anywhere but on this machine's
loopback. The client library swaps a method of the ``ApiClient`` while it
opens a stream, so streams never share the client a test uses for ordinary
calls: each exec and each forwarded connection gets one of its own. Opening a
stream is bounded in time (the library's handshake has no timeout), and so
is every read a forward makes, so a hung API server costs a closed
connection and a log line, never a hang.

A forward resolves its target as kubectl does: ``svc/NAME`` through the
Service's port (by number or name) to its ``targetPort`` on a ready pod the
Service selects, ``deploy/NAME`` to a ready pod of the Deployment, and a named
port to the container port of that name. A Service or Deployment is resolved
again for every new connection, so a replaced pod is picked up (a
``kubectl port-forward`` process sticks to the pod it found first).
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from pytest_k3s.errors import StreamError


log = logging.getLogger(__name__)

#: What ``target`` may start with, and the kind it names.
KINDS = {
    "pod": "pod",
    "pods": "pod",
    "po": "pod",
    "svc": "service",
    "service": "service",
    "services": "service",
    "deploy": "deployment",
    "deployment": "deployment",
    "deployments": "deployment",
}
#: How long a new connection may wait for a pod to forward to (seconds).
RESOLVE_TIMEOUT = 30.0
#: How long one read of the API, or the opening of a stream, may take.
REQUEST_TIMEOUT = 10.0
#: How much of each of an exec's output streams is kept (the rest is cut).
OUTPUT_LIMIT = 16 * 1024 * 1024
_CHUNK = 65536
_STDOUT, _STDERR, _STATUS, _CLOSE = 1, 2, 3, 255


def parse_target(target: str) -> tuple[str, str]:
    """Split ``pod/NAME``, ``svc/NAME``, ``deploy/NAME`` or a pod name: (kind, name)."""
    kind, slash, name = target.partition("/")
    if not slash:
        return "pod", target
    if kind.lower() not in KINDS or not name:
        raise StreamError(
            f"port_forward target {target!r} is not pod/NAME, svc/NAME, "
            "deploy/NAME or a pod's name"
        )
    return KINDS[kind.lower()], name


def exec_in_pod(
    api: k8s.ApiClient,
    pod: str,
    command: Sequence[str],
    *,
    namespace: str,
    container: str | None,
    stdin: str | bytes | None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a container of ``pod``; return its exit code and output.

    ``api`` must be a client of its own (the stream borrows it). A command
    that could not start (not found, say) is a :class:`StreamError`, not an
    exit code; one that outlives ``timeout`` seconds is closed and is one too.
    Each output stream keeps its first :data:`OUTPUT_LIMIT` bytes.
    """
    from kubernetes.stream import stream

    where = f"{namespace}/{pod}"
    core = k8s.CoreV1Api(api)
    options: dict[str, Any] = {"container": container} if container else {}
    deadline = time.monotonic() + timeout
    ws: Any = _open_within(
        lambda: stream(
            core.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            command=list(command),
            stdin=stdin is not None,
            stdout=True,
            stderr=True,
            tty=False,
            _preload_content=False,
            **options,
        ),
        min(timeout, REQUEST_TIMEOUT),
        f"exec in pod {where}",
    )
    try:
        if stdin is not None:
            ws.write_stdin(stdin)
            ws.close_channel(0)  # end of input (v5 only: v4 cannot say it)
        output = _read_frames(ws, deadline)
    except TimeoutError:
        hint = ""
        if stdin is not None and ws.subprotocol != "v5.channel.k8s.io":
            hint = (
                f" (the server speaks {ws.subprotocol}, which cannot tell the "
                "command its input ended)"
            )
        raise StreamError(
            f"{' '.join(command)!r} in pod {where} did not finish within "
            f"{timeout:.0f}s{hint}"
        ) from None
    finally:
        ws.close()
    code = _exit_code(output[_STATUS].decode(errors="replace"), command, where)
    return subprocess.CompletedProcess(
        list(command),
        code,
        output[_STDOUT].decode(errors="replace"),
        output[_STDERR].decode(errors="replace"),
    )


def _read_frames(ws: Any, deadline: float) -> dict[int, bytearray]:
    """Read an exec stream's frames until it closes; TimeoutError at ``deadline``.

    The library's own reader goes on while frames keep coming, so a command
    that prints without pause would never let the deadline be checked.
    """
    import ssl

    from websocket import ABNF

    output = {channel: bytearray() for channel in (_STDOUT, _STDERR, _STATUS)}
    raw = ws.sock.sock
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        pending = isinstance(raw, ssl.SSLSocket) and raw.pending()
        if not pending and not select.select([raw], [], [], min(left, 1.0))[0]:
            continue
        opcode, frame = ws.sock.recv_data_frame(True)
        if opcode == ABNF.OPCODE_CLOSE:
            return output
        data = frame.data if isinstance(frame.data, bytes) else frame.data.encode()
        if not data or data[0] == _CLOSE:
            continue
        kept = output.get(data[0])
        if kept is not None and len(kept) < OUTPUT_LIMIT:
            kept += data[1 : 1 + OUTPUT_LIMIT - len(kept)]


def _open_within(open_stream: Callable[[], Any], seconds: float, what: str) -> Any:
    """Open a stream in a thread of its own, waiting at most ``seconds``.

    The library's websocket handshake has no timeout. A stream that opens
    after we gave up is closed by its thread.
    """
    found: dict[str, Any] = {}
    given_up = False
    lock = threading.Lock()

    def run() -> None:
        try:
            opened = open_stream()
        except BaseException as exc:
            with lock:
                found["error"] = exc
            return
        with lock:
            if not given_up:
                found["stream"] = opened
                return
        with contextlib.suppress(Exception):
            opened.close()

    opener = threading.Thread(target=run, name=f"pytest-k3s {what}", daemon=True)
    opener.start()
    opener.join(seconds)
    with lock:
        if not found:
            given_up = True
            raise StreamError(
                f"{what}: the API server did not open it within {seconds:.0f}s"
            )
    error = found.get("error")
    if error is not None:
        raise StreamError(f"{what} was refused: {_handshake_error(error)}") from error
    return found["stream"]


def _handshake_error(error: BaseException) -> str:
    """The server's own words from a failed handshake (a Status body), if any."""
    text = str(getattr(error, "reason", "") or error)
    start = text.find('{"kind":"Status"')
    if start >= 0:
        try:
            status = json.loads(text[start : text.rindex("}") + 1])
            return f"HTTP {status.get('code')}: {status.get('message')}"
        except ValueError:
            pass
    return text.split(" -+-+- ")[0]


def _exit_code(status: str, command: Sequence[str], where: str) -> int:
    """The exit code the error channel's Status gives (v4 and later)."""
    if not status.strip():
        raise StreamError(
            f"{' '.join(command)!r} in pod {where}: the stream ended without an "
            "exit status (the connection was lost)"
        )
    found = json.loads(status)
    if found.get("status") == "Success":
        return 0
    for cause in (found.get("details") or {}).get("causes") or ():
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", 1))
    raise StreamError(
        f"{' '.join(command)!r} in pod {where} could not run: "
        f"{found.get('message') or status}"
    )


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


def resolve(
    api: k8s.ApiClient, kind: str, name: str, port: int | str, namespace: str
) -> tuple[str, int]:
    """The pod to forward to and its port number, as kubectl resolves them."""
    core = k8s.CoreV1Api(api)
    where = f"{kind} {namespace}/{name}"
    try:
        if kind == "pod":
            pod = core.read_namespaced_pod(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
            return name, _container_port(pod, port, where)
        if kind == "deployment":
            deployment: Any = k8s.AppsV1Api(api).read_namespaced_deployment(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
            selector = _selector(deployment.spec.selector)
            pod = _ready_pod(core, selector, namespace, where)
            return pod.metadata.name, _container_port(pod, port, where)
        service: Any = core.read_namespaced_service(
            name, namespace, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        if exc.status == 404:
            raise StreamError(f"{where} not found") from exc
        raise StreamError(f"{where}: HTTP {exc.status} {_message(exc)}") from exc
    wanted = next(
        (
            p
            for p in service.spec.ports or ()
            if p.port == _number(port) or (p.name and p.name == port)
        ),
        None,
    )
    if wanted is None:
        known = ", ".join(f"{p.name or '-'}:{p.port}" for p in service.spec.ports or ())
        raise StreamError(f"{where} has no port {port!r}; it has {known}")
    if not service.spec.selector:
        raise StreamError(f"{where} selects no pods (it has no selector)")
    text = ",".join(f"{k}={v}" for k, v in sorted(service.spec.selector.items()))
    pod = _ready_pod(core, text, namespace, where)
    target = wanted.target_port if wanted.target_port is not None else wanted.port
    return pod.metadata.name, _container_port(pod, target, where)


def _number(port: int | str) -> int | None:
    if isinstance(port, int):
        return port
    return int(port) if port.isdigit() else None


def _container_port(pod: Any, port: int | str, where: str) -> int:
    number = _number(port)
    if number is not None:
        return number
    for container in pod.spec.containers or ():
        for found in container.ports or ():
            if found.name == port:
                return int(found.container_port)
    raise StreamError(
        f"{where}: pod {pod.metadata.name} has no container port named {port!r}"
    )


def _selector(selector: Any) -> str:
    """A label selector's query text: matchLabels and matchExpressions."""
    parts = [f"{k}={v}" for k, v in sorted((selector.match_labels or {}).items())]
    for expression in selector.match_expressions or ():
        key, operator = expression.key, expression.operator
        values = ",".join(expression.values or ())
        parts.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[operator]
        )
    return ",".join(parts)


def _ready_pod(core: Any, text: str, namespace: str, where: str) -> Any:
    """The pod kubectl would pick: running and ready first, then the newest."""
    if not text:
        raise StreamError(f"{where} selects no pods (its selector is empty)")
    pods = core.list_namespaced_pod(
        namespace, label_selector=text, _request_timeout=REQUEST_TIMEOUT
    ).items
    live = [p for p in pods if not p.metadata.deletion_timestamp]

    def rank(pod: Any) -> tuple[bool, bool, float]:
        ready = any(
            c.type == "Ready" and c.status == "True"
            for c in (pod.status.conditions or ())
        )
        created = pod.metadata.creation_timestamp
        return (
            ready,
            pod.status.phase == "Running",
            created.timestamp() if created else 0,
        )

    ready = [p for p in live if rank(p)[:2] == (True, True)]
    if not ready:
        raise StreamError(
            f"{where} has no running, ready pod to forward to ({len(live)} pod(s) "
            f"match {text})"
        )
    return max(ready, key=rank)


@dataclass(frozen=True)
class Forwarded:
    """Where a forward listens: connect to ``host:port``, or fetch ``url``."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"


class PortForward:
    """A local listener whose every connection is a stream to a pod's port.

    :param client: makes the forward's ApiClient, for reads; each
        connection's stream gets one of its own on the same configuration
    :raises StreamError: the target cannot be resolved now, or
        ``local_port`` is taken
    """

    def __init__(
        self,
        client: Callable[[], k8s.ApiClient],
        target: str,
        port: int | str,
        *,
        namespace: str,
        local_port: int = 0,
    ) -> None:
        self.kind, self.name = parse_target(target)
        self.port = port
        self.namespace = namespace
        self.api = client()
        self._closed = threading.Event()
        self._guard = threading.Lock()
        #: Open connections, with the threads that serve them.
        self._serving: dict[socket.socket, threading.Thread] = {}
        self._pinned: tuple[str, int] | None = None
        try:
            # Resolved now, so a wrong target fails the test here, not later.
            first = resolve(self.api, self.kind, self.name, port, namespace)
            if self.kind == "pod":
                self._pinned = first
            try:
                self.listener = socket.create_server(("127.0.0.1", local_port))
            except OSError as exc:
                raise StreamError(
                    f"port_forward cannot listen on 127.0.0.1:{local_port}: {exc}; "
                    "leave local_port out for a free one"
                ) from exc
        except BaseException:
            self.api.close()  # type: ignore[no-untyped-call]
            raise
        self.address = Forwarded("127.0.0.1", self.listener.getsockname()[1])
        self._thread = threading.Thread(
            target=self._accept, name=f"pytest-k3s port-forward {target}", daemon=True
        )
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            serving = threading.Thread(target=self._serve, args=(client,), daemon=True)
            with self._guard:
                if self._closed.is_set():
                    client.close()
                    return
                self._serving[client] = serving
            serving.start()

    def _serve(self, client: socket.socket) -> None:
        from kubernetes.stream import portforward

        forward: Any = None
        streams = k8s.ApiClient(self.api.configuration)  # lent to the library
        try:
            pod, port = self._pinned or self._resolve()
            api = k8s.CoreV1Api(streams)
            forward = _open_within(
                lambda: portforward(
                    api.connect_get_namespaced_pod_portforward,
                    pod,
                    self.namespace,
                    ports=str(port),
                ),
                REQUEST_TIMEOUT,
                f"port-forward to pod {self.namespace}/{pod}:{port}",
            )
            _relay(client, forward.socket(port), self._closed)
            error = forward.error(port)
            if error:
                log.warning(
                    "port-forward to %s/%s:%s: %s", self.namespace, pod, port, error
                )
        except Exception as exc:  # the client sees a closed connection
            log.warning(
                "port-forward %s/%s %s: %s", self.kind, self.name, self.port, exc
            )
        finally:
            if forward is not None:
                with contextlib.suppress(Exception):
                    forward.close()
            with contextlib.suppress(OSError):
                client.close()
            streams.close()  # type: ignore[no-untyped-call]
            with self._guard:
                self._serving.pop(client, None)

    def _resolve(self) -> tuple[str, int]:
        """Resolve the target again (a replaced pod), waiting a while for one."""
        deadline = time.monotonic() + RESOLVE_TIMEOUT
        while True:
            try:
                return resolve(
                    self.api, self.kind, self.name, self.port, self.namespace
                )
            except StreamError:
                if time.monotonic() > deadline or self._closed.wait(0.2):
                    raise

    def close(self) -> None:
        """Stop listening, end every connection and wait for them; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=5)
        with self._guard:
            serving = dict(self._serving)
        for connection in serving:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        # A connection still resolving or opening its stream gives up within
        # the request timeout; the relays end within half a second.
        for thread in serving.values():
            thread.join(timeout=REQUEST_TIMEOUT + 1)
        self.api.close()  # type: ignore[no-untyped-call]


def _relay(client: socket.socket, remote: Any, closed: threading.Event) -> None:
    """Copy bytes both ways until either side ends (or the forward closes)."""
    ends = {client: remote, remote: client}
    open_ends = [client, remote]
    while open_ends and not closed.is_set():
        readable, _, _ = select.select(open_ends, [], [], 0.5)
        for end in readable:
            try:
                data = end.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                # One side is done: tell the other, and stop reading it.
                with contextlib.suppress(OSError):
                    ends[end].shutdown(socket.SHUT_WR)
                open_ends.remove(end)
                continue
            try:
                ends[end].sendall(data)
            except OSError:
                return


@contextlib.contextmanager
def forward(
    client: Callable[[], k8s.ApiClient],
    target: str,
    port: int | str,
    *,
    namespace: str,
    local_port: int = 0,
) -> Iterator[Forwarded]:
    """A :class:`PortForward` for the ``with`` block; yields where it listens."""
    forwarding = PortForward(
        client, target, port, namespace=namespace, local_port=local_port
    )
    try:
        yield forwarding.address
    finally:
        forwarding.close()
