"""``registries.yaml``: where the node's containerd pulls each registry's images.

k3s reads the file named by ``--private-registry`` (default
``/etc/rancher/k3s/registries.yaml``) once, at start, and writes a
``hosts.toml`` per registry for containerd (``pkg/agent/containerd/config.go``,
``getHostConfigs``). :func:`load` reads it as rancher/wharfie does: a missing
file is an empty configuration, YAML that does not parse (or does not fit
the schema) is an error k3s dies of. :meth:`Registries.endpoints` is then
what containerd's resolver tries for one image, in order:

- the registry's mirror endpoints (its own ``mirrors`` entry, else the
  ``"*"`` entry when the registry has neither a mirror nor a config entry of
  its own, as containerd falls back to ``certs.d/_default``), each
  normalized as k3s does (:func:`normalize_endpoint`: ``https`` unless a
  localhost address on a port other than 443, path ``/v2`` unless another
  path is given, which containerd then takes verbatim as ``override_path``),
  invalid ones skipped, duplicates dropped, with the mirror's ``rewrite``
  rules and the ``configs`` entry of the endpoint's own host;
- last, the registry's default endpoint (``https://registry-1.docker.io/v2``
  for ``docker.io``, ``http://`` for a localhost address with a port, else
  ``https://<host>/v2``) without rewrites, with the registry's own config (or
  the ``"*"`` one), unless ``--disable-default-registry-endpoint`` is given
  (k3s v1.26.13, v1.27.10, v1.28.6, v1.29.1 and later) and the registry has
  a mirror entry but no config entry: then only the mirrors are tried. A
  mirror endpoint equal to the default, last in the list, is the default.

Requests to an endpoint on another host than the image's registry carry
``?ns=<registry>`` (containerd's ``isProxy``). :data:`PUBLIC_REGISTRIES` and
:func:`Endpoint.simulated` are the double's own rule: nothing public is
reachable from our machines, so a pull from a well-known public registry's
default endpoint is simulated (synthesized content); every mirror endpoint
and every other registry is pulled for real (:mod:`.fetch`).
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import yaml


DEFAULT_PATH = "/etc/rancher/k3s/registries.yaml"
DOCKER_HUB = "docker.io"
DOCKER_HUB_HOST = "registry-1.docker.io"
#: Registries whose default endpoint the double never contacts: their pulls
#: are simulated, as before the double pulled for real. A host matches an
#: entry equal to it or ending in ``.<entry>`` (``us.gcr.io``,
#: ``europe-docker.pkg.dev``).
PUBLIC_REGISTRIES = (
    "docker.io",
    "registry-1.docker.io",
    "index.docker.io",
    "ghcr.io",
    "quay.io",
    "registry.k8s.io",
    "k8s.gcr.io",
    "gcr.io",
    "pkg.dev",
    "mcr.microsoft.com",
    "public.ecr.aws",
    "registry.gitlab.com",
    "nvcr.io",
    "docker.elastic.co",
    "registry.access.redhat.com",
    "registry.redhat.io",
    "lscr.io",
)


#: PyYAML's wording of common errors, as Go's yaml package words them.
_GO_YAML = {
    "mapping values are not allowed here": (
        "mapping values are not allowed in this context"
    ),
    "found character": "found character that cannot start any token",
}


class RegistriesError(Exception):
    """``registries.yaml`` exists but k3s cannot use it (k3s exits)."""


@dataclass(frozen=True)
class Auth:
    """A ``configs.<host>.auth`` entry."""

    username: str = ""
    password: str = ""
    auth: str = ""
    identity_token: str = ""

    def credentials(self) -> tuple[str, str]:
        """(username, secret) as CRI's ``ParseAuth`` derives them."""
        if self.username or self.password:
            return self.username, self.password
        if self.auth:
            try:
                decoded = base64.b64decode(self.auth).decode()
            except (ValueError, UnicodeDecodeError):
                return "", ""
            user, _, secret = decoded.partition(":")
            return user, secret
        return "", self.identity_token


@dataclass(frozen=True)
class TLS:
    """A ``configs.<host>.tls`` entry (file paths inside the node)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class Config:
    """A ``configs`` entry: credentials and TLS settings for one host."""

    auth: Auth | None = None
    tls: TLS | None = None


@dataclass(frozen=True)
class Endpoint:
    """One host containerd tries for an image: ``scheme://host/path``."""

    scheme: str
    host: str
    path: str
    #: The registry's own (default) endpoint, not a mirror.
    default: bool = False
    rewrites: tuple[tuple[str, str], ...] = ()
    config: Config = field(default_factory=Config)

    @property
    def url(self) -> str:
        """The endpoint as k3s writes it into ``hosts.toml``."""
        return f"{self.scheme}://{self.host}{self.path}"

    def simulated(self, registry: str) -> bool:
        """Whether the double simulates a pull of ``registry`` from here.

        Only the default endpoint of a registry in :data:`PUBLIC_REGISTRIES`:
        a mirror endpoint is always contacted, whatever its host.
        """
        return self.default and is_public(registry)

    def repository(self, name: str) -> str:
        """``name`` with this endpoint's first matching rewrite applied."""
        for pattern, template in self.rewrites:
            compiled = re.compile(go_regexp(pattern))
            if compiled.search(name):
                return compiled.sub(
                    functools.partial(go_expand, template=template), name
                )
        return name

    def request_path(self, registry: str, name: str, *parts: str) -> str:
        """The path and query of a request for repository ``name`` of ``registry``.

        The repository is rewritten for this endpoint; ``ns=`` names the
        registry when this endpoint is another host (a mirror).
        """
        joined = "/".join(
            p.strip("/")
            for p in (self.path, self.repository(name), *parts)
            if p.strip("/")
        )
        target = "/" + joined
        if is_proxy(registry, self.host):
            target += "?" + urllib.parse.urlencode({"ns": registry})
        return target


def is_public(registry: str) -> bool:
    """Whether ``registry`` is one of :data:`PUBLIC_REGISTRIES` (or under one)."""
    host = registry.partition(":")[0] if registry.count(":") == 1 else registry
    return any(host == p or host.endswith("." + p) for p in PUBLIC_REGISTRIES)


def is_proxy(registry: str, host: str) -> bool:
    """Whether containerd adds ``ns=`` (``isProxy``): not the registry's host."""
    return registry != host and not (registry == DOCKER_HUB and host == DOCKER_HUB_HOST)


def is_localhost(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP (``docker.IsLocalhost``)."""
    name = host
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def default_host(registry: str) -> str:
    """Where a registry really is (``docker.DefaultHost``): docker.io's own host."""
    return DOCKER_HUB_HOST if registry == DOCKER_HUB else registry


def _port(host: str) -> str:
    if host.startswith("["):
        return host.partition("]")[2].removeprefix(":")
    return host.partition(":")[2] if host.count(":") == 1 else ""


def normalize_endpoint(endpoint: str) -> tuple[str, str, str, str]:
    """(registry name, scheme, host, path) of a mirror endpoint, as k3s does.

    ``normalizeEndpointAddress``: without a scheme, ``http`` for a localhost
    address on a port other than 443, else ``https``; ``docker.io`` becomes
    its real host; an empty path, ``/`` or ``/v2`` is ``/v2``, any other path
    is kept (containerd's ``override_path``). Raises ``ValueError``.
    """
    text = endpoint if "://" in endpoint else "//" + endpoint
    parsed = urllib.parse.urlsplit(text)
    host = parsed.netloc
    if not host or "@" in host:
        raise ValueError(f"invalid endpoint URL {endpoint}")
    scheme = parsed.scheme
    if not scheme:
        port = _port(host)
        scheme = "http" if is_localhost(host) and port not in ("", "443") else "https"
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme {scheme!r} in {endpoint}")
    registry = host
    host = default_host(host)
    if host == DOCKER_HUB_HOST:
        registry = DOCKER_HUB
    path = parsed.path if parsed.path not in ("", "/", "/v2") else "/v2"
    return registry, scheme, host, path


def default_endpoint(registry: str, config: Config) -> Endpoint:
    """The registry's own endpoint, tried last (containerd's default host)."""
    port = _port(registry)
    scheme = "http" if is_localhost(registry) and port not in ("", "443") else "https"
    return Endpoint(scheme, default_host(registry), "/v2", default=True, config=config)


@dataclass(frozen=True)
class Mirror:
    """A ``mirrors`` entry: endpoints in order, and rewrite rules."""

    endpoints: tuple[str, ...] = ()
    rewrites: tuple[tuple[str, str], ...] = ()


@dataclass
class Registries:
    """A parsed ``registries.yaml`` and containerd's resolution over it."""

    mirrors: dict[str, Mirror] = field(default_factory=dict)
    configs: dict[str, Config] = field(default_factory=dict)
    #: ``--disable-default-registry-endpoint``.
    no_default_endpoint: bool = False

    def config_for(self, host: str) -> Config:
        """k3s' ``configForHost``: the entry of the real host, else of the name."""
        real = default_host(host)
        if real != host and real in self.configs:
            return self.configs[real]
        return self.configs.get(host, Config())

    def endpoints(self, registry: str) -> list[Endpoint]:
        """The endpoints containerd tries for an image of ``registry``, in order."""
        own = registry in self.mirrors or registry in self.configs
        key = registry if own and self._kept(registry) else "*"
        mirror = self.mirrors.get(key)
        if key == "*":
            config = self.configs.get("*", Config())
        else:
            config = self.config_for(registry)
        default = default_endpoint(registry, config)
        found: list[Endpoint] = []
        seen: set[str] = set()
        for index, raw in enumerate(mirror.endpoints if mirror else ()):
            try:
                name, scheme, host, path = normalize_endpoint(raw)
            except ValueError:
                continue
            endpoint = Endpoint(
                scheme, host, path, rewrites=mirror.rewrites if mirror else (),
                config=self.config_for(name),
            )  # fmt: skip
            if endpoint.url in seen:
                continue
            seen.add(endpoint.url)
            last = index == len(mirror.endpoints if mirror else ()) - 1
            if last and endpoint.url == default.url and key != "*":
                continue  # k3s makes it the default endpoint
            found.append(endpoint)
        skip_default = (
            self.no_default_endpoint and mirror is not None and key not in self.configs
        )
        if not skip_default:
            found.append(default)
        return found

    def _kept(self, registry: str) -> bool:
        """Whether k3s writes a ``hosts.toml`` of the registry's own.

        It drops one whose only content would be the default endpoint
        without any setting; containerd then uses ``_default`` (``"*"``).
        """
        mirror = self.mirrors.get(registry)
        if registry in self.configs:
            config = self.configs[registry]
            if config.auth is not None or config.tls is not None:
                return True
        if mirror is None:
            return False
        default = default_endpoint(registry, Config()).url
        for raw in mirror.endpoints:
            try:
                _, scheme, host, path = normalize_endpoint(raw)
            except ValueError:
                continue
            if f"{scheme}://{host}{path}" != default:
                return True
        return False


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        kind = "!!seq" if isinstance(value, list) else "!!str"
        raise RegistriesError(
            f"yaml: unmarshal errors:\n  cannot unmarshal {kind} into {where}"
        )
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RegistriesError(
            f"yaml: unmarshal errors:\n  cannot unmarshal !!str into {where}"
        )
    return tuple(str(v) for v in value)


def _config(raw: Any) -> Config:
    body = _mapping(raw, "registries.RegistryConfig")
    auth = body.get("auth")
    tls = body.get("tls")
    found_auth = None
    if auth is not None:
        a = _mapping(auth, "registries.AuthConfig")
        found_auth = Auth(
            str(a.get("username") or ""),
            str(a.get("password") or ""),
            str(a.get("auth") or ""),
            str(a.get("identity_token") or ""),
        )
    found_tls = None
    if tls is not None:
        t = _mapping(tls, "registries.TLSConfig")
        found_tls = TLS(
            str(t.get("ca_file") or ""),
            str(t.get("cert_file") or ""),
            str(t.get("key_file") or ""),
            bool(t.get("insecure_skip_verify") or False),
        )
    return Config(found_auth, found_tls)


def parse(text: str, *, no_default_endpoint: bool = False) -> Registries:
    """A ``registries.yaml``'s content, or :class:`RegistriesError`.

    The error text is what Go's yaml package says, which k3s dies with
    (``yaml: line N: ...``).
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = str(exc.problem or exc.context)
        problem = _GO_YAML.get(problem.split(" '")[0], problem)
        raise RegistriesError(f"yaml: {line}{problem}") from None
    except yaml.YAMLError as exc:
        raise RegistriesError(f"yaml: {exc}") from None
    body = _mapping(raw, "registries.Registry")
    mirrors = {}
    for host, entry in _mapping(body.get("mirrors"), "map[string]Mirror").items():
        mirror = _mapping(entry, "registries.Mirror")
        rewrites = _mapping(mirror.get("rewrite"), "map[string]string")
        mirrors[str(host)] = Mirror(
            _strings(mirror.get("endpoint"), "[]string"),
            tuple((str(k), str(v)) for k, v in rewrites.items()),
        )
    configs = {
        str(host): _config(entry)
        for host, entry in _mapping(body.get("configs"), "map[string]Config").items()
    }
    return Registries(mirrors, configs, no_default_endpoint)


def load(path: str, *, no_default_endpoint: bool = False) -> Registries | None:
    """The file at ``path``: None when it does not exist (no registries)."""
    try:
        with open(path, encoding="utf-8") as source:
            text = source.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistriesError(f"open {path}: {exc.strerror or exc}") from None
    return parse(text, no_default_endpoint=no_default_endpoint)


def go_regexp(pattern: str) -> str:
    """A Go (RE2) pattern as Python's ``re`` reads it: ``(?<name>`` is ``(?P<name>``."""
    return re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", pattern)


_TEMPLATE = re.compile(r"\$(\$|\{([A-Za-z0-9_]*)\}|([A-Za-z0-9_]+))")


def go_expand(match: re.Match[str], template: str) -> str:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``; unknown ones are empty."""

    def one(token: re.Match[str]) -> str:
        if token.group(1) == "$":
            return "$"
        name = token.group(2) if token.group(2) is not None else token.group(3)
        try:
            value = match.group(int(name)) if name.isdigit() else match.group(name)
        except IndexError:
            return ""
        return value or ""

    return _TEMPLATE.sub(one, template)
