"""The containerd double and the ``ctr`` command that talks to it.

Real k3s runs containerd on ``/run/k3s/containerd/containerd.sock`` and ships
``ctr`` (defaulting to that socket and the ``k8s.io`` namespace). Here the node
runs :class:`Containerd`, a tiny service on the same socket path that keeps an
image list per namespace (persisted under the agent data dir), and
:func:`main` is ``ctr``. Like real ``ctr``, it fails when nothing listens on
the socket, i.e. when k3s is not running.

``ctr [-n NS] images import [--all-platforms | --platform P] [--digests]
FILE|-`` reads a ``docker save`` (or OCI) tar, validates it (a tar with
``manifest.json`` or ``index.json``; for an OCI index, every blob of the
platforms imported must be there) and records its image names, normalized
as containerd does (``docker.io/library/x:tag``); ``ctr [-n NS] images ls [-q]``
lists them. ``ctr [-n NS] images export [--platform P]... [--all-platforms]
[--skip-manifest-json] [--skip-non-distributable] [--local] OUT|- NAME...``
writes an OCI layout of each stored name (exactly as ``ls -q`` prints it)
with the content a real pull stored (:data:`CONTENT_DIR`), or else the
synthesized content of :mod:`.oci`. Without ``--local``, containerd 2's
``ctr`` exports through the transfer service, and loses the archive's last
chunk (:func:`transfer_loss`); containerd 1.7's defaults to ``--local``.
:meth:`Containerd.pull` is CRI's PullImage, for the node's kubelet
(:mod:`.pulls`): through the endpoints of the node's ``registries.yaml``
(:mod:`.registries`), for real over HTTP(S) (:mod:`.fetch`), except where it
reaches a well-known public registry's default endpoint, which nothing here
can reach: that pull is simulated (synthesized content), as all pulls once
were. containerd's log lines go to
``<data-dir>/agent/containerd/containerd.log``. The wire protocol is one
JSON object per line each way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import socket
import socketserver
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO
from typing import Any

from k3s_double.constants import GO_FALSE
from k3s_double.constants import GO_TRUE
from k3s_double.constants import K3S_VERSION
from k3s_double.imagerefs import normalize as normalize  # ctr.normalize, too
from k3s_double.imagerefs import repository
from k3s_double.releases import containerd_version
from k3s_double.releases import honours_cache_file
from k3s_double.releases import imports_missing_platforms

from . import fetch
from . import oci
from .oci import INDEX_TYPES
from .oci import node_platform
from .registries import Registries


SOCKET = "/run/k3s/containerd/containerd.sock"
NAMESPACE = "k8s.io"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
#: The containerd of the k3s release the double claims.
VERSION = containerd_version(K3S_VERSION)
#: Seconds a simulated pull takes.
PULL_SECONDS = 0.2
#: containerd's content store, under the data dir: pulled blobs by digest.
CONTENT_DIR = "agent/containerd/io.containerd.content.v1.content"
#: Seconds k3s takes to import one archive of ``agent/images`` at start: a
#: model of a small image's unpack, so that re-imports cost what they do.
IMPORT_SECONDS = 0.1
#: The file in ``agent/images`` whose presence makes k3s import only
#: archives whose size or mtime changed since it recorded them.
CACHE_FILE = ".cache.json"
#: What containerd's transfer stream reads and sends at a time (``maxRead``
#: in ``core/transfer/streaming/stream.go``).
TRANSFER_CHUNK = 32 * 1024


class ImageFormatError(Exception):
    """The input is not an image archive ``ctr import`` understands."""


class PullError(Exception):
    """CRI's PullImage failed; the text is containerd's.

    ``not_found`` makes CRI answer gRPC ``NotFound`` rather than ``Unknown``.
    """

    def __init__(self, text: str, *, not_found: bool = False) -> None:
        super().__init__(text)
        self.not_found = not_found


@dataclass(frozen=True)
class Image:
    """One image reference found in an archive.

    ``platforms`` are those whose content the archive holds (and an import
    stores), ``listed`` those its index names, with or without content.
    """

    name: str
    digest: str
    media_type: str
    size: int
    platforms: tuple[str, ...] = ()
    listed: tuple[str, ...] = ()


#: Blobs up to this size are kept in memory: manifests, indexes and configs.
_SMALL_BLOB = 1 << 20


def _platform(entry: dict[str, Any]) -> str:
    found = entry.get("platform") or {}
    return f"{found.get('os', '')}/{found.get('architecture', '')}"


def read_archive(
    stream: IO[bytes], *, platform: str | None = None, all_platforms: bool = False
) -> list[Image]:
    """The images a ``docker save`` / OCI tar stream holds; validates it.

    An OCI archive (``index.json``) is read as containerd does: each image
    must have every blob of the platforms imported, which are all the
    platforms its index lists with ``all_platforms``, else ``platform``
    (default: this node's). An engine with the containerd image store saves
    only the host platform's blobs of a multi-platform image, so importing
    that with ``all_platforms`` fails as ``ctr`` does, naming the digest.
    """
    docs: dict[str, bytes] = {}
    sizes: dict[str, int] = {}
    blobs: dict[str, bytes | None] = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                sizes[name] = member.size
                if not member.isfile():
                    continue
                wanted = name in ("manifest.json", "index.json")
                parts = name.split("/")
                is_blob = len(parts) == 3 and parts[0] == "blobs"
                if not (wanted or is_blob):
                    continue
                extracted = archive.extractfile(member)
                small = member.size <= _SMALL_BLOB
                data = extracted.read() if extracted is not None and small else None
                if wanted and data is not None:
                    docs[name] = data
                if is_blob:
                    blobs[f"{parts[1]}:{parts[2]}"] = data
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ImageFormatError(f"archive/tar: invalid tar header ({exc})") from None
    if "index.json" in docs:
        return _oci_images(docs["index.json"], blobs, platform, all_platforms)
    if "manifest.json" in docs:
        try:
            entries = json.loads(docs["manifest.json"])
        except ValueError:
            raise ImageFormatError("invalid manifest.json") from None
        images = []
        one = (platform or node_platform(),)
        for entry in entries:
            digest = (
                "sha256:"
                + hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()
            )
            size = sum(sizes.get(layer, 0) for layer in entry.get("Layers") or [])
            size += sizes.get(entry.get("Config", ""), 0)
            for tag in entry.get("RepoTags") or []:
                images.append(
                    Image(normalize(tag), digest, DOCKER_MANIFEST, size, one, one)
                )
        return images
    raise ImageFormatError("unrecognized image format")


def _blob(blobs: dict[str, bytes | None], digest: str) -> dict[str, Any]:
    if digest not in blobs:
        raise ImageFormatError(f"content digest {digest}: not found")
    data = blobs[digest]
    try:
        document: dict[str, Any] = json.loads(data or b"")
    except ValueError:
        raise ImageFormatError(f"invalid manifest {digest}") from None
    return document


def _check_manifest(blobs: dict[str, bytes | None], digest: str) -> None:
    manifest = _blob(blobs, digest)
    for part in [manifest.get("config") or {}, *(manifest.get("layers") or [])]:
        if part.get("digest") not in blobs:
            raise ImageFormatError(f"content digest {part.get('digest')}: not found")


def _oci_images(
    raw: bytes,
    blobs: dict[str, bytes | None],
    platform: str | None,
    all_platforms: bool,
) -> list[Image]:
    try:
        index = json.loads(raw)
    except ValueError:
        raise ImageFormatError("invalid index.json") from None
    wanted = platform or node_platform()
    images = []
    for manifest in index.get("manifests") or []:
        digest = str(manifest.get("digest", ""))
        media_type = str(manifest.get("mediaType", OCI_INDEX))
        if media_type in INDEX_TYPES:
            children = _blob(blobs, digest).get("manifests") or []
            chosen = [c for c in children if all_platforms or _platform(c) == wanted]
            if not chosen:
                raise ImageFormatError(
                    f"image {digest} has no manifest for platform {wanted}: not found"
                )
            for child in chosen:
                _check_manifest(blobs, str(child.get("digest", "")))
            have = tuple(dict.fromkeys(_platform(c) for c in chosen))
            listed = tuple(dict.fromkeys(_platform(c) for c in children))
        else:
            _check_manifest(blobs, digest)
            have = listed = (wanted,)
        notes = manifest.get("annotations") or {}
        ref = notes.get("io.containerd.image.name") or notes.get(
            "org.opencontainers.image.ref.name", ""
        )
        if ref and ("/" in ref or ":" in ref):
            size = int(manifest.get("size", 0))
            images.append(Image(normalize(ref), digest, media_type, size, have, listed))
    return images


class _Store:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
        try:
            with open(path, encoding="utf-8") as saved:
                self.data: dict[str, dict[str, dict[str, Any]]] = json.load(saved)
        except (OSError, ValueError):
            self.data = {}

    def add(self, namespace: str, images: Sequence[dict[str, Any]]) -> None:
        with self.lock:
            space = self.data.setdefault(namespace, {})
            for image in images:
                space[image["name"]] = {k: v for k, v in image.items() if k != "name"}
            self._save()

    def remove(self, namespace: str, names: Sequence[str]) -> list[str]:
        with self.lock:
            space = self.data.get(namespace, {})
            gone = [name for name in names if space.pop(name, None) is not None]
            self._save()
            return gone

    def list(self, namespace: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return dict(self.data.get(namespace, {}))

    def _save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(self.data, out)
        os.replace(tmp, self.path)


def _logfmt(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class Containerd:
    """The node's containerd double: an image store behind a unix socket.

    It logs, as k3s' containerd does, to ``agent/containerd/containerd.log``
    in the data dir, in logrus format.
    """

    def __init__(
        self,
        data_dir: str,
        socket_path: str = SOCKET,
        *,
        k3s_version: str = K3S_VERSION,
        registries: Registries | None = None,
    ) -> None:
        self.socket_path = socket_path
        #: The node's ``registries.yaml``; None when it has none.
        self.registries = registries
        self.k3s_version = k3s_version
        self.version = containerd_version(k3s_version)
        self.store = _Store(os.path.join(data_dir, "agent/containerd/images.json"))
        self.content = fetch.Content(os.path.join(data_dir, CONTENT_DIR))
        self.log_path = os.path.join(data_dir, "agent/containerd/containerd.log")
        self._log_lock = threading.Lock()
        self._server: socketserver.ThreadingUnixStreamServer | None = None

    def log(self, msg: str, level: str = "info", **fields: str) -> None:
        """Append one containerd log line (logrus text, RFC 3339 nanoseconds)."""
        stamp = datetime.datetime.now(datetime.timezone.utc)
        parts = [
            f'time="{stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")}000Z"',
            f"level={level}",
            f"msg={_logfmt(msg)}",
            *(f"{key}={_logfmt(value)}" for key, value in fields.items()),
        ]
        with self._log_lock:
            os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as out:
                out.write(" ".join(parts) + "\n")

    def has(self, ref: str, namespace: str = NAMESPACE) -> bool:
        """Whether the store holds ``ref`` (compared normalized)."""
        return normalize(ref) in self.store.list(namespace)

    def pull(
        self, ref: str, namespace: str = NAMESPACE, *, sandbox: bool = False
    ) -> str:
        """Pull ``ref`` as CRI's PullImage does; return the image ID.

        The endpoints are those of ``registries.yaml`` (:mod:`.registries`):
        mirrors, then the registry's default endpoint. Each is pulled from
        for real (:mod:`.fetch`) and a failing one is logged, as containerd
        logs it, before the next is tried; a pull that reaches a well-known
        public registry's default endpoint is simulated instead (see
        :meth:`_simulate`). Three names point at the image, as CRI records a
        pull: the tagged name, ``repo@<digest of what the name resolved to>``
        and ``sha256:<config digest>``, the image ID. Every pull is logged
        with a ``Pulled image`` line; the kubelet's requests, not the sandbox
        image CRI pulls for itself, also with ``PullImage`` lines. A pull
        that fails everywhere raises :class:`PullError` with CRI's text, and
        logs ``PullImage "<ref>" failed``.
        """
        began = time.monotonic()
        if not sandbox:
            self.log(f"PullImage {_logfmt(ref)}")
        name = normalize(ref)
        registry = name.partition("/")[0]
        endpoints = (self.registries or Registries()).endpoints(registry)
        try:
            pulled = fetch.pull(
                name, endpoints, self.content, lambda m, lv, f: self.log(m, lv, **f)
            )
        except fetch.FetchError as exc:
            message = f"failed to pull and unpack image {_logfmt(name)}: {exc}"
            if not sandbox:
                self.log(f"PullImage {_logfmt(ref)} failed", "error", error=message)
            raise PullError(message, not_found=exc.not_found) from None
        if isinstance(pulled, str):
            image_id, size, digest = self._simulate(name, namespace)
        else:
            image_id, size, digest = self._record(name, namespace, pulled)
        seconds = time.monotonic() - began
        self.log(
            f"Pulled image {_logfmt(name)} with image id "
            f"{_logfmt(image_id)}, repo tag {_logfmt(name)}, repo digest "
            f"{_logfmt(f'{repository(name)}@{digest}')}, size {_logfmt(str(size))} in "
            f"{seconds * 1000:.6f}ms"
        )
        if not sandbox:
            self.log(
                f"PullImage {_logfmt(ref)} returns image reference {_logfmt(image_id)}"
            )
        return image_id

    def _simulate(self, name: str, namespace: str) -> tuple[str, int, str]:
        """A simulated pull: (image ID, size, digest) of synthesized content.

        The image is an index over the usual platforms, with content for this
        node's platform only (``--all-platforms`` exports of it fail, as in
        containerd). It takes :data:`PULL_SECONDS`.
        """
        time.sleep(PULL_SECONDS)
        image = oci.synthesize(name)
        own = image.manifests[node_platform()]
        entry = {
            "digest": image.digest,
            "media_type": oci.OCI_INDEX,
            "size": own.size,
            "platforms": [node_platform()],
            "listed": oci.listed_platforms(),
            "image_id": own.config_digest,
            "pulled": True,
        }
        self._names(name, namespace, entry)
        return own.config_digest, own.size, image.digest

    def _record(
        self, name: str, namespace: str, pulled: fetch.Pulled
    ) -> tuple[str, int, str]:
        """Record a real pull, whose blobs are in the content store."""
        entry = {
            "digest": pulled.top.digest,
            "media_type": pulled.top.media_type,
            "size": pulled.size,
            "platforms": [node_platform()],
            "listed": list(pulled.listed),
            "image_id": pulled.config.digest,
            "pulled": True,
            "content": True,
        }
        self._names(name, namespace, entry)
        return pulled.config.digest, pulled.size, pulled.top.digest

    def _names(self, name: str, namespace: str, entry: dict[str, Any]) -> None:
        names = [f"{repository(name)}@{entry['digest']}", str(entry["image_id"])]
        if "@" not in name:
            names.insert(0, name)
        self.store.add(namespace, [{"name": n, **entry} for n in names])

    def start(self) -> None:
        """Listen on the socket (replacing a stale one) in a daemon thread."""
        os.makedirs(os.path.dirname(self.socket_path), exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        store = self.store
        version = self.version
        content = self.content.root

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline()
                try:
                    request = json.loads(line)
                    answer = _answer(store, request, version, content)
                except Exception as exc:  # any bad request gets an error answer
                    answer = {"ok": False, "error": str(exc)}
                self.wfile.write(json.dumps(answer).encode() + b"\n")

        self.log("starting containerd", revision="", version=self.version)
        server = socketserver.ThreadingUnixStreamServer(self.socket_path, Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.log(f"serving... address={self.socket_path}")

    def preload(
        self,
        images_dir: str,
        log: Callable[[str], None],
        error: Callable[[str], None] | None = None,
    ) -> None:
        """Import the tarballs in ``agent/images`` at start, as k3s does.

        Each import takes :data:`IMPORT_SECONDS`, and k3s holds the agent
        until all are done. A release that honours :data:`CACHE_FILE` skips
        the archives it lists with their size and mtime unchanged (an empty
        file lists none) and records what it imports; older ones ignore it.
        A release before k3s#10132 imports with all platforms, so an archive
        holding one platform of a multi-platform image fails, with k3s' error.
        """
        report = error or log
        try:
            names = sorted(os.listdir(images_dir))
        except FileNotFoundError:
            return
        cache_path = os.path.join(images_dir, CACHE_FILE)
        cache = (
            _read_cache(cache_path)
            if honours_cache_file(self.k3s_version) and os.path.isfile(cache_path)
            else None
        )
        lenient = imports_missing_platforms(self.k3s_version)
        for name in names:
            path = os.path.join(images_dir, name)
            if not name.endswith((".tar", ".tar.gz", ".tgz")):
                continue
            try:
                seen = os.stat(path)
            except OSError:
                continue
            stamp = {"size": seen.st_size, "modTime": _rfc3339(seen.st_mtime_ns)}
            if cache is not None and cache.get(path) == stamp:
                continue
            start = time.monotonic()
            log(f"Importing images from {path}")
            time.sleep(IMPORT_SECONDS)
            try:
                with open(path, "rb") as stream:
                    images = read_archive(stream, all_platforms=not lenient)
            except (OSError, ImageFormatError) as exc:
                report(
                    f"Error encountered while importing {path}: failed to import "
                    f"images from {path}: {exc}"
                )
                continue
            # k3s pins what it imports, so the kubelet never collects it.
            self.store.add(
                NAMESPACE,
                [{**dataclasses.asdict(image), "pinned": True} for image in images],
            )
            for image in images:
                log(f"Imported {image.name}")
            log(f"Imported images from {path} in {time.monotonic() - start:.3f}s")
            if cache is not None:
                cache[path] = stamp
                _write_cache(cache_path, cache)

    def stop(self) -> None:
        """Stop listening and remove the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


def _answer(
    store: _Store, request: dict[str, Any], version: str, content: str
) -> dict[str, Any]:
    op = request.get("op")
    namespace = str(request.get("namespace", NAMESPACE))
    if op == "import":
        store.add(namespace, request["images"])
        return {"ok": True}
    if op == "list":
        return {"ok": True, "images": store.list(namespace), "content": content}
    if op == "remove":
        return {"ok": True, "removed": store.remove(namespace, request["names"])}
    if op == "version":
        return {"ok": True, "version": version}
    return {"ok": False, "error": f"unknown operation {op!r}"}


def _rfc3339(ns: int) -> str:
    stamp = datetime.datetime.fromtimestamp(ns // 10**9, datetime.timezone.utc)
    return f"{stamp.strftime('%Y-%m-%dT%H:%M:%S')}.{ns % 10**9:09d}Z"


def _read_cache(path: str) -> dict[str, Any]:
    """The entries of a ``.cache.json``: empty when it is empty or unreadable."""
    try:
        with open(path, encoding="utf-8") as cached:
            text = cached.read()
        found = json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}
    return dict(found) if isinstance(found, dict) else {}


def _write_cache(path: str, cache: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(cache, out, sort_keys=True)
    os.replace(tmp, path)


class CtrError(Exception):
    """A failure ``ctr`` reports as ``ctr: <message>`` with exit status 1."""


def _call(address: str, request: dict[str, Any]) -> dict[str, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(30)
        try:
            sock.connect(address)
        except OSError as exc:
            reason = (
                "no such file or directory"
                if isinstance(exc, FileNotFoundError)
                else "connection refused"
            )
            raise CtrError(
                f'failed to dial "{address}": connection error: desc = "transport: '
                f'error while dialing: dial unix {address}: connect: {reason}"'
            ) from None
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            part = sock.recv(65536)
            if not part:
                break
            data += part
    finally:
        sock.close()
    answer: dict[str, Any] = json.loads(data or b"{}")
    if not answer.get("ok"):
        raise CtrError(str(answer.get("error", "containerd closed the connection")))
    return answer


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _images(address: str, namespace: str, args: list[str], out: IO[str]) -> None:
    if not args:
        raise CtrError("images: a command is required (import, export, ls, rm)")
    command, rest = args[0], args[1:]
    if command in ("import",):
        switches = {"--all-platforms", "--digests", "--no-unpack", "--local"}
        valued = {"--platform", "--base-name", "--index-name"}
        values: dict[str, str] = {}
        seen: set[str] = set()
        operands = []
        pending = list(rest)
        while pending:
            arg = pending.pop(0)
            if not arg.startswith("-") or arg == "-":
                operands.append(arg)
                continue
            flag, has_value, value = arg.partition("=")
            if flag in valued:
                if not has_value:
                    if not pending:
                        raise CtrError(f"flag needs an argument: {flag}")
                    value = pending.pop(0)
                values[flag] = value
            elif flag in switches:
                seen.add(flag)
            else:
                raise CtrError(f"flag provided but not defined: {flag}")
        if len(operands) != 1:
            raise CtrError("import: exactly one archive (a file or -) is required")
        _call(address, {"op": "version"})
        source = operands[0]
        choice: dict[str, Any] = {
            "platform": values.get("--platform"),
            "all_platforms": "--all-platforms" in seen,
        }
        try:
            if source == "-":
                images = read_archive(sys.stdin.buffer, **choice)
            else:
                with open(source, "rb") as stream:
                    images = read_archive(stream, **choice)
        except FileNotFoundError:
            raise CtrError(f"open {source}: no such file or directory") from None
        except ImageFormatError as exc:
            raise CtrError(str(exc)) from None
        _call(
            address,
            {
                "op": "import",
                "namespace": namespace,
                "images": [dataclasses.asdict(image) for image in images],
            },
        )
        for image in images:
            out.write(f"unpacking {image.name} ({image.digest})...done\n")
        return
    if command == "export":
        _export(address, namespace, rest)
        return
    options = [a for a in rest if a.startswith("-") and a != "-"]
    operands = [a for a in rest if not a.startswith("-") or a == "-"]
    if command in ("ls", "list"):
        quiet = any(o in ("-q", "--quiet") for o in options)
        listed = _call(address, {"op": "list", "namespace": namespace})["images"]
        if quiet:
            for name in sorted(listed):
                out.write(name + "\n")
            return
        rows = [("REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS")]
        for name in sorted(listed):
            info = listed[name]
            rows.append(
                (
                    name,
                    info["media_type"],
                    info["digest"],
                    _human(int(info["size"])),
                    ",".join(info.get("listed") or [node_platform()]),
                    "io.cri-containerd.image=managed"
                    + (
                        ",io.cri-containerd.pinned=pinned" if info.get("pinned") else ""
                    ),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(6)]
        for row in rows:
            out.write(
                " ".join(
                    cell.ljust(w) for cell, w in zip(row, widths, strict=True)
                ).rstrip()
                + "\n"
            )
        return
    if command in ("rm", "remove", "delete", "del"):
        removed = _call(
            address, {"op": "remove", "namespace": namespace, "names": operands}
        )["removed"]
        for name in removed:
            out.write(name + "\n")
        return
    raise CtrError(f"images: no such command {command!r}")


EXPORT_SWITCHES = frozenset(
    {"--all-platforms", "--skip-manifest-json", "--skip-non-distributable"}
)


def _export_args(args: list[str]) -> tuple[list[str], set[str], list[str]]:
    """(platforms, switches, operands) of ``ctr images export``.

    As Go's flag package parses: flags (one or two dashes) come first, the
    first operand (``-`` is one) or ``--`` ends them. ``--local`` is a
    boolean (``--local=false`` too); the switches hold ``--local`` when the
    export runs locally, by the flag or by this ``ctr``'s default.
    """
    platforms: list[str] = []
    seen: set[str] = set()
    # containerd 1.7's ``local`` is a BoolTFlag (on unless =false); 2.x's is off.
    local = not VERSION.startswith("v2.")
    pending = list(args)
    while pending and pending[0].startswith("-") and pending[0] != "-":
        arg = pending.pop(0)
        if arg == "--":
            break
        flag, has_value, value = ("-" + arg.lstrip("-")).partition("=")
        flag = "-" + flag
        if flag == "--platform":
            if not has_value:
                if not pending:
                    raise CtrError("flag needs an argument: -platform")
                value = pending.pop(0)
            platforms.append(value)
        elif flag in EXPORT_SWITCHES and not has_value:
            seen.add(flag)
        elif flag == "--local" and (not has_value or value in GO_TRUE | GO_FALSE):
            local = not has_value or value in GO_TRUE
        elif flag == "--local":
            raise CtrError(f'invalid boolean value "{value}" for -local: parse error')
        else:
            raise CtrError(f"flag provided but not defined: {flag[1:]}")
    if local:
        seen.add("--local")
    return platforms, seen, pending


def transfer_loss(data: bytes) -> bytes:
    """What an export through containerd's transfer service delivers of ``data``.

    ``ctr`` hands the server a stream and a goroutine that copies it to the
    output (``MarshalAny`` in ``core/transfer/archive/exporter.go``);
    nothing waits for that goroutine (``core/transfer/proxy/transfer.go``),
    so ``ctr`` exits 0 as soon as the server says it is done, and the chunks
    still in flight are lost. The double always loses the last chunk the
    server read (:data:`TRANSFER_CHUNK`): to a pipe or a file alike, since
    the race is inside ``ctr``; an archive smaller than one chunk comes out
    empty.
    """
    return data[: max(0, len(data) - 1) // TRANSFER_CHUNK * TRANSFER_CHUNK]


def _export(address: str, namespace: str, args: list[str]) -> None:
    """``ctr images export [flags] <out> <image> ...``, as containerd's ctr."""
    platforms, seen, operands = _export_args(args)
    if len(operands) < 2:
        raise CtrError(
            "please provide both an output filename and an image reference to export"
        )
    out, names = operands[0], operands[1:]
    answer = _call(address, {"op": "list", "namespace": namespace})
    listed = answer["images"]
    content = fetch.Content(str(answer.get("content", "")))

    def read(digest: str) -> bytes | None:
        try:
            return content.read(digest)
        except OSError:
            return None

    found = []
    for name in names:
        # Exactly as stored: ctr does not normalize the names it exports.
        if name not in listed:
            raise CtrError(f'image "{name}": not found')
        found.append((name, listed[name]))
    try:
        data = oci.export_archive(
            found,
            platforms=platforms,
            all_platforms="--all-platforms" in seen,
            skip_manifest_json="--skip-manifest-json" in seen,
            read=read,
        )
    except oci.ExportError as exc:
        raise CtrError(str(exc)) from None
    if "--local" not in seen:
        data = transfer_loss(data)
    if out == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        with open(out, "wb") as target:
            target.write(data)
    except OSError as exc:
        reason = exc.strerror.lower() if exc.strerror else str(exc)
        raise CtrError(f"open {out}: {reason}") from None


def main(argv: Sequence[str]) -> int:
    """``ctr [global flags] <command> ...``; returns the exit status."""
    args = list(argv[1:])
    address = os.environ.get("CONTAINERD_ADDRESS", SOCKET)
    namespace = os.environ.get("CONTAINERD_NAMESPACE", NAMESPACE)
    try:
        while args and args[0].startswith("-"):
            flag = args.pop(0)
            name, has_value, value = flag.partition("=")
            if name in ("-n", "--namespace", "-a", "--address", "--timeout"):
                if not has_value:
                    if not args:
                        raise CtrError(f"flag needs an argument: {name}")
                    value = args.pop(0)
                if name in ("-n", "--namespace"):
                    namespace = value
                elif name in ("-a", "--address"):
                    address = value
            elif name not in ("--debug",):
                raise CtrError(f"flag provided but not defined: {name}")
        if not args:
            sys.stdout.write("NAME:\n   ctr - containerd CLI\n")
            return 0
        command, rest = args[0], args[1:]
        if command in ("images", "image", "i"):
            _images(address, namespace, rest, sys.stdout)
        elif command == "version":
            version = _call(address, {"op": "version"})["version"]
            sys.stdout.write(f"Server:\n  Version:  {version}\n")
        else:
            raise CtrError(f"No help topic for '{command}'")
    except CtrError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"ctr: {exc}\n")
        return 1
    sys.stdout.flush()
    return 0
