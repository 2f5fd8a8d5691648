"""``pods/log``, ``pods/exec`` and ``pods/portforward`` through the pod's kubelet.

As kube-apiserver does, the API finds the pod's node and asks its kubelet
over HTTPS (the Node's InternalIP and ``daemonEndpoints`` port) with its
own client certificate, without verifying the kubelet's (k3s sets no
``--kubelet-certificate-authority``). A log is relayed as it streams; an
exec or port-forward websocket upgrade is relayed byte for byte, the
kubelet's own ``101`` answer included (the API server's upgrade-aware
proxy). Only pods a kubelet runs as processes
(:func:`k3s_double.runnable.run_by_kubelet`) are reachable: for any other
the API answers a clear error, never a made-up stream.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from collections.abc import Mapping
from typing import TYPE_CHECKING
from typing import Any
from typing import BinaryIO

from k3s_double.runnable import run_by_kubelet

from .errors import ApiError
from .errors import bad_request
from .kinds import BY_KIND
from .kinds import Obj
from .response import Response


if TYPE_CHECKING:
    from .storage import Storage

#: The upgrade headers relayed to the kubelet (hop-by-hop, but the point here).
_UPGRADE_HEADERS = (
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
)


class KubeletClient:
    """The API server's HTTPS client to kubelets."""

    def __init__(self, context: ssl.SSLContext, timeout: float = 10) -> None:
        self.context = context
        self.timeout = timeout

    def connect(self, host: str, port: int) -> ssl.SSLSocket:
        """A TLS connection to a kubelet; OSError when it cannot be reached."""
        raw = socket.create_connection((host, port), timeout=self.timeout)
        try:
            tls = self.context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        tls.settimeout(None)
        return tls


def client_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """TLS to kubelets: the API server's client pair, kubelet certs unchecked."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(cert_file, key_file)
    return context


def _node_of(storage: Storage, pod: Obj) -> Obj | None:
    node_name = pod["spec"].get("nodeName")
    if not node_name:
        return None
    return storage.store.get(BY_KIND["Node"], "", node_name)


def _endpoint(node: Obj) -> tuple[str, int]:
    addresses = (node.get("status") or {}).get("addresses") or []
    ip = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), "")
    endpoints = (node.get("status") or {}).get("daemonEndpoints") or {}
    port = int((endpoints.get("kubeletEndpoint") or {}).get("Port") or 10250)
    return ip, port


def reachable(storage: Storage, pod: Obj) -> tuple[str, int] | None:
    """The kubelet endpoint of a pod its kubelet runs, else None."""
    node = _node_of(storage, pod)
    if node is None or not run_by_kubelet(pod, node):
        return None
    return _endpoint(node)


def _dial_error(host: str, port: int, error: OSError) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"error dialing backend: dial tcp {host}:{port}: {error.strerror or error}",
        {},
    )


def _request(method: str, path: str, query: str, headers: Mapping[str, str]) -> bytes:
    target = f"{path}{'?' + query if query else ''}"
    lines = [f"{method} {target} HTTP/1.1", "Host: kubelet"]
    lines += [
        f"{name}: {headers[name]}" for name in _UPGRADE_HEADERS if name in headers
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def container_log(
    client: KubeletClient, host: str, port: int, path: str, query: str
) -> Response:
    """``GET /containerLogs/...`` on the kubelet, relayed as it streams."""
    import http.client

    try:
        tls = client.connect(host, port)
    except OSError as error:
        raise _dial_error(host, port, error) from error
    conn = http.client.HTTPConnection(host, port)
    conn.sock = tls
    try:
        conn.request("GET", f"{path}?{query}" if query else path)
        response = conn.getresponse()
    except OSError as error:
        conn.close()
        raise _dial_error(host, port, error) from error
    ctype = response.getheader("Content-Type", "text/plain")
    if response.status != 200:
        data = response.read()
        conn.close()
        return Response(response.status, data, ctype)

    def relay() -> Iterator[bytes]:
        try:
            while True:
                chunk = response.read1(65536)
                if not chunk:
                    return
                yield chunk
        except OSError:
            return
        finally:
            conn.close()

    return Response(200, b"", ctype, relay())


def upgrade(
    client: KubeletClient,
    host: str,
    port: int,
    path: str,
    query: str,
    headers: Mapping[str, str],
    method: str = "GET",
) -> Response:
    """Relay an exec or port-forward upgrade to the kubelet, both ways."""
    offered = headers.get("upgrade", "")
    spdy = path.startswith("/portForward/") and offered.lower().startswith("spdy/3.1")
    if offered.lower() != "websocket" and not spdy:
        if offered:
            raise bad_request(
                f"the k3s double serves {path.split('/')[1]} over websockets "
                f"only, not {offered} (kubectl falls back to SPDY only when the "
                "websocket upgrade fails)"
            )
        raise bad_request("Upgrade request required")
    try:
        tls = client.connect(host, port)
    except OSError as error:
        raise _dial_error(host, port, error) from error

    def takeover(downstream: socket.socket, rfile: BinaryIO) -> None:
        try:
            tls.sendall(_request(method, path, query, headers))
        except OSError:
            tls.close()
            return
        _splice(downstream, rfile, tls)

    return Response(101, takeover=takeover)


def _splice(client: socket.socket, rfile: BinaryIO, kubelet: ssl.SSLSocket) -> None:
    """Copy bytes both ways until either side closes."""

    def up() -> None:
        try:
            while True:
                data = rfile.read1(65536)  # type: ignore[attr-defined]
                if not data:
                    break
                kubelet.sendall(data)
        except (OSError, ValueError):
            pass
        with contextlib.suppress(OSError):
            kubelet.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=up, daemon=True)
    thread.start()
    try:
        while True:
            data = kubelet.recv(65536)
            if not data:
                break
            client.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            kubelet.close()
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_RDWR)


def kubelet_path(sub: str, namespace: str, name: str, query: Mapping[str, Any]) -> str:
    """The kubelet's path for a pod subresource."""
    quoted = [urllib.parse.quote(p, safe="") for p in (namespace, name)]
    if sub == "portforward":
        return f"/portForward/{quoted[0]}/{quoted[1]}"
    container = urllib.parse.quote(str(query.get("container", "")), safe="")
    prefix = {"log": "containerLogs", "exec": "exec", "attach": "attach"}[sub]
    return f"/{prefix}/{quoted[0]}/{quoted[1]}/{container}"


def not_running(name: str, sub: str) -> ApiError:
    """The clear error for a pod whose containers run nothing."""
    return bad_request(
        f"pod {name} runs no process: the k3s double's kubelet runs only "
        "containers whose command names an executable of the node, so it "
        f"cannot serve {sub} for it"
    )


def pick_container(pod: Obj, query: Mapping[str, str]) -> str:
    """The container a request names, or the only one, as the API server checks."""
    name = pod["metadata"]["name"]
    spec = pod["spec"]
    containers = [c["name"] for c in spec.get("containers") or []]
    every = containers + [c["name"] for c in spec.get("initContainers") or []]
    container = query.get("container")
    if not container:
        if len(containers) != 1:
            raise bad_request(
                f"a container name must be specified for pod {name}, choose one "
                f"of: [{' '.join(containers)}]"
            )
        return str(containers[0])
    if container not in every:
        raise bad_request(f"container {container} is not valid for pod {name}")
    return container


def pod_stream(
    method: str,
    storage: Storage,
    client: KubeletClient | None,
    sub: str,
    namespace: str,
    name: str,
    query: Mapping[str, str],
    raw_query: str,
    headers: Mapping[str, str],
) -> Response:
    """``pods/exec``, ``pods/attach`` or ``pods/portforward``: the kubelet's stream."""
    pod = storage.get(BY_KIND["Pod"], namespace, name)
    if not pod["spec"].get("nodeName"):
        raise bad_request(f"pod {name} does not have a host assigned")
    if sub == "attach":
        raise bad_request(
            "the k3s double does not serve pods/attach: its processes' stdin and "
            "stdout belong to their CRI log"
        )
    container = "" if sub == "portforward" else pick_container(pod, query)
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise bad_request(
            f"cannot exec into a container in a completed pod; current phase is {phase}"
        )
    endpoint = reachable(storage, pod)
    if endpoint is None or client is None:
        raise not_running(name, f"pods/{sub}")
    path = kubelet_path(sub, namespace, name, {"container": container})
    return upgrade(client, *endpoint, path, raw_query, headers, method)
