"""A real image pull over the registry API v2, as containerd's resolver does it.

:func:`pull` resolves an image name against the endpoints of
:mod:`.registries` and fetches what the node needs into the content store
(:class:`Content`, containerd's own layout under ``agent/containerd``):

- **resolve** (``remotes/docker/resolver.go``): ``HEAD
  <endpoint>/<repo>/manifests/<tag or digest>`` with containerd's
  ``Accept`` list, endpoint after endpoint. A transport error, a 404 or
  any other status of 400 and up is logged (``trying next host``) and the
  next endpoint is tried; when all fail, the most telling error wins (an
  unexpected status over a 404 over a transport error), as containerd
  ranks them. Without ``Docker-Content-Digest`` and ``Content-Length`` the
  manifest is fetched with ``GET`` and its digest computed;
- **fetch**: the manifest by digest, then, for an index or manifest list,
  this node's platform's manifest (:func:`.oci.node_platform`), its config
  and its layers, each by digest, again trying every endpoint in order.
  Every blob is checked against its descriptor's size and digest before it
  is committed; a mismatch fails the pull with containerd's ``failed commit
  on ref ...: unexpected commit digest ...: failed precondition``;
- **auth**: a 401's ``WWW-Authenticate`` challenge is answered as
  containerd's authorizer does: ``Bearer`` by a token from its realm (an
  OAuth ``POST`` with credentials, falling back to ``GET`` with Basic auth;
  anonymous ``GET`` without), ``Basic`` with the credentials of the
  endpoint's ``configs`` entry; the request is then sent again once;
- **TLS**: ``https`` endpoints verify against the system CAs plus
  ``tls.ca_file``, present ``cert_file``/``key_file``, or skip verification
  with ``insecure_skip_verify``; ``http`` endpoints are plain HTTP.

Errors carry the text Go and containerd would print (``dial tcp: lookup
registry on 127.0.0.11:53: no such host``). An endpoint the double must
not contact (:meth:`.registries.Endpoint.simulated`) ends resolution with
:data:`SIMULATED`: the caller then synthesizes the image as before.
Timeouts are containerd's: 30 s to connect (its transport's dialer), 10 s
for a TLS handshake, and 5 minutes without progress on a response (CRI's
``image_pull_progress_timeout``).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import ssl
import urllib.parse
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from .oci import INDEX_TYPES
from .oci import node_platform
from .registries import Endpoint


#: What containerd's resolver accepts for a manifest (``resolver.go``).
MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "*/*",
    ]
)
USER_AGENT = "containerd/v2.2.3-k3s1"
DIAL_TIMEOUT = 30.0
TLS_TIMEOUT = 10.0
PROGRESS_TIMEOUT = 300.0
#: Manifests larger than this are refused (containerd's ``MaxManifestSize``).
MAX_MANIFEST = 4 << 20
CHUNK = 1 << 16
SIMULATED = "simulated"


class FetchError(Exception):
    """A failed request or pull, with containerd's error text.

    ``rank`` orders resolution errors as containerd does (1 a transport
    error, 2 not found, 3 an unexpected status); ``not_found`` makes CRI
    answer gRPC ``NotFound`` rather than ``Unknown``.
    """

    def __init__(self, text: str, *, rank: int = 1, not_found: bool = False) -> None:
        super().__init__(text)
        self.rank = rank
        self.not_found = not_found


class Unauthorized(FetchError):
    """Credentials were refused (containerd's ``ErrInvalidAuthorization``)."""


@dataclass
class Response:
    """An HTTP answer whose body has not been read yet."""

    status: int
    reason: str
    headers: dict[str, str]
    raw: http.client.HTTPResponse
    connection: http.client.HTTPConnection

    def read(self) -> bytes:
        """The whole body, then the connection is closed."""
        try:
            return self.raw.read()
        finally:
            self.close()

    def chunks(self) -> Iterator[bytes]:
        """The body in pieces, then the connection is closed."""
        try:
            while True:
                part = self.raw.read(CHUNK)
                if not part:
                    return
                yield part
        finally:
            self.close()

    def close(self) -> None:
        """Drop the connection."""
        self.connection.close()

    @property
    def status_line(self) -> str:
        """``404 Not Found``, as Go's ``Response.Status`` reads."""
        return f"{self.status} {self.reason}".strip()


def nameserver() -> str:
    """The resolver Go's error names: the first of ``/etc/resolv.conf``."""
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as conf:
            for line in conf:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    host = parts[1]
                    return f"[{host}]:53" if ":" in host else f"{host}:53"
    except OSError:
        pass
    return "127.0.0.53:53"


def _split_host(host: str, scheme: str) -> tuple[str, int]:
    parsed = urllib.parse.urlsplit(f"//{host}")
    port = parsed.port or (443 if scheme == "https" else 80)
    return parsed.hostname or host, port


def _tls_context(endpoint: Endpoint) -> ssl.SSLContext:
    tls = endpoint.config.tls
    context = ssl.create_default_context()
    if tls is None:
        return context
    if tls.ca_file:
        context.load_verify_locations(tls.ca_file)
    if tls.cert_file or tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file or None)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _dial_error(exc: OSError, host: str, address: str) -> str:
    if isinstance(exc, socket.gaierror):
        reason = (
            "server misbehaving" if exc.errno == socket.EAI_AGAIN else "no such host"
        )
        return f"dial tcp: lookup {host} on {nameserver()}: {reason}"
    if isinstance(exc, TimeoutError):
        return f"dial tcp {address}: i/o timeout"
    if isinstance(exc, ConnectionRefusedError):
        return f"dial tcp {address}: connect: connection refused"
    return f"dial tcp {address}: connect: {(exc.strerror or str(exc)).lower()}"


def _tls_error(exc: ssl.SSLError, host: str) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = {
            62: f"certificate is not valid for {host}",  # HOSTNAME_MISMATCH
            10: "certificate has expired or is not yet valid",  # CERT_HAS_EXPIRED
        }.get(exc.verify_code, "certificate signed by unknown authority")
        return f"tls: failed to verify certificate: x509: {reason}"
    if "WRONG_VERSION_NUMBER" in str(exc) or "record layer failure" in str(exc):
        return "http: server gave HTTP response to HTTPS client"
    return f"remote error: tls: {exc.reason or exc}".lower()


def send(
    method: str,
    url: str,
    headers: dict[str, str],
    endpoint: Endpoint,
    body: bytes | None = None,
) -> Response:
    """One request, with Go's wording for what goes wrong before an answer.

    Raises :class:`FetchError` (``failed to do request: Head "<url>":
    ...``); any answer, whatever its status, is returned.
    """
    parts = urllib.parse.urlsplit(url)
    name, port = _split_host(parts.netloc, parts.scheme)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    verb = method.capitalize()

    def failed(text: str) -> FetchError:
        return FetchError(f'failed to do request: {verb} "{url}": {text}')

    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise failed(_dial_error(exc, name, "")) from None
    family, _, _, _, sockaddr = infos[0]
    ip = str(sockaddr[0])
    address = f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}"
    try:
        sock = socket.create_connection((ip, port), timeout=DIAL_TIMEOUT)
    except OSError as exc:
        raise failed(_dial_error(exc, name, address)) from None
    try:
        if parts.scheme == "https":
            sock.settimeout(TLS_TIMEOUT)
            try:
                sock = _tls_context(endpoint).wrap_socket(sock, server_hostname=name)
            except ssl.SSLError as exc:
                raise failed(_tls_error(exc, name)) from None
            except TimeoutError:
                raise failed("net/http: TLS handshake timeout") from None
            except OSError as exc:
                raise failed(f"read tcp {address}: {exc.strerror or exc}") from None
        sock.settimeout(PROGRESS_TIMEOUT)
        connection = http.client.HTTPConnection(name, port)
        connection.sock = sock
        try:
            connection.putrequest(method, target, skip_host=True)
            connection.putheader("Host", parts.netloc)
            for key, value in headers.items():
                connection.putheader(key, value)
            if body is not None:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            raw = connection.getresponse()
        except TimeoutError:
            raise failed("context deadline exceeded") from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            if isinstance(exc, http.client.RemoteDisconnected):
                raise failed("EOF") from None
            raise failed(f"read tcp {address}: {exc}") from None
    except BaseException:
        sock.close()
        raise
    found = {k.lower(): v for k, v in raw.getheaders()}
    return Response(raw.status, raw.reason, found, raw, connection)


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: its scheme and parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)


def parse_challenges(header: str) -> list[Challenge]:
    """The challenges of a ``WWW-Authenticate`` value (``ParseAuthHeader``).

    ``Bearer realm="https://auth/token",service="r",scope="repository:a:pull"``
    gives one challenge; quoted values may hold commas and escaped quotes.
    """
    found: list[Challenge] = []
    text = header.strip()
    i = 0
    current: Challenge | None = None
    while i < len(text):
        while i < len(text) and text[i] in " ,":
            i += 1
        start = i
        while i < len(text) and text[i] not in " =,":
            i += 1
        token = text[start:i]
        if not token:
            break
        if i < len(text) and text[i] == "=" and current is not None:
            i += 1
            if i < len(text) and text[i] == '"':
                i += 1
                value = []
                while i < len(text) and text[i] != '"':
                    if text[i] == "\\" and i + 1 < len(text):
                        i += 1
                    value.append(text[i])
                    i += 1
                i += 1
                current.params[token.lower()] = "".join(value)
            else:
                start = i
                while i < len(text) and text[i] not in " ,":
                    i += 1
                current.params[token.lower()] = text[start:i]
        else:
            current = Challenge(token.lower())
            found.append(current)
    return found


class Authorizer:
    """The ``Authorization`` each endpoint host needs, learnt from its 401s."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.headers: dict[str, str] = {}

    def header(self, endpoint: Endpoint) -> dict[str, str]:
        """The authorization to send to ``endpoint``, if learnt."""
        known = self.headers.get(endpoint.host)
        return {"Authorization": known} if known else {}

    def learn(self, endpoint: Endpoint, response: Response) -> None:
        """Answer ``response``'s challenge; raise if it cannot be answered."""
        challenges = parse_challenges(response.headers.get("www-authenticate", ""))
        user, secret = (
            endpoint.config.auth.credentials()
            if endpoint.config.auth is not None
            else ("", "")
        )
        for challenge in challenges:
            if challenge.scheme == "bearer":
                token = self._token(endpoint, challenge, user, secret)
                self.headers[endpoint.host] = f"Bearer {token}"
                return
            if challenge.scheme == "basic":
                if not user or not secret:
                    raise Unauthorized(
                        "pull access denied, repository does not exist or may "
                        "require authorization: authorization failed: no basic "
                        "auth credentials"
                    )
                pair = base64.b64encode(f"{user}:{secret}".encode()).decode()
                self.headers[endpoint.host] = f"Basic {pair}"
                return
        raise FetchError(
            "failed to find supported auth scheme: not implemented", rank=3
        )

    def _token(
        self, endpoint: Endpoint, challenge: Challenge, user: str, secret: str
    ) -> str:
        realm = challenge.params.get("realm", "")
        if not realm:
            raise FetchError("no realm specified for token auth challenge", rank=3)
        service = challenge.params.get("service", "")
        scopes = [s for s in (challenge.params.get("scope", ""), self.scope) if s]
        scopes = list(dict.fromkeys(scopes))
        if secret:
            form = {
                "grant_type": "password" if user else "refresh_token",
                "service": service,
                "client_id": "containerd-client",
                "scope": " ".join(scopes),
                **({"username": user, "password": secret} if user else {}),
                **({} if user else {"refresh_token": secret}),
            }
            answer = send(
                "POST",
                realm,
                {
                    "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                    "User-Agent": USER_AGENT,
                },
                endpoint,
                urllib.parse.urlencode(form).encode(),
            )
            if answer.status == 200:
                return _token_of(answer)
            answer.close()
            if answer.status not in (400, 401, 404, 405):
                raise FetchError(
                    f"failed to fetch oauth token: unexpected status from POST "
                    f"request to {realm}: {answer.status_line}",
                    rank=3,
                )
        query = urllib.parse.urlencode(
            [("scope", s) for s in scopes] + [("service", service)]
        )
        url = f"{realm}{'&' if '?' in realm else '?'}{query}"
        headers = {"User-Agent": USER_AGENT}
        if user or secret:
            pair = base64.b64encode(f"{user}:{secret}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"
        answer = send("GET", url, headers, endpoint)
        if answer.status != 200:
            answer.close()
            what = "token" if user or secret else "anonymous token"
            raise FetchError(
                f"failed to fetch {what}: unexpected status from GET request to "
                f"{url}: {answer.status_line}",
                rank=3,
            )
        return _token_of(answer)


def _token_of(answer: Response) -> str:
    try:
        found = json.loads(answer.read())
    except ValueError:
        raise FetchError("failed to decode token response", rank=3) from None
    token = (
        found.get("token") or found.get("access_token")
        if isinstance(found, dict)
        else ""
    )
    if not token:
        raise FetchError("no token in response", rank=3)
    return str(token)


@dataclass(frozen=True)
class Descriptor:
    """What a manifest or blob is: media type, digest and size."""

    media_type: str
    digest: str
    size: int


class Content:
    """containerd's content store on disk: ``blobs/sha256/<hex>``, by digest."""

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, digest: str) -> str:
        """Where the blob ``digest`` lives."""
        algorithm, _, hexa = digest.partition(":")
        return os.path.join(self.root, "blobs", algorithm, hexa)

    def has(self, digest: str) -> bool:
        """Whether the blob is stored."""
        return os.path.isfile(self.path(digest))

    def read(self, digest: str) -> bytes:
        """The blob's bytes (``FileNotFoundError`` when absent)."""
        with open(self.path(digest), "rb") as blob:
            return blob.read()

    def write(self, desc: Descriptor, chunks: Iterator[bytes], kind: str) -> None:
        """Commit a blob, refusing what does not match its descriptor.

        As containerd's local content writer: the size, then the digest, are
        checked before the blob becomes visible; ``kind`` names the ingest
        ref (``layer-sha256:...``) in the error.
        """
        ingest = os.path.join(self.root, "ingest")
        os.makedirs(ingest, exist_ok=True)
        ref = f"{kind}-{desc.digest}"
        temporary = os.path.join(ingest, ref.replace(":", "-"))
        digest = hashlib.sha256()
        size = 0
        try:
            with open(temporary, "wb") as out:
                for part in chunks:
                    digest.update(part)
                    size += len(part)
                    out.write(part)
            if size != desc.size:
                raise FetchError(
                    f'failed commit on ref "{ref}": unexpected commit size {size}, '
                    f"expected {desc.size}: failed precondition",
                    rank=3,
                )
            found = "sha256:" + digest.hexdigest()
            if found != desc.digest:
                raise FetchError(
                    f'failed commit on ref "{ref}": unexpected commit digest '
                    f"{found}, expected {desc.digest}: failed precondition",
                    rank=3,
                )
            os.makedirs(os.path.dirname(self.path(desc.digest)), exist_ok=True)
            os.replace(temporary, self.path(desc.digest))
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)


@dataclass(frozen=True)
class Pulled:
    """A pulled image: what its name resolved to and this platform's parts."""

    top: Descriptor
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    #: The platforms the index lists (the node's alone for a manifest).
    listed: tuple[str, ...]

    @property
    def size(self) -> int:
        """Bytes of everything fetched for this platform, as CRI sums them."""
        parts = [self.manifest, self.config, *self.layers]
        if self.top.digest != self.manifest.digest:
            parts.append(self.top)
        return sum(p.size for p in parts)


#: ``log(msg, level, fields)``: a containerd log line.
Logger = Callable[[str, str, dict[str, str]], None]


class Resolver:
    """One image's pull: its endpoints, credentials and content store."""

    def __init__(
        self,
        registry: str,
        repository: str,
        endpoints: list[Endpoint],
        content: Content,
        log: Logger,
    ) -> None:
        self.registry = registry
        self.repository = repository
        self.endpoints = endpoints
        self.content = content
        self.log = log
        self.auth = Authorizer(f"repository:{repository}:pull")

    def url(self, endpoint: Endpoint, *parts: str) -> str:
        """The URL of ``parts`` of this image's repository at ``endpoint``."""
        path = endpoint.request_path(self.registry, self.repository, *parts)
        return f"{endpoint.scheme}://{endpoint.host}{path}"

    def request(
        self, method: str, endpoint: Endpoint, url: str, accept: str
    ) -> Response:
        """A request with authorization, answered again once after a 401.

        Redirects (a registry's blob storage) are followed, without the
        ``Authorization`` on another host, as Go's client does.
        """
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        answer = send(method, url, {**headers, **self.auth.header(endpoint)}, endpoint)
        if answer.status == 401:
            answer.close()
            self.auth.learn(endpoint, answer)
            answer = send(
                method, url, {**headers, **self.auth.header(endpoint)}, endpoint
            )
            if answer.status == 401:
                answer.close()
                error = next(
                    (
                        c.params["error"]
                        for c in parse_challenges(
                            answer.headers.get("www-authenticate", "")
                        )
                        if c.params.get("error")
                    ),
                    "",
                )
                if error:
                    raise Unauthorized(
                        "pull access denied, repository does not exist or may "
                        f"require authorization: server message: {error}: "
                        "authorization failed"
                    )
        for _ in range(10):
            if answer.status not in (301, 302, 303, 307, 308):
                break
            location = answer.headers.get("location", "")
            answer.close()
            if not location:
                break
            target = urllib.parse.urljoin(url, location)
            same = urllib.parse.urlsplit(target).netloc == endpoint.host
            extra = self.auth.header(endpoint) if same else {}
            answer = send(method, target, {**headers, **extra}, endpoint)
            url = target
        return answer

    def _next(self, index: int, fields: dict[str, str], message: str) -> None:
        last = index == len(self.endpoints) - 1
        self.log(
            f"{'fetch failed' if last else 'trying next host'}{message}", "info", fields
        )

    def resolve(self, reference: str, name: str) -> Descriptor | str:
        """What ``reference`` (a tag or digest) names, or :data:`SIMULATED`."""
        kind = "manifests"
        best: FetchError | None = None
        for index, endpoint in enumerate(self.endpoints):
            if endpoint.simulated(self.registry):
                return SIMULATED
            url = self.url(endpoint, kind, reference)
            fields = {"host": endpoint.host, "method": "HEAD", "url": url}
            try:
                answer = self.request("HEAD", endpoint, url, MANIFEST_ACCEPT)
            except FetchError as exc:
                if best is None or exc.rank > best.rank:
                    best = exc
                self._next(index, {"error": str(exc), **fields}, "")
                continue
            answer.close()
            if answer.status == 405:
                answer = self.request("GET", endpoint, url, MANIFEST_ACCEPT)
                answer.close()
            if answer.status == 404:
                if best is None or best.rank < 2:
                    best = FetchError(f"{name}: not found", rank=2, not_found=True)
                self._next(index, fields, f" after status: {answer.status_line}")
                continue
            if not 200 <= answer.status <= 299:
                if best is None or best.rank < 3:
                    best = FetchError(
                        f"unexpected status from HEAD request to {url}: "
                        f"{answer.status_line}",
                        rank=3,
                    )
                self._next(index, fields, f" after status: {answer.status_line}")
                continue
            media_type = answer.headers.get("content-type", "").partition(";")[0]
            digest = reference if reference.startswith("sha256:") else ""
            digest = digest or answer.headers.get("docker-content-digest", "")
            length = answer.headers.get("content-length")
            if digest and length is not None:
                return Descriptor(media_type, digest, int(length))
            body = self.request("GET", endpoint, url, MANIFEST_ACCEPT).read()
            return Descriptor(
                media_type, "sha256:" + hashlib.sha256(body).hexdigest(), len(body)
            )
        raise best or FetchError(f"{name}: not found", rank=2, not_found=True)

    def fetch(self, desc: Descriptor, kind: str) -> None:
        """Store ``desc``'s blob (a manifest, config or layer), verified."""
        if self.content.has(desc.digest):
            return
        where = "manifests" if kind in ("manifest", "index") else "blobs"
        accept = f"{desc.media_type}, */*" if desc.media_type else "*/*"
        first: FetchError | None = None
        for endpoint in self.endpoints:
            url = self.url(endpoint, where, desc.digest)
            if endpoint.simulated(self.registry):
                error = FetchError(
                    f"content at {url} not found: not found", not_found=True
                )
                first = first or error
                continue
            try:
                answer = self.request("GET", endpoint, url, accept)
            except FetchError as exc:
                first = first or exc
                continue
            if answer.status > 299:
                answer.close()
                if answer.status == 404:
                    error = FetchError(
                        f"content at {url} not found: not found", not_found=True
                    )
                else:
                    error = FetchError(
                        f"unexpected status from GET request to {url}: "
                        f"{answer.status_line}",
                        rank=3,
                    )
                first = first or error
                continue
            self.content.write(desc, answer.chunks(), kind)
            return
        assert first is not None
        if first.not_found:
            raise FetchError(
                f"could not fetch content descriptor {desc.digest} ({desc.media_type}) "
                "from remote: not found",
                not_found=True,
            )
        raise FetchError(f"failed to copy: httpReadSeeker: failed open: {first}")

    def document(self, desc: Descriptor, kind: str) -> dict[str, Any]:
        """Fetch a manifest or index and decode it."""
        if desc.size > MAX_MANIFEST:
            raise FetchError(
                f"rejecting {desc.size} byte manifest for {desc.digest}: not found",
                not_found=True,
            )
        self.fetch(desc, kind)
        try:
            found = json.loads(self.content.read(desc.digest))
        except ValueError:
            raise FetchError(f"invalid {kind} {desc.digest}", rank=3) from None
        if not isinstance(found, dict):
            raise FetchError(f"invalid {kind} {desc.digest}", rank=3)
        return found


def _descriptor(raw: Any) -> Descriptor:
    if not isinstance(raw, dict) or not str(raw.get("digest", "")).startswith(
        "sha256:"
    ):
        raise FetchError(f"invalid descriptor {raw!r}", rank=3)
    return Descriptor(
        str(raw.get("mediaType", "")), str(raw["digest"]), int(raw.get("size", 0))
    )


def _platform(entry: dict[str, Any]) -> str:
    found = entry.get("platform") or {}
    return f"{found.get('os', '')}/{found.get('architecture', '')}"


def split_name(name: str) -> tuple[str, str, str]:
    """(registry, repository, tag or digest) of a normalized image name."""
    registry, _, rest = name.partition("/")
    if "@" in rest:
        repository, _, reference = rest.partition("@")
    else:
        head, _, last = rest.rpartition("/")
        base, _, reference = last.partition(":")
        repository = f"{head}/{base}" if head else base
    return registry, repository, reference


def pull(
    name: str, endpoints: list[Endpoint], content: Content, log: Logger
) -> Pulled | str:
    """Pull ``name`` (normalized) for this node's platform, or :data:`SIMULATED`.

    Raises :class:`FetchError` with containerd's text: ``failed to resolve
    reference "<name>": ...`` when no endpoint resolves it, the fetch's own
    error after.
    """
    registry, repository, reference = split_name(name)
    resolver = Resolver(registry, repository, endpoints, content, log)
    try:
        resolved = resolver.resolve(reference, name)
    except FetchError as exc:
        raise FetchError(
            f'failed to resolve reference "{name}": {exc}',
            rank=exc.rank,
            not_found=exc.not_found,
        ) from None
    if isinstance(resolved, str):
        return resolved
    top = resolved
    document = resolver.document(
        top, "index" if top.media_type in INDEX_TYPES else "manifest"
    )
    listed: tuple[str, ...] = (node_platform(),)
    manifest_desc = top
    if top.media_type in INDEX_TYPES or "manifests" in document:
        entries = [e for e in document.get("manifests") or [] if isinstance(e, dict)]
        listed = tuple(dict.fromkeys(_platform(e) for e in entries))
        chosen = [e for e in entries if _platform(e) == node_platform()]
        if not chosen:
            raise FetchError(
                f"no match for platform in manifest {top.digest}: not found",
                not_found=True,
            )
        manifest_desc = _descriptor(chosen[0])
        document = resolver.document(manifest_desc, "manifest")
    config = _descriptor(document.get("config"))
    layers = tuple(_descriptor(layer) for layer in document.get("layers") or [])
    resolver.fetch(config, "config")
    if manifest_desc is top:
        # A lone manifest's platform is its config's: containerd matches it
        # too, so an image of another architecture fails here.
        try:
            image = json.loads(resolver.content.read(config.digest))
        except ValueError:
            image = {}
        found = _platform({"platform": image if isinstance(image, dict) else {}})
        if found != "/" and found != node_platform():
            raise FetchError(
                f"no match for platform in manifest {top.digest}: not found",
                not_found=True,
            )
    for layer in layers:
        resolver.fetch(layer, "layer")
    return Pulled(top, manifest_desc, config, layers, listed)
