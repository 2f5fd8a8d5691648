"""An in-process registry (API v2, pull side) for the double's pull tests.

It serves images held in memory, logs every request, and can demand Basic
or Bearer auth (with its own token endpoint), serve TLS, or serve a blob
whose bytes do not match its digest.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import ssl
import tarfile
import threading
import urllib.parse
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from k3s_double.node.oci import node_platform


OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class Image:
    """An image's blobs and what its tag names (an index over two platforms)."""

    index: bytes
    manifest: bytes
    config: bytes
    layer: bytes
    other_manifest: str

    @property
    def blobs(self) -> dict[str, bytes]:
        return {
            digest(b): b for b in (self.index, self.manifest, self.config, self.layer)
        }


def make_image(text: str) -> Image:
    """A one-file image for this node's platform, listed beside another one."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    layer = buffer.getvalue()
    os_name, _, arch = node_platform().partition("/")
    config = _json(
        {
            "architecture": arch,
            "os": os_name,
            "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(layer),
                    "size": len(layer),
                }
            ],
        }
    )
    other = "sha256:" + "0" * 64
    other_arch = "s390x"
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": other,
                    "size": 10,
                    "platform": {"os": "linux", "architecture": other_arch},
                },
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest(manifest),
                    "size": len(manifest),
                    "platform": {"os": os_name, "architecture": arch},
                },
            ],
        }
    )
    return Image(index, manifest, config, layer, other)


@dataclass
class Registry:
    """The registry's state; ``serve`` puts it on a port."""

    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    basic: tuple[str, str] | None = None
    bearer: bool = False
    corrupt: set[str] = field(default_factory=set)
    url: str = ""
    server: http.server.ThreadingHTTPServer | None = None

    def push(self, repo: str, tag: str, image: Image) -> None:
        self.repos.setdefault(repo, {}).update(image.blobs)
        self.tags.setdefault(repo, {})[tag] = digest(image.index)

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.requests]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


TOKEN = "s3cr3t-token"


def serve(registry: Registry, context: ssl.SSLContext | None = None) -> Registry:
    """Serve ``registry`` on 127.0.0.1 (TLS with ``context``); return it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _authorized(self) -> bool:
            given = self.headers.get("Authorization", "")
            if registry.basic is not None:
                pair = base64.b64encode(":".join(registry.basic).encode()).decode()
                if given == f"Basic {pair}":
                    return True
                self._send(401, WWW_Authenticate='Basic realm="fake"')
                return False
            if registry.bearer:
                if given == f"Bearer {TOKEN}":
                    return True
                self._send(
                    401,
                    WWW_Authenticate=f'Bearer realm="{registry.url}/token",'
                    'service="fake-registry",scope="repository:app:pull"',
                )
                return False
            return True

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            registry.requests.append(
                (
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                )
            )
            if url.path == "/token":
                query = urllib.parse.parse_qs(url.query)
                if query.get("service") == ["fake-registry"]:
                    self._send(200, _json({"token": TOKEN}))
                else:
                    self._send(400)
                return
            if url.path == "/v2/" or url.path == "/v2":
                self._send(200, b"{}")
                return
            if not self._authorized():
                return
            parts = url.path.removeprefix("/v2/").split("/")
            if len(parts) < 3 or parts[-2] not in ("manifests", "blobs"):
                self._send(404)
                return
            repo, kind, ref = "/".join(parts[:-2]), parts[-2], parts[-1]
            blobs = registry.repos.get(repo)
            if blobs is None:
                self._send(404, _json({"errors": [{"code": "NAME_UNKNOWN"}]}))
                return
            wanted = registry.tags.get(repo, {}).get(ref, ref)
            data = blobs.get(wanted)
            if data is None:
                self._send(404)
                return
            if wanted in registry.corrupt:
                data = data[:-1] + bytes([data[-1] ^ 1])
            media = "application/octet-stream"
            if kind == "manifests":
                media = json.loads(blobs[wanted]).get("mediaType", OCI_MANIFEST)
            self._send(200, data, Content_Type=media, Docker_Content_Digest=wanted)

        do_HEAD = do_GET

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            registry.requests.append((self.command, self.path, {}))
            self._send(404)  # no OAuth: clients fall back to GET

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    registry.server = server
    scheme = "https" if context is not None else "http"
    registry.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return registry
