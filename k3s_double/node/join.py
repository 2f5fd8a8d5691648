"""The token join protocol, both ends, over the server's HTTPS port.

Like k3s, a joining node first fetches the cluster's server CA from
``GET /cacerts`` without verifying TLS (it does not know the CA yet) and, when
its token has the ``K10<sha256>::user:secret`` form, checks that the CA's hash
matches: this is what makes the unverified first request safe. Every later
request verifies the server against that CA and sends the token's secret as
HTTP Basic credentials:

- ``GET /v1-k3s/server-bootstrap`` as ``server:<secret>`` (joining servers):
  the CA certificates and keys, as JSON, so the new server can issue its own
  serving and client certificates.
- ``GET /v1-k3s/client-kubelet.crt`` as ``node:<secret>`` (agents; servers may
  use ``server:<secret>``) with the ``K3s-Node-Name`` header: a kubelet client
  certificate (``CN=system:node:<name>``, ``O=system:nodes``) followed by its
  key, in PEM.
- ``GET /v1-k3s/client-ca.crt`` as ``node:<secret>`` or ``server:<secret>``:
  the client CA, which the kubelet checks the API server's certificate against
  on its port 10250.
- ``GET /v1-k3s/readyz``: ``ok`` once the server is serving.
- ``GET /db/info`` as ``server:<secret>`` (joining servers): the etcd member
  list, names and peer URLs, as etcd's MemberList gives them.

Wrong credentials get a 401; the node logs the failure and keeps retrying, as
k3s does.
"""

from __future__ import annotations

import hmac
import json
import ssl
from collections.abc import Callable
from collections.abc import Mapping
from urllib.parse import urlsplit

from k3s_double.apiserver.httpd import Upstream
from k3s_double.apiserver.httpd import client_context
from k3s_double.apiserver.httpd import status_reply
from k3s_double.apiserver.response import Response

from .pki import KeyPair
from .pki import Token
from .pki import ca_hash
from .pki import client_cert


class JoinError(Exception):
    """A join attempt failed; the message says why, in k3s' words."""


def split_url(url: str) -> tuple[str, int]:
    """Host and port of a ``--server`` URL (``https://host[:port]``)."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise JoinError(f"invalid server url {url!r}: must be https://host[:port]")
    return parts.hostname, parts.port or 6443


class JoinService:
    """The server end: answers ``/cacerts``, ``/ping`` and ``/v1-k3s/...``."""

    def __init__(
        self,
        server_ca: KeyPair,
        client_ca: KeyPair,
        server_secret: str,
        agent_secret: str,
        *,
        ready: bool = True,
        db_info: Callable[[], bytes] | None = None,
    ) -> None:
        self.db_info = db_info
        self.server_ca = server_ca
        self.client_ca = client_ca
        self.server_secret = server_secret
        self.agent_secret = agent_secret
        self.ready = ready

    def _allowed(
        self, credentials: tuple[str, str] | None, users: tuple[str, ...]
    ) -> bool:
        if credentials is None:
            return False
        user, password = credentials
        for name in users:
            secret = self.server_secret if name == "server" else self.agent_secret
            if user == name and hmac.compare_digest(password, secret):
                return True
        return False

    def supervise(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        credentials: tuple[str, str] | None,
    ) -> Response:
        """Serve ``/ping``, ``/cacerts`` and the token-guarded join endpoints."""
        if path == "/ping":
            return Response(200, b"pong", "text/plain")
        if path == "/cacerts":
            return Response(200, self.server_ca.cert, "text/plain")
        if path == "/v1-k3s/server-bootstrap":
            if not self._allowed(credentials, ("server",)):
                return status_reply(401, "Unauthorized", "Unauthorized")
            bootstrap = {
                "ServerCA": self.server_ca.cert.decode(),
                "ServerCAKey": self.server_ca.key.decode(),
                "ClientCA": self.client_ca.cert.decode(),
                "ClientCAKey": self.client_ca.key.decode(),
            }
            return Response(200, json.dumps(bootstrap).encode())
        if path == "/v1-k3s/client-kubelet.crt":
            if not self._allowed(credentials, ("node", "server")):
                return status_reply(401, "Unauthorized", "Unauthorized")
            name = headers.get("k3s-node-name", "")
            if not name:
                return status_reply(400, "BadRequest", "K3s-Node-Name is required")
            pair = client_cert(self.client_ca, f"system:node:{name}", ["system:nodes"])
            return Response(200, pair.cert + pair.key, "text/plain")
        if path == "/v1-k3s/client-ca.crt":
            if not self._allowed(credentials, ("node", "server")):
                return status_reply(401, "Unauthorized", "Unauthorized")
            return Response(200, self.client_ca.cert, "text/plain")
        if path == "/db/info":
            if not self._allowed(credentials, ("server",)):
                return status_reply(401, "Unauthorized", "Unauthorized")
            if self.db_info is None:
                return status_reply(
                    404, "NotFound", "the server could not find the requested resource"
                )
            return Response(200, self.db_info())
        if path == "/v1-k3s/readyz":
            if not self._allowed(credentials, ("node", "server")):
                return status_reply(401, "Unauthorized", "Unauthorized")
            if not self.ready:
                return Response(500, b"etcd not ready", "text/plain")
            return Response(200, b"ok", "text/plain")
        return status_reply(
            404, "NotFound", "the server could not find the requested resource"
        )


def _basic(user: str, password: str) -> dict[str, str]:
    import base64

    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def _get(
    url: str,
    context: ssl.SSLContext,
    path: str,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    host, port = split_url(url)
    try:
        status, data = Upstream(host, port, context, timeout=10).call(
            "GET", path, headers=headers
        )
    except (OSError, ssl.SSLError) as exc:
        raise JoinError(f'Get "{url}{path}": {exc}') from None
    if status != 200:
        reason = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
        raise JoinError(f"{url}{path}: {status} {reason.get(status, 'Error')}")
    return data


def fetch_ca(url: str, token: Token) -> bytes:
    """The cluster's server CA, checked against the token's pinned hash."""
    try:
        ca = _get(url, client_context(None), "/cacerts")
    except JoinError as exc:
        raise JoinError(f"failed to get CA certs: {exc}") from None
    if token.ca_hash and not hmac.compare_digest(token.ca_hash, ca_hash(ca)):
        raise JoinError("token CA hash does not match the Cluster CA certificate hash")
    return ca


def server_bootstrap(url: str, token: Token) -> tuple[KeyPair, KeyPair]:
    """The server and client CAs (with keys) for a joining server."""
    ca = fetch_ca(url, token)
    data = _get(
        url,
        client_context(ca),
        "/v1-k3s/server-bootstrap",
        _basic("server", token.password),
    )
    doc = json.loads(data)
    server_ca = KeyPair(doc["ServerCA"].encode(), doc["ServerCAKey"].encode())
    client_ca = KeyPair(doc["ClientCA"].encode(), doc["ClientCAKey"].encode())
    if server_ca.cert != ca:
        raise JoinError("bootstrap data does not match the cluster CA")
    return server_ca, client_ca


def member_urls(url: str, token: Token) -> list[tuple[str, str]]:
    """The etcd members of the cluster at ``url``: ``(name, peer URL)`` pairs."""
    ca = fetch_ca(url, token)
    data = _get(url, client_context(ca), "/db/info", _basic("server", token.password))
    members = json.loads(data).get("members") or []
    return [(str(m["name"]), str(m["peerURLs"][0])) for m in members if m["peerURLs"]]


def kubelet_cert(url: str, token: Token, node_name: str) -> tuple[bytes, KeyPair]:
    """The server CA and a kubelet client certificate for an agent."""
    ca = fetch_ca(url, token)
    user = token.username if token.username in ("server", "node") else "node"
    headers = {**_basic(user, token.password), "K3s-Node-Name": node_name}
    data = _get(url, client_context(ca), "/v1-k3s/client-kubelet.crt", headers)
    marker = b"-----BEGIN EC PRIVATE KEY-----"
    cert, sep, key = data.partition(marker)
    if not sep:
        raise JoinError("malformed kubelet certificate from server")
    return ca, KeyPair(cert, sep + key)


def client_ca(url: str, token: Token, server_ca: bytes) -> bytes:
    """The cluster's client CA, for an agent's kubelet to authenticate callers."""
    user = token.username if token.username in ("server", "node") else "node"
    return _get(
        url, client_context(server_ca), "/v1-k3s/client-ca.crt",
        _basic(user, token.password),
    )  # fmt: skip
