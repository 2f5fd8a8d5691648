"""Reaching a workload: run a command in a pod, forward a local port to it.

Both go through the API server's streaming subresources (``pods/exec`` and
``pods/portforward``) with the official client's websocket support, in this
process: no kubectl, and nothing listening anywhere but on this machine's
loopback. The client library swaps a method of the ``ApiClient`` while it
opens a stream, so streams never share the client a test uses for ordinary
calls: each exec gets one of its own, and each forward one for all its
connections, opened one at a time.

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

from pytest_k3s.errors import K3sError


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
_CHUNK = 65536


class StreamError(K3sError):
    """An exec or a forward could not be set up; the message says why."""


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


# exec --------------------------------------------------------------------------


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
    """
    from kubernetes.stream import stream

    core = k8s.CoreV1Api(api)
    options: dict[str, Any] = {"container": container} if container else {}
    try:
        ws: Any = stream(
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
        )
    except ApiException as exc:
        raise StreamError(
            f"exec in pod {namespace}/{pod} was refused: HTTP {exc.status} "
            f"{_message(exc)}"
        ) from exc
    except Exception as exc:  # the websocket handshake (a 4xx says why)
        raise StreamError(f"exec in pod {namespace}/{pod} failed: {exc}") from exc
    try:
        if stdin is not None:
            ws.write_stdin(stdin.decode() if isinstance(stdin, bytes) else stdin)
            ws.close_channel(0)  # end of input (v5; v4 has no way to say it)
        deadline = time.monotonic() + timeout
        stdout: list[str] = []
        stderr: list[str] = []
        while ws.is_open():
            left = deadline - time.monotonic()
            if left <= 0:
                raise StreamError(
                    f"{' '.join(command)!r} in pod {namespace}/{pod} did not finish "
                    f"within {timeout:.0f}s"
                )
            ws.update(timeout=min(left, 1.0))
            stdout.append(ws.read_stdout(timeout=0) if ws.peek_stdout() else "")
            stderr.append(ws.read_stderr(timeout=0) if ws.peek_stderr() else "")
        stdout.append(ws.read_channel(1, timeout=0) if ws.peek_channel(1) else "")
        stderr.append(ws.read_channel(2, timeout=0) if ws.peek_channel(2) else "")
        status = ws.read_channel(3, timeout=0) if ws.peek_channel(3) else ""
    finally:
        ws.close()
    code = _exit_code(status, command, f"{namespace}/{pod}")
    return subprocess.CompletedProcess(
        list(command), code, "".join(stdout), "".join(stderr)
    )


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


# resolving a target --------------------------------------------------------------


def resolve(
    api: k8s.ApiClient, kind: str, name: str, port: int | str, namespace: str
) -> tuple[str, int]:
    """The pod to forward to and its port number, as kubectl resolves them."""
    core = k8s.CoreV1Api(api)
    where = f"{kind} {namespace}/{name}"
    try:
        if kind == "pod":
            pod = core.read_namespaced_pod(name, namespace)
            return name, _container_port(pod, port, where)
        if kind == "deployment":
            deployment: Any = k8s.AppsV1Api(api).read_namespaced_deployment(
                name, namespace
            )
            pod = _ready_pod(
                core, deployment.spec.selector.match_labels, namespace, where
            )
            return pod.metadata.name, _container_port(pod, port, where)
        service: Any = core.read_namespaced_service(name, namespace)
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
    pod = _ready_pod(core, service.spec.selector, namespace, where)
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


def _ready_pod(core: Any, selector: dict[str, str], namespace: str, where: str) -> Any:
    """The pod kubectl would pick: running and ready first, then the newest."""
    text = ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items()))
    pods = core.list_namespaced_pod(namespace, label_selector=text).items
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
            f"match {text or 'its selector'})"
        )
    return max(ready, key=rank)


# forwarding ----------------------------------------------------------------------


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

    :param client: makes the ApiClients the forward uses (two, kept: one
        for reads, one lent to the client library to open streams)
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
        #: For reading pods and Services; ``streams`` is lent to the library
        #: while it opens a stream (one at a time), so never used for reads.
        self.api = client()
        self.streams = client()
        self._opening = threading.Lock()
        self._closed = threading.Event()
        self._connections: set[socket.socket] = set()
        self._guard = threading.Lock()
        self._pinned: tuple[str, int] | None = None
        # Resolved now, so a wrong target fails the test here, not later.
        first = resolve(self.api, self.kind, self.name, port, namespace)
        if self.kind == "pod":
            self._pinned = first
        self.listener = socket.create_server(("127.0.0.1", local_port))
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
            with self._guard:
                self._connections.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        from kubernetes.stream import portforward

        forward: Any = None
        try:
            pod, port = self._pinned or self._resolve()
            with self._opening:  # the library borrows the ApiClient to open it
                forward = portforward(
                    k8s.CoreV1Api(self.streams).connect_get_namespaced_pod_portforward,
                    pod,
                    self.namespace,
                    ports=str(port),
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
            with self._guard:
                self._connections.discard(client)

    def _resolve(self) -> tuple[str, int]:
        """Resolve the target again (a replaced pod), waiting a while for one."""
        deadline = time.monotonic() + RESOLVE_TIMEOUT
        while True:
            try:
                return resolve(
                    self.api, self.kind, self.name, self.port, self.namespace
                )
            except StreamError:
                if time.monotonic() > deadline or self._closed.is_set():
                    raise
                time.sleep(0.2)

    def close(self) -> None:
        """Stop listening and close every connection; idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._guard:
            open_now = list(self._connections)
        for connection in open_now:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)
        self.api.close()  # type: ignore[no-untyped-call]
        self.streams.close()  # type: ignore[no-untyped-call]


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
